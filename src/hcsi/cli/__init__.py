"""The `hcsi` command line. Thin: it parses arguments, calls the library and prints. One module per group of
commands, each with its `add_commands`; what several commands share is in `options`."""
from __future__ import annotations

import argparse
import difflib
import sys
import warnings

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


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like parse_args, but an unknown option is reported by its sub-command (its usage, not hcsi's) with the
    closest option it has."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
        options = [o for action in command._actions for o in action.option_strings]
        hints = []
        for word in unknown:
            close = difflib.get_close_matches(word.split("=")[0], options, n=1, cutoff=0.6)
            hints.append(f"{word} (did you mean {close[0]}?)" if close and word.startswith("-") else word)
        command.error(f"unrecognized arguments: {' '.join(hints)}")
    return args


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"hcsi: warning: {message}\n"  # the message, not the Python source line that raised it


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _warning_line
    args = parse_arguments(build_parser(), argv)
    try:
        return args.run(args)
    except (ValueError, RuntimeError, KeyError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error  # str(KeyError) adds quotes
        print(f"hcsi {args.command}: error: {message}", file=sys.stderr)
        return 2
