"""A case report: one self-contained HTML file per analysed input (images embedded, opens offline), written by
`hcsi detect --report DIR` and served by `hcsi serve` at /v1/jobs/{id}/report.html."""
from __future__ import annotations

import base64
import datetime
import html
import io
from pathlib import Path

import av

from .. import __version__
from ..files import file_sha256
from ..provenance import UNTRUSTED

MEANING_CALIBRATED = (
    "The probability is the model's score mapped by a calibration fitted on labelled videos ({fitted}). It says "
    "how often videos like those that received this score were fake; it is only as good as the resemblance between "
    "this input and those videos. The verdict is a tier between two operating points of that calibration: "
    "'manipulated' at or above the strict one (FPR {strict_fpr:.1%}: that share of its real videos reached it, and "
    "{strict_tpr:.1%} of its fakes), 'no evidence' below the lenient one (FPR {lenient_fpr:.1%}, TPR "
    "{lenient_tpr:.1%}), 'inconclusive' between.")
MEANING_UNCALIBRATED = (
    "No calibration was applied: the score is the model's raw output (mean over the sampled frames of the highest "
    "face score in each), which ranks inputs but is not a probability, and its scale differs from one kind of "
    "video to another. The label compares it with the raw threshold {threshold}; without a calibration there are "
    "no tiers.")
MEANING_LIMITS = (
    "What the result does not say: the detector was trained on self-blended face swaps (SBI) and tested on "
    "academic benchmarks; it looks only at the faces it found in the sampled frames, not at the voice, the "
    "background or the context, and a high score is a reason for a closer look, not proof. A low score does not "
    "show that the video is authentic: manipulations unlike the training data, heavy compression or small faces "
    "can escape it.")


STILL_IMAGE_DEMUXERS = ("image2", "jpeg_pipe", "png_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe")


def picture_facts(path: str | Path) -> dict:
    """{"duration_s": seconds or None, "image_size": "W×H" or None}: a video's duration from its container, a still
    image's dimensions (FFmpeg gives a still a nominal one-frame duration, which is not a duration); nothing for
    unreadable files."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return {"duration_s": None, "image_size": None}
            stream = container.streams.video[0]
            if container.format.name in STILL_IMAGE_DEMUXERS:
                return {"duration_s": None, "image_size": f"{stream.width}×{stream.height}"}
            return {"duration_s": container.duration / 1_000_000 if container.duration else None, "image_size": None}
    except av.error.FFmpegError:
        return {"duration_s": None, "image_size": None}


def video_duration(path: str | Path) -> float | None:
    """A video's duration in seconds from its container (None for still images and unreadable files)."""
    return picture_facts(path)["duration_s"]


def media_facts(path: str | Path) -> dict:
    """SHA-256, size, and a video's duration in seconds or a still image's dimensions."""
    return {"sha256": file_sha256(path), "size": Path(path).stat().st_size, **picture_facts(path)}


def _png_data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def data_url(data: bytes | None, mime: str = "image/jpeg") -> str | None:
    return None if data is None else f"data:{mime};base64," + base64.b64encode(data).decode()


def with_person_images(record: dict, images: dict) -> dict:
    """A copy of `record` (DetectionResult.to_dict()) whose persons carry their thumbnail and heatmap strip as data
    URLs, with the overview frame (`images`: `hcsi.detect.explain.person_images`)."""
    persons = [{**p, **{k: data_url(v) for k, v in images["persons"].get(p["id"], {}).items()}}
               for p in record.get("persons", [])]
    return {**record, "persons": persons, "persons_overview": data_url(images.get("overview"))}


PERSON_COLOURS = ["#e6194b", "#3cb44b", "#0082c8", "#f58230", "#911eb4", "#46f0f0", "#f032e6", "#808000"]
# person k is drawn in colour (k - 1) mod 8 everywhere: overview boxes, plots, the page


def person_colour(person_id: int) -> str:
    return PERSON_COLOURS[(person_id - 1) % len(PERSON_COLOURS)]


