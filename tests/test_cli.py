"""The command line's answers to a user's mistakes: counts, sizes and thresholds out of range are refused with exit
code 2 by every command and by the Python API, before any work is done."""
import pytest

from hcsi.cli import main

OUT_OF_RANGE = [
    (["evaluate", "--checkpoint", "x.safetensors", "--dataset", "cdf", "--root", "r", "--frames", "0"], "--frames"),
    (["evaluate", "--checkpoint", "x.safetensors", "--dataset", "cdf", "--root", "r", "--batch-size", "0"],
     "--batch-size"),
    (["evaluate", "--checkpoint", "x.safetensors", "--dataset", "cdf", "--root", "r", "--workers", "-1"], "--workers"),
    (["evaluate", "--checkpoint", "x.safetensors", "--dataset", "cdf", "--root", "r", "--failure-score", "2"],
     "--failure-score"),
    (["preprocess", "--dataset", "folder", "--root", "r", "--out", "o", "--frames", "0"], "--frames"),
    (["preprocess", "--dataset", "folder", "--root", "r", "--out", "o", "--workers", "0"], "--workers"),
    (["detect", "a.mp4", "--checkpoint", "x.safetensors", "--frames", "0"], "--frames"),
    (["detect", "a.mp4", "--checkpoint", "x.safetensors", "--threshold", "-0.1"], "--threshold"),
    (["serve", "--checkpoint", "x.safetensors", "--frames", "0"], "--frames"),
    (["serve", "--checkpoint", "x.safetensors", "--workers", "-1"], "--workers"),
    (["worker", "--checkpoint", "x.safetensors", "--workers", "0"], "--workers"),
    (["serve", "--checkpoint", "x.safetensors", "--max-upload-mb", "0"], "--max-upload-mb"),
    (["profile", "--batch", "0"], "--batch"),
    (["profile", "--iters", "0"], "--iters"),
    (["sbi-preview", "--input", "a.jpg", "--out", "g.png", "--n", "0"], "--n"),
    (["sbi-preview", "--input", "a.jpg", "--out", "g.png", "--image-size", "8"], "--image-size"),
    (["import-weights", "f.tar", "--format", "sbi", "--out", "o.safetensors", "--input-size", "0"], "--input-size"),
    (["detect", "a.mp4", "--checkpoint", "x.safetensors", "--frames", "many"], "--frames"),
]


@pytest.mark.parametrize("args,option", OUT_OF_RANGE, ids=[" ".join(a[:1] + a[-2:]) for a, _ in OUT_OF_RANGE])
def test_counts_and_thresholds_out_of_range_are_refused_with_exit_code_2(args, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {option}" in error and ("at least" in error or "[0, 1]" in error or "positive" in error
                                              or "whole number" in error)


def test_training_settings_out_of_range_are_refused(tmp_path, capsys):
    for setting in ("data.frames_per_video=0", "run.batch_pairs=0", "optim.lr=0", "augment.mix_prob=2",
                    "model.input_size=0", "run.keep_top_k=0"):
        assert main(["train", "--config", "configs/tiny.yaml", setting, f"run.out={tmp_path / 'run'}"]) == 2
        assert setting.split("=")[0] in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_python_api_refuses_the_same_numbers():
    from hcsi.data.preprocess import PreprocessOptions
    from hcsi.detect import Detector
    from hcsi.evaluate.run import EvaluationOptions
    from hcsi.models import build_model

    with pytest.raises(ValueError, match="frames must be at least 1, got 0"):
        EvaluationOptions(frames=0)
    with pytest.raises(ValueError, match="failure_score must lie in"):
        EvaluationOptions(failure_score=1.5)
    with pytest.raises(ValueError, match="frames must be at least 1"):
        PreprocessOptions(frames=0)
    model = build_model("cnn_only_small", input_size=64)
    with pytest.raises(ValueError, match="frames must be at least 1"):
        Detector(model, device="cpu", frames=0)
    with pytest.raises(ValueError, match="frames must be at least 1"):
        Detector(model, device="cpu").score("clip.mp4", frames=-3)


def _error_of(args, capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err.strip()


def test_smaller_mistakes_get_the_command_to_use(tmp_path, capsys):
    from hcsi.models import build_model, save_checkpoint

    checkpoint = tmp_path / "best.safetensors"
    save_checkpoint(build_model("cnn_only_small", input_size=64), checkpoint)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "FFc23.tar").write_bytes(b"tar")
    cases = [
        (["detect", "a.mp4", "--checkpoint", str(tmp_path / "model.onnx")], "--backend onnxruntime --model"),
        (["serve", "--checkpoint", str(tmp_path / "FFc23.tar")], "hcsi import-weights --format sbi|deepfakebench"),
        (["detect", "a.mp4", "--checkpoint", str(checkpoint), "--out", "results.json"], "expected a .jsonl"),
        (["sbi-preview", "--input", "face.jpg", "--out", str(tmp_path / "grid")], "ending in .png or .jpg"),
        (["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", "model.bin"], "*.onnx"),
        (["compare", "--auc", "cdf=ninety"], "expected dataset=percent"),
        (["profile", "--model", "hcsi_nett"], "unknown model 'hcsi_nett'; registered models: cnn_only"),
        (["submit", str(checkpoint), "--server", "http://²"], "not a URL"),
        (["submit", str(checkpoint), "--server", ".."], "expected http://HOST:PORT"),
        (["serve", "--checkpoint", str(checkpoint), "--database", "mysql://x", "--data-dir", str(tmp_path / "d")],
         "expected postgresql://USER@HOST:PORT/DB"),
        (["worker", "--checkpoint", str(checkpoint), "--data-dir", str(tmp_path / "d")], "--database postgresql://... (or"),
    ]
    for args, expected in cases:
        code, error = _error_of(args, capsys)
        assert code == 2 and expected in error, (args, error)
        assert not error.split("error: ", 1)[1].startswith(("'", '"'))  # no stray quotes around the message
    assert not (tmp_path / "grid").exists()
