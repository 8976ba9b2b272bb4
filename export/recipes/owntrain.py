"""Own-data detector training: the OLN-style detector (class-aware or class-agnostic) on a site's labelled images.

Where it sits: ``edge-export train detector --data DATASET`` (:mod:`export.recipes.owndetector`) reads the
dataset through :mod:`export.recipes.owndata` and trains here; the network, losses and geometric augmentation are the
virtual-scanner recipes' (:mod:`export.recipes.detector`, :mod:`export.recipes.detector_classes`), so a shipped
bundle (``models/detector-agnostic``, ``models/detector-classes``) can be fine-tuned (``init``), or the same
architecture trained from scratch.

Augmentation suits real scans of one scanner (``augment="real"``): scale jitter, flips and transposes, contrast of
the attenuation (air stays white), brightness, gamma, mild blur and noise; never a hue rotation or a channel swap
of the pseudo-colour (its colours are the material classes the scanner computed). ``augment="none"`` trains on the
letterboxed images as they are (a lever in docs/models.md).

Checkpoints hold model, optimiser, schedule and step: a run stopped anywhere continues with the same command.
Must not: be imported by the runtime.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from export.recipes import detector as det
from export.recipes import detector_classes as dc
from export.recipes.owndata import LabelledSet
from export.recipes.training import freeze_batchnorm, optimise, resume, save_checkpoint

REAL_GEOMETRY = det.Geometry(0.75, 1.3, 1.0)
"""Scale jitter for real scans of one scanner: its pixel pitch is fixed, the bags' sizes vary less than the
virtual scanner's presets (which the 0.6–1.35 range of the sim recipes covers)."""

AUGMENTS = ("real", "none")


@dataclass(frozen=True, slots=True)
class OwnConfig(dc.ClassTrainConfig):
    """One own-data run: the class-aware recipe's knobs plus the dataset's classes, the threat map, the
    augmentation and whether the detector is class-agnostic. ``init``: a detector bundle folder (agnostic or
    class-aware; batch norms then stay frozen) or a checkpoint; '' = from scratch."""

    classes: tuple[str, ...] = ()
    threats: tuple[tuple[str, float], ...] = ()
    agnostic: bool = False
    augment: str = "real"
    data: str = ""
    val: str = ""
    frozen_bn: bool = False


def augment_real(src: NDArray[np.uint8], boxes: NDArray[np.float32], labels: NDArray[np.int64],
                 rng: np.random.Generator, size: int, geometry: det.Geometry = REAL_GEOMETRY) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training sample from a real scan (module docstring): geometry as the sim recipes, then photometry that
    keeps the palette's hues."""
    import cv2

    x, b, lab = det.place(src, boxes, labels, rng, size, geometry)
    contrast = float(rng.uniform(0.75, 1.3))  # attenuation darker or lighter, air stays at 1
    x = 1.0 - (1.0 - x) * contrast
    x = x + float(rng.uniform(-0.06, 0.06))
    gamma = float(np.exp(rng.uniform(np.log(0.75), np.log(1.35))))
    x = np.clip(x, 0, 1) ** gamma
    if rng.random() < 0.15:
        x = np.asarray(cv2.GaussianBlur(np.ascontiguousarray(x, np.float32), (3, 3), 0), np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
    x = x + rng.normal(0, rng.uniform(0, 0.02), x.shape).astype(np.float32)
    return det.to_tensors(np.asarray(x, np.float32), b, lab)


def plain_sample(src: NDArray[np.uint8], boxes: NDArray[np.float32], labels: NDArray[np.int64]) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor]:
    """The letterboxed image as it is (``augment="none"``)."""
    x = src.transpose(1, 2, 0).astype(np.float32) / np.float32(255.0)
    return det.to_tensors(x, boxes.copy(), labels.copy())