def frame_plot_png(indices: list[int], scores: list[float], decided: dict | None = None,
                   persons: list[dict] | None = None) -> bytes | None:
    """The per-frame score plot as PNG bytes (None without scored frames), with the line(s) that decided the
    verdict (`decided`: DetectionResult's `decided_by`) and, when there are several persons, one line per person
    (its face's score in each frame where it was scored)."""
    if not scores:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.6))
    several = len([p for p in persons or [] if p.get("score") is not None]) > 1
    ax.plot(indices, scores, marker="o", ms=3, lw=1.2, color="#c33" if not several else "0.35",
            ls="-" if not several else ":", label="highest face score per sampled frame")
    for person in persons or [] if several else []:
        points = [(f, s) for f, s in zip(person["frames"], person["face_scores"]) if s is not None]
        if points:
            ax.plot(*zip(*points), marker="o", ms=3, lw=1.2, color=person_colour(person["id"]),
                    label=f"person {person['id']}")
    decided = decided or {"kind": "threshold", "threshold": 0.5}
    if decided["kind"] == "operating_points":
        lines = [(decided["strict"]["threshold"], f"strict point (FPR {decided['strict']['target_fpr']:g}): "
                                                   "manipulated above", "#b00"),
                 (decided["lenient"]["threshold"], f"lenient point (FPR {decided['lenient']['target_fpr']:g}): "
                                                    "no evidence below", "#070")]
    else:
        lines = [(decided["threshold"], f"threshold {decided['threshold']:g}: label fake at or above", "0.5")]
    for value, text, colour in lines:
        ax.axhline(value, color=colour, lw=0.9, ls="--", label=f"{text} (video score)")
    ax.set(ylim=(0, 1), xlabel="frame index", ylabel="score",
           title="face scores per sampled frame" + (", per person" if several else ""))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def seen_text(person: dict) -> str:
    """"8 frames: 0.00–1.24 s, 2.00–2.40 s"."""
    ranges = ", ".join(f"{a:.2f} s" if a == b else f"{a:.2f}–{b:.2f} s" for a, b in person.get("time_ranges", []))
    return f"{len(person.get('frames', []))} frame(s): {ranges}"


def person_outcome(person: dict) -> str:
    """A person's score, probability and verdict (or why it cannot be judged) in a few words."""
    if person.get("cannot_judge"):
        reasons = "; ".join(r["message"] for r in person["cannot_judge"])
        score = f"score {person['score']:.3f}; " if person.get("score") is not None else ""
        return f"cannot judge ({score}{reasons})"
    text = f"score {person['score']:.3f}" if person.get("score") is not None else "no score"
    if person.get("probability") is not None:
        text += f", probability {person['probability']:.3f}"
    return text + (f" — {person['verdict'].replace('_', ' ')}" if person.get("verdict") else "")


def persons_section(record: dict) -> str:
    """The persons of the input: the overview frame with their boxes, and one row each (thumbnail, where seen,
    outcome)."""
    persons = record.get("persons") or []
    if not persons:
        return ""
    e = html.escape
    aggregate = record.get("aggregate", "paper")
    text = (f"The faces found were grouped into {len(persons)} person(s) by position and appearance. The video's "
            f"score is {e(record.get('aggregate_meaning') or aggregate)}; a person's score is the mean of its face "
            "scores (its probability and verdict use the same calibration as the video's).")
    overview = record.get("persons_overview")
    figure = (f'<figure><img id="persons-overview" alt="a sampled frame with each person boxed" src="{overview}">'
              '<figcaption>A sampled frame with each person seen in it boxed and numbered.</figcaption></figure>'
              if str(overview or "").startswith("data:") else "")
    rows = []
    for person in persons:
        thumbnail = person.get("thumbnail")
        image = (f'<img class="person-thumbnail" alt="person {person["id"]}" src="{thumbnail}">'
                 if str(thumbnail or "").startswith("data:") else "")
        boxes = "; ".join(f"frame {f}: ({b[0]}, {b[1]})–({b[2]}, {b[3]})" for f, b in
                          list(zip(person["frames"], person["boxes"]))[:4])
        more = f" (+{len(person['boxes']) - 4} more)" if len(person["boxes"]) > 4 else ""
        rows.append(f'<tr><td>{image}</td><td style="color:{person_colour(person["id"])}"><b>P{person["id"]}</b></td>'
                    f'<td>{e(seen_text(person))}<br><small>{e(boxes + more)}</small></td>'
                    f'<td class="{e(str(person.get("verdict") or ""))}">{e(person_outcome(person))}</td></tr>')
    return (f'<h2>Persons</h2><p>{text}</p>{figure}<table class="persons"><tr><th></th><th>person</th>'
            f'<th>seen (sampled frames, time, face boxes)</th><th>outcome</th></tr>{"".join(rows)}</table>')


