"""What several commands share: argparse types that apply the Python API's own checks, parent parsers
holding one shared option each, and the checks of checkpoint and operating-point arguments."""
from __future__ import annotations

import argparse
import os

from ..checks import require_at_least, require_in_unit_interval, require_positive
from ..evaluate.datasets import DATASET_NAMES
from ..faces.detect import DEFAULT_FACE_DETECTOR, DEFAULT_GPU_FACE_DETECTOR, FACE_DETECTORS, SBI_GPU_FACE_DETECTOR


def number_type(convert, check, kind: str):
    """An argparse type: `convert` the text, then `check(name, value)` from hcsi.checks, the Python API's own checks
    (argparse then exits with code 2 and names the option)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            check("the value", value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value
    return parse


def at_least(minimum: int):
    """argparse type: a whole number >= minimum."""
    return number_type(int, lambda name, value: require_at_least(name, value, minimum), "a whole number")


fraction = number_type(float, require_in_unit_interval, "a number")

positive_float = number_type(float, require_positive, "a number")


def require_hcsi_checkpoint(path: str, command: str) -> None:
    """Refuse, with the command to use instead, files that are not hcsi checkpoints but look like something a user
    would pass: an exported ONNX file, a published or foreign torch checkpoint; and a path that is no file."""
    if not os.path.isfile(path):
        raise ValueError(f"--checkpoint {path}: no such file" if not os.path.exists(path) else
                         f"--checkpoint {path} is a folder: give the .safetensors file (e.g. {path}/best.safetensors)")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".onnx":
        instead = (f"score it with --backend onnxruntime --model {path}" if command == "detect" else
                   "give the .safetensors checkpoint it was exported from")
        raise ValueError(f"--checkpoint {path} is an exported ONNX model: {instead}")
    if suffix in (".pth", ".pt", ".tar", ".ckpt", ".bin"):
        raise ValueError(f"--checkpoint {path} is not an hcsi checkpoint (.safetensors written by hcsi train or hcsi "
                         f"import-weights); SBI's and DeepfakeBench's files convert with `hcsi import-weights --format "
                         f"sbi|deepfakebench {path} --out model.safetensors`")


def target_fpr(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise ValueError(f"--target-fpr {value!r}: expected comma-separated rates such as 0.01,0.05") from None
    if not 0 < rate < 1:
        raise ValueError(f"--target-fpr {value}: a false-positive rate lies strictly between 0 and 1")
    return rate


def operating_fpr(option: str):
    """argparse type of --strict-fpr / --lenient-fpr: a false-positive rate in (0, 1)."""
    def parse(value: str) -> float:
        try:
            rate = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {value!r}: expected a false-positive rate such as 0.01") \
                from None
        if not 0 < rate < 1:
            raise argparse.ArgumentTypeError(f"{option} {value}: a false-positive rate lies strictly between 0 and 1")
        return rate
    return parse


def decision_option() -> argparse.ArgumentParser:
    """How verdicts are reached (detect, serve, worker): a calibration's tiers, or a raw-score threshold."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--calibration", metavar="FILE",
                         help="calibration file (default: <checkpoint>.calibration.json when it exists; 'none': no "
                              "calibration, verdicts by --threshold)")
    options.add_argument("--strict-fpr", type=operating_fpr("--strict-fpr"),
                         help="the calibration's operating point above which a video is 'manipulated' (default: "
                              "its lowest target FPR, 0.01 by default)")
    options.add_argument("--lenient-fpr", type=operating_fpr("--lenient-fpr"),
                         help="the operating point below which there is 'no_evidence' (default: its highest, 0.1)")
    options.add_argument("--threshold", type=fraction, default=None,
                         help="without a calibration: the raw score at or above which the label is fake (default "
                              "0.5); refused with one, whose operating points decide")
    return options


