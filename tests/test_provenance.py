"""Content Credentials (C2PA) beside the verdict: files signed here with a test CA chain, then changed, stripped,
marked as made by a model, trusted; the states, the codes, the detector's and the CLI's outputs, bad input."""
import csv
import json
import shutil

import pytest
import torch
from c2pa_signing import AI_SOURCE, make_chain, sign
from media import fixture
from PIL import Image

from hcsi.cli import main
from hcsi.models import build_model, save_checkpoint, with_batch_statistics
from hcsi.provenance import read_provenance

PHOTO = "face_recognition/obama.jpg"
CLIP = "ghost/elon.mp4"


@pytest.fixture(scope="module")
def chain():
    return make_chain()


@pytest.fixture(scope="module")
def signed(chain, tmp_path_factory):
    folder = tmp_path_factory.mktemp("signed")
    return {"jpg": sign(fixture(PHOTO), folder / "photo.jpg", chain),
            "mp4": sign(fixture(CLIP), folder / "clip.mp4", chain)}


def _changed(path, out, offset: int):
    data = bytearray(path.read_bytes())
    data[offset:offset + 8] = bytes(b ^ 0xFF for b in data[offset:offset + 8])  # a few bytes of the picture
    out.write_bytes(bytes(data))
    return out


def test_a_signed_file_is_valid_and_names_its_signer_and_generator(signed):
    for path in signed.values():
        found = read_provenance(path)
        assert found.state == "valid", (path, found)
        assert found.signer == {"issuer": "hcsi test CA", "common_name": "hcsi test signer"}
        assert found.claim_generator == "hcsi-tests 1.0"
        assert [a["action"] for a in found.actions] == ["c2pa.created"] and not found.ai_generated
        assert found.failure_codes == ["signingCredential.untrusted"]  # no trust list: the only failure
        assert "claimSignature.validated" in found.success_codes


def test_changed_bytes_make_it_invalid_with_the_hash_mismatch_code(signed, tmp_path):
    photo = _changed(signed["jpg"], tmp_path / "photo.jpg", -200)
    found = read_provenance(photo)
    assert found.state == "invalid" and "assertion.dataHash.mismatch" in found.failure_codes
    assert "assertion.dataHash.mismatch" in found.reason and found.signer["common_name"] == "hcsi test signer"
    clip = _changed(signed["mp4"], tmp_path / "clip.mp4", -300)
    found = read_provenance(clip)
    assert found.state == "invalid" and "assertion.bmffHash.mismatch" in found.failure_codes


def test_a_file_without_credentials_or_stripped_of_them_has_none(signed, tmp_path):
    assert read_provenance(fixture(PHOTO)).state == "none"
    assert read_provenance(fixture(CLIP)).state == "none"
    stripped = tmp_path / "stripped.jpg"
    Image.open(signed["jpg"]).save(stripped, quality=95)  # re-encoding drops the manifest
    found = read_provenance(stripped)
    assert found.state == "none" and found.signer is None and not found.failure_codes


