"""Class-aware detector (issue 6; seeds 001 and 004): the OLN-style detector plus an 8-class FCOS class head.

Where it sits: next to :mod:`export.recipes.detector`, same family and same input. The backbone, FPN, box
regression and the centerness/IoU quality branches are the class-agnostic detector's (initialised from the
shipped ``models/detector-agnostic`` weights, rebuilt from its ONNX graph as ``benchmarks/eager_pipeline.py``
does); a second head tower (initialised as a copy of the first) feeds a per-class logit per location, trained
with a sigmoid focal loss (RetinaNet/FCOS). The score of a candidate is ``p(class) x quality`` with
``quality = sqrt(centerness * IoU)``; the graph returns the best class per location, so the bundle's outputs
are ``boxes`` (N, K, 4), ``scores`` (N, K), ``labels`` (N, K) int64 into :data:`CLASSES`, and the runtime's
detect stage runs per-class NMS on them.

Classes: seed 001's six object types (bottle, hairdryer, iron, toaster, mobile, laptop) and seed 004's two
threat groups (cutters, liquid containers), mapped from the virtual scanner's kinds by :data:`KIND_TO_CLASS`.
Every other object (clothing, books, cables, firearm parts, …) is background for this detector. Training uses
FCOS assignment over the labelled objects only (centre sampling, one level per size range, smallest box wins).

Must not: be imported by the runtime.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from export.recipes.detector import (
    STRIDES,
    AgnosticDetector,
    TrainConfig,
    agnostic_from_bundle,
    assign,
    augment_labelled,
    copy_matching,
    first_stage,
    level_of_locations,
    network_of,
    quality_losses,
    size_of,
    start_from,
)
from export.recipes.simdata import load_det
from export.recipes.training import freeze_batchnorm, load_eval, optimise, resume, save_checkpoint

CLASSES: tuple[str, ...] = ("bottle", "hairdryer", "iron", "toaster", "mobile", "laptop", "cutter",
                            "liquid_container")
"""Label order of the bundle (``classes`` in bundle.yaml); seed 001's six types, then seed 004's two groups."""

KIND_TO_CLASS: dict[str, str] = {
    # seed 001: bottle, hairdryer, iron, toaster, mobile, laptop
    "bottle_water": "bottle", "bottle_wine": "bottle", "bottle_spirits": "bottle", "bottle_oil": "bottle",
    "hairdryer": "hairdryer", "iron": "iron", "toaster": "toaster", "phone": "mobile", "laptop": "laptop",
    # seed 004 (CLCXray): cutters (blade, dagger, knife, scissors, Swiss army knife) ...
    "kitchen_knife": "cutter", "folding_knife": "cutter", "dagger": "cutter", "utility_knife": "cutter",
    # ... and liquid containers other than bottles (tin, cans, glass jar, vacuum cup)
    "food_tin": "liquid_container", "jar": "liquid_container", "mug": "liquid_container",
}
"""Virtual-scanner kind (``sim.objects.BENIGN`` / ``sim.threats.KNIVES``) → class; unlisted kinds are background."""

HEAVY_OVERLAP_IOU = 0.5
"""An object is in the heavy-overlap subset when its box overlaps another object's box (any kind) at IoU ≥ this."""


def class_index(kinds: NDArray[np.str_]) -> NDArray[np.int64]:
    """Class index per sim kind, -1 for background kinds."""
    return np.asarray([CLASSES.index(KIND_TO_CLASS[k]) if k in KIND_TO_CLASS else -1 for k in kinds.tolist()],
                      np.int64)