# -- network -------------------------------------------------------------------------------------------------
def _source_weights(init: str) -> tuple[dict[str, torch.Tensor], tuple[int, int, bool], bool]:
    """(weights, (width, fpn, context), from a bundle) of what a run starts from: a detector bundle folder
    (agnostic or class-aware; its ONNX weights, batch norms folded) or a training checkpoint."""
    path = Path(init)
    if path.is_dir():
        from edge.bundles import load_bundle
        from export.recipes.rebuild import eager_pipeline

        bundle = load_bundle(path, verify_hashes=False)
        if bundle.manifest.role != "detector":
            raise ValueError(f"{path}: a {bundle.manifest.role} bundle, not a detector (--init)")
        ep = eager_pipeline()
        graph = ep.onnx_path(bundle)
        init_t, _ = ep.onnx_weights(graph)
        in_ch = int(init_t["stem.0.0.weight"].shape[1])
        width, fpn = int(init_t["stem.1.0.weight"].shape[0]), int(init_t["lat.0.weight"].shape[0])
        context = "ctx.mix.weight" in init_t
        if "cls.weight" not in init_t:
            model = ep.load_onnx_weights(det.AgnosticDetector(in_ch, width, fpn, context), graph)
            return det.first_stage(model.state_dict()), (width, fpn, context), True
        return _class_weights(init_t, ep.onnx_weights(graph)[1], in_ch, width, fpn, context, path), \
            (width, fpn, context), True
    if not path.is_file():
        raise ValueError(f"{init}: no such bundle folder or checkpoint (--init)")
    state = torch.load(path, weights_only=False)
    cfg = state["config"]
    return (det.first_stage(state["model"]), (int(cfg.width), int(cfg.fpn), bool(getattr(cfg, "context", False))),
            bool(getattr(cfg, "frozen_bn", False)))


def _class_weights(init: Mapping[str, Any], scales: list[float], in_ch: int, width: int, fpn: int, context: bool,
                   where: Path) -> dict[str, torch.Tensor]:
    """A class-aware bundle's weights by name. Its graph keeps the batch norms (trained frozen); the exporter
    stored the class tower's running statistics once, shared with the head tower's they were copied from, so
    a missing ``cls_tower`` statistic is read under the ``tower`` name."""
    model = dc.ClassDetector(in_ch, width, fpn, int(init["cls.weight"].shape[0]), context)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        name = key if key in init else key.replace("cls_tower.", "tower.", 1)
        module, _, leaf = key.rpartition(".")
        if key == "scales":
            out[key] = torch.tensor(scales, dtype=tensor.dtype)
        elif leaf == "num_batches_tracked":
            continue
        elif name in init and tuple(np.shape(init[name])) == tuple(tensor.shape):
            out[key] = torch.from_numpy(np.array(init[name]))
        elif module.endswith(".1") and f"{module[:-2]}.0.weight_bias" in init:
            # folded into the convolution before it (as benchmarks/eager_pipeline.load_onnx_weights reads it)
            shift = torch.from_numpy(np.array(init[f"{module[:-2]}.0.weight_bias"]))
            eps = 1e-5
            out[key] = {"weight": torch.ones_like(tensor), "bias": shift, "running_mean": torch.zeros_like(tensor),
                        "running_var": torch.full_like(tensor, 1.0 - eps)}[leaf]
        else:
            raise ValueError(f"{where}: no weights for {key} in its graph (not a detector of this recipe family)")
    return out