PROVENANCE_LIMITS = (
    "Content Credentials and the detector answer different questions, so they are shown side by side and neither "
    "changes the other. A valid or trusted manifest shows who signed these bytes and what their software "
    "recorded (capture, edits, generation by a model); it does not show that the content is true, and a signer "
    "can record false actions. An invalid manifest shows that the file changed after it was signed, or that the "
    "manifest is damaged. No manifest proves nothing: most files carry none, and removing one is easy.")


def provenance_section(record: dict) -> str:
    """The input's Content Credentials (C2PA): state, signer, generator, time, actions (those made by a model
    flagged), edit history, failure codes, and what the state proves and does not."""
    found = record.get("provenance")
    if not found:
        return ""
    e = html.escape
    signer = found.get("signer") or {}
    facts = [("state", found["state"].upper()), ("signed by", ", ".join(v for v in (signer.get("common_name"),
                                                                                    signer.get("issuer")) if v)),
             ("claim generator", found.get("claim_generator")), ("signing time", found.get("time")),
             ("title", found.get("title")), ("reason", found.get("reason")),
             ("failure codes", ", ".join(c for c in found.get("failure_codes") or []
                                         if c != UNTRUSTED))]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts if v)
    actions = "".join(f"<li>{e(str(a.get('action')))}" + (f" ({e(str(a['software_agent']))})"
                                                           if a.get("software_agent") else "")
                      + (' <b class="fake">made by an AI model</b>' if a.get("ai_generated") else "")
                      + (f" <small>{e(str(a['digital_source_type']))}</small>" if a.get("digital_source_type")
                         else "") + "</li>" for a in found.get("actions") or [])
    ingredients = "".join(f"<li>{e(str(i.get('title') or 'untitled'))} ({e(str(i.get('relationship') or ''))}): "
                          f"{e(i['state'])}</li>" for i in found.get("ingredients") or [])
    ai = ('<p class="fake" id="provenance-ai"><b>The Content Credentials say a trained model (AI) made this media or '
          'part of it.</b></p>' if found.get("ai_generated") else "")
    meaning = found.get("meaning", "")
    return (f'<h2>Provenance (Content Credentials, C2PA)</h2><p id="provenance-meaning">'
            f'{e(meaning[:1].upper() + meaning[1:])}.</p>{ai}<table id="provenance">{rows}</table>'
            + (f"<h3>Actions</h3><ul>{actions}</ul>" if actions else "")
            + (f"<h3>Made from (edit history)</h3><ul>{ingredients}</ul>" if ingredients else "")
            + f'<p class="note">{e(PROVENANCE_LIMITS)}</p>')


