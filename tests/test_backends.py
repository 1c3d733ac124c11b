"""The CPU backends: ONNX Runtime from a cached export (the default on the CPU) against PyTorch eager, for both model
families; the cache (reused, never stale, safe under two writers, an unwritable folder); a failed export."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from media import fixture

from hcsi.cli import main
from hcsi.detect import Detector
from hcsi.detect.backends import cached_onnx_model, onnx_cache_dir
from hcsi.evaluate.calibration import fit_calibration
from hcsi.evaluate.protocol import read_ahead
from hcsi.files import file_sha256
from hcsi.models import build_model, model_from_checkpoint, save_checkpoint, with_batch_statistics

FAMILIES = {"hcsi_net_small": 64, "sbi_efficientnet_b4": 64}  # HCSI-Net and SBI's EfficientNet-B4 (x/255 input)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "model.safetensors"
    size = FAMILIES[request.param]
    torch.manual_seed(0)
    save_checkpoint(with_batch_statistics(build_model(request.param, input_size=size)), path)
    return path


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HCSI_ONNX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_onnx_runtime_and_pytorch_give_the_same_scores_and_verdicts(checkpoint, fresh_cache):
    """Every crop's p(fake) within 1e-4 on fixture videos (no crop dropped), so the calibrated probabilities and
    tiers are the same with either backend."""
    torch_detector = Detector.from_checkpoint(checkpoint, device="cpu", frames=4, backend="torch")
    onnx_detector = Detector.from_checkpoint(checkpoint, device="cpu", frames=4)
    assert (torch_detector.backend, onnx_detector.backend) == ("torch", "onnxruntime")
    videos = [fixture("ghost/elon.mp4"), fixture("face_recognition/two_people.jpg")]
    by_torch = list(torch_detector.score_many(videos))
    by_onnx = list(onnx_detector.score_many(videos))
    assert np.ptp([f.score for r in by_torch for f in r.faces]) > 1e-3  # faces score differently
    for a, b in zip(by_torch, by_onnx):
        assert len(a.faces) == len(b.faces) > 0
        assert max(abs(x.score - y.score) for x, y in zip(a.faces, b.faces)) < 1e-4
        assert abs(a.score - b.score) < 1e-4
    scores = np.array([r.score for r in by_torch])
    rng = np.random.default_rng(0)
    calibration = fit_calibration(np.r_[np.zeros(100, int), np.ones(100, int)],
                                  np.r_[rng.normal(scores.mean() - 0.02, 0.01, 100),
                                        rng.normal(scores.mean() + 0.02, 0.01, 100)],
                                  checkpoint_sha256=file_sha256(checkpoint),
                                  settings=torch_detector.scoring_settings())
    path = calibration.save(checkpoint.parent / "c.json")
    verdicts = {}
    for backend in ("torch", "auto"):
        detector = Detector.from_checkpoint(checkpoint, device="cpu", frames=4, backend=backend, calibration=path)
        verdicts[backend] = [(r.verdict, r.probability) for r in detector.score_many(videos)]
    assert [v for v, _ in verdicts["torch"]] == [v for v, _ in verdicts["auto"]]
    assert [p for _, p in verdicts["torch"]] == pytest.approx([p for _, p in verdicts["auto"]], abs=1e-3)


def test_the_export_is_made_once_reused_and_rebuilt_for_a_changed_checkpoint(checkpoint, fresh_cache, capsys):
    Detector.from_checkpoint(checkpoint, device="cpu")
    assert "exporting the network to ONNX once" in capsys.readouterr().err
    entries = list(fresh_cache.glob("*.onnx"))
    assert [e.name for e in entries] == [f"{file_sha256(checkpoint)}-64.onnx"]
    Detector.from_checkpoint(checkpoint, device="cpu")
    assert "exporting" not in capsys.readouterr().err  # reused

    changed = checkpoint.parent / "changed.safetensors"
    model = model_from_checkpoint(checkpoint)
    for parameter in model.parameters():
        parameter.data.add_(0.01)
    save_checkpoint(model, changed)
    again = Detector.from_checkpoint(changed, device="cpu")
    assert "exporting the network to ONNX once" in capsys.readouterr().err
    assert again.scorer.checkpoint_sha256 == file_sha256(changed)
    assert len(list(fresh_cache.glob("*.onnx"))) == 2


def test_a_cache_entry_made_from_another_checkpoint_is_never_used(checkpoint, fresh_cache, capsys):
    """An entry under this checkpoint's name whose recorded checkpoint differs (a copied or damaged cache) is
    exported again, not scored with."""
    model = model_from_checkpoint(checkpoint)
    other = cached_onnx_model(model, "0" * 64)
    entry = fresh_cache / f"{file_sha256(checkpoint)}-64.onnx"
    os.replace(other.path, entry)
    capsys.readouterr()
    detector = Detector.from_checkpoint(checkpoint, device="cpu")
    assert "was made from another checkpoint; exporting again" in capsys.readouterr().err
    assert detector.scorer.checkpoint_sha256 == file_sha256(checkpoint)


def test_two_processes_filling_the_cache_at_once_leave_one_whole_entry(checkpoint, fresh_cache):
    script = ("import sys; from hcsi.detect.backends import cached_onnx_model; "
              "from hcsi.models import model_from_checkpoint; from hcsi.files import file_sha256; "
              "m = cached_onnx_model(model_from_checkpoint(sys.argv[1]), file_sha256(sys.argv[1])); "
              "print(m.checkpoint_sha256)")
    env = {**os.environ, "HCSI_ONNX_CACHE_DIR": str(fresh_cache)}
    runs = [subprocess.Popen([sys.executable, "-c", script, str(checkpoint)], stdout=subprocess.PIPE, env=env)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0].decode().strip() for run in runs]
    assert [run.returncode for run in runs] == [0, 0] and outputs == [file_sha256(checkpoint)] * 2
    assert [p.name for p in fresh_cache.iterdir()] == [f"{file_sha256(checkpoint)}-64.onnx"]
    assert Detector.from_checkpoint(checkpoint, device="cpu").backend == "onnxruntime"


def test_an_unwritable_cache_exports_for_the_run_and_says_so(checkpoint, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HCSI_ONNX_CACHE_DIR", str(blocker / "cache"))
    detector = Detector.from_checkpoint(checkpoint, device="cpu", frames=2)
    assert detector.backend == "onnxruntime" and not detector.scorer.path.exists()  # nothing left behind
    err = capsys.readouterr().err
    assert "is not writable" in err and "exporting for this run only" in err
    assert onnx_cache_dir() == blocker / "cache"
    assert detector.score(fixture("face_recognition/obama.jpg")).status == "ok"


def test_a_failed_export_is_said_once_and_pytorch_scores(checkpoint, fresh_cache, monkeypatch, capsys):
    import hcsi.detect.export as export

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(export, "export_model", broken)
    detector = Detector.from_checkpoint(checkpoint, device="cpu", frames=2)
    err = capsys.readouterr().err
    assert err.count("failed (RuntimeError: unsupported operator); scoring with PyTorch instead") == 1
    assert detector.backend == "torch" and detector.score(fixture("face_recognition/obama.jpg")).status == "ok"
    assert not list(fresh_cache.glob("*"))  # no partial entry left behind
    assert json.dumps(detector.scoring_settings())


def test_mistakes_are_answered_before_torch_is_imported(tmp_path):
    """A missing checkpoint, a checkpoint folder, a misspelt option (the sub-command's usage and the closest option),
    an empty folder, a junk file to import: each message, from a process that never imported torch (so it answers
    at once)."""
    probe = ("import sys, runpy; sys.argv = ['hcsi'] + sys.argv[1:]\n"
             "from hcsi.cli import main\n"
             "code = main(sys.argv[1:])\n"
             "print('torch imported' if 'torch' in sys.modules else 'torch not imported', file=sys.stderr)\n"
             "sys.exit(code)")
    (tmp_path / "empty").mkdir()
    junk = tmp_path / "junk.pth"  # e.g. a web page saved instead of the download
    junk.write_text("PNG preview of the model card")
    cases = [
        (["detect", "a.mp4", "--checkpoint", str(tmp_path / "none.safetensors")], "--checkpoint .* no such file"),
        (["detect", "a.mp4", "--checkpoint", str(tmp_path)], "is a folder: give the .safetensors file"),
        (["detect", "a.mp4", "--chekpoint", "x.safetensors"],
         r"usage: hcsi detect .*unrecognized arguments: --chekpoint \(did you mean --checkpoint\?\)"),
        (["detect", str(tmp_path / "empty"), "--checkpoint", __file__], "no media files found in"),
        (["serve", "--checkpoint", str(tmp_path / "none.safetensors")], "hcsi serve: error: --checkpoint .* no such"),
        (["worker", "--database", "postgresql://x/y", "--checkpoint", str(tmp_path / "none.safetensors")],
         "hcsi worker: error: --checkpoint .* no such file"),
        (["evaluate", "--checkpoint", str(tmp_path / "none.safetensors"), "--dataset", "folder", "--root",
          str(tmp_path)], "hcsi evaluate: error: --checkpoint .* no such file"),
        (["calibrate", "--checkpoint", str(tmp_path / "none.safetensors"), "--from-results", str(tmp_path)],
         "hcsi calibrate: error: --checkpoint .* no such file"),
        (["calibrate", "--checkpoint", __file__, "--from-results", str(tmp_path / "gone")],
         "--from-results .*gone: no such folder"),
        (["robustness", "--checkpoint", str(tmp_path / "none.safetensors"), "--dataset", "folder", "--root",
          str(tmp_path), "--out", str(tmp_path / "r")], "hcsi robustness: error: --checkpoint .* no such file"),
        (["import-weights", str(junk), "--format", "sbi", "--out", str(tmp_path / "o.safetensors")],
         "junk.pth: expected a PyTorch checkpoint written by torch.save .*but it is text beginning 'PNG"),
    ]
    import re

    for argv, expected in cases:
        run = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
        assert run.returncode in (1, 2), (argv, run.stderr)
        assert re.search(expected, run.stderr, re.S), (argv, run.stderr)
        if "usage" not in expected:
            assert "torch not imported" in run.stderr, (argv, run.stderr)


def test_a_text_file_named_like_a_video_says_what_it_is(tmp_path):
    from hcsi.faces import MediaError, sample_frames

    notes = tmp_path / "notes.mp4"
    notes.write_text("meeting notes")
    with pytest.raises(MediaError, match="notes.mp4: not a video or image file") as info:
        sample_frames(notes)
    assert "Errno" not in str(info.value)


def test_warnings_print_their_message_not_a_source_line(tmp_path):
    probe = ("import warnings, sys\nfrom hcsi.cli import main\n"
             "main.__globals__['warnings'].formatwarning  # set by main\n"
             "try:\n    main(['detect'])\nexcept SystemExit:\n    pass\n"
             "warnings.warn('calibration fitted on few videos', stacklevel=1)\n")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "hcsi: warning: calibration fitted on few videos" in run.stderr
    assert "warnings.warn(" not in run.stderr


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_and_robustness_score_with_onnx_runtime_by_default(checkpoint, fresh_cache, tmp_path):
    """`hcsi evaluate` and `hcsi robustness` on the CPU: ONNX Runtime unless --backend torch, every frame score
    within 1e-4 of PyTorch's (none dropped), and the engine recorded per video and in the summaries."""
    root = tmp_path / "clips"
    for label, name in (("real", "liveportrait/d0"), ("fake", "ghost/elon")):
        (root / label).mkdir(parents=True)
        (root / label / f"{name.split('/')[1]}.mp4").symlink_to(fixture(f"{name}.mp4"))
    common = ["--checkpoint", str(checkpoint), "--dataset", "folder", "--root", str(root), "--frames", "4",
              "--workers", "0", "--device", "cpu"]
    frames, summaries, cells = {}, {}, {}
    for backend in ("torch", "auto"):
        out = tmp_path / f"evaluate-{backend}"
        assert main(["evaluate", *common, "--backend", backend, "--out", str(out)]) == 0
        summaries[backend] = json.loads((out / "summary.json").read_text())
        frames[backend] = [(r["video_id"], r["frame_index"], float(r["score"])) for r in _rows(out / "frames.csv")]
        out = tmp_path / f"robustness-{backend}"
        assert main(["robustness", *common, "--backend", backend, "--out", str(out), "--perturbations", "blur",
                     "--levels", "3"]) == 0
        rows = json.loads((out / "robustness.json").read_text())
        cells[backend] = [(r["level"], r["backends"]) for r in rows]
        cells[backend + " scores"] = sorted(json.loads(p.read_text())["score"] for p in out.glob("cache/*/*.json"))
    assert summaries["torch"]["backends"] == ["torch"] and summaries["auto"]["backends"] == ["onnxruntime"]
    assert [f[:2] for f in frames["torch"]] == [f[:2] for f in frames["auto"]] and len(frames["torch"]) == 8
    by_torch, by_onnx = (np.array([f[2] for f in frames[b]]) for b in ("torch", "auto"))
    assert np.ptp(by_torch) > 1e-3  # the scores differ between frames, so agreeing within 1e-4 means something
    assert np.abs(by_torch - by_onnx).max() < 1e-4
    assert cells["torch"] == [(0, ["torch"]), (3, ["torch"])]
    assert cells["auto"] == [(0, ["onnxruntime"]), (3, ["onnxruntime"])]
    assert np.abs(np.array(cells["torch scores"]) - np.array(cells["auto scores"])).max() < 1e-4


def test_read_ahead_makes_the_next_item_while_the_current_one_is_used():
    """The producer runs ahead (the next item is made while the consumer still holds the current one), the order is
    kept, an exception of the producer comes out in its place, and closing early stops the producer."""
    import threading

    made = [threading.Event() for _ in range(4)]

    def items():
        for i in range(4):
            made[i].set()
            yield i

    seen = []
    for i in read_ahead(items()):
        seen.append(i)
        if i < 3:  # without a thread, item i + 1 is made only after this body returns: the wait would time out
            assert made[i + 1].wait(timeout=10)
    assert seen == [0, 1, 2, 3]

    def failing():
        yield "a"
        raise ValueError("broken input list")

    got = []
    with pytest.raises(ValueError, match="broken input list"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == ["a"]

    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    stream = read_ahead(endless())
    assert next(stream) == 0
    stream.close()
    for thread in [t for t in threading.enumerate() if t.name == "hcsi-read-ahead"]:
        thread.join(timeout=30)  # however slow the machine: the producer ends once closed
        assert not thread.is_alive()
    assert len(produced) <= 4  # stopped, a few items ahead at most


def test_overlapped_detection_gives_the_results_of_the_sequential_one(checkpoint, fresh_cache):
    """score_many with the face stage overlapping the network (the default) and without: the same faces and scores
    for every input, a broken one in the middle included."""
    detector = Detector.from_checkpoint(checkpoint, device="cpu", frames=4)
    broken = fresh_cache.parent / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    inputs = [fixture("ghost/elon.mp4"), broken, fixture("face_recognition/two_people.jpg"),
              fixture("liveportrait/d0.mp4")]
    sequential = [r.to_dict() for r in detector.score_many(inputs, overlap=False)]
    overlapped = [r.to_dict() for r in detector.score_many(inputs)]
    assert overlapped == sequential
    assert [r["status"] for r in sequential] == ["ok", "unreadable", "ok", "ok"]
    explained = [r.to_dict() for r in detector.score_many(inputs[:2], explain=True)]
    assert [r["score"] for r in explained] == pytest.approx([r["score"] for r in sequential[:2]], abs=1e-4)