def initialise(model: nn.Module, source: Mapping[str, torch.Tensor]) -> tuple[int, list[str]]:
    """Copy every tensor of ``source`` that ``model`` has with the same shape; a class tower the source lacks
    starts as a copy of its head tower (as :func:`export.recipes.detector_classes.init_from`). Returns (tensors
    copied, tensors left at their initialisation): a class head of another class count, or the first convolution
    for another number of input channels, train from scratch.

    Raises:
        ValueError: less than half the network could be copied (another architecture or size).
    """
    own = model.state_dict()
    src = dict(source)
    if any(k.startswith("cls_tower.") for k in own) and not any(k.startswith("cls_tower.") for k in src):
        src.update({f"cls_tower.{k[len('tower.'):]}": v for k, v in source.items() if k.startswith("tower.")})
    take = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    if len(take) < len(own) / 2:
        raise ValueError(f"only {len(take)} of {len(own)} tensors fit this network: the source is another "
                         "architecture or size")
    model.load_state_dict(take, strict=False)
    return len(take), sorted(k for k in own if k not in take and not k.endswith("num_batches_tracked"))


def build(cfg: OwnConfig) -> nn.Module:
    """The network ``cfg`` describes (no weights)."""
    in_ch = 3 if cfg.channels == "pc" else 1
    if cfg.agnostic:
        return det.AgnosticDetector(in_ch, cfg.width, cfg.fpn, cfg.context)
    return dc.ClassDetector(in_ch, cfg.width, cfg.fpn, len(cfg.classes), cfg.context)


def from_checkpoint(ckpt: Path) -> tuple[nn.Module, OwnConfig, int]:
    """(model in eval mode, its config, its step) of an own-data checkpoint."""
    state = torch.load(ckpt, weights_only=False)
    cfg = state["config"]
    if not isinstance(cfg, OwnConfig):
        raise ValueError(f"{ckpt}: not an own-data detector checkpoint (train detector --data DATASET)")
    model = build(cfg)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, int(state["step"])


# -- training ------------------------------------------------------------------------------------------------
def _sample(data: LabelledSet, i: int, rng: np.random.Generator, cfg: OwnConfig) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor]:
    if cfg.augment == "none":
        return plain_sample(data.images[i], data.boxes[i], data.labels[i])
    return augment_real(data.images[i], data.boxes[i], data.labels[i], rng, cfg.size, cfg.geometry)