def case_report_html(record: dict, about: dict, heatmap_png: bytes | None = None) -> str:
    """The report of one analysed input.

    Args:
        record: `DetectionResult.to_dict()` (score, label, calibration, probability, verdict, frames, faces).
        about: file_name, sha256, size, duration_s, analysed_at (ISO time), model, checkpoint_sha256, commit and
            settings (a dict shown as given: frames, face detector, threshold or operating point).
        heatmap_png: the gate-heatmap strip (face crops with their gates), if computed.
    """
    e = html.escape
    calibrated = record.get("calibration") not in (None, "uncalibrated")
    decided = record.get("decided_by") or {"kind": "threshold", "threshold": 0.5}
    verdict = record.get("verdict") if calibrated else record.get("label")
    settings = about.get("settings", {})
    cannot_judge = record.get("cannot_judge") or []
    if cannot_judge:
        verdict, headline = "cannot_judge", "CANNOT JUDGE" + (f" (score {record['score']:.3f})"
                                                             if record.get("score") is not None else "")
    elif record.get("score") is None:
        headline = f"No verdict: {record.get('status')} ({record.get('reason') or 'no reason given'})"
    elif calibrated:
        headline = (f"{(verdict or '').replace('_', ' ').upper()} — probability {record['probability']:.3f} "
                    f"(score {record['score']:.3f})")
    else:
        headline = f"{(verdict or '').upper()} — score {record['score']:.3f} (uncalibrated)"
    if calibrated and decided["kind"] == "operating_points":
        strict, lenient = decided["strict"], decided["lenient"]
        meaning = MEANING_CALIBRATED.format(fitted=e(str(record.get("calibration"))), strict_fpr=strict["fpr"],
                                            strict_tpr=strict["tpr"], lenient_fpr=lenient["fpr"],
                                            lenient_tpr=lenient["tpr"])
    else:
        meaning = MEANING_UNCALIBRATED.format(threshold=decided.get("threshold", 0.5))
    if record.get("verdict_meaning"):
        meaning = f"{record['verdict_meaning']} {meaning}"
    why_not = ('<div class="note" id="cannot-judge"><b>Why no verdict:</b><ul>' + "".join(
        f"<li><b>{e(r['code'])}</b>: {e(r['message'])}</li>" for r in cannot_judge) + "</ul></div>"
               if cannot_judge else "")
    size = about.get("size")
    duration = about.get("duration_s")
    facts = [("input", about.get("file_name")), ("SHA-256", about.get("sha256")),
             ("size", f"{size:,} bytes" if isinstance(size, int) else None),
             ("duration", f"{duration:.2f} s" if duration else None),
             ("image", f"still image, {about['image_size']} pixels" if about.get("image_size") else None),
             ("analysed at", about.get("analysed_at")), ("model", about.get("model")),
             ("checkpoint SHA-256", about.get("checkpoint_sha256")),
             ("hcsi", f"{__version__} (commit {about.get('commit') or 'unknown'})"),
             ("calibration", record.get("calibration")),
             *[(f"setting: {k}", v) for k, v in settings.items()],
             ("status", record.get("status")), ("frames with a face", record.get("frames_used")),
             ("faces scored", record.get("faces_found"))]
    rows = "\n".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in facts if v is not None)
    scores = record.get("frame_scores", [])
    plot = (frame_plot_png(record.get("frame_indices", []), scores, decided, record.get("persons"))
            if len(scores) > 1 else None)  # a still image has one point
    figures = persons_section(record)
    if plot:
        figures += f'<h2>Score per sampled frame</h2><img alt="per-frame scores" src="{_png_data_url(plot)}">'
    if heatmap_png:
        figures += ('<h2>Faces and where the model looked</h2><p>Each row: a face crop, the gates of both streams '
                    'at each of the five stages (the model\'s own spatial weighting), and the CNN stream\'s '
                    f'Grad-CAM.</p><img alt="face crops and gate heatmaps" src="{_png_data_url(heatmap_png)}">')
    strips = [p for p in record.get("persons", []) if str(p.get("heatmap") or "").startswith("data:")]
    if len(strips) > 1:
        figures += "<h3>Each person's highest-scoring face</h3>" + "".join(
            f'<img alt="person {p["id"]}: gate heatmaps" class="person-heatmap" src="{p["heatmap"]}">'
            for p in strips)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hcsi case report: {e(str(about.get('file_name')))}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse}}th,td{{text-align:left;padding:.2em .8em .2em 0;vertical-align:top}}
th{{color:#555;font-weight:normal}}td{{font-family:ui-monospace,monospace;word-break:break-all}}
.headline{{font-size:1.5em;margin:.5em 0}}.fake,.manipulated{{color:#b00}}.real,.no_evidence{{color:#070}}
.inconclusive,.cannot_judge{{color:#a60}}img{{max-width:100%}}
.note{{background:#f6f6f6;padding:.6em .8em;border-left:3px solid #999}}
.persons td{{font-family:system-ui,sans-serif;word-break:normal}}.person-thumbnail{{width:72px;height:72px}}
figure{{margin:.5em 0}}figcaption{{color:#555;font-size:.9em}}</style></head><body>
<h1>hcsi case report</h1>
<p class="headline {e(str(verdict or ''))}" id="headline">{e(headline)}</p>
{why_not}
<table>{rows}</table>
<h2>What this means</h2><p class="note">{e(meaning)}</p><p class="note">{e(MEANING_LIMITS)}</p>
{provenance_section(record)}
{figures}
<p><small>Generated {e(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))} by hcsi
{e(__version__)}.</small></p>
</body></html>
"""
