"""Per-person results: faces grouped into people (overlap + dlib descriptors), each person's score and verdict, the
`persons` aggregate, and where the persons show (JSONL, CSV, case report, plot). Videos are built here from fixture
photos of different people."""
import csv
import json

import httpx
import numpy as np
import pytest
import torch
from media import person_patch, write_people_video

from hcsi.cli import main
from hcsi.detect import Detector
from hcsi.evaluate.calibration import fit_calibration
from hcsi.faces.persons import IDENTITY_BY_APPEARANCE, box_iou, split_where_identity_changes
from hcsi.models import build_model, save_checkpoint

FRAMES = 32  # every frame of the built videos is sampled


class GreenMarkerModel(torch.nn.Module):
    """A stand-in scorer: p(fake) ≈ 0.95 for a crop holding the green marker of `person_patch(..., marker=True)`,
    ≈ 0.05 otherwise, so one person's faces are the flagged ones."""

    config = type("Config", (), {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "input_size": 64,
                                 "name": "green-marker stand-in"})()

    def forward(self, x):
        green = ((x[:, 1] > 0.8) & (x[:, 0] < 0.3) & (x[:, 2] < 0.3)).float().mean(dim=(1, 2))
        logit = torch.where(green > 0.001, 3.0, -3.0)
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """The scenes of the issue: two side by side, the two swapping sides halfway, two crossing, one leaving for ten
    frames and returning elsewhere, one alone. `beckham` carries the marker; `obama` does not."""
    root = tmp_path_factory.mktemp("people")
    a, b = person_patch("obama"), person_patch("beckham", marker=True)
    scenes = {
        "side_by_side": [[(a, 60 + 2 * k, 90), (b, 420 - 2 * k, 100)] for k in range(FRAMES)],
        "swap": [[(a, 60 + 2 * k, 90), (b, 420 - 2 * k, 100)] for k in range(16)]
        + [[(b, 60 + 2 * k, 90), (a, 420 - 2 * k, 100)] for k in range(16)],
        "cross": [[(a, 40 + 14 * k, 90), (b, 460 - 14 * k, 100)] for k in range(FRAMES)],
        "return": [[(a, 80 + k, 90)] for k in range(11)] + [[] for _ in range(10)]
        + [[(a, 380 - k, 120)] for k in range(11)],
        "alone": [[(a, 200 + 3 * k, 90)] for k in range(FRAMES)],
    }
    paths = {}
    for name, frames in scenes.items():
        paths[name] = root / f"{name}.mp4"
        write_people_video(paths[name], frames)
    return paths


@pytest.fixture(scope="module")
def marker_detector():
    return Detector(GreenMarkerModel(), device="cpu", frames=FRAMES)


def _marked(result, person) -> list[bool]:
    """Per face of `person` scored: did the stand-in flag it (the marked person's face)?"""
    return [s > 0.5 for s in person.face_scores if s is not None]


@pytest.mark.parametrize("scene", ["side_by_side", "swap", "cross"])
def test_two_people_stay_two_persons_with_their_identities(videos, marker_detector, scene):
    """Side by side, swapping sides halfway, crossing: two persons, and each person's faces are one person's (the
    stand-in flags exactly the marked one's faces, so a mixed-up person shows both)."""
    result = marker_detector.score(videos[scene])
    assert [p.id for p in result.persons] == [1, 2]
    for person in result.persons:
        flags = _marked(result, person)
        assert len(set(flags)) == 1, (scene, person.id, flags)
        assert person.identity == IDENTITY_BY_APPEARANCE
    unmarked, marked = sorted(result.persons, key=lambda p: p.score)
    assert len(marked.frame_indices) == FRAMES  # the marked head is never hidden
    if scene != "cross":  # crossing hides one head behind the other in a few frames
        assert len(unmarked.frame_indices) == FRAMES
    assert marked.score > 0.9 and unmarked.score < 0.1


def test_a_person_who_leaves_and_returns_elsewhere_is_one_person(videos, marker_detector):
    result = marker_detector.score(videos["return"])
    assert len(result.persons) == 1
    person = result.persons[0]
    assert person.frame_indices == list(range(11)) + list(range(21, 32))
    assert person.time_ranges == [[0.0, 0.4], [0.84, 1.24]]  # 25 frames per second
    assert len(person.boxes) == 22 and person.boxes[0][0] < 200 < person.boxes[-1][0]


def test_one_person_alone_is_one_person_and_the_persons_score_is_the_videos(videos, marker_detector):
    result = marker_detector.score(videos["alone"])
    assert len(result.persons) == 1
    assert result.persons[0].score == pytest.approx(result.score)


