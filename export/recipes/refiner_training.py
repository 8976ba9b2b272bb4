"""Training the box refiner (:mod:`export.recipes.refiner`) on a frozen class-agnostic detector.

Why a separate run: the refiner learns to correct *this* detector's candidates, so the detector is fixed first
(a shipped bundle or a checkpoint) and only the refiner's weights train. Each step runs the detector on a batch
of augmented items (the detector's own augmentation), takes its ``top`` candidates per image as the graph will,
keeps those that overlap an object at IoU >= ``min_iou`` (target: that object's box), and trains the regressor
on up to ``per_image`` of them per image, for every iteration in turn (the second on the first's detached output,
which is what it will see at run time).

Must not: be imported by the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from edge.boxes import box_iou
from export.recipes.detector import STRIDES, AgnosticDetector, TrainConfig, augment, copy_matching, start_from
from export.recipes.refiner import RefinerShape, apply_deltas, crop_boxes, target_deltas
from export.recipes.simdata import DetSet
from export.recipes.training import StepLog, optimise, resume, save_checkpoint

RESUME_FIXED = ("init", "steps", "lr", "top", "crop", "iterations", "per_image", "min_iou", "seed", "batch")
"""What a resumed run takes from its checkpoint whatever the command line says (the detector, the schedule, the
refiner's shape and the sampling); differences are reported."""

TARGET_CLIP = 0.95
"""Target deltas are clipped inside the regressor's tanh range (a target of exactly ±1 would pull the
pre-activation to infinity)."""


@dataclass(frozen=True, slots=True)
class RefineConfig(TrainConfig):
    """A refiner run: ``init`` is the frozen detector (bundle folder or checkpoint); the network fields
    (width, fpn, context) are taken from it."""

    top: int = 100
    crop: int = 40
    iterations: int = 2
    per_image: int = 32
    min_iou: float = 0.3

    @property
    def shape(self) -> RefinerShape:
        return RefinerShape(self.top, self.crop, self.iterations)


def refined_detector(cfg: RefineConfig) -> tuple[AgnosticDetector, RefineConfig]:
    """The detector of ``cfg.init`` with a fresh refiner, and ``cfg`` with the detector's input (channels, size)
    and network (width, FPN, context): the refiner must see what the detector sees."""
    init = Path(cfg.init)
    if not init.exists():
        raise ValueError(f"{init}: no such detector bundle or checkpoint")
    if init.is_dir():
        from edge.bundles import load_bundle
        from edge.errors import EdgeError

        try:
            contract = load_bundle(init, verify_hashes=False).contract
        except EdgeError as exc:
            raise ValueError(f"{init}: not a detector bundle ({exc})") from exc
        channels, size = ",".join(str(c) for c in contract.channels), contract.width
    else:
        stored = torch.load(init, weights_only=False).get("config")
        if type(stored) is not TrainConfig:  # a class-aware or refiner checkpoint, or no detector at all
            raise ValueError(f"{init}: not a class-agnostic detector checkpoint (train detector)")
        channels, size = stored.channels, stored.size
    (width, fpn, context), state = start_from(cfg.init)
    locations = sum((size // s) ** 2 for s in STRIDES)
    if cfg.top > locations:
        raise ValueError(f"--top {cfg.top}: the detector has only {locations} candidates at {size} px")
    cfg = replace(cfg, width=width, fpn=fpn, context=context, channels=channels, size=size)
    model = AgnosticDetector(3 if cfg.channels == "pc" else 1, width, fpn, context, cfg.shape)
    copy_matching(model, state)
    return model, cfg


def _samples(kept: NDArray[np.float32], gt: NDArray[np.float32], per_image: int, min_iou: float,
             rng: np.random.Generator) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Up to ``per_image`` candidates overlapping an object at IoU >= ``min_iou``, their objects' boxes and a 0/1
    weight, padded to ``per_image`` rows (padding has weight 0)."""
    boxes = np.zeros((per_image, 4), np.float32)
    targets = np.zeros((per_image, 4), np.float32)
    weight = np.zeros(per_image, np.float32)
    if len(gt) == 0:
        boxes[:, 2:] = 1.0
        targets[:, 2:] = 1.0
        return boxes, targets, weight
    iou = box_iou(kept, gt)
    best = iou.argmax(axis=1)
    pos = np.flatnonzero(iou.max(axis=1) >= min_iou)
    if pos.size == 0:
        pos = np.array([int(iou.max(axis=1).argmax())])
        weight_value = 0.0
    else:
        weight_value = 1.0
    # Distinct positives first (each trains once, with weight); any rows left repeat them at weight 0.
    order = rng.permutation(pos)
    n_real = min(order.size, per_image)
    chosen = np.concatenate([order[:n_real], rng.choice(order, per_image - n_real)]).astype(np.int64)
    boxes[:] = kept[chosen]
    targets[:] = gt[best[chosen]]
    weight[:n_real] = weight_value
    return boxes, targets, weight


def mean_iou(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> float:
    """Weighted mean IoU of box pairs (M, 4) (a training log figure)."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    union = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1) + (b[:, 2:] - b[:, :2]).prod(dim=1) - inter
    return float(((inter / union.clamp(min=1e-6)) * w).sum() / w.sum().clamp(min=1))


def train_refiner(data: DetSet, ckpt: Path, cfg: RefineConfig, progress: Callable[[str], None] = print,
                  until: int | None = None) -> AgnosticDetector:
    """Train the refiner (resuming from ``ckpt``), the detector frozen; returns the whole model in eval mode."""
    if not cfg.init:
        raise ValueError("a refiner trains on a fixed detector: give its bundle folder or checkpoint (init)")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if ckpt.is_file():
        stored: RefineConfig = torch.load(ckpt, weights_only=False)["config"]
        ignored = [f"{k} {getattr(cfg, k)!r} -> {getattr(stored, k)!r}" for k in RESUME_FIXED
                   if getattr(cfg, k) != getattr(stored, k)]
        if ignored:
            progress(f"resuming {ckpt}: its run, not the command line's ({'; '.join(ignored)})")
        cfg = stored
        torch.manual_seed(cfg.seed)
        model = AgnosticDetector(3 if cfg.channels == "pc" else 1, cfg.width, cfg.fpn, cfg.context, cfg.shape)
    else:
        model, cfg = refined_detector(cfg)
    refine = model.refine
    assert refine is not None
    for p in model.parameters():
        p.requires_grad_(False)
    for p in refine.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(refine.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps + 1,
                                                pct_start=max(0.05, 2 / cfg.steps))
    step = resume(ckpt, model, opt, sched, progress)
    rng = np.random.default_rng([cfg.seed, step])
    model.eval()
    refine.train()
    run: dict[str, float] = {}
    last = cfg.steps if until is None else min(until, cfg.steps)
    log = StepLog(step, last, cfg.steps, progress, cfg.checkpoint_every)
    while step < last:
        idx = rng.integers(0, len(data.images), cfg.batch)
        xs, gts = zip(*[augment(data.images[i], data.boxes[i], rng, cfg.channels, cfg.size, cfg.geometry)
                         for i in idx], strict=True)
        x = torch.stack(xs)
        with torch.no_grad():
            boxes, scores = model.candidates(x)
            _, top = torch.topk(scores, cfg.top, dim=1)
            kept = torch.gather(boxes, 1, top[..., None].expand(-1, -1, 4)).numpy()
        picked = [_samples(kept[k], g.numpy(), cfg.per_image, cfg.min_iou, rng) for k, g in enumerate(gts)]
        b = torch.from_numpy(np.stack([p[0] for p in picked]))
        t = torch.from_numpy(np.stack([p[1] for p in picked])).reshape(-1, 4)
        w = torch.from_numpy(np.stack([p[2] for p in picked])).reshape(-1)
        total = x.new_zeros(())
        parts = {"iou0": mean_iou(b.reshape(-1, 4), t, w)}
        for it in range(cfg.iterations):
            flat = b.reshape(-1, 4)
            d = refine.deltas(crop_boxes(x, b, cfg.crop))
            goal = target_deltas(flat, t).clamp(-TARGET_CLIP, TARGET_CLIP)
            term = ((d - goal).abs().sum(dim=1) * w).sum() / w.sum().clamp(min=1)
            total = total + term
            b = apply_deltas(flat, d).detach().reshape(b.shape)
            parts[f"l{it + 1}"] = float(term.detach())
            parts[f"iou{it + 1}"] = mean_iou(b.reshape(-1, 4), t, w)
        optimise(refine, opt, sched, total, parts, run)
        step += 1
        if log.done(step, run, f"step {step}/{cfg.steps}"):
            save_checkpoint(ckpt, model, opt, sched, step, cfg)
    model.eval()
    return model
