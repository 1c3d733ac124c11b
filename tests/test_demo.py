"""`hcsi demo --quick`: the whole pipeline end to end on the built-in clips."""
import json

from hcsi.cli import main


def test_quick_demo_runs_every_step_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--seed", "1"]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    metrics = summary["held_out_metrics"]
    page = (out / "report.html").read_text()
    assert metrics["eer"] is not None and f"AUC {metrics['auc']:.3f}  AP {metrics['ap']:.3f}" in page  # reported
    for piece in ("Model cost", "SBI preview", "Training", "Evaluation on held-out identities",
                  "Gate heatmaps", "hcsi train --config configs/stage1_cnn.yaml"):
        assert piece in page, piece
    for image in ("sbi_preview.png", "training_curve.png", "roc.png", "gates_real.png", "gates_fake.png"):
        assert (out / image).stat().st_size > 1000, image
        assert image in (out / "report.md").read_text()


def test_a_demo_starts_over_in_its_own_folder_and_leaves_other_folders_alone(tmp_path):
    from hcsi.demo import DEMO_MARKER, prepare_demo_folder

    out = tmp_path / "demo"
    prepare_demo_folder(out)
    (out / "store" / "videos").mkdir(parents=True)  # left by an earlier demo with other options
    (out / "report.html").write_text("old")
    prepare_demo_folder(out)
    assert not (out / "store").exists() and (out / DEMO_MARKER).is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["demo", "--quick", "--out", str(mine)]) == 2
    assert (mine / "notes.txt").read_text() == "keep" and not (mine / DEMO_MARKER).exists()
