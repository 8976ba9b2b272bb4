"""Second-stage box refinement for the class-agnostic detector: each of the top candidates is cropped from the
input image at its box, and a small CNN regresses the box's four edges from the crop.

Why: the detector *finds* the objects but its edges are loose (docs/models.md: on sim-val the best of the top
100 candidates covers 97% of the objects at IoU 0.3 and 90% at 0.5, mean best IoU 0.75, yet AR@100 is 0.42):
one location of a shallow FCOS head regresses four distances from a feature that sees the object's edges only
coarsely. A crop aligned with the box sees its edges at a fixed resolution whatever the object's size, as the
second stage of a two-stage detector (Fast R-CNN) does; applying the same regressor again on its own output is
iterative box regression (Gidaris & Komodakis 2015; Cascade R-CNN shares the idea with separate stages).

Everything stays in the detector's one graph (top-k, ``grid_sample``, the regressor), so the runtime's detect
stage, bundle contract and parity checks do not change: the graph returns ``top`` refined boxes with their
detector scores instead of every location's box. The scores are not touched (the threshold keeps its meaning);
only edges move, duplicates of one object converge, and NMS then keeps one of them.

Must not: be imported by the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

EXPAND = 1.5
"""A crop spans the box enlarged 1.5x about its centre: a candidate at IoU 0.3 with its object still shows the
object's edges inside the crop, and the crop's border shows what lies around the box."""

MAX_STEP = 1.0
"""Largest edge move per iteration, in box widths/heights (keeps an untrained or confused regressor bounded)."""


@dataclass(frozen=True, slots=True)
class RefinerShape:
    """The refiner's size: ``top`` candidates refined per image, ``crop`` pixels per side, ``iterations`` passes of
    the same regressor (the first on the detector's boxes, the next on its own output)."""

    top: int = 100
    crop: int = 40
    iterations: int = 2

    def __post_init__(self) -> None:
        if self.top < 1 or self.iterations < 1:
            raise ValueError(f"top and iterations must be >= 1, got {self.top} and {self.iterations}")
        if self.crop < 16 or self.crop % 8:
            raise ValueError(f"crop must be a multiple of 8 and >= 16, got {self.crop}")


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def crop_boxes(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear ``size`` x ``size`` crops of ``x`` (N, C, H, W) at ``boxes`` (N, K, 4, xyxy input pixels) enlarged
    by :data:`EXPAND`, as (N * K, C, size, size); outside the image the border pixel repeats (air, in a
    letterboxed item).

    One ``grid_sample`` for the whole batch: the K grids are stacked along the height, so the graph has no loop.
    """
    n, c, h, w = x.shape
    k = boxes.shape[1]
    centre_x = (boxes[..., 0] + boxes[..., 2]) / 2
    centre_y = (boxes[..., 1] + boxes[..., 3]) / 2
    span_w = (boxes[..., 2] - boxes[..., 0]).clamp(min=1.0) * EXPAND
    span_h = (boxes[..., 3] - boxes[..., 1]).clamp(min=1.0) * EXPAND
    steps = (torch.arange(size, dtype=x.dtype) + 0.5) / size - 0.5  # (S,) in box units
    gx = (centre_x[..., None] + steps * span_w[..., None]) * (2.0 / w) - 1.0  # (N, K, S)
    gy = (centre_y[..., None] + steps * span_h[..., None]) * (2.0 / h) - 1.0
    grid = torch.stack([gx[:, :, None, :].expand(n, k, size, size), gy[:, :, :, None].expand(n, k, size, size)],
                       dim=-1)  # (N, K, S_y, S_x, 2)
    out = F.grid_sample(x, grid.reshape(n, k * size, size, 2), mode="bilinear", padding_mode="border",
                        align_corners=False)  # (N, C, K*S, S)
    return out.reshape(n, c, k, size, size).transpose(1, 2).reshape(n * k, c, size, size)


def apply_deltas(boxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Boxes (..., 4) with each edge moved by ``deltas`` (..., 4) in units of the box's width/height."""
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=1.0)
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=1.0)
    return boxes + deltas * torch.stack([w, h, w, h], dim=-1)


def target_deltas(boxes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The deltas (:func:`apply_deltas`) that move ``boxes`` onto ``targets``."""
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=1.0)
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=1.0)
    return (targets - boxes) / torch.stack([w, h, w, h], dim=-1)


class BoxRefiner(nn.Module):
    """Crop → five 3x3 conv layers (strides 2, 2, 1, 2, 1: the crop / 8 per side) → two fully connected layers →
    four edge deltas.

    The last layer starts at zero, so a detector with a fresh refiner returns the boxes it had (its top ``top``).
    The fully connected layers keep where in the crop a feature is, which a global pool would throw away.
    """

    def __init__(self, in_channels: int = 3, shape: RefinerShape = RefinerShape()) -> None:
        super().__init__()
        self.shape = shape
        self.convs = nn.Sequential(_cbr(in_channels, 16, 2), _cbr(16, 32, 2), _cbr(32, 32), _cbr(32, 64, 2),
                                   _cbr(64, 64))
        cells = (shape.crop // 8) ** 2
        self.fc1 = nn.Linear(64 * cells, 256)
        self.fc2 = nn.Linear(256, 4)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def deltas(self, crops: torch.Tensor) -> torch.Tensor:
        """Edge deltas (M, 4) for crops (M, C, S, S), bounded by :data:`MAX_STEP`."""
        f = self.convs(crops).flatten(1)
        return MAX_STEP * torch.tanh(self.fc2(F.relu(self.fc1(f))))

    def step(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """One refinement pass: boxes (N, K, 4) → refined boxes (N, K, 4)."""
        n, k, _ = boxes.shape
        d = self.deltas(crop_boxes(x, boxes, self.shape.crop)).reshape(n, k, 4)
        return apply_deltas(boxes, d)

    def forward(self, x: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
        """The ``top`` best-scored candidates of each image, refined; their scores unchanged."""
        top, idx = torch.topk(scores, self.shape.top, dim=1)
        kept = torch.gather(boxes, 1, idx[..., None].expand(-1, -1, 4))
        for _ in range(self.shape.iterations):
            kept = self.step(x, kept)
        return kept, top