def test_an_ai_generation_action_is_flagged_and_edit_history_lists_ingredients(chain, signed, tmp_path):
    made = sign(fixture(PHOTO), tmp_path / "made.jpg", chain, generator="FaceGen",
                actions=[{"action": "c2pa.created", "digitalSourceType": AI_SOURCE,
                          "softwareAgent": {"name": "FaceGen diffusion"}}])
    found = read_provenance(made)
    assert found.ai_generated and found.actions[0]["software_agent"] == "FaceGen diffusion"
    assert found.actions[0]["digital_source_type"] == AI_SOURCE and found.claim_generator == "FaceGen 1.0"
    broken = _changed(signed["jpg"], tmp_path / "broken.jpg", -200)
    edited = sign(fixture("face_recognition/biden.jpg"), tmp_path / "edited.jpg", chain, generator="FaceSwapper",
                  actions=[{"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
                           {"action": "c2pa.edited"}],
                  ingredients=[(broken, {"title": "broken.jpg", "relationship": "parentOf", "label": "parent"}),
                               (signed["jpg"], {"title": "photo.jpg", "relationship": "componentOf"}),
                               (fixture(PHOTO), {"title": "plain.jpg", "relationship": "componentOf"})])
    found = read_provenance(edited)
    assert found.state == "valid" and not found.ai_generated
    assert [(i["title"], i["relationship"], i["state"]) for i in found.ingredients] == [
        ("broken.jpg", "parentOf", "invalid"), ("photo.jpg", "componentOf", "valid"),
        ("plain.jpg", "componentOf", "none")]


def test_a_signer_chaining_to_a_given_anchor_is_trusted_and_another_anchor_is_not(chain, signed):
    assert read_provenance(signed["jpg"], chain.root_pem.decode()).state == "trusted"
    other = make_chain("someone else")
    found = read_provenance(signed["jpg"], other.root_pem.decode())
    assert found.state == "valid" and "signingCredential.untrusted" in found.failure_codes


def test_unreadable_files_get_error_with_the_reason_and_a_wrong_extension_is_read_by_content(signed, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("meeting notes")
    found = read_provenance(text)
    assert found.state == "error" and "notes.jpg" in found.reason and "unsupported" in found.reason.lower()
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(signed["jpg"].read_bytes()[:3000])
    found = read_provenance(truncated)
    assert found.state == "error" and "cut.jpg" in found.reason
    renamed = tmp_path / "photo.mp4"
    shutil.copy(signed["jpg"], renamed)  # a JPEG named like a video
    assert read_provenance(renamed).state == "valid"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    torch.manual_seed(0)  # batch-norm statistics, so that inputs score differently
    save_checkpoint(with_batch_statistics(build_model("hcsi_net_small", input_size=64)), path)
    return path


def test_detect_reports_provenance_beside_an_unchanged_verdict(chain, signed, checkpoint, tmp_path, capsys):
    """JSONL and CSV carry the provenance; the signed photo scores exactly as the unsigned one (the manifest does
    not change the pixels, and provenance never enters the score); --trust-anchors makes it trusted."""
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(chain.root_pem)
    inputs = [str(signed["jpg"]), str(fixture(PHOTO)), str(signed["mp4"])]
    out = tmp_path / "out.jsonl"
    assert main(["detect", *inputs, "--checkpoint", str(checkpoint), "--frames", "2", "--out", str(out),
                 "--device", "cpu", "--calibration", "none", "--trust-anchors", str(anchors)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["provenance"]["state"] for r in rows] == ["trusted", "none", "trusted"]
    assert rows[1]["score"] is not None and rows[0]["label"] == rows[1]["label"]
    assert rows[0]["score"] == pytest.approx(rows[1]["score"], abs=1e-6)  # same pixels: provenance is not scored
    assert abs(rows[2]["score"] - rows[0]["score"]) > 1e-3  # inputs score differently: the equality means something
    assert rows[0]["provenance"]["signer"]["common_name"] == "hcsi test signer"
    assert "not that the content is true" in rows[0]["provenance"]["meaning"]
    assert "trusted" in capsys.readouterr().out  # the terminal table's C2PA column
    table = tmp_path / "out.csv"
    assert main(["detect", *inputs, "--checkpoint", str(checkpoint), "--frames", "2", "--out", str(table),
                 "--device", "cpu", "--calibration", "none"]) == 0
    with open(table, newline="") as f:
        cells = [(r["provenance"], r["provenance_signer"], r["ai_generated"]) for r in csv.DictReader(f)]
    assert cells == [("valid", "hcsi test signer, hcsi test CA", "False"), ("none", "", "False"),
                     ("valid", "hcsi test signer, hcsi test CA", "False")]


@pytest.mark.parametrize("case", ["text", "damaged PEM", "empty name", "folder", "missing"])
def test_a_trust_anchor_file_that_is_not_pem_is_refused_before_scoring(case, checkpoint, tmp_path, capsys):
    junk = tmp_path / "anchors.pem"
    junk.write_text({"text": "not a certificate",
                     "damaged PEM": "-----BEGIN CERTIFICATE-----\ngarbage!\n-----END CERTIFICATE-----\n"}.get(case, ""))
    given = {"empty name": "", "folder": str(tmp_path), "missing": str(tmp_path / "gone.pem")}.get(case, str(junk))
    assert main(["detect", str(fixture(PHOTO)), "--checkpoint", str(checkpoint), "--trust-anchors", given]) == 2
    expected = {"text": "expected PEM certificates", "damaged PEM": "certificate 1 is not valid base64-encoded DER",
                "empty name": "an empty file name", "folder": "not a regular file", "missing": "no such file"}[case]
    assert expected in capsys.readouterr().err


def test_the_service_answers_provenance_filters_its_history_and_shows_it_on_the_page_and_report(
        chain, signed, checkpoint, tmp_path):
    """A signed photo with an AI-generation action and an unsigned one: the API's result carries the provenance
    (no server path in its reason), the history filters by state and the CSV has the column, the page shows the
    panel beside the verdict and the case report the section, in Chromium."""
    from fastapi.testclient import TestClient
    from test_serve import CHROMIUM, CHROMIUM_FLAGS, _browser, serving

    from hcsi.detect import Detector
    from hcsi.serve import create_app

    made = sign(fixture(PHOTO), tmp_path / "made.jpg", chain, generator="FaceGen",
                actions=[{"action": "c2pa.created", "digitalSourceType": AI_SOURCE,
                          "softwareAgent": {"name": "FaceGen diffusion"}}])
    detector = Detector.from_checkpoint(checkpoint, device="cpu", frames=2, trust_anchors=chain.root_pem.decode())
    app = create_app(detector, data_dir=tmp_path / "data")
    client = TestClient(app)
    answers = {}
    for name, path in (("made.jpg", made), ("plain.jpg", fixture(PHOTO))):
        with open(path, "rb") as f:
            answers[name] = client.post("/v1/analyze", files={"file": (name, f)}).json()
    found = answers["made.jpg"]["provenance"]
    assert found["state"] == "trusted" and found["ai_generated"] and found["claim_generator"] == "FaceGen 1.0"
    assert answers["plain.jpg"]["provenance"]["state"] == "none"
    assert answers["made.jpg"]["score"] == pytest.approx(answers["plain.jpg"]["score"], abs=1e-6)  # not scored
    listed = client.get("/v1/jobs", params={"provenance": "trusted"}).json()
    assert [j["file_name"] for j in listed["jobs"]] == ["made.jpg"] and listed["jobs"][0]["provenance"] == "trusted"
    assert client.get("/v1/jobs", params={"provenance": "none"}).json()["total"] == 1
    assert client.get("/v1/jobs", params={"provenance": "forged"}).status_code == 422
    exported = client.get("/v1/jobs.csv").text.splitlines()
    assert exported[0].endswith(",provenance") and any(line.endswith(",trusted") for line in exported[1:])
    report = client.get(answers["made.jpg"]["report_url"]).text
    assert "Provenance (Content Credentials, C2PA)" in report and "made by an AI model" in report
    assert "does not show that the content is true" in report

    playwright = _browser()
    with serving(app) as port, playwright as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#history tbody tr")
        page.select_option("#filter-provenance", "trusted")
        page.wait_for_function("document.querySelectorAll('#history tbody tr').length === 1")
        page.click("#history tbody tr")
        page.wait_for_selector("#provenance-state")
        assert page.inner_text("#provenance-state") == "TRUSTED"
        assert "made with an AI model" in page.inner_text("#provenance-ai")
        assert "hcsi test signer" in page.inner_text("#provenance") and "FaceGen diffusion" in page.inner_text(
            "#provenance")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        report_page = browser.new_page()
        report_page.goto(f"http://127.0.0.1:{port}{answers['made.jpg']['report_url']}")
        assert "TRUSTED" in report_page.inner_text("#provenance")
        report_page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()


def test_a_damaged_manifest_is_reported_and_the_detection_goes_on(signed, checkpoint, tmp_path):
    """Bytes of the manifest itself changed: invalid or error with the reason, never valid, and the photo is still
    scored as without it; `hcsi evaluate` lists each video's state in videos.csv."""
    from hcsi.detect import Detector

    data = bytearray(signed["jpg"].read_bytes())
    at = data.index(b"c2pa.signature")  # inside the manifest's JUMBF boxes
    data[at:at + 14] = b"x" * 14
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(bytes(data))
    found = read_provenance(damaged)
    assert found.state in ("invalid", "error") and found.reason, found
    detector = Detector.from_checkpoint(checkpoint, device="cpu", frames=2)
    result, plain = detector.score(damaged), detector.score(fixture(PHOTO))
    assert result.status == "ok" and result.provenance.state == found.state
    assert result.score == pytest.approx(plain.score, abs=1e-6)

    root = tmp_path / "folder"
    for label, path in (("fake", signed["mp4"]), ("real", fixture("liveportrait/d0.mp4"))):
        (root / label).mkdir(parents=True)
        shutil.copy(path, root / label / path.name)
    out = tmp_path / "evaluation"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--root", str(root),
                 "--frames", "2", "--workers", "0", "--device", "cpu", "--out", str(out)]) == 0
    with open(out / "videos.csv", newline="") as f:
        assert {r["video_id"]: r["provenance"] for r in csv.DictReader(f)} == {"clip": "valid", "d0": "none"}