def option(*names: str, **settings) -> argparse.ArgumentParser:
    """A parent parser (`parents=[...]`) holding one option that several commands share, so that its spelling, type,
    default and help are written once."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(*names, **settings)
    return parent


def checkpoint_option(required: bool) -> argparse.ArgumentParser:
    """`detect` and `serve` do not require it: without one they say how to get one."""
    return option("--checkpoint", required=required,
                   help="hcsi checkpoint (.safetensors, written by hcsi train or hcsi import-weights)")


def frames_option() -> argparse.ArgumentParser:
    return option("--frames", type=at_least(1), default=32, help="evenly spaced frames per video (default 32)")


def backend_option(onnx_file: bool = True) -> argparse.ArgumentParser:
    """--backend; `onnx_file`: the command also scores an exported file given with --model."""
    return option("--backend", default="auto", choices=["auto", "torch", "onnxruntime"],
                  help="what runs the network: auto (default: ONNX Runtime on the CPU, from an export made once per "
                       "checkpoint and cached; PyTorch on a GPU), torch (PyTorch eager), onnxruntime" +
                       (" (with --model FILE.onnx: that file)" if onnx_file else ""))


def trust_anchors_option() -> argparse.ArgumentParser:
    return option("--trust-anchors", metavar="FILE",
                  help="PEM file of CA certificates that Content Credentials (C2PA) signers must chain to for the "
                       "provenance state 'trusted' (default: no trust list, states stop at 'valid'; nothing is "
                       "fetched; docs/protocol.md, Provenance, names the lists that exist)")


def aggregate_option() -> argparse.ArgumentParser:
    return option("--aggregate", default="paper", choices=["paper", "persons"],
                  help="a video's score: 'paper' (default: the highest face score per sampled frame, averaged over "
                       "frames) or 'persons' (the highest person score; a person's: the mean of its face scores)")


def device_option() -> argparse.ArgumentParser:
    return option("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def face_detector_option(*aliases: str, dest: str = "face_detector") -> argparse.ArgumentParser:
    """`aliases`: other spellings (preprocess and evaluate also take `--detector`); `dest`: the attribute that
    preprocess, evaluate and robustness pass on as their options' `detector`."""
    return option("--face-detector", *aliases, dest=dest, default=None, choices=sorted(FACE_DETECTORS),
                   help=f"face detector backend (docs/protocol.md, Faces); default {DEFAULT_FACE_DETECTOR} on the "
                        f"CPU and for preprocess; on a CUDA device {SBI_GPU_FACE_DETECTOR} when SBI's RetinaFace "
                        f"weights are installed (hcsi fetch-models --retinaface FILE), else "
                        f"{DEFAULT_GPU_FACE_DETECTOR}")


def compression_option() -> argparse.ArgumentParser:
    return option("--compression", default="raw", choices=["raw", "c23", "c40"], help="FF++ / DFD quality folder")


def seed_option() -> argparse.ArgumentParser:
    return option("--seed", type=int, default=0, help="seed of the randomness (default 0)")


def threshold_option() -> argparse.ArgumentParser:
    return option("--threshold", type=fraction, default=0.5,
                   help="score at or above which the verdict is fake (default 0.5)")


def face_input_option() -> argparse.ArgumentParser:
    return option("--input", required=True, help="image or video with a face")


def image_out_option() -> argparse.ArgumentParser:
    return option("--out", required=True, help="output image (.png)")


def benchmark_options(required: bool = True) -> argparse.ArgumentParser:
    """What `evaluate`, `calibrate` and `robustness` share: the test set and how its videos are scored."""
    parent = argparse.ArgumentParser(add_help=False, parents=[frames_option(), device_option(),
                                                              compression_option()])
    parent.add_argument("--dataset", required=required, choices=DATASET_NAMES)
    parent.add_argument("--root", required=required,
                        help="dataset root (folder: real/ + fake/ folders or a path,label CSV)")
    parent.add_argument("--batch-size", type=at_least(1),
                        help="face crops per forward pass (default 16 on the CPU, where larger batches are slower "
                             "per crop, 64 on a GPU)")
    parent.add_argument("--workers", type=at_least(0), default=2,
                        help="processes that decode frames and detect faces (and perturb them, in robustness); 0: none")
    parent.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    return parent
