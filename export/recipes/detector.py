"""Class-agnostic object detector (OLN-style, seed 000 §3.1): small CNN + FPN + FCOS-like head, no classes.

Where it sits: trained here on the virtual-scanner cache (:mod:`export.recipes.simdata`), exported with the
toolchain into a ``detector`` bundle. Objectness is learned purely as localisation quality, as in OLN: a
centerness branch and an IoU branch, both regressed with L1 losses, so that kinds never seen in training
are still found; the score is ``sqrt(centerness * iou)``. Background locations regress centerness to 0
(a quality target, not a class). Box regression uses a GIoU loss on positives (FCOS assignment: centre
sampling, one FPN level per size range, smallest box wins).

forward(input (N, C, S, S)) → boxes (N, K, 4) xyxy in input pixels, scores (N, K) in [0, 1], as the
runtime's detect stage expects (it thresholds, maps back through the composer geometry and runs NMS).

The class-aware detector (:mod:`export.recipes.detector_classes`) reuses this backbone/FPN (:meth:`levels`),
this head (:meth:`head`) and this augmentation (:func:`augment_labelled`). Must not: classify, or be imported by
the runtime.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from edge.contracts import Channel, InputContract, ResizePolicy
from export.recipes.refiner import BoxRefiner, RefinerShape
from export.recipes.simdata import DET_SIZE, DetSet
from export.recipes.training import StepLog, freeze_batchnorm, load_eval, optimise, resume, save_checkpoint

STRIDES = (8, 16, 32)
PC_MEAN, PC_STD = 0.5, 0.25


def contract(channels: str = "pc", size: int = DET_SIZE) -> InputContract:
    """The detector's input: whole item letterboxed to ``size`` (air padding), normalised (x - 0.5) / 0.25."""
    ch = tuple(Channel(c) for c in channels.split(","))
    n = sum(c.width for c in ch)
    return InputContract(channels=ch, height=size, width=size, resize=ResizePolicy.LETTERBOX,
                         mean=(PC_MEAN,) * n, std=(PC_STD,) * n)


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Context(nn.Module):
    """Residual pyramid pooling (three chained 5x5 max pools, as YOLO's SPPF) plus the image mean, on C5.

    Why: the backbone is shallow (two convolutions per stage), so a coarse location at the centre of a large
    object (a laptop is 180 px at 320) does not see its edges and regresses a box around the middle only
    (measured on v1.1: objects of 64–128 px found at IoU 0.5 in 91% of cases but with a mean best IoU of 0.67).
    Pooling gives every C5 location a view of the whole image at almost no cost (C5 is 10x10 at 320).
    The last 1x1 convolution starts at zero, so a detector trained without it is reproduced exactly when it is
    added and fine-tuning starts from the same boxes. No batch norm: it would have to stay frozen when
    fine-tuning a detector rebuilt from its bundle.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.reduce = nn.Conv2d(channels, half, 1)
        self.mix = nn.Conv2d(5 * half, channels, 1)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.reduce(x))
        p1 = F.max_pool2d(y, 5, 1, 2)
        p2 = F.max_pool2d(p1, 5, 1, 2)
        p3 = F.max_pool2d(p2, 5, 1, 2)
        g = y.mean(dim=(2, 3), keepdim=True).expand_as(y)
        return x + self.mix(torch.cat([y, p1, p2, p3, g], dim=1))


class AgnosticDetector(nn.Module):
    """Backbone (strides 2..32) → FPN P3–P5 → shared head: ltrb distances, centerness, IoU quality.

    ``context`` adds :class:`Context` on C5 (detector v1.2 on); without it the network is v1.0/v1.1's.
    ``refiner`` adds the second stage (:class:`export.recipes.refiner.BoxRefiner`; tried on v1.2, not shipped:
    docs/models.md): the graph then returns the ``top`` best candidates with refined edges instead of every
    location's box.
    """

    def __init__(self, in_channels: int = 3, width: int = 32, fpn: int = 64, context: bool = False,
                 refiner: RefinerShape | None = None) -> None:
        super().__init__()
        w = width
        self.refine = BoxRefiner(in_channels, refiner) if refiner is not None else None
        self.ctx = Context(4 * w) if context else None
        self.stem = nn.Sequential(_cbr(in_channels, w // 2, 2), _cbr(w // 2, w, 2), _cbr(w, w))  # /4
        self.c3 = nn.Sequential(_cbr(w, 2 * w, 2), _cbr(2 * w, 2 * w))  # /8
        self.c4 = nn.Sequential(_cbr(2 * w, 3 * w, 2), _cbr(3 * w, 3 * w))  # /16
        self.c5 = nn.Sequential(_cbr(3 * w, 4 * w, 2), _cbr(4 * w, 4 * w))  # /32
        self.lat = nn.ModuleList([nn.Conv2d(c, fpn, 1) for c in (2 * w, 3 * w, 4 * w)])
        self.smooth = nn.ModuleList([_cbr(fpn, fpn) for _ in STRIDES])
        self.tower = nn.Sequential(_cbr(fpn, fpn), _cbr(fpn, fpn))
        self.reg = nn.Conv2d(fpn, 4, 3, 1, 1)
        self.ctr = nn.Conv2d(fpn, 1, 3, 1, 1)
        self.iou = nn.Conv2d(fpn, 1, 3, 1, 1)
        self.scales = nn.Parameter(torch.ones(len(STRIDES)))
        nn.init.constant_(self.ctr.bias, -2.0)  # type: ignore[arg-type]
        nn.init.constant_(self.iou.bias, 0.0)  # type: ignore[arg-type]

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Smoothed FPN levels P3–P5 (strides ``STRIDES``), before the head tower; shared with the class head."""
        c3 = self.c3(self.stem(x))
        c4 = self.c4(c3)
        c5 = self.c5(c4)
        if self.ctx is not None:
            c5 = self.ctx(c5)
        p5 = self.lat[2](c5)
        p4 = self.lat[1](c4) + F.interpolate(p5, size=c4.shape[-2:], mode="nearest")
        p3 = self.lat[0](c3) + F.interpolate(p4, size=c3.shape[-2:], mode="nearest")
        return [self.smooth[k](p) for k, p in enumerate((p3, p4, p5))]

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ltrb distances (N, K, 4) px, centerness logits (N, K), IoU logits (N, K), centres (K, 2))."""
        return self.head(self.levels(x))

    def head(self, levels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The shared box/quality head over the FPN levels (see :meth:`raw`)."""
        regs, ctrs, ious, centres = [], [], [], []
        for k, (p, s) in enumerate(zip(levels, STRIDES, strict=True)):
            f = self.tower(p)
            _, _, gh, gw = f.shape
            d = torch.exp((self.reg(f) * self.scales[k]).clamp(-6.0, 6.0)) * s
            regs.append(d.flatten(2).transpose(1, 2))
            ctrs.append(self.ctr(f).flatten(1))
            ious.append(self.iou(f).flatten(1))
            ys = (torch.arange(gh, dtype=f.dtype) + 0.5) * s
            xs = (torch.arange(gw, dtype=f.dtype) + 0.5) * s
            cy = ys.view(gh, 1).expand(gh, gw).reshape(-1)
            cx = xs.view(1, gw).expand(gh, gw).reshape(-1)
            centres.append(torch.stack([cx, cy], dim=1))
        return torch.cat(regs, 1), torch.cat(ctrs, 1), torch.cat(ious, 1), torch.cat(centres, 0)

    def candidates(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every location's box (N, K, 4) and score (N, K): the first stage."""
        d, ctr, iou, c = self.raw(input)
        boxes = torch.cat([c[None], c[None]], dim=-1) + d * torch.tensor([-1.0, -1.0, 1.0, 1.0])
        scores = torch.sqrt(torch.sigmoid(ctr) * torch.sigmoid(iou))
        return boxes, scores

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = self.candidates(input)
        if self.refine is not None:
            return self.refine(input, boxes, scores)
        return boxes, scores


def level_of_locations(size: int) -> torch.Tensor:
    """Stride of each location in output order."""
    return torch.cat([torch.full(((size // s) * (size // s),), float(s)) for s in STRIDES])


def size_ranges(size: int) -> list[tuple[float, float]]:
    """Max-ltrb range each level regresses, scaled to the input size (FCOS: 64/128 at ~800 px → 48/96 at 384)."""
    a = size / 8.0
    return [(0.0, a), (a, 2 * a), (2 * a, math.inf)]


def assign(centres: torch.Tensor, strides: torch.Tensor, gt: torch.Tensor, size: int,
           radius: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """FCOS targets for one image: (matched GT index per location or -1, ltrb targets (K, 4))."""
    k = centres.shape[0]
    if gt.numel() == 0:
        return torch.full((k,), -1, dtype=torch.long), torch.zeros(k, 4)
    x, y = centres[:, 0:1], centres[:, 1:2]
    ltrb = torch.stack([x - gt[:, 0], y - gt[:, 1], gt[:, 2] - x, gt[:, 3] - y], dim=2)  # (K, G, 4)
    inside = ltrb.min(dim=2).values > 0
    gcx, gcy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    r = strides[:, None] * radius
    near = ((x - gcx).abs() < r) & ((y - gcy).abs() < r)
    maxd = ltrb.max(dim=2).values
    lo = torch.zeros(k)
    hi = torch.zeros(k)
    ranges = size_ranges(size)
    for s, (a, b) in zip(STRIDES, ranges, strict=True):
        sel = strides == s
        lo[sel], hi[sel] = a, b
    in_range = (maxd >= lo[:, None]) & (maxd <= hi[:, None])
    area = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))[None, :].expand(k, -1)
    ok = inside & near & in_range
    area = torch.where(ok, area, torch.full_like(area, math.inf))
    best_area, idx = area.min(dim=1)
    idx = torch.where(torch.isfinite(best_area), idx, torch.full_like(idx, -1))
    target = ltrb[torch.arange(k), idx.clamp(min=0)]
    return idx, target


def _iou_giou(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and GIoU of ltrb distance pairs around the same location."""
    pa = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    ta = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    iw = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 2], target[:, 2])
    ih = torch.minimum(pred[:, 1], target[:, 1]) + torch.minimum(pred[:, 3], target[:, 3])
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    union = pa + ta - inter
    iou = inter / union.clamp(min=1e-6)
    ew = torch.maximum(pred[:, 0], target[:, 0]) + torch.maximum(pred[:, 2], target[:, 2])
    eh = torch.maximum(pred[:, 1], target[:, 1]) + torch.maximum(pred[:, 3], target[:, 3])
    enclose = (ew * eh).clamp(min=1e-6)
    return iou, iou - (enclose - union) / enclose


def loss(model: AgnosticDetector, x: torch.Tensor, gts: list[torch.Tensor], neg_weight: float = 1.0) -> tuple[
        torch.Tensor, dict[str, float]]:
    """OLN-style loss: GIoU box loss, L1 centerness (positives, and 0 on background), L1 IoU quality (positives)."""
    d, ctr, iou_logit, centres = model.raw(x)
    size = x.shape[-1]
    strides = level_of_locations(size)
    idx_all, tgt_all = zip(*[assign(centres, strides, g, size) for g in gts], strict=True)
    terms = quality_losses(d, ctr, iou_logit, torch.stack(idx_all) >= 0, torch.stack(tgt_all))
    total = terms.box + terms.ctr_pos + terms.iou + neg_weight * terms.ctr_neg
    return total, terms.log()


@dataclass(frozen=True)
class QualityLosses:
    """The OLN terms every detector of this family trains with (the class-aware one adds its class loss)."""

    box: torch.Tensor
    ctr_pos: torch.Tensor
    iou: torch.Tensor
    ctr_neg: torch.Tensor
    n_pos: int

    def log(self) -> dict[str, float]:
        return {"box": self.box.item(), "ctr": self.ctr_pos.item(), "neg": self.ctr_neg.item(),
                "iou": self.iou.item(), "pos": float(self.n_pos)}


def quality_losses(d: torch.Tensor, ctr: torch.Tensor, iou_logit: torch.Tensor, pos: torch.Tensor,
                   tgt: torch.Tensor) -> QualityLosses:
    """GIoU on positives' boxes, L1 centerness (positives, and 0 on background: a quality target, not a class),
    L1 IoU quality against the detached IoU of the predicted box (positives)."""
    n_pos = max(int(pos.sum()), 1)
    lr, tb = tgt[..., [0, 2]], tgt[..., [1, 3]]
    centerness = torch.sqrt((lr.min(-1).values / lr.max(-1).values.clamp(min=1e-6)).clamp(min=0)
                            * (tb.min(-1).values / tb.max(-1).values.clamp(min=1e-6)).clamp(min=0))
    ctr_p = torch.sigmoid(ctr)
    iou_p = torch.sigmoid(iou_logit)
    if pos.any():
        iou, giou = _iou_giou(d[pos], tgt[pos])
        l_box = (1 - giou).mean()
        l_ctr_pos = (ctr_p[pos] - centerness[pos]).abs().mean()
        l_iou = (iou_p[pos] - iou.detach()).abs().mean()
    else:
        l_box = l_ctr_pos = l_iou = d.sum() * 0
    l_ctr_neg = ctr_p[~pos].mean() if (~pos).any() else ctr_p.sum() * 0
    return QualityLosses(l_box, l_ctr_pos, l_iou, l_ctr_neg, n_pos)


# -- augmentation --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """Range of the geometric augmentation: the item's scale and the stretch of one axis against the other.

    A line scanner's two pixel pitches are independent (detector spacing across the belt, belt speed times
    line period along it), so another scanner shows the same object both larger and stretched; ``aspect`` is
    the largest width/height stretch drawn (1 = none, the v1.0–v1.2 recipes: no extra random draw, so their
    runs replay exactly).
    """

    scale_min: float = 0.6
    scale_max: float = 1.35
    aspect: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"scale range must satisfy 0 < min <= max, got {self.scale_min}..{self.scale_max}")
        if self.aspect < 1:
            raise ValueError(f"aspect must be >= 1 (1 = no stretch), got {self.aspect}")


def augment(img: NDArray[np.uint8], boxes: NDArray[np.float32], rng: np.random.Generator, channels: str,
            out_size: int, geometry: Geometry = Geometry()) -> tuple[torch.Tensor, torch.Tensor]:
    """One training sample from the cache (see :func:`augment_labelled`; the same random draws)."""
    x, b, _ = augment_labelled(img, boxes, np.zeros(len(boxes), np.int64), rng, channels, out_size, geometry)
    return x, b


def augment_labelled(img: NDArray[np.uint8], boxes: NDArray[np.float32], labels: NDArray[np.int64],
                     rng: np.random.Generator, channels: str, out_size: int,
                     geometry: Geometry = Geometry()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training sample from the cache: scale/stretch/flip/transpose, palette, contrast, blur and noise.

    ``img`` is the cached (4, S, S) uint8 (pc RGB, h); the result is ``out_size`` square (the cache may be
    stored larger than the model input). Returns the normalised (C, out, out) tensor, its boxes and the labels
    of the boxes kept (boxes mostly pushed off the canvas are dropped).
    Palette changes (hue rotation, channel swaps, grey rendering) stand in for other vendors' colour tables;
    contrast/gamma, blur and noise for other detectors and JPEG; scale and stretch (:class:`Geometry`) for
    other pixel pitches.
    """
    import cv2

    x, b, lab = place(img[:3] if channels == "pc" else img[3:4], boxes, labels, rng, out_size, geometry)
    if channels == "pc":
        r = rng.random()
        if r < 0.25:  # grey display
            g = x @ np.array([0.299, 0.587, 0.114], np.float32)
            x = np.repeat(g[:, :, None], 3, axis=2)
        elif r < 0.6:  # another vendor's palette: rotate hue, swap channels
            hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
            hsv[:, :, 0] = (hsv[:, :, 0] + rng.uniform(-40, 40)) % 360
            hsv[:, :, 1] = np.clip(hsv[:, :, 1] * rng.uniform(0.6, 1.4), 0, 1)
            x = np.asarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), np.float32)
            if rng.random() < 0.3:
                x = x[:, :, rng.permutation(3)]
    gamma = float(np.exp(rng.uniform(np.log(0.6), np.log(1.7))))
    x = np.clip(x, 0, 1) ** gamma
    lo, hi = rng.uniform(0, 0.1), rng.uniform(0.9, 1.0)
    x = lo + (hi - lo) * x
    if rng.random() < 0.3:
        k = int(rng.choice([3, 5]))
        x = np.asarray(cv2.GaussianBlur(np.ascontiguousarray(x), (k, k), 0), np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
    x = x + rng.normal(0, rng.uniform(0, 0.04), x.shape).astype(np.float32)
    return to_tensors(x, b, lab)


def to_tensors(x: NDArray[np.float32], b: NDArray[np.float32], lab: NDArray[np.int64]) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor]:
    """An augmented (S, S, C) picture in [0, 1] (clipped here), normalised as the contract says, and its boxes and
    labels, as training tensors."""
    x = (np.clip(x, 0, 1) - PC_MEAN) / PC_STD
    return (torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)),
            torch.from_numpy(b.astype(np.float32)), torch.from_numpy(lab.astype(np.int64)))


def place(src: NDArray[np.uint8], boxes: NDArray[np.float32], labels: NDArray[np.int64], rng: np.random.Generator,
          out_size: int, geometry: Geometry = Geometry()) -> tuple[NDArray[np.float32], NDArray[np.float32],
                                                                   NDArray[np.int64]]:
    """The geometric half of the augmentation: ``src`` (C, S, S) uint8 scaled (and stretched) about a random
    point onto an ``out_size`` canvas of air, flipped and transposed at random; boxes mostly pushed off the canvas
    are dropped with their labels. Returns the (out, out, C) float picture in [0, 1], boxes and labels."""
    import cv2

    size = out_size
    img = src
    x: NDArray[np.float32] = src.transpose(1, 2, 0).astype(np.float32) / np.float32(255.0)
    b = boxes.copy()
    # scale (and stretch) about a random point, air padding
    s = float(np.exp(rng.uniform(np.log(geometry.scale_min), np.log(geometry.scale_max))))
    stretch = float(np.exp(rng.uniform(-np.log(geometry.aspect), np.log(geometry.aspect)))) \
        if geometry.aspect > 1 else 1.0
    nw = max(16, round(size * s * np.sqrt(stretch)))
    nh = max(16, round(size * s / np.sqrt(stretch)))
    s_x, s_y = nw / img.shape[-1], nh / img.shape[-2]
    xs = np.asarray(cv2.resize(x, (nw, nh), interpolation=cv2.INTER_AREA if max(s_x, s_y) < 1
                               else cv2.INTER_LINEAR), np.float32)
    if xs.ndim == 2:
        xs = xs[:, :, None]
    canvas = np.ones((size, size, x.shape[2]), np.float32)
    ox = int(rng.integers(min(0, size - nw), max(0, size - nw) + 1))
    oy = int(rng.integers(min(0, size - nh), max(0, size - nh) + 1))
    sx0, sy0 = max(0, -ox), max(0, -oy)
    dx0, dy0 = max(0, ox), max(0, oy)
    w = min(nw - sx0, size - dx0)
    h = min(nh - sy0, size - dy0)
    canvas[dy0:dy0 + h, dx0:dx0 + w] = xs[sy0:sy0 + h, sx0:sx0 + w]
    b = b * np.array([s_x, s_y, s_x, s_y], np.float32)
    b[:, [0, 2]] += ox
    b[:, [1, 3]] += oy
    clipped = np.clip(b, 0, size)
    area0 = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    area1 = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (area1 > 0.5 * area0) & (clipped[:, 2] - clipped[:, 0] >= 3) & (clipped[:, 3] - clipped[:, 1] >= 3)
    b = clipped[keep]
    lab = labels[keep]
    x = canvas
    if rng.random() < 0.5:
        x = x[:, ::-1]
        b = np.stack([size - b[:, 2], b[:, 1], size - b[:, 0], b[:, 3]], 1)
    if rng.random() < 0.5:
        x = x[::-1]
        b = np.stack([b[:, 0], size - b[:, 3], b[:, 2], size - b[:, 1]], 1)
    if rng.random() < 0.5:
        x = x.transpose(1, 0, 2)
        b = b[:, [1, 0, 3, 2]]
    return np.ascontiguousarray(x), b, lab


def plain(img: NDArray[np.uint8], channels: str, out_size: int) -> NDArray[np.float32]:
    """The cached image resized to the model input, normalised (no augmentation)."""
    import cv2

    src = (img[:3] if channels == "pc" else img[3:4]).transpose(1, 2, 0)
    if src.shape[0] != out_size:
        src = np.asarray(cv2.resize(src, (out_size, out_size), interpolation=cv2.INTER_AREA), np.uint8)
    x = src.reshape(out_size, out_size, -1).astype(np.float32) / np.float32(255.0)
    return np.asarray((x.transpose(2, 0, 1) - PC_MEAN) / PC_STD, np.float32)


# -- training ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Knobs of one detector training run."""

    steps: int = 3000
    batch: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    channels: str = "pc"
    size: int = 320
    width: int = 16
    fpn: int = 32
    checkpoint_every: int = 100
    threads: int = 1
    init: str = ""
    context: bool = False
    geometry: Geometry = Geometry()


TrainConfigT = TypeVar("TrainConfigT", bound=TrainConfig)


def has_context(model: nn.Module) -> bool:
    """Was the detector built with :class:`Context` on C5 (read from its tensors, as bundles do not say)?"""
    return any(k.startswith("ctx.") for k in model.state_dict())


def size_of(model: nn.Module) -> tuple[int, int]:
    """(width, fpn) of a detector, read from its tensors (bundles do not state them)."""
    state = model.state_dict()
    return int(state["stem.1.0.weight"].shape[0]), int(state["lat.0.weight"].shape[0])


def agnostic_from_bundle(bundle_dir: Path) -> AgnosticDetector:
    """The shipped class-agnostic detector as a torch module, rebuilt from its bundle's ONNX weights
    (:func:`export.recipes.rebuild.torch_from_bundle`): train it with frozen batch norms
    (:func:`freeze_batchnorm`)."""
    from edge.bundles import load_bundle
    from export.recipes.rebuild import torch_from_bundle

    manifest = load_bundle(bundle_dir, verify_hashes=False).manifest
    if manifest.role != "detector":
        raise ValueError(f"{bundle_dir}: a {manifest.role} bundle, not a detector")
    if manifest.classes:
        raise ValueError(f"{bundle_dir}: a class-aware detector ({len(manifest.classes)} classes); its rebuild "
                         "would drop the class head")
    model = torch_from_bundle(bundle_dir)
    if not isinstance(model, AgnosticDetector):
        raise TypeError(f"{bundle_dir}: rebuilt as {type(model).__name__}, not an AgnosticDetector")
    return model


def copy_matching(model: nn.Module, source: Mapping[str, torch.Tensor]) -> int:
    """Copy the tensors of ``source`` (a detector's state dict) into ``model``; tensors only ``model`` has (a
    context block, a class tower) keep their initialisation, and the stem's first convolution is left out when
    the input channels differ.

    Raises:
        ValueError: ``source`` has tensors ``model`` lacks (a context block or a class head the new network
            would drop), or any other tensor differs in shape (a detector of another width/FPN): a partial copy
            would silently train most of the network from scratch.
    """
    own = model.state_dict()
    lacking = [k for k in source if k not in own]
    if lacking:
        raise ValueError(f"the source detector has {len(lacking)} tensors this network lacks (e.g. {lacking[0]}): "
                         "build the network with the same architecture (context on C5?)")
    wrong = [k for k, v in source.items() if own[k].shape != v.shape and not k.startswith("stem.0.")]
    if wrong:
        raise ValueError(f"the source detector's {wrong[0]} is {tuple(source[wrong[0]].shape)}, this network's "
                         f"{tuple(own[wrong[0]].shape)} ({len(wrong)} tensors differ: another width/fpn; this "
                         f"network is width/fpn {size_of(model)})")
    src = {k: v for k, v in source.items() if own[k].shape == v.shape}
    model.load_state_dict(src, strict=False)
    return len(src)


def start_from(init: str) -> tuple[tuple[int, int, bool], Mapping[str, torch.Tensor]]:
    """((width, fpn, context), weights) of what a run starts from: a detector bundle folder (rebuilt from its
    ONNX weights; train with frozen batch norms) or a training checkpoint (its stored config).

    A box refiner's weights (v1.3 on) are left out: the refiner was trained on this detector's boxes and would
    not fit a fine-tuned one; ``train refiner`` trains a new one on the result.
    """
    if Path(init).is_dir():
        source = agnostic_from_bundle(Path(init))
        weights: Mapping[str, torch.Tensor] = source.state_dict()
        shape = (*size_of(source), has_context(source))
    else:
        state = torch.load(init, weights_only=False)
        start = state["config"]
        shape = (int(start.width), int(start.fpn), bool(getattr(start, "context", False)))
        weights = state["model"]
    return shape, first_stage(weights)


def first_stage(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detector's weights without its box refiner's (see :func:`start_from`)."""
    return {k: v for k, v in weights.items() if not k.startswith("refine.")}


NETWORK_FIELDS = ("channels", "size", "width", "fpn", "context", "init")
"""What a checkpoint's stored config decides when a run resumes: the network's shape and where it started
(``init`` a bundle folder = batch norms frozen throughout)."""


def network_of(ckpt: Path, cfg: TrainConfigT, progress: Callable[[str], None] = print) -> TrainConfigT:
    """``cfg`` with the network fields of the checkpoint it resumes from, if ``ckpt`` exists.

    Why: a run started from a bundle took that bundle's width/FPN/context, which the resuming command line does
    not repeat; building the command line's network would fail to load the checkpoint, or (same size, no
    ``--init``) train on with batch norms unfrozen and overwrite the rebuilt statistics.
    """
    if not ckpt.is_file():
        return cfg
    stored = torch.load(ckpt, weights_only=False)["config"]
    fields = {k: getattr(stored, k) for k in NETWORK_FIELDS if hasattr(stored, k)}
    changed = [f"{k} {getattr(cfg, k)!r} -> {v!r}" for k, v in fields.items() if getattr(cfg, k) != v]
    if changed:
        progress(f"resuming {ckpt}: its network, not the command line's ({'; '.join(changed)})")
    return replace(cfg, **fields)


def train(data: DetSet, ckpt: Path, cfg: TrainConfig, progress: Callable[[str], None] = print,
          until: int | None = None) -> AgnosticDetector:
    """Train (resuming from ``ckpt`` if it exists) and return the model in eval mode; saves every N steps.

    ``until`` pauses the run after that step (checkpoint written; the one-cycle schedule still spans
    ``cfg.steps``), so a run that does not fit a time window stops cleanly and resumes with the same command.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    cfg = network_of(ckpt, cfg, progress)
    in_ch = 3 if cfg.channels == "pc" else 1
    from_bundle = bool(cfg.init) and Path(cfg.init).is_dir()
    state: Mapping[str, torch.Tensor] = {}
    if cfg.init and not ckpt.is_file():
        # The network takes the size and context of what it starts from (stored in the checkpoint's config); a
        # bundle's rebuilt batch norms are folded, so they stay frozen (below).
        (width, fpn, context), state = start_from(cfg.init)
        cfg = replace(cfg, width=width, fpn=fpn, context=cfg.context or context)
    model = AgnosticDetector(in_ch, cfg.width, cfg.fpn, cfg.context)
    if state:
        # The stem's first convolution keeps its fresh initialisation when switching pc → h.
        n_init = copy_matching(model, state)
        progress(f"initialised {n_init}/{len(model.state_dict())} tensors from {cfg.init}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps + 1,
                                                pct_start=max(0.05, 2 / cfg.steps))
    step = resume(ckpt, model, opt, sched, progress)
    rng = np.random.default_rng([cfg.seed, step])
    n = len(data.images)
    model.train()
    if from_bundle:
        freeze_batchnorm(model)
    run: dict[str, float] = {}
    last = cfg.steps if until is None else min(until, cfg.steps)
    log = StepLog(step, last, cfg.steps, progress, cfg.checkpoint_every)
    while step < last:
        idx = rng.integers(0, n, cfg.batch)
        xs, gts = zip(*[augment(data.images[i], data.boxes[i], rng, cfg.channels, cfg.size, cfg.geometry)
                         for i in idx], strict=True)
        total, parts = loss(model, torch.stack(xs), list(gts))
        optimise(model, opt, sched, total, parts, run)
        step += 1
        if log.done(step, run, f"step {step}/{cfg.steps}"):
            save_checkpoint(ckpt, model, opt, sched, step, cfg)
    model.eval()
    return model


def build(weights: Path | None = None, in_channels: int = 3, width: int = 16, fpn: int = 32,
          context: bool = False, refiner: RefinerShape | None = None) -> AgnosticDetector:
    """Factory for ``edge-export --factory export.recipes.detector:build --weights W``: eval-mode model."""
    return cast(AgnosticDetector, load_eval(AgnosticDetector(in_channels, width, fpn, context, refiner), weights))


def checkpoint_model(ckpt: Path, iterations: int = 0) -> tuple[AgnosticDetector, TrainConfig]:
    """(model, config) of a detector or refiner checkpoint, as ``eval-detector`` and ``pack-detector`` read it;
    ``iterations`` > 0 overrides a refiner's passes (0 = as trained)."""
    from export.errors import RecipeOptionError

    cfg: TrainConfig = torch.load(ckpt, weights_only=False)["config"]
    shape: RefinerShape | None = getattr(cfg, "shape", None)
    if iterations < 0 or (iterations and shape is None):
        raise RecipeOptionError(f"--iterations {iterations}: give 0 (as trained), or a positive number of passes "
                                "for a refiner checkpoint (train refiner)")
    if shape is not None and iterations > 0:
        shape = RefinerShape(shape.top, shape.crop, iterations)
    return build(ckpt, 3 if cfg.channels == "pc" else 1, cfg.width, cfg.fpn, getattr(cfg, "context", False),
                 shape), cfg