def test_the_marked_persons_verdict_is_the_flagged_one_and_the_persons_aggregate_takes_it(videos):
    """With a calibration: the marked person is 'manipulated', the other 'no_evidence'. The paper's score averages
    the flagged face over frames; `aggregate="persons"` takes the highest person, and the paper's stays named."""
    rng = np.random.default_rng(0)
    settings = Detector(GreenMarkerModel(), device="cpu", frames=FRAMES).scoring_settings()
    calibration = fit_calibration(np.r_[np.zeros(200, int), np.ones(200, int)],
                                  np.r_[rng.uniform(0, 0.3, 200), rng.uniform(0.7, 1.0, 200)], settings=settings)
    detector = Detector(GreenMarkerModel(), device="cpu", frames=FRAMES, calibration=calibration)
    result = detector.score(videos["side_by_side"])
    verdicts = {p.verdict for p in result.persons}
    assert verdicts == {"manipulated", "no_evidence"}
    marked = max(result.persons, key=lambda p: p.score)
    assert marked.verdict == "manipulated" and marked.probability > 0.9
    row = result.to_dict()
    assert row["aggregate"] == "paper" and row["score"] == row["paper_score"]
    assert [p["id"] for p in row["persons"]] == [1, 2] and "thumbnail" not in row["persons"][0]

    with pytest.raises(Exception, match="aggregate"):  # the calibration was fitted on the paper's scores
        Detector(GreenMarkerModel(), device="cpu", frames=FRAMES, calibration=calibration, aggregate="persons")
    persons = Detector(GreenMarkerModel(), device="cpu", frames=FRAMES, aggregate="persons").score(
        videos["cross"])
    assert persons.score == pytest.approx(max(p.score for p in persons.persons))
    assert persons.paper_score is not None and persons.to_dict()["aggregate"] == "persons"


