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
    "this input and those videos. The verdict is taken at an operating point that called {fpr:.1%} of the "
    "calibration's real videos fake and found {tpr:.1%} of its fakes.")
MEANING_UNCALIBRATED = (
    "No calibration was applied: the score is the model's raw output (mean over the sampled frames of the highest "
    "face score in each), which ranks inputs but is not a probability, and its scale differs from one kind of "
    "video to another. The verdict compares it with the raw threshold {threshold}.")
MEANING_LIMITS = (
    "What the result does not say: the detector was trained on self-blended face swaps (SBI) and tested on "
    "academic benchmarks; it looks only at the faces it found in the sampled frames, not at the voice, the "
    "background or the context, and a high score is a reason for a closer look, not proof. A low score does not "
    "show that the video is authentic: manipulations unlike the training data, heavy compression or small faces "
    "can escape it.")


def video_duration(path: str | Path) -> float | None:
    """A video's duration in seconds from its container (None for still images and unreadable files)."""
    try:
        with av.open(str(path)) as container:
            if container.streams.video and container.duration:
                return container.duration / 1_000_000
    except av.error.FFmpegError:
        pass
    return None


def media_facts(path: str | Path) -> dict:
    """SHA-256, size and (for videos) duration in seconds of a file."""
    return {"sha256": file_sha256(path), "size": Path(path).stat().st_size, "duration_s": video_duration(path)}


def _png_data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def frame_plot_png(indices: list[int], scores: list[float]) -> bytes | None:
    """The per-frame score plot as PNG bytes (None without scored frames)."""
    if not scores:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.4))
    ax.plot(indices, scores, marker="o", ms=3, lw=1.2, color="#c33")
    ax.set(ylim=(0, 1), xlabel="frame index", ylabel="p(fake)", title="highest face score in each sampled frame")
    ax.axhline(0.5, color="0.7", lw=0.8, ls="--")
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
    point = record.get("operating_point") or {}
    verdict = record.get("verdict") if calibrated else record.get("label")
    settings = about.get("settings", {})
    if record.get("score") is None:
        headline = f"No verdict: {record.get('status')} ({record.get('reason') or 'no reason given'})"
    elif calibrated:
        headline = (f"{(verdict or '').upper()} — probability {record['probability']:.3f} "
                    f"(raw score {record['score']:.3f})")
    else:
        headline = f"{(verdict or '').upper()} — raw score {record['score']:.3f} (uncalibrated)"
    meaning = (MEANING_CALIBRATED.format(fitted=e(str(record.get("calibration"))), fpr=point.get("fpr", 0),
                                         tpr=point.get("tpr", 0)) if calibrated else
               MEANING_UNCALIBRATED.format(threshold=settings.get("threshold", 0.5)))
    size = about.get("size")
    duration = about.get("duration_s")
    facts = [("input", about.get("file_name")), ("SHA-256", about.get("sha256")),
             ("size", f"{size:,} bytes" if isinstance(size, int) else None),
             ("duration", f"{duration:.2f} s" if duration else "still image or unknown"),
             ("analysed at", about.get("analysed_at")), ("model", about.get("model")),
             ("checkpoint SHA-256", about.get("checkpoint_sha256")),
             ("hcsi", f"{__version__} (commit {about.get('commit') or 'unknown'})"),
             ("calibration", record.get("calibration")),
             *[(f"setting: {k}", v) for k, v in settings.items()],
             ("status", record.get("status")), ("frames with a face", record.get("frames_used")),
             ("faces scored", record.get("faces_found"))]
    rows = "\n".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in facts if v is not None)
    plot = frame_plot_png(record.get("frame_indices", []), record.get("frame_scores", []))
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
.headline{{font-size:1.5em;margin:.5em 0}}.fake{{color:#b00}}.real{{color:#070}}img{{max-width:100%}}
.note{{background:#f6f6f6;padding:.6em .8em;border-left:3px solid #999}}</style></head><body>
<h1>hcsi case report</h1>
<p class="headline {e(str(verdict or ''))}" id="headline">{e(headline)}</p>
<table>{rows}</table>
<h2>What this means</h2><p class="note">{e(meaning)}</p><p class="note">{e(MEANING_LIMITS)}</p>
{figures}
<p><small>Generated {e(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))} by hcsi
{e(__version__)}.</small></p>
</body></html>
"""