def train(data: LabelledSet, ckpt: Path, cfg: OwnConfig, progress: Callable[[str], None] = print,
          until: int | None = None, bar: bool = True) -> nn.Module:
    """Train (resuming from ``ckpt`` if it exists) and return the model in eval mode; a checkpoint every
    ``cfg.checkpoint_every`` steps and at the end (or at ``until``, a pause: rerun the command to continue)."""
    from tqdm import tqdm

    if cfg.augment not in AUGMENTS:
        raise ValueError(f"augment {cfg.augment!r} is not one of {', '.join(AUGMENTS)}")
    if cfg.steps < 2:
        raise ValueError(f"steps {cfg.steps}: the one-cycle schedule needs at least 2")
    if cfg.size % max(det.STRIDES):
        raise ValueError(f"input size {cfg.size} must be a multiple of {max(det.STRIDES)} (the coarsest stride)")
    if data.images.shape[-1] != cfg.size:
        raise ValueError(f"the data were read at {data.images.shape[-1]} px, the network wants {cfg.size}")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    state: Mapping[str, torch.Tensor] = {}
    if ckpt.is_file():
        stored = torch.load(ckpt, weights_only=False)["config"]
        if not isinstance(stored, OwnConfig):
            raise ValueError(f"{ckpt}: not an own-data checkpoint; give another --ckpt")
        if stored.classes != cfg.classes or stored.agnostic != cfg.agnostic:
            raise ValueError(f"{ckpt}: trained on classes {list(stored.classes)} (agnostic {stored.agnostic}), this "
                             f"run has {list(cfg.classes)} (agnostic {cfg.agnostic}); give another --ckpt")
        cfg = det.network_of(ckpt, cfg, progress)
        cfg = replace(cfg, frozen_bn=stored.frozen_bn)
    elif cfg.init:
        state, (width, fpn, context), folded = _source_weights(cfg.init)
        cfg = replace(cfg, width=width, fpn=fpn, context=context, frozen_bn=folded)
    model = build(cfg)
    if state:
        n, fresh = initialise(model, state)
        progress(f"initialised {n}/{len(model.state_dict())} tensors from {cfg.init}"
                 + (f"; fresh: {', '.join(sorted({k.rsplit('.', 1)[0] for k in fresh}))}" if fresh else ""))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps + 1,
                                                pct_start=min(max(cfg.pct_start, 2 / cfg.steps), 0.5))
    step = resume(ckpt, model, opt, sched, progress)
    rng = np.random.default_rng([cfg.seed, step])
    weights = dc.repeat_factors(data.labels, max(len(cfg.classes), 1), cfg.repeat_thresh)
    weights /= weights.sum()
    model.train()
    if cfg.frozen_bn:
        freeze_batchnorm(model)
    run: dict[str, float] = {}
    last = cfg.steps if until is None else min(until, cfg.steps)
    t0 = time.monotonic()
    first = step
    with tqdm(total=last, initial=step, desc="train detector", unit="step", disable=None if bar else True) as pbar:
        while step < last:
            xs, gts, labs = [], [], []
            for i in rng.choice(len(data), cfg.batch, p=weights):
                x, b, lab = _sample(data, int(i), rng, cfg)
                xs.append(x)
                gts.append(b)
                labs.append(lab)
            if cfg.agnostic:
                total, parts = det.loss(model, torch.stack(xs), gts)  # type: ignore[arg-type]
            else:
                total, parts = dc.loss(model, torch.stack(xs), gts, labs)  # type: ignore[arg-type]
            optimise(model, opt, sched, total, parts, run)
            step += 1
            pbar.update(1)
            if step % 10 == 0:
                pbar.set_postfix({k: f"{v:.3f}" for k, v in run.items() if k != "pos"})
            if step % cfg.checkpoint_every == 0 or step == last:
                save_checkpoint(ckpt, model, opt, sched, step, cfg, classes=cfg.classes)
                if pbar.disable:  # no bar (not a terminal, e.g. a log file): one line per checkpoint instead
                    rate = (time.monotonic() - t0) / max(step - first, 1)
                    progress(f"step {step}/{cfg.steps} " + " ".join(f"{k} {v:.3f}" for k, v in run.items())
                             + f" ({rate:.2f} s/step, eta {rate * (last - step) / 60:.0f} min)")
    progress(f"step {step}/{cfg.steps} in {time.monotonic() - t0:.0f} s; checkpoint {ckpt}")
    model.eval()
    return model


# -- quick validation ----------------------------------------------------------------------------------------
def predict(model: nn.Module, x: NDArray[np.float32], batch: int = 16) -> list[tuple[Any, ...]]:
    """Raw outputs per image: (boxes, scores) or (boxes, scores, labels) as numpy arrays."""
    out: list[tuple[Any, ...]] = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            got = model(torch.from_numpy(x[i:i + batch]))
            out.extend(tuple(t[k].numpy() for t in got) for k in range(len(got[0])))
    return out


def validate(model: nn.Module, data: LabelledSet, threshold: float = 0.01, nms_iou: float = 0.5,
             top: int = 20) -> dict[str, Any]:
    """Class-agnostic recall@IoU0.5 with at most ``top`` boxes, and (class-aware models) per-class COCO mAP on
    ``data``, in model-input pixels, with the detect stage's rules (threshold, per-class NMS). A quick check
    while training; the figures in docs/models.md come from ``edge eval`` on the packed bundle."""
    from export.recipes.evaluate import coco_class_metrics, postprocess, postprocess_labelled, recall_at

    raw = predict(model, data.inputs())
    out: dict[str, Any] = {"images": len(data), "objects": int(sum(len(b) for b in data.boxes))}
    if len(raw[0]) == 3:
        dets = [postprocess_labelled(r[0], r[1], r[2], threshold, nms_iou, 100) for r in raw]
        out["recall50_at_20"] = recall_at(data.boxes, [d[0][:top] for d in dets])
        m = coco_class_metrics(data.boxes, data.labels, dets, data.classes)
        out.update({k: m[k] for k in ("mAP", "mAP50", "AP_per_class")})
        out["AP50_per_class"] = {c: float(v) for c, v in _ap50_per_class(data, dets).items()}
    else:
        dets2 = [postprocess(r[0], r[1], threshold, nms_iou, top) for r in raw]
        out["recall50_at_20"] = recall_at(data.boxes, [d[0] for d in dets2])
    return out


