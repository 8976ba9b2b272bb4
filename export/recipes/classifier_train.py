"""The supervised benign/anomaly crop classifier (``edge-export train classifier``): for comparison with the
benign-only scorers, or benign-only itself when its anomalies are synthetic metal inserts (``train
synthetic-cache``).

Where it sits: reads the labelled crops (:mod:`export.recipes.inputs`), optionally holds threat kinds out (the
unseen-threat benchmark, docs/results.md), starts from an STFPM teacher (a checkpoint or a shipped bundle's,
rebuilt), trains with :func:`export.recipes.scorer.train_classifier`, sets ``thresholds.score`` on benign
validation objects, reports the seed-000 table and packs. Must not: be imported by the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from edge.bundles import load_bundle
from edge.bundles.manifest import ScoreNormalisation
from edge.bundles.outputs import Role
from edge.errors import BundleError
from export.errors import RecipeInputError
from export.recipes import scorer as sc
from export.recipes.evaluate import item_table, object_table
from export.recipes.inputs import crops
from export.recipes.pack import pack
from export.recipes.rebuild import torch_from_bundle
from export.recipes.scorer_train import check_channels, checked_checkpoint
from export.recipes.simdata import CropSet
from export.recipes.synthetic import SYNTHETIC_GROUP

Say = Callable[[str], None]


def training_crops(data: Path, channels: str, skip_bad: bool, exclude_kinds: str,
                   progress: Say) -> tuple[CropSet, list[str]]:
    """The threat and untainted benign crops of ``data``, without the held-out kinds (and the kinds held out).

    Held out item-level: a detector crop over a held-out threat may carry another object's kind (best IoU), so
    every threat crop of an item that holds a held-out kind goes, not only the crops of that kind."""
    tr = crops(data, channels, skip_bad, progress=progress)
    keep = tr.threat | ~tr.tainted
    held_out = sorted({k.strip() for k in exclude_kinds.split(",") if k.strip()})
    if held_out:
        hit = np.isin(tr.kind, held_out)
        items_with = np.isin(tr.item, np.unique(tr.item[hit]))
        keep &= ~hit & ~(tr.threat & items_with)
        progress(f"held out {', '.join(held_out)}: {int(hit.sum())} crops of those kinds and "
                 f"{int((tr.threat & items_with & ~hit).sum())} other threat crops of their items dropped")
    return tr.select(keep), held_out


def starting_point(ckpt_dir: Path, init_bundle: Path | None, channels: str) -> tuple[sc.Backbone | None, str]:
    """The backbone to start from, and how the manifest names it: a bundle's STFPM teacher, the teacher
    checkpoint in ``ckpt_dir``, or none (scratch)."""
    if init_bundle is not None:
        try:
            rebuilt = torch_from_bundle(init_bundle)
        except (BundleError, ValueError, FileNotFoundError) as exc:
            raise RecipeInputError(str(exc)) from exc
        if not isinstance(rebuilt, sc.StfpmScorer):
            raise RecipeInputError(f"{init_bundle}: not an STFPM scorer bundle (--init-bundle)")
        if sc.channels_of(load_bundle(init_bundle).contract) != channels:
            raise RecipeInputError(f"{init_bundle} reads another input than --channels {channels}")
        return rebuilt.teacher, f"the teacher of {init_bundle}"
    if (ckpt_dir / "teacher.pt").is_file():
        return sc.load_teacher(ckpt_dir / "teacher.pt", channels)[0], f"the STFPM teacher in {ckpt_dir}"
    return None, "scratch"


def _anomaly_prob(model: nn.Module, x: NDArray[np.float32]) -> NDArray[np.float32]:
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x[i:i + 256])).numpy()[:, 1] for i in range(0, len(x), 256)])


def _report(model: nn.Module, name: str, calib: Path | None, test: Path | None, channels: str,
            progress: Say) -> tuple[dict[str, Any], dict[str, float]]:
    """The report (threshold, seed-000 tables) and the bundle thresholds: with ``calib`` the anomaly probability
    that tags 95% of the benign validation objects benign, without it argmax (0.5)."""
    report: dict[str, Any] = {"bundle": name}
    thresholds: dict[str, float] = {}
    if calib is not None:
        va = crops(calib, channels, progress=progress)
        benign = sc.crop_inputs(va.select(sc.benign_training_mask(va)), channels)
        thresholds["score"] = float(np.quantile(_anomaly_prob(model, benign), 0.95))
        report["threshold_95_benign_val_objects"] = thresholds["score"]
    if test is not None:
        te = crops(test, channels, progress=progress)
        p = _anomaly_prob(model, sc.crop_inputs(te, channels))
        labels = {int(i): bool(t) for i, t in zip(te.item, te.item_threat, strict=True)}
        thr = thresholds.get("score", 0.5)
        report["item"] = item_table(p, te.item, labels, thr)
        report["object"] = object_table(p, te.threat, thr)
        report["item_argmax"] = item_table(p, te.item, labels, 0.5)
    return report, thresholds


def train_crop_classifier(data: Path, ckpt_dir: Path, test: Path | None, out: Path | None, calib: Path | None, *,
                          steps: int, batch: int, version: str, name: str, init_bundle: Path | None,
                          int8_max_drop: float, channels: str, exclude_kinds: str, skip_bad: bool, progress: Say,
                          show: Callable[[dict[str, Any]], None]) -> None:
    """``train classifier``: train (resumable in ``ckpt_dir``), report (``show``), and pack when both ``out`` and
    ``calib`` are given."""
    check_channels(channels)
    # checkpoints trained on the other input (teacher.pt only matters without --init-bundle)
    for ckpt in [ckpt_dir / "classifier.pt"] + ([] if init_bundle is not None else [ckpt_dir / "teacher.pt"]):
        checked_checkpoint(ckpt, channels)
    tr, held_out = training_crops(data, channels, skip_bad, exclude_kinds, progress)
    synthetic = bool(tr.threat.any()) and bool((tr.group[tr.threat] == SYNTHETIC_GROUP).all())
    init, start = starting_point(ckpt_dir, init_bundle, channels)
    cfg = sc.ScorerConfig(teacher_steps=steps, batch=batch, channels=channels)
    progress(f"{int(tr.threat.sum())} threat and {int((~tr.threat).sum())} benign training crops")
    model = sc.train_classifier(sc.crop_inputs(tr, channels), tr.threat, ckpt_dir / "classifier.pt", cfg, init,
                                progress, frozen_batchnorm=init_bundle is not None)
    report, thresholds = _report(model, name, calib, test, channels, progress)
    show(report)
    if out is None or calib is None:
        return
    cx = sc.crop_inputs(crops(calib, channels, progress=progress), channels)
    sel = np.random.default_rng(0).permutation(len(cx))
    pack(model, Role.CLASSIFIER, sc.contract(channels=channels), thresholds, ScoreNormalisation(), cx[sel[:256]],
         cx[sel[256:384]], out, name, version, classes=("benign", "anomaly"),
         training_data=f"{len(tr.crops)} labelled object crops ({channels} 64x64; {int(tr.threat.sum())} "
                       f"threats) from {data.name}, class-balanced batches, {steps} steps from {start}"
                       + (f"; threat kinds held out: {', '.join(held_out)}" if held_out else ""),
         notes=(("benign-only: its anomalies are synthetic metal inserts on benign crops (train "
                 "synthetic-cache), no threat crop seen" if synthetic else
                 "supervised benign/anomaly classifier for comparison (seed 001 second stage); threats of the "
                 "kinds in sim/threats.py only")
                + "; thresholds.score tags 95% of benign validation objects benign; see docs/models.md"),
         progress=progress, int8_max_drop=int8_max_drop)
