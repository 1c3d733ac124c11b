"""Cost of a model variant: parameters, MACs, latency and peak memory, beside the figures the paper reports."""
from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .checks import require_at_least
from .models import HCSINet, build_model

# Section IV, "Computational Complexity": 224×224 input, one NVIDIA A100-SXM4-80GB.
PAPER_FIGURES = {
    "params_total": 110.9e6,
    "macs": 17.3e9,
    "latency_ms_bs1_fp32": 34.7,
    "peak_memory_mb": 0.6 * 1024,
    "device": "NVIDIA A100-SXM4-80GB",
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def count_macs(model: HCSINet, input_size: int) -> dict[str, int]:
    """Multiply-accumulates of one forward pass on one image.

    `macs_full` counts everything, the cross-attention products of BSCG included (SDPA is counted through its math
    backend, which is what it computes). `macs_counter_visible` leaves those products out, as common counters
    (fvcore, older FlopCounterMode) do, which is how the paper's 17.3 G is counted.
    """
    device = next(model.parameters()).device
    x = torch.zeros(1, 3, input_size, input_size, device=device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    with torch.no_grad(), counter, sdpa_kernel(SDPBackend.MATH):
        model(x)
    model.train(was_training)
    full = counter.get_total_flops() // 2
    attention = sum(
        sum(ops.values()) for name, ops in counter.get_flop_counts().items() if name.endswith(".cross_gating")
    ) // 2
    return {"macs_full": int(full), "macs_counter_visible": int(full - attention), "macs_cross_attention": int(attention)}


def resident_memory_mb(field: str) -> float | None:
    """VmRSS or VmHWM (peak) of this process from /proc, in MiB; None where /proc is unavailable."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def reset_peak_resident_memory() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def measure_latency(model, x: torch.Tensor, warmup: int, iters: int, dtype: torch.dtype | None) -> list[float]:
    """Milliseconds of each timed forward pass after `warmup` untimed ones (inference mode, autocast for bf16/fp16)."""
    device = x.device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for i in range(warmup + iters):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return times


def profile_model(
    name: str = "hcsi_net", input_size: int | None = None, batch: int = 1, device: str = "cpu", dtype: str = "fp32",
    warmup: int = 3, iters: int = 10, compile: bool = False,
) -> dict:
    """Parameters, MACs, median latency and peak memory of one variant, as one JSON-ready dict. `input_size` None:
    the variant's own (224 for HCSI-Net, 380 for SBI's B4).

    Peak memory: on CUDA, `torch.cuda.max_memory_allocated` during the timed passes (weights + activations, what the
    paper reports); on CPU, the growth of the process's peak resident memory from before the model was built.
    """
    require_at_least("batch", batch, 1)
    require_at_least("warmup", warmup, 0)
    require_at_least("iters", iters, 1)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device here")
    rss_before = resident_memory_mb("VmRSS")
    model = build_model(name, **({"input_size": input_size} if input_size else {})).to(dev).eval()
    input_size = model.config.input_size
    counts = model.parameter_counts()
    params_total = sum(counts.values())
    unused_heads = sum(s.imagenet_head_params for s in model.streams())
    macs = count_macs(model, input_size)

    runner = torch.compile(model) if compile else model
    x = torch.randn(batch, 3, input_size, input_size, device=dev)
    if dev.type == "cuda":
        measure_latency(runner, x, warmup, 0, DTYPES[dtype])
        torch.cuda.reset_peak_memory_stats(dev)
        times = measure_latency(runner, x, 0, iters, DTYPES[dtype])
        peak_mb, peak_kind = torch.cuda.max_memory_allocated(dev) / 2**20, "cuda_max_allocated"
    else:
        measure_latency(runner, x, warmup, 0, DTYPES[dtype])
        can_reset = reset_peak_resident_memory()
        times = measure_latency(runner, x, 0, iters, DTYPES[dtype])
        peak = resident_memory_mb("VmHWM")
        if can_reset and peak is not None and rss_before is not None:
            peak_mb, peak_kind = peak - rss_before, "cpu_peak_rss_growth"
        else:
            peak_mb, peak_kind = None, "unavailable (needs Linux /proc/self/clear_refs)"
    latency = statistics.median(times)
    return {
        "model": name,
        "input_size": input_size,
        "batch": batch,
        "device": device_name(dev),
        "dtype": dtype,
        "compiled": compile,
        "params_total": params_total,
        "params_paper_equivalent": params_total + unused_heads,
        "params_unused_imagenet_heads": unused_heads,
        "params_by_component": counts,
        **macs,
        "latency_ms": round(latency, 3),
        "latency_ms_min": round(min(times), 3),
        "throughput_img_s": round(batch * 1000 / latency, 2),
        "timed_iters": iters,
        "peak_memory_mb": None if peak_mb is None else round(peak_mb, 1),
        "peak_memory_kind": peak_kind,
        "torch": torch.__version__,
        "paper": PAPER_FIGURES,
    }


def format_profile(report: dict) -> str:
    """A two-column table of a `profile_model` report, with the paper's figures beside ours."""
    paper = report["paper"]
    parts = report["params_by_component"]

    def millions(n):
        return f"{n / 1e6:.2f} M"

    def giga(n):
        return f"{n / 1e9:.2f} G"

    peak = report["peak_memory_mb"]
    rows = [
        ("model", report["model"], ""),
        ("input", f"{report['batch']}×3×{report['input_size']}×{report['input_size']} {report['dtype']}"
         + (" (torch.compile)" if report["compiled"] else ""), ""),
        ("device", report["device"], paper["device"]),
        ("params total", millions(report["params_total"]), ""),
        ("  cnn / vit", f"{millions(parts['cnn'])} / {millions(parts['vit'])}", ""),
        ("  interaction / head", f"{millions(parts['interaction'])} / {millions(parts['head'])}", ""),
        ("params as the paper counts (+ unused ImageNet heads)", millions(report["params_paper_equivalent"]),
         millions(paper["params_total"])),
        ("MACs, attention products included", giga(report["macs_full"]), ""),
        ("MACs as common counters see them", giga(report["macs_counter_visible"]), giga(paper["macs"])),
        ("latency, median", f"{report['latency_ms']:.1f} ms", f"{paper['latency_ms_bs1_fp32']} ms (bs1 fp32)"),
        ("throughput", f"{report['throughput_img_s']:.1f} img/s", ""),
        (f"peak memory [{report['peak_memory_kind']}]", "n/a" if peak is None else f"{peak:.0f} MiB",
         f"{paper['peak_memory_mb']:.0f} MiB"),
    ]
    width = max(len(r[0]) for r in rows)
    ours = max(len(r[1]) for r in rows)
    lines = [f"{'':{width}}  {'ours':{ours}}  paper (HCSI-Net)", "-" * (width + ours + 24)]
    lines += [f"{a:{width}}  {b:{ours}}  {c}" for a, b, c in rows]
    return "\n".join(lines)