def _ap50_per_class(data: LabelledSet, dets: list[tuple[Any, Any, Any]]) -> dict[str, float]:
    """AP at IoU 0.5 per class (COCO's interpolation), the per-class figure of mAP50."""
    from edge_tools.eval.metrics import coco_curves
    from export.recipes.evaluate import _images

    if not any(len(d[1]) for d in dets):
        return {c: 0.0 for c in data.classes}
    curves = coco_curves(_images(data.boxes, data.labels, dets, data.classes, None), class_aware=True)
    return {c: float(curves[c][100].precision[0].mean()) for c in data.classes if c in curves}


AUTO = -1.0
"""A threat class given without a score: its threshold is chosen on the validation images when the bundle is packed
(:func:`choose_threat_thresholds`)."""
THREAT_PRECISION = 0.6
"""Class-correct precision at IoU 0.5 on the validation images that a chosen threat threshold reaches (the lowest
such score, so the most threats alarm). Why not a fixed 0.5: a class-aware score is p(class) x quality, and the
SIXray fine-tune (docs/models.md) never reached 0.5 on a validation box."""


def threat_map(spec: list[str], classes: tuple[str, ...], default: float = AUTO) -> tuple[tuple[str, float], ...]:
    """``--threat`` values (``CLASS`` or ``CLASS=THRESHOLD``; ``all`` = every class) → (class, threshold) pairs;
    a class without a threshold gets ``default`` (:data:`AUTO`: chosen on the validation images).

    Raises:
        ValueError: a class the dataset does not annotate, or a threshold outside [0, 1].
    """
    out: dict[str, float] = {}
    for item in spec:
        name, _, value = item.partition("=")
        name = name.strip()
        try:
            thr = float(value) if value else default
        except ValueError:
            raise ValueError(f"--threat {item!r}: the threshold is not a number") from None
        if (value or thr != AUTO) and (not 0.0 <= thr <= 1.0 or math.isnan(thr)):
            raise ValueError(f"--threat {item!r}: the threshold must be in [0, 1]")
        names = classes if name == "all" else (name,)
        for n in names:
            if n not in classes:
                raise ValueError(f"--threat {item!r}: {n!r} is not one of the classes {list(classes)}")
            out[n] = thr
    return tuple(sorted(out.items()))


def choose_threat_thresholds(model: nn.Module, data: LabelledSet, threats: tuple[tuple[str, float], ...],
                             detect_threshold: float, nms_iou: float = 0.5, top: int = 20) -> tuple[
        tuple[str, float], ...]:
    """``threats`` with every :data:`AUTO` entry replaced by the lowest score (0.05 steps) at which that class's
    boxes on ``data`` reach :data:`THREAT_PRECISION` (class-correct, IoU 0.5, the detect stage's rules); the
    most precise score when none does, 1.0 when the class is never detected."""
    if all(t != AUTO for _, t in threats):
        return threats
    from edge.boxes import box_iou
    from export.recipes.evaluate import postprocess_labelled

    kept = [postprocess_labelled(r[0], r[1], r[2], detect_threshold, nms_iou, top)
            for r in predict(model, data.inputs())]
    grid = [round(0.05 * k, 2) for k in range(1, 20)]
    out = []
    for name, thr in threats:
        if thr != AUTO:
            out.append((name, thr))
            continue
        c = data.classes.index(name)
        best, best_prec = 1.0, -1.0
        for t in grid:
            n = tp = 0
            for (b, s, lab), g, gl in zip(kept, data.boxes, data.labels, strict=True):
                sel = (lab == c) & (s >= t)
                n += int(sel.sum())
                if sel.any() and (gl == c).any():
                    tp += int((box_iou(b[sel], g[gl == c]).max(axis=1) >= 0.5).sum())
            if n == 0:
                break
            if tp / n >= THREAT_PRECISION:
                best, best_prec = t, tp / n
                break
            if tp / n > best_prec:
                best, best_prec = t, tp / n
        out.append((name, best))
    return tuple(out)


