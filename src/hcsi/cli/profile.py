"""`hcsi profile`: parameters, MACs, latency and peak memory of a model variant."""
from __future__ import annotations

import argparse
import json

from .options import at_least


def _profile(args: argparse.Namespace) -> int:
    from ..profiling import format_profile, profile_model

    report = profile_model(name=args.model, input_size=args.input_size, batch=args.batch, device=args.device,
                           dtype=args.dtype, warmup=args.warmup, iters=args.iters, compile=args.compile)
    print(json.dumps(report) if args.json else format_profile(report))
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    profile = commands.add_parser("profile", help="parameters, MACs, latency and peak memory of a model variant")
    # no argparse choices: listing the registry would import timm and slow every command's start by seconds
    profile.add_argument("--model", default="hcsi_net", help="registered model name (an unknown name lists them)")
    profile.add_argument("--input-size", type=at_least(32),
                         help="face-crop side in pixels (default: the model's own, 224 for HCSI-Net)")
    profile.add_argument("--batch", type=at_least(1), default=1)
    # not device_option(): a profile measures the device it is given, so there is no "auto"
    profile.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    profile.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                         help="bf16/fp16 run under autocast")
    profile.add_argument("--warmup", type=at_least(0), default=3, help="untimed passes before timing")
    profile.add_argument("--iters", type=at_least(1), default=10, help="timed passes (the median is reported)")
    profile.add_argument("--compile", action="store_true", help="time torch.compile(model)")
    profile.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    profile.set_defaults(run=_profile)
