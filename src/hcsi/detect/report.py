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


def frame_plot_png(indices: list[int], scores: list[float], decided: dict | None = None) -> bytes | None:
    """The per-frame score plot as PNG bytes (None without scored frames), with the line(s) that decided the
    verdict (`decided`: DetectionResult's `decided_by`)."""
    if not scores:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.plot(indices, scores, marker="o", ms=3, lw=1.2, color="#c33", label="score per sampled frame")
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
    ax.set(ylim=(0, 1), xlabel="frame index", ylabel="score", title="highest face score in each sampled frame")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


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
    plot = frame_plot_png(record.get("frame_indices", []), scores, decided) if len(scores) > 1 else None  # a still
    figures = ""
    if plot:
        figures += f'<h2>Score per sampled frame</h2><img alt="per-frame scores" src="{_png_data_url(plot)}">'
    if heatmap_png:
        figures += ('<h2>Faces and where the model looked</h2><p>Each row: a face crop, the gates of both streams '
                    'at each of the five stages (the model\'s own spatial weighting), and the CNN stream\'s '
                    f'Grad-CAM.</p><img alt="face crops and gate heatmaps" src="{_png_data_url(heatmap_png)}">')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hcsi case report: {e(str(about.get('file_name')))}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse}}th,td{{text-align:left;padding:.2em .8em .2em 0;vertical-align:top}}
th{{color:#555;font-weight:normal}}td{{font-family:ui-monospace,monospace;word-break:break-all}}
.headline{{font-size:1.5em;margin:.5em 0}}.fake,.manipulated{{color:#b00}}.real,.no_evidence{{color:#070}}
.inconclusive,.cannot_judge{{color:#a60}}img{{max-width:100%}}
.note{{background:#f6f6f6;padding:.6em .8em;border-left:3px solid #999}}</style></head><body>
<h1>hcsi case report</h1>
<p class="headline {e(str(verdict or ''))}" id="headline">{e(headline)}</p>
{why_not}
<table>{rows}</table>
<h2>What this means</h2><p class="note">{e(meaning)}</p><p class="note">{e(MEANING_LIMITS)}</p>
{figures}
<p><small>Generated {e(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))} by hcsi
{e(__version__)}.</small></p>
</body></html>
"""