# -- packing -------------------------------------------------------------------------------------------------
DETECT_THRESHOLD = {False: 0.05, True: 0.2}
"""The bundle's ``thresholds.score`` (class-aware, agnostic): the detect stage keeps candidates above it, up to
``models.max_objects``. Low, because it selects proposals for the scorer and the metrics, not alarms: a class-aware
score is p(class) x quality, and at 0.2 the SIXray fine-tune kept one box per image (recall@0.5 0.64 against 0.90
at 0.05, docs/models.md). Alarms come from ``threat_classes`` (0.5 by default)."""

def pack_own(model: nn.Module, cfg: OwnConfig, step: int, calib: LabelledSet, parity: LabelledSet, out: Path,
             name: str, version: str, *, threshold: float | None = None, nms_iou: float = 0.5, int8: bool = True,
             progress: Callable[[str], None] = print) -> Any:
    """Export, verify and bundle an own-data detector: up to 200 images of ``calib`` (the training images)
    calibrate INT8, up to 128 of ``parity`` (the validation images) check every backend against PyTorch; the
    bundle names its classes and ``threat_classes`` (``cfg.threats``)."""
    from edge.bundles.manifest import ScoreNormalisation
    from edge.bundles.outputs import DECISION_THRESHOLD_KEY, NMS_IOU_KEY, Role
    from export.recipes.pack import pack

    rng = np.random.default_rng(0)
    cal = calib.inputs(sorted(rng.permutation(len(calib))[:200].tolist()))
    par = parity.inputs(sorted(rng.permutation(len(parity))[:128].tolist()))
    thr = threshold if threshold is not None else DETECT_THRESHOLD[cfg.agnostic]
    threats = () if cfg.agnostic else choose_threat_thresholds(model, parity, cfg.threats, thr)
    if threats != cfg.threats:
        progress(f"threat thresholds chosen on {len(parity)} validation images (precision >= {THREAT_PRECISION}): "
                 + ", ".join(f"{c} {t:g}" for c, t in threats))
    start = f"fine-tuned from {cfg.init}" + (" (frozen batch norms)" if cfg.frozen_bn else "") if cfg.init \
        else "trained from scratch"
    kind = "class-agnostic" if cfg.agnostic else f"class-aware ({', '.join(cfg.classes)})"
    return pack(model, Role.DETECTOR, det.contract(cfg.channels, cfg.size),
                {DECISION_THRESHOLD_KEY: thr, NMS_IOU_KEY: nms_iou}, ScoreNormalisation(), cal, par, out, name,
                version, classes=() if cfg.agnostic else cfg.classes,
                training_data=f"own data {cfg.data} (validation: {cfg.val}), {step} steps x {cfg.batch} images at "
                              f"{cfg.size} px, {cfg.augment} augmentation, seed {cfg.seed}, width {cfg.width}, FPN "
                              f"{cfg.fpn}{', context on C5' if cfg.context else ''}, {start}",
                notes=f"OLN-style {kind} detector trained by `edge-export train detector --data` "
                      "(export/recipes/owntrain.py); see docs/models.md",
                progress=progress, int8=int8, fp32_rtol=1e-3, int8_max_drop=0.02,
                optional_outputs=() if cfg.agnostic else ("labels",),
                threat_classes=dict(threats) or None)
