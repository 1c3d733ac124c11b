"""MediaPipe's short-range BlazeFace in PyTorch, batched over frames and tiles, on any device.

`BlazeFaceNet` rebuilds the network of the .tflite file as a torch module: the operator list and the float16
weights are read through LiteRT's interpreter once, at load time (no other file, no download), and each operator
is run by its torch counterpart with TensorFlow's "same" padding worked out from the tensor shapes in the file.
`BatchedBlazeFace` searches many frames at once over the same tile pyramid as `hcsi.faces.blazeface.BlazeFace` (the
LiteRT path, which stays the reference): every tile of every frame is shrunk to 128×128 with OpenCV's area rule
written as two matrix products, the network scores all tiles in batches, and anchor decoding and non-maximum
suppression run on the whole batch.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blazeface import (
    BlazeFaceModel,
    ModelUnavailable,
    _stderr_silenced,
    blazeface_anchors,
    blazeface_model,
    blazeface_model_path,
    output_indices,
    tile_origins,
)

SUPPORTED_OPS = {"DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "RELU", "ADD", "PAD", "MAX_POOL_2D", "RESHAPE",
                 "CONCATENATION", "RESIZE_BILINEAR"}


def _same_padding(size_in: int, size_out: int, kernel: int) -> tuple[int, int, int]:
    """(stride, pad before, pad after) of a TensorFlow "same" window that maps size_in to size_out."""
    stride = max(1, size_in // size_out)
    if math.ceil(size_in / stride) != size_out:
        raise ModelUnavailable(f"a {kernel}-wide window maps {size_in} to {size_out}: not TensorFlow 'same' padding")
    total = max((size_out - 1) * stride + kernel - size_in, 0)
    return stride, total // 2, total - total // 2


class BlazeFaceNet(nn.Module):
    """A BlazeFace network of a .tflite file as a torch module (short range: 128 px, 896 anchors; full range:
    192 px, 2,304 anchors).

    forward: (B, 3, S, S) float in [-1, 1] → (regressors B×anchors×16, logits B×anchors), the file's two outputs.
    The full-range model's two 2× upsamplings (RESIZE_BILINEAR) run as bilinear with half-pixel centres, which
    matches LiteRT's output to 1e-6.
    """

    def __init__(self, model_path: str | Path | None = None, model: BlazeFaceModel | None = None) -> None:
        super().__init__()
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
        except ImportError as error:
            raise ModelUnavailable("reading BlazeFace's .tflite file needs the `ai-edge-litert` package") from error
        self.model = model or blazeface_model("short-range")
        self.model_path = blazeface_model_path(model_path, model=self.model)
        with _stderr_silenced():
            interpreter = Interpreter(model_path=str(self.model_path),
                                      experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            interpreter.allocate_tensors()
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        shape = {i: tuple(int(s) for s in t["shape"]) for i, t in tensors.items()}
        (model_input,) = interpreter.get_input_details()
        side = self.model.input_size
        if shape[model_input["index"]] != (1, side, side, 3):
            raise ModelUnavailable(f"{self.model_path}: not the {self.model.name} model "
                                   f"(input {shape[model_input['index']]})")
        self._input = model_input["index"]
        self._regressors, self._logits = output_indices(interpreter.get_output_details())
        constants: dict[int, np.ndarray] = {}
        self._steps: list[tuple] = []
        for op in interpreter._get_ops_details():
            kind, inputs, (output, *_) = op["op_name"], [i for i in op["inputs"] if i >= 0], op["outputs"]
            if kind not in SUPPORTED_OPS:
                raise ModelUnavailable(f"{self.model_path}: operator {kind} has no torch counterpart here")
            if kind == "DEQUANTIZE":  # float16 weights stored in the file, widened to float32 (exact)
                constants[output] = interpreter.get_tensor(inputs[0]).astype(np.float32)
            elif kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                source, kernel, bias = inputs
                weight = torch.from_numpy(constants[kernel])
                # tflite: conv (out, kh, kw, in), depthwise (1, kh, kw, channels); torch: (out, in/groups, kh, kw)
                weight = weight.permute(0, 3, 1, 2) if kind == "CONV_2D" else weight.permute(3, 0, 1, 2)
                n = len(self._steps)
                self.register_buffer(f"weight{n}", weight.contiguous())
                self.register_buffer(f"bias{n}", torch.from_numpy(constants[bias]))
                stride_y, top, bottom = _same_padding(shape[source][1], shape[output][1], weight.shape[2])
                stride_x, left, right = _same_padding(shape[source][2], shape[output][2], weight.shape[3])
                groups = weight.shape[0] if kind == "DEPTHWISE_CONV_2D" else 1
                self._steps.append(("conv", source, output, (n, (stride_y, stride_x), (left, right, top, bottom),
                                                            groups)))
            elif kind == "PAD":  # NHWC paddings → torch's last-dimension-first order on NCHW
                (_, _), (top, bottom), (left, right), (front, back) = interpreter.get_tensor(inputs[1]).tolist()
                self._steps.append(("pad", inputs[0], output, (left, right, top, bottom, front, back)))
            elif kind == "MAX_POOL_2D":
                self._steps.append(("max_pool", inputs[0], output, shape[inputs[0]][1] // shape[output][1]))
            elif kind == "RESHAPE":  # NHWC order, as the file lays the anchors out
                self._steps.append(("reshape", inputs[0], output, shape[output][-1]))
            elif kind == "RESIZE_BILINEAR":
                self._steps.append(("resize", inputs[0], output, tuple(shape[output][1:3])))
            elif kind == "CONCATENATION":
                axis = next(a for a in range(len(shape[output]))
                            if shape[output][a] == sum(shape[i][a] for i in inputs))
                self._steps.append(("concat", tuple(inputs), output, axis))
            else:  # RELU, ADD
                self._steps.append((kind.lower(), tuple(inputs) if kind == "ADD" else inputs[0], output, None))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = {self._input: x}
        for kind, source, output, params in self._steps:
            if kind == "conv":
                n, stride, padding, groups = params
                values[output] = F.conv2d(F.pad(values[source], padding), getattr(self, f"weight{n}"),
                                          getattr(self, f"bias{n}"), stride=stride, groups=groups)
            elif kind == "relu":
                values[output] = F.relu(values[source])
            elif kind == "add":
                values[output] = values[source[0]] + values[source[1]]
            elif kind == "pad":
                values[output] = F.pad(values[source], params)
            elif kind == "max_pool":
                values[output] = F.max_pool2d(values[source], params, params)
            elif kind == "reshape":
                values[output] = values[source].permute(0, 2, 3, 1).reshape(len(x), -1, params)
            elif kind == "resize":
                values[output] = F.interpolate(values[source], size=params, mode="bilinear", align_corners=False)
            elif kind == "concat":
                values[output] = torch.cat([values[i] for i in source], dim=params)
        return values[self._regressors], values[self._logits][..., 0]


def area_resize_matrix(origins: list[int], tile: int, length: int, size: int) -> np.ndarray:
    """Rows that shrink each tile [o, o + tile) of a line of `length` pixels to `size` pixels by area averaging
    (OpenCV's INTER_AREA when shrinking): output pixel i is the mean of source interval [i·s, (i+1)·s), s = tile /
    size, pixels cut by an interval's ends weighted by the part inside. Pixels at or beyond `length` (the zero
    padding of a tile that overhangs the image) are left out, as they add nothing."""
    scale = tile / size
    edges = np.arange(size + 1) * scale
    start, end = edges[:-1, None], edges[1:, None]
    pixels = np.arange(tile)[None, :]
    weights = np.clip(np.minimum(end, pixels + 1) - np.maximum(start, pixels), 0, None) / scale
    matrix = np.zeros((len(origins) * size, length), np.float32)
    for k, origin in enumerate(origins):
        inside = min(tile, length - origin)
        matrix[k * size:(k + 1) * size, origin:origin + inside] = weights[:, :inside]
    return matrix


class BatchedBlazeFace:
    """BlazeFace's tile-pyramid search (`hcsi.faces.blazeface.BlazeFace`) over many frames in one call, in torch.

    Args:
        model_path: the .tflite file (default: `blazeface_model_path(model=...)`).
        device: where the network, the tile resizing, decoding and suppression run.
        min_score, min_tile, overlap, nms_iou, model: as `BlazeFace`.
        tiles_per_batch: tiles (128 px; full range 192 px) the network scores per forward pass.
        pixels_per_call: frames are resized in groups of at most this many pixels (bounds memory).
    """

    def __init__(self, model_path: str | Path | None = None, device: str | torch.device = "cpu",
                 min_score: float = 0.75, min_tile: int = 256, overlap: float = 0.25, nms_iou: float = 0.3,
                 tiles_per_batch: int = 512, pixels_per_call: int = 32 * 1920 * 1080,
                 model: str = "short-range") -> None:
        self.device = torch.device(device)
        self.model = blazeface_model(model)
        self.side = self.model.input_size
        self.net = BlazeFaceNet(model_path, self.model).to(self.device).eval()
        self.model_path = self.net.model_path
        self.anchors = torch.from_numpy(blazeface_anchors(self.model)).to(self.device)
        self.min_score, self.min_tile, self.overlap, self.nms_iou = min_score, min_tile, overlap, nms_iou
        self.tiles_per_batch, self.pixels_per_call = tiles_per_batch, pixels_per_call
        self._matrices: dict[tuple, tuple[torch.Tensor, torch.Tensor, list[int], list[int]]] = {}

    def _levels(self, height: int, width: int):
        """(tile side, y origins, x origins, row matrix, column matrix) of each pyramid level, cached per size."""
        levels = []
        tile = max(height, width)
        while True:
            key = (height, width, tile)
            if key not in self._matrices:
                stride = max(1, round(tile * (1 - self.overlap)))
                ys, xs = tile_origins(height, tile, stride), tile_origins(width, tile, stride)
                rows = area_resize_matrix(ys, tile, height, self.side)
                columns = area_resize_matrix(xs, tile, width, self.side)
                self._matrices[key] = (torch.from_numpy(rows).to(self.device),
                                       torch.from_numpy(columns).to(self.device), ys, xs)
            levels.append((tile, *self._matrices[key]))
            if tile // 2 < self.min_tile:
                return levels
            tile //= 2

    @torch.no_grad()
    def _tiles(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every pyramid tile of N same-size frames (N×H×W×3 uint8) as network inputs (S×S, S the model's side),
        and each tile's (frame, side, x, y)."""
        n, height, width = frames.shape[:3]
        images = frames.permute(0, 3, 1, 2).float()
        tiles, where = [], []
        for tile, rows, columns, ys, xs in self._levels(height, width):
            shrunk = rows @ images @ columns.T  # N×3×(ny·S)×(nx·S)
            shrunk = torch.floor(shrunk + 0.5).clamp_(0, 255)  # stored as uint8, as OpenCV's resize does
            shrunk = shrunk.reshape(n, 3, len(ys), self.side, len(xs), self.side).permute(0, 2, 4, 1, 3, 5)
            tiles.append(shrunk.reshape(-1, 3, self.side, self.side))
            grid = torch.tensor([(tile, x, y) for y in ys for x in xs], dtype=torch.float32, device=self.device)
            frame_ids = torch.arange(n, device=self.device).repeat_interleave(len(grid))[:, None].float()
            where.append(torch.cat([frame_ids, grid.repeat(n, 1)], dim=1))
        return torch.cat(tiles) / 127.5 - 1.0, torch.cat(where)

    @torch.no_grad()
    def detect_many(self, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each RGB uint8 frame: boxes (N×4, x0 y0 x1 y1 in its pixels, clipped) and scores (N), best first."""
        from torchvision.ops import batched_nms

        results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(frames)
        by_size: dict[tuple[int, int], list[int]] = {}
        for k, frame in enumerate(frames):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"expected RGB uint8 H×W×3 frames, got {frame.dtype} {frame.shape}")
            by_size.setdefault(frame.shape[:2], []).append(k)
        for (height, width), members in by_size.items():
            per_call = max(1, self.pixels_per_call // (height * width))
            for start in range(0, len(members), per_call):
                group = members[start:start + per_call]
                stack = torch.from_numpy(np.stack([frames[k] for k in group])).to(self.device)
                inputs, where = self._tiles(stack)
                boxes, scores, owners = [], [], []
                for first in range(0, len(inputs), self.tiles_per_batch):
                    regressors, logits = self.net(inputs[first:first + self.tiles_per_batch])
                    score = torch.sigmoid(logits.clamp(-100, 100))
                    tile_k, anchor_k = torch.nonzero(score > self.min_score, as_tuple=True)
                    raw = regressors[tile_k, anchor_k, :4] / self.side
                    centre = self.anchors[anchor_k] + raw[:, :2]
                    box = torch.cat([centre - raw[:, 2:] / 2, centre + raw[:, 2:] / 2], dim=1)
                    tile_where = where[first + tile_k]
                    side, x, y = tile_where[:, 1:2], tile_where[:, 2:3], tile_where[:, 3:4]
                    boxes.append(box * side + torch.cat([x, y, x, y], dim=1))
                    scores.append(score[tile_k, anchor_k])
                    owners.append(tile_where[:, 0].long())
                boxes, scores, owners = torch.cat(boxes), torch.cat(scores), torch.cat(owners)
                limit = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=self.device)
                boxes = torch.minimum(boxes.clamp(min=0), limit)
                keep = batched_nms(boxes, scores, owners, self.nms_iou)  # by decreasing score
                boxes, scores, owners = boxes[keep].cpu().numpy(), scores[keep].cpu().numpy(), owners[keep].cpu()
                for position, k in enumerate(group):
                    mine = (owners == position).numpy()
                    results[k] = (boxes[mine].reshape(-1, 4), scores[mine])
        return results

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame: as `BlazeFace.detect`."""
        return self.detect_many([image])[0]