# -- data ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClassDetSet:
    """The detector cache with class labels: per item every object box, its kind and class (-1 = background)."""

    images: NDArray[np.uint8]
    boxes: list[NDArray[np.float32]]
    kinds: list[NDArray[np.str_]]
    labels: list[NDArray[np.int64]]

    def labelled(self, i: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Boxes and classes of item ``i``'s labelled objects (background kinds left out)."""
        keep = self.labels[i] >= 0
        return self.boxes[i][keep], self.labels[i][keep]

    def heavy(self, i: int, iou: float = HEAVY_OVERLAP_IOU) -> NDArray[np.bool_]:
        """Per box of item ``i``: does it overlap another object's box (any kind) at IoU ≥ ``iou``?"""
        from export.recipes.evaluate import max_overlap

        return np.asarray(max_overlap(self.boxes[i]) >= iou)


def load_class_det(folder: Path, limit: int | None = None) -> ClassDetSet:
    """All ``det_*.npz`` shards of a cache folder with their ``box_kind`` (in shard order, as ``load_det``)."""
    ds = load_det(folder, limit)
    return ClassDetSet(ds.images, ds.boxes, ds.kinds, [class_index(k) for k in ds.kinds])


# -- model ---------------------------------------------------------------------------------------------------
class ClassDetector(AgnosticDetector):
    """:class:`AgnosticDetector` + a class tower and a per-class logit per location.

    forward(input) → boxes (N, K, 4) xyxy input pixels, scores (N, K) = max_c p(c) x sqrt(ctr x IoU),
    labels (N, K) int64 = argmax_c p(c).
    """

    def __init__(self, in_channels: int = 3, width: int = 16, fpn: int = 32, n_classes: int = len(CLASSES),
                 context: bool = False) -> None:
        super().__init__(in_channels, width, fpn, context)
        self.cls_tower = copy.deepcopy(self.tower)
        self.cls = nn.Conv2d(fpn, n_classes, 3, 1, 1)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.constant_(self.cls.bias, -math.log(99.0))  # type: ignore[arg-type]  # prior p = 0.01 (RetinaNet)

    def raw_classes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                    torch.Tensor]:
        """(ltrb (N, K, 4), centerness logits (N, K), IoU logits (N, K), class logits (N, K, C), centres)."""
        levels = self.levels(x)
        d, ctr, iou, centres = self.head(levels)
        cls = torch.cat([self.cls(self.cls_tower(p)).flatten(2).transpose(1, 2) for p in levels], 1)
        return d, ctr, iou, cls, centres

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        d, ctr, iou, cls, c = self.raw_classes(input)
        boxes = torch.cat([c[None], c[None]], dim=-1) + d * torch.tensor([-1.0, -1.0, 1.0, 1.0])
        quality = torch.sqrt(torch.sigmoid(ctr) * torch.sigmoid(iou))
        p, labels = torch.sigmoid(cls).max(dim=-1)
        return boxes, p * quality, labels


def init_from(model: ClassDetector, source: AgnosticDetector) -> int:
    """Copy the agnostic detector's tensors (backbone, context, FPN, head tower, box/quality outputs) into ``model``
    and start its class tower as a copy of the head tower. Returns the number of tensors copied.

    Raises:
        ValueError: the two differ in size or architecture (:func:`export.recipes.detector.copy_matching`).
    """
    n = copy_matching(model, first_stage(source.state_dict()))
    tower = {f"cls_tower.{k[len('tower.'):]}": v for k, v in source.state_dict().items() if k.startswith("tower.")}
    model.load_state_dict(tower, strict=False)
    return n + len(tower)


# -- loss ----------------------------------------------------------------------------------------------------
def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017), summed."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    pt = p * targets + (1 - p) * (1 - targets)
    w = alpha * targets + (1 - alpha) * (1 - targets)
    return (w * ce * (1 - pt) ** gamma).sum()


