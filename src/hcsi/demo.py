"""`make demo`: the cost of HCSI-Net and its CPU-sized sibling, then the face of a real photo detected, cropped as
at test time and passed through HCSI-Net, and SBI training pairs made from it.

No trained HCSI-Net weights exist yet (training lands with a later issue), so the forward pass uses randomly
initialised weights: it shows the shapes and the per-stage gates, and its score is NOT a detection result.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data

from .faces import create_face_detector, face_crop_box, keep_large_faces
from .models import HCSINetConfig, build_model
from .normalization import image_to_tensor
from .sbi.preview import preview_grid
from .profiling import format_profile, profile_model


def image_to_input(image: np.ndarray, config: HCSINetConfig) -> torch.Tensor:
    """H×W×3 uint8 RGB -> 1×3×S×S tensor, resized (antialiased) and normalised as the backbones expect."""
    resized = cv2.resize(image, (config.input_size, config.input_size), interpolation=cv2.INTER_AREA)
    return image_to_tensor(resized, config.mean, config.std).unsqueeze(0)


def main() -> None:
    for name in ("hcsi_net_small", "hcsi_net"):
        print(f"\n== hcsi profile --model {name} (CPU, batch 1, fp32) ==")
        print(format_profile(profile_model(name, warmup=2, iters=5)))

    photo = data.astronaut()  # 512×512 NASA portrait, public domain
    detector = create_face_detector()
    faces = keep_large_faces(detector.detect(photo))
    print(f"\n== faces: {len(faces)} found in skimage.data.astronaut() by the '{detector.name}' detector ==")
    torch.manual_seed(0)
    model = build_model("hcsi_net").eval()
    crops = []
    for face in faces:
        x0, y0, x1, y1 = face_crop_box(face.box, photo.shape[1], photo.shape[0])  # test-time 12.5 % margins
        crops.append(image_to_input(photo[y0:y1, x0:x1], model.config))
        print(f"face box {np.round(face.box).astype(int).tolist()}, crop {[int(v) for v in (x0, y0, x1, y1)]}")
    x = torch.cat(crops)
    with torch.no_grad():
        logits, gates = model(x, return_gates=True)
    p_fake = torch.softmax(logits, dim=1)[:, 1].max().item()  # max over faces, as the video protocol does per frame
    print("\n== forward pass on the face crop (224×224), model hcsi_net ==")
    print("weights: random initialisation (no trained checkpoint yet) -> the score below is not a detection result")
    print(f"logits {logits[0].tolist()}  softmax P(fake) = {p_fake:.3f}")
    print("stage  grid   CNN gate mean [min, max]    ViT gate mean [min, max]")
    for k, (g_c, g_t) in enumerate(zip(gates.cnn, gates.vit), start=1):
        grid = f"{g_c.shape[-2]}×{g_c.shape[-1]}"
        print(f"{k:>5}  {grid:5}  {g_c.mean():.3f} [{g_c.min():.3f}, {g_c.max():.3f}]"
              f"        {g_t.mean():.3f} [{g_t.min():.3f}, {g_t.max():.3f}]")

    out = Path("outputs") / "demo_sbi_preview.png"
    out.parent.mkdir(exist_ok=True)
    grid = preview_grid(str(Path(data.__file__).parent / "astronaut.png"), n=4, detector=detector)
    cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"\n== SBI training pairs made from this face: {out} (each: real | blend mask | fake) ==")


if __name__ == "__main__":
    main()
