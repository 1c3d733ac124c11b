"""The `hcsi` command line. Thin: it parses arguments, calls the library and prints. One module per group of
commands, each with its `add_commands`; what several commands share is in `options`."""
from __future__ import annotations

import argparse
import sys

from ..demo import add_demo_arguments, run_demo
from . import deployment, evaluation, profile, reports, service, training, weights


def _demo(args: argparse.Namespace) -> int:
    run_demo(args.out, args.data, args.seed, args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hcsi", description="HCSI-Net face-deepfake detection toolkit")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (profile, training, evaluation, reports, deployment, service, weights):
        group.add_commands(commands)
    demo = commands.add_parser("demo", help="the whole pipeline on built-in data, on a CPU, in minutes")
    add_demo_arguments(demo)  # the same options as `python -m hcsi.demo` (make demo)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, RuntimeError, KeyError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error  # str(KeyError) adds quotes
        print(f"hcsi {args.command}: error: {message}", file=sys.stderr)
        return 2