def assign_classes(centres: torch.Tensor, strides: torch.Tensor, gt: torch.Tensor, labels: torch.Tensor,
                   size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FCOS targets over the labelled objects: (matched GT index or -1, ltrb (K, 4), class per location or -1)."""
    idx, target = assign(centres, strides, gt, size)
    cls = torch.where(idx >= 0, labels[idx.clamp(min=0)] if len(labels) else idx, torch.full_like(idx, -1))
    return idx, target, cls


def loss(model: ClassDetector, x: torch.Tensor, gts: list[torch.Tensor], labels: list[torch.Tensor],
         cls_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Agnostic detector's losses (GIoU, L1 centerness incl. 0 on background, L1 IoU) + focal class loss / n_pos."""
    d, ctr, iou_logit, cls_logit, centres = model.raw_classes(x)
    size = x.shape[-1]
    strides = level_of_locations(size)
    parts = [assign_classes(centres, strides, g, lab, size) for g, lab in zip(gts, labels, strict=True)]
    idx = torch.stack([p[0] for p in parts])
    cls_t = torch.stack([p[2] for p in parts])
    pos = idx >= 0
    terms = quality_losses(d, ctr, iou_logit, pos, torch.stack([p[1] for p in parts]))
    onehot = F.one_hot(cls_t.clamp(min=0), cls_logit.shape[-1]).to(cls_logit.dtype) * pos[..., None]
    l_cls = focal_loss(cls_logit, onehot) / terms.n_pos
    total = terms.box + terms.ctr_pos + terms.iou + terms.ctr_neg + cls_weight * l_cls
    return total, {"cls": l_cls.item(), **terms.log()}


# -- training ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClassTrainConfig(TrainConfig):
    """Knobs of one class-aware training run: the agnostic run's, plus the schedule's warm-up share and repeat-
    factor sampling. ``init``: a detector bundle folder (agnostic weights) or a class-aware checkpoint; used only
    when the run's checkpoint does not exist yet."""

    pct_start: float = 0.1
    repeat_thresh: float = 0.0


def repeat_factors(labels: list[NDArray[np.int64]], n_classes: int, t: float) -> NDArray[np.float64]:
    """LVIS repeat-factor sampling weights per item: ``max(1, sqrt(t / f_c))`` over the classes it contains, with
    ``f_c`` the fraction of items containing class ``c`` (items without labelled objects get 1).

    Rare classes (here cutters, irons, toasters in ≈ 10% of the items) are seen more often without re-weighting
    the loss; ``t = 0`` gives uniform sampling.
    """
    present = np.zeros((len(labels), n_classes), bool)
    for i, lab in enumerate(labels):
        present[i, lab[lab >= 0]] = True
    f = present.mean(axis=0)
    r = np.where(f > 0, np.sqrt(t / np.maximum(f, 1e-12)), 1.0).clip(min=1.0)
    return np.asarray([r[row].max() if row.any() else 1.0 for row in present], np.float64)


def _bar(step: int, total: int, width: int = 24) -> str:
    done = int(width * step / max(total, 1))
    return "[" + "#" * done + "." * (width - done) + f"] {step}/{total}"


def _initialise(model: ClassDetector, init: str, progress: Callable[[str], None]) -> None:
    path = Path(init)
    if path.is_dir():
        n = init_from(model, agnostic_from_bundle(path))
        progress(f"initialised {n}/{len(model.state_dict())} tensors from bundle {path}")
        return
    state = torch.load(path, weights_only=False)
    own = model.state_dict()
    mismatched = sorted(k for k, v in state["model"].items() if k in own and own[k].shape != v.shape)
    if mismatched:
        raise ValueError(f"{path}: {len(mismatched)} tensors have another shape than this network's (e.g. "
                         f"{mismatched[0]}): the checkpoint is of another size")
    weights = {k: v for k, v in state["model"].items() if k in own}
    model.load_state_dict(weights, strict=False)
    progress(f"initialised {len(weights)}/{len(own)} tensors from checkpoint {path}")


def train(data: ClassDetSet, ckpt: Path, cfg: ClassTrainConfig, progress: Callable[[str], None] = print,
          until: int | None = None) -> ClassDetector:
    """Train (resuming from ``ckpt`` if it exists) and return the model in eval mode; saves every N steps.

    ``until`` pauses the run after that step (checkpoint written; the schedule still spans ``cfg.steps``), so a
    long run can be split over sessions and resumed with the same command.

    Batch norms stay frozen (their stored statistics) throughout: the init comes from folded ONNX weights.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    cfg = network_of(ckpt, cfg, progress)
    if cfg.init and not ckpt.is_file():
        # The class detector takes the size of the network it starts from, an agnostic bundle or a class-aware
        # checkpoint (stored in the new checkpoint's config, so resuming and packing build the same network).
        (width, fpn, context), _ = start_from(cfg.init)
        cfg = replace(cfg, width=width, fpn=fpn, context=context)
    model = ClassDetector(3 if cfg.channels == "pc" else 1, cfg.width, cfg.fpn, context=cfg.context)
    if cfg.init and not ckpt.is_file():
        _initialise(model, cfg.init, progress)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps + 1,
                                                pct_start=min(max(cfg.pct_start, 2 / cfg.steps), 0.5))
    step = resume(ckpt, model, opt, sched, progress)
    rng = np.random.default_rng([cfg.seed, step])
    n = len(data.images)
    weights = repeat_factors(data.labels, len(CLASSES), cfg.repeat_thresh)
    weights /= weights.sum()
    model.train()
    freeze_batchnorm(model)
    t0 = t_start = time.monotonic()
    start_step = step
    run: dict[str, float] = {}
    last = cfg.steps if until is None else min(until, cfg.steps)
    while step < last:
        xs, gts, labs = [], [], []
        for i in rng.choice(n, cfg.batch, p=weights):
            b, lab = data.labelled(int(i))
            x, bb, ll = augment_labelled(data.images[i], b, lab, rng, cfg.channels, cfg.size, cfg.geometry)
            xs.append(x)
            gts.append(bb)
            labs.append(ll)
        total, parts = loss(model, torch.stack(xs), gts, labs)
        optimise(model, opt, sched, total, parts, run)
        step += 1
        if step % 20 == 0 or step == cfg.steps:
            rate = (time.monotonic() - t0) / 20
            t0 = time.monotonic()
            eta = (time.monotonic() - t_start) / max(step - start_step, 1) * (cfg.steps - step)
            progress(f"{_bar(step, cfg.steps)} " + " ".join(f"{k} {v:.3f}" for k, v in run.items())
                     + f" ({rate:.2f} s/step, eta {eta / 60:.0f} min)")
        if step % cfg.checkpoint_every == 0 or step == last:
            save_checkpoint(ckpt, model, opt, sched, step, cfg, classes=CLASSES)
    model.eval()
    return model


def build(weights: Path | None = None, in_channels: int = 3, width: int = 16, fpn: int = 32,
          context: bool = False) -> ClassDetector:
    """Factory for ``edge-export --factory export.recipes.detector_classes:build --weights W``: eval-mode model."""
    return cast(ClassDetector, load_eval(ClassDetector(in_channels, width, fpn, context=context), weights))


__all__ = ["CLASSES", "KIND_TO_CLASS", "STRIDES", "ClassDetSet", "ClassDetector", "ClassTrainConfig", "build",
           "load_class_det", "loss", "size_of", "train"]
