"""A site's own detector from its labelled images: ``edge-export train detector --data DATASET`` (read, split,
train resumably, validate, and pack with ``--out``) and ``train pack-own`` (pack a checkpoint, paused or done).

Where it sits: the job behind those two commands (:mod:`export.recipes.cli_detector`, ``cli_own``). The dataset
readers are :mod:`export.recipes.owndata` (the ones ``edge eval`` uses), the network, training loop, validation
and packing are :mod:`export.recipes.owntrain`; this module only strings them together and reports. A bad
dataset, class list or threat option stops it with :class:`~export.errors.RecipeInputError`. Must not: download
weights, or be imported by the runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from edge.bundles.loader import Bundle
from edge_tools.eval.records import DatasetError
from export.errors import RecipeInputError
from export.recipes import owntrain as ot
from export.recipes.detector import Geometry
from export.recipes.inputs import conditioner, geometry
from export.recipes.owndata import LabelledSet, load_labelled, split


@dataclass(frozen=True, slots=True)
class OwnData:
    """The training and validation images of one run, and what reading them found."""

    train: LabelledSet
    val: LabelledSet
    skipped: list[str]
    layout: str
    threats: tuple[tuple[str, float], ...]


def read_own(data: Path, val: Path | None, *, channels: str, size: int, classes: str, skip_bad: bool, layout: str,
             config: Path | None, val_split: float, seed: int, threat: list[str], agnostic: bool) -> OwnData:
    """Read ``data`` (and ``val``, else hold out ``val_split`` of ``data``) with the classes asked for (default:
    every class annotated, sorted) and check the threat classes against them."""
    cond = conditioner(config)
    wanted = tuple(c.strip() for c in classes.split(",") if c.strip()) or None
    try:
        loaded = load_labelled(data, channels, size, classes=wanted, skip_bad=skip_bad, layout=layout,
                               conditioner=cond)
        names = loaded.data.classes
        if val is not None:
            held = load_labelled(val, channels, size, classes=names, skip_bad=skip_bad, layout=layout,
                                 conditioner=cond)
            train_set, val_set, skipped = loaded.data, held.data, loaded.skipped + held.skipped
        else:
            tr_idx, va_idx = split(len(loaded.data), val_split, seed)
            train_set, val_set, skipped = loaded.data.subset(tr_idx), loaded.data.subset(va_idx), loaded.skipped
        threats = ot.threat_map(threat, names)
        if threats and agnostic:
            raise ValueError("--threat needs a class-aware detector (its classes are the threats); drop --agnostic")
    except (DatasetError, ValueError) as exc:
        raise RecipeInputError(str(exc)) from exc
    return OwnData(train_set, val_set, list(skipped), loaded.layout, threats)


def _announce(own: OwnData, progress: Callable[[str], None]) -> None:
    for why in own.skipped[:10]:
        progress(f"skipped: {why}")
    names = own.train.classes
    counts = {c: int(sum((lab == k).sum() for lab in own.train.labels)) for k, c in enumerate(names)}
    progress(f"{len(own.train)} training images ({', '.join(f'{c} {n}' for c, n in counts.items())}), "
             f"{len(own.val)} validation images, {len(own.skipped)} bad labels skipped; layout {own.layout}")


def train_own_detector(data: Path, ckpt: Path, *, steps: int, batch: int, lr: float, size: int, channels: str,
                       seed: int, init: str, threads: int, width: int, fpn: int, context: bool, until: int,
                       scale: str, aspect: float, val: Path | None, val_split: float, layout: str, classes: str,
                       agnostic: bool, threat: list[str], augment: str, skip_bad: bool, config: Path | None,
                       out: Path | None, name: str, version: str, int8: bool, progress: Callable[[str], None],
                       show: Callable[[dict[str, Any]], None]) -> None:
    """``train detector --data DATASET``: read, train (resumable), validate (``show``), and pack with ``out``."""
    torch.set_num_threads(threads)
    own = read_own(data, val, channels=channels, size=size, classes=classes, skip_bad=skip_bad, layout=layout,
                   config=config, val_split=val_split, seed=seed, threat=threat, agnostic=agnostic)
    _announce(own, progress)
    real = ot.REAL_GEOMETRY
    geo = geometry(scale, aspect) if scale else Geometry(real.scale_min, real.scale_max, aspect)
    cfg = ot.OwnConfig(steps=steps, batch=batch, lr=lr, seed=seed, channels=channels, size=size, init=init,
                       threads=threads, width=width, fpn=fpn, context=context, geometry=geo,
                       classes=own.train.classes, threats=own.threats, agnostic=agnostic, augment=augment,
                       data=str(data), val=str(val) if val is not None else f"{val_split} of data")
    started = time.monotonic()
    try:
        model = ot.train(own.train, ckpt, cfg, progress=progress, until=until or None)
    except ValueError as exc:
        raise RecipeInputError(str(exc)) from exc
    progress(f"training took {time.monotonic() - started:.0f} s wall")
    show({"checkpoint": str(ckpt), "validation": ot.validate(model, own.val)})
    if out is not None:
        _, stored, step = ot.from_checkpoint(ckpt)
        bundle = ot.pack_own(model, stored, step, own.train, own.val, out, name, version, int8=int8,
                             progress=progress)
        progress(f"wrote {out} ({bundle.manifest.name} {bundle.manifest.version}; classes "
                 f"{list(bundle.manifest.classes)}, threat_classes {dict(bundle.manifest.threat_classes)})")


def pack_own_checkpoint(ckpt: Path, data: Path, val: Path, out: Path, *, name: str, version: str, size: int,
                        int8: bool, config: Path | None, threshold: float | None, threat: list[str],
                        progress: Callable[[str], None]) -> Bundle:
    """``train pack-own``: an own-data checkpoint into a bundle, ``data`` calibrating INT8 and ``val`` checking
    parity; ``size`` (0 = as trained) and ``threat`` (empty = the checkpoint's) override the checkpoint's."""
    try:
        model, cfg, step = ot.from_checkpoint(ckpt)
        if size:
            cfg = replace(cfg, size=size)
        if threat:
            cfg = replace(cfg, threats=ot.threat_map(threat, cfg.classes))
        cond = conditioner(config)
        cal = load_labelled(data, cfg.channels, cfg.size, classes=cfg.classes, skip_bad=True, conditioner=cond).data
        par = load_labelled(val, cfg.channels, cfg.size, classes=cfg.classes, skip_bad=True, conditioner=cond).data
    except (DatasetError, ValueError) as exc:
        raise RecipeInputError(str(exc)) from exc
    bundle = ot.pack_own(model, cfg, step, cal, par, out, name, version, int8=int8, progress=progress,
                         threshold=threshold)
    progress(f"wrote {out} ({bundle.manifest.name} {bundle.manifest.version}, {cfg.size} px, step {step})")
    return bundle