def test_a_crowd_and_a_frame_without_faces_keep_every_face_in_one_person(tmp_path, marker_detector):
    """Twenty heads of the same man in one frame (the finder finds most of them) are as many persons (one frame
    cannot show a person twice), a frame without a face adds none, and every face found belongs to exactly one
    person."""
    head = person_patch("obama")
    small = np.ascontiguousarray(head[::2, ::2])
    crowd = [(small, 10 + 78 * (k % 8), 5 + 92 * (k // 8)) for k in range(20)]
    path = tmp_path / "crowd.mp4"
    write_people_video(path, [crowd, [], crowd], size=(640, 300))
    result = Detector(GreenMarkerModel(), device="cpu", frames=3).score(path)
    assert result.status == "ok"
    seen = [(frame, tuple(box)) for p in result.persons for frame, box in zip(p.frame_indices, p.boxes)]
    assert len(seen) == len(set(seen))
    per_frame = {frame: sum(1 for f, _ in seen if f == frame) for frame in (0, 2)}
    assert per_frame[0] >= 10 and 1 not in {f for f, _ in seen}
    assert len(result.persons) >= max(per_frame.values())
    for person in result.persons:
        assert len(set(person.frame_indices)) == len(person.frame_indices)


def test_a_face_too_small_to_score_is_a_person_that_says_so(tmp_path, marker_detector):
    """A small face beside a large one is found and grouped, but the protocol scores only faces at least half the
    largest's area: its person has no score and says why."""
    big, small = person_patch("beckham"), np.ascontiguousarray(person_patch("obama")[::2, ::2])
    path = tmp_path / "small.mp4"
    write_people_video(path, [[(big, 60, 60), (small, 420, 120)]] * 4)
    result = Detector(GreenMarkerModel(), device="cpu", frames=4).score(path)
    assert len(result.persons) == 2
    unscored = [p for p in result.persons if p.score is None]
    assert len(unscored) == 1 and unscored[0].verdict == "cannot_judge"
    assert unscored[0].cannot_judge[0]["code"] == "not_scored"


def test_tracks_are_cut_where_the_identity_changes():
    """Bisection: a track whose faces are A×5 then B×4 is cut between them, having described few faces."""
    identities = [0] * 5 + [1] * 4
    asked = []

    class Known:
        def same(self, a, b):
            asked.extend([a, b])
            return identities[a[0]] == identities[b[0]]

    track = [(k, 0) for k in range(9)]
    pieces = split_where_identity_changes(track, Known())
    assert pieces == [track[:5], track[5:]]
    assert len(set(asked)) < len(track)
    assert split_where_identity_changes(track[:5], Known()) == [track[:5]]
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)


def test_detect_writes_persons_in_jsonl_per_person_csv_and_the_case_report(videos, tmp_path, capsys):
    """`hcsi detect` on a real (untrained) checkpoint: a `persons` list in every JSONL row, one CSV row per person
    with --per-person, and a case report with each person's thumbnail, the boxes drawn on a frame and their
    times."""
    checkpoint = tmp_path / "model.safetensors"
    save_checkpoint(build_model("hcsi_net_small", input_size=64), checkpoint)
    common = ["detect", str(videos["side_by_side"]), "--checkpoint", str(checkpoint), "--device", "cpu",
              "--frames", "8"]
    assert main(common + ["--out", str(tmp_path / "r.jsonl"), "--report", str(tmp_path / "reports"),
                          "--explain", str(tmp_path / "strips")]) == 0
    row = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert row["aggregate"] == "paper" and [p["id"] for p in row["persons"]] == [1, 2]
    for person in row["persons"]:
        assert len(person["frames"]) == len(person["boxes"]) == 8
        assert (tmp_path / "strips").joinpath(person["thumbnail"]).is_file()
        assert (tmp_path / "strips").joinpath(person["heatmap"]).is_file()
    report = (tmp_path / "reports").glob("*.html").__next__().read_text()
    assert report.count('class="person-thumbnail"') == 2 and 'id="persons-overview"' in report
    assert "8 frame(s): 0.00–1.24 s" in report  # 8 of 32 frames at 25 per second, all in one run
    assert main(common + ["--out", str(tmp_path / "p.csv"), "--per-person"]) == 0
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["person"] for r in rows] == ["1", "2"] and rows[0]["path"] == str(videos["side_by_side"])
    assert {"person_score", "frames_seen", "time_ranges", "video_score"} <= set(rows[0])


def test_the_page_and_the_served_report_show_each_person(videos, tmp_path):
    """In Chromium: the page lists both persons (thumbnail, frames seen, score) and draws one line per person in
    the per-frame plot; the job's JSON holds the persons and the served case report shows them."""
    from test_serve import CHROMIUM, CHROMIUM_FLAGS, _browser, serving

    from hcsi.serve import create_app

    checkpoint = tmp_path / "model.safetensors"
    save_checkpoint(build_model("hcsi_net_small", input_size=64), checkpoint)
    detector = Detector.from_checkpoint(checkpoint, device="cpu", frames=6)
    playwright = _browser()
    with serving(create_app(detector, data_dir=tmp_path / "data")) as port, playwright as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.goto(f"http://127.0.0.1:{port}/")
        page.set_input_files("#file", str(videos["swap"]))
        page.wait_for_selector("#persons .person", timeout=240_000)
        assert page.locator("#persons .person").count() == 2
        assert page.locator("#persons .person img").count() == 2
        page.wait_for_function("[...document.querySelectorAll('#persons img')].every(i => i.naturalWidth > 0)")
        assert "6 frame(s)" in page.inner_text("#persons .person[data-person='1']")
        assert page.locator("#frame-plot .person-line").count() == 2
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        report_url = page.get_attribute("#report-link", "href")
        job = httpx.get(f"http://127.0.0.1:{port}" + report_url.replace("/report.html", "")).json()
        assert [person["id"] for person in job["result"]["persons"]] == [1, 2]
        assert job["result"]["persons"][0]["thumbnail"].startswith("data:image/jpeg;base64,")
        page.goto(f"http://127.0.0.1:{port}{report_url}")
        assert page.locator(".person-thumbnail").count() == 2 and page.locator("#persons-overview").count() == 1
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()


def test_ffiw_masks_and_folder_boxes_label_persons_and_evaluate_reports_person_auc(videos, tmp_path):
    """An FFIW layout built here: a real video (one man) and a fake one whose mask video covers the marked man. The
    reader finds the mask, the persons are labelled by it, and the evaluation reports person-level AUC and that the
    highest-scoring person of the fake video is the manipulated one. A folder CSV's fake_boxes label the same."""
    import shutil

    from hcsi.evaluate.datasets import test_videos
    from hcsi.evaluate.protocol import extract_test_faces
    from hcsi.evaluate.run import EvaluationOptions, evaluate, label_persons
    from hcsi.faces import create_face_detector

    release = tmp_path / "ffiw" / "FFIW10K-v1-release"
    for folder in ("source/val/videos", "target/val/videos", "target_mask/val/videos"):
        (release / folder).mkdir(parents=True)
    shutil.copy(videos["alone"], release / "source/val/videos/r1.mp4")
    shutil.copy(videos["side_by_side"], release / "target/val/videos/f1.mp4")
    white = np.full((180, 150, 3), 255, np.uint8)  # where the marked head is pasted in side_by_side
    write_people_video(release / "target_mask/val/videos/f1.mp4", [[(white, 420 - 2 * k, 100)] for k in range(FRAMES)])
    listed = test_videos("ffiw", tmp_path / "ffiw")
    assert [v.face_mask is not None for v in listed] == [False, True]
    summary = evaluate(GreenMarkerModel(), listed, tmp_path / "out", EvaluationOptions(frames=8, workers=0),
                       progress=False)
    assert summary["person_auc"] == pytest.approx(1.0) and summary["top_person_is_manipulated"] == 1.0
    assert summary["n_persons_labelled"] == 3 and summary["n_persons_manipulated"] == 1
    with open(tmp_path / "out" / "persons.csv", newline="") as f:
        labelled = {(r["video_id"], r["label"]) for r in csv.DictReader(f)}
    assert labelled == {("r1", "0"), ("f1", "0"), ("f1", "1")}
    persons = evaluate(GreenMarkerModel(), listed, tmp_path / "out", EvaluationOptions(frames=8, workers=0,
                                                                                      aggregate="persons"),
                       progress=False)  # the cached faces are summarised again by their persons
    assert persons["aggregate"] == "persons" and persons["auc"] == pytest.approx(1.0)

    manifest = tmp_path / "labels.csv"
    manifest.write_text(f"path,label,fake_boxes\n{videos['side_by_side']},fake,380 90 600 290\n")
    (video,) = test_videos("folder", manifest)
    faces = extract_test_faces(video.path, create_face_detector(), 4, 64)
    label_persons(video, faces, 4)
    assert faces.person_labels == {1: 0, 2: 1}
    for malformed in ("380 90 300 290", "nan 1 inf 2", "1 2 ² 4", "1 2 3"):
        manifest.write_text(f"path,label,fake_boxes\n{videos['side_by_side']},fake,{malformed}\n")
        with pytest.raises(ValueError, match="fake_boxes"):
            test_videos("folder", manifest)


def test_a_face_seen_once_is_a_person_of_one_frame(tmp_path, marker_detector):
    """A third head that shows up in a single frame is its own person, seen in that frame only; the two others keep
    all their frames."""
    a, b, c = person_patch("obama"), person_patch("beckham", marker=True), person_patch("biden")
    frames = [[(a, 40, 90), (b, 450, 100)] for _ in range(6)]
    frames[3].append((c, 245, 150))
    path = tmp_path / "once.mp4"
    write_people_video(path, frames)
    result = Detector(GreenMarkerModel(), device="cpu", frames=6).score(path)
    assert sorted(len(p.frame_indices) for p in result.persons) == [1, 6, 6]
    (once,) = [p for p in result.persons if len(p.frame_indices) == 1]
    assert once.frame_indices == [3] and once.time_ranges == [[0.12, 0.12]]


def test_old_calibrations_were_fitted_on_the_papers_scores_and_old_evaluations_have_no_persons(tmp_path):
    from hcsi.evaluate.calibration import Calibration
    from hcsi.evaluate.run import video_score

    settings = Detector(GreenMarkerModel(), device="cpu", frames=4).scoring_settings()
    rng = np.random.default_rng(0)
    path = fit_calibration(np.r_[np.zeros(30, int), np.ones(30, int)], rng.uniform(0, 1, 60),
                           settings=settings).save(tmp_path / "c.json")
    data = json.loads(path.read_text())
    del data["settings"]["aggregate"]  # as written before persons existed
    path.write_text(json.dumps(data))
    assert Calibration.load(path).settings["aggregate"] == "paper"
    old = {"key": "folder/real/a", "status": "ok", "score": 0.3}
    assert video_score(old, 0.5) == 0.3
    with pytest.raises(ValueError, match="new output folder"):
        video_score(old, 0.5, "persons")


def test_failing_descriptors_leave_persons_by_position_and_say_so(videos, marker_detector, monkeypatch):
    from hcsi.faces.persons import IDENTITY_BY_POSITION, FaceDescriber

    def broken(self, frame, face):
        raise RuntimeError("dlib model file damaged")

    monkeypatch.setattr(FaceDescriber, "describe", broken)
    result = marker_detector.score(videos["side_by_side"])
    assert result.status == "ok" and "face descriptors failed: RuntimeError: dlib model file damaged" in result.reason
    assert len(result.persons) == 2 and {p.identity for p in result.persons} == {IDENTITY_BY_POSITION}
