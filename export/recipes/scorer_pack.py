"""Packing the crop scorers: threshold on benign validation objects, the seed-000 table on a test cache, the
bundle (``train scorer``, ``padim``, ``stfpm-kind``, ``fuse``), and INT8 added to a shipped crop bundle from crop
caches (``train add-int8``).

Where it sits: after a scorer network is trained (:mod:`export.recipes.scorer_train`) or rebuilt
(:mod:`export.recipes.scorer_repack`); it hands export, parity and INT8 to :func:`export.recipes.pack.pack` and
:func:`export.add_int8.add_int8`. The 'logistic' normalisation maps the raw threshold to 0.5 without clipping,
so scores above it keep their order. Must not: train, or be imported by the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from edge.bundles.loader import Bundle
from edge.bundles.manifest import NormalisationKind, ScoreNormalisation
from edge.bundles.outputs import Role
from export.errors import RecipeInputError
from export.recipes import scorer as sc
from export.recipes.evaluate import item_table, object_table
from export.recipes.inputs import crops
from export.recipes.pack import pack
from export.recipes.simdata import CropSet


def _test_tables(model: nn.Module, norm: ScoreNormalisation, va: CropSet, te: CropSet,
                 channels: str) -> dict[str, Any]:
    """Item and object tables on the test crops at 0.5, and at the item threshold that tags 95% of the benign
    validation items benign (seed 000's operating point)."""
    ts = norm.apply(sc.raw_scores(model, sc.crop_inputs(te, channels)))
    labels = {int(i): bool(t) for i, t in zip(te.item, te.item_threat, strict=True)}
    out: dict[str, Any] = {"item": item_table(ts, te.item, labels, 0.5), "object": object_table(ts, te.threat, 0.5)}
    vi = {int(i): bool(t) for i, t in zip(va.item, va.item_threat, strict=True)}
    vall = norm.apply(sc.raw_scores(model, sc.crop_inputs(va, channels)))
    item_max = np.array([vall[va.item == i].max() for i, t in vi.items() if not t])
    t95 = float(np.quantile(item_max, 0.95))
    out["item_threshold_95"] = t95
    out["item_at_item_threshold"] = item_table(ts, te.item, labels, t95)
    return out


def finish_scorer(model: nn.Module, name: str, val: Path, test: Path | None, out: Path | None, version: str, *,
                  training_data: str, notes: str, progress: Callable[[str], None],
                  show: Callable[[dict[str, Any]], None], int8_max_drop: float = 0.01, int8: bool = True,
                  channels: str = "hlz") -> None:
    """Threshold on benign validation objects, seed-000 table on the test cache (``show``), pack the bundle (its
    input: ``channels`` crops)."""
    va = crops(val, channels, progress=progress)
    vb = va.select(sc.benign_training_mask(va))
    vs = sc.raw_scores(model, sc.crop_inputs(vb, channels))
    thr = float(np.quantile(vs, 0.95))
    low = float(vs.min())
    # logistic, not clipped: scores above the threshold keep their order (a clip at 1.0 ties the most anomalous
    # objects, which costs AUROC and hides how sure the scorer is); same slope at the threshold as 'centred'
    norm = ScoreNormalisation(NormalisationKind.LOGISTIC, low, low + 2 * (thr - low), thr)
    report: dict[str, Any] = {"bundle": name, "raw_threshold": thr, "benign_val_objects": len(vs),
                              "normalisation": {"low": norm.low, "high": norm.high, "centre": norm.centre}}
    if test is not None:
        report.update(_test_tables(model, norm, va, crops(test, channels, progress=progress), channels))
    show(report)
    if out is not None:
        calib = sc.crop_inputs(vb, channels)
        sel = np.random.default_rng(0).permutation(len(calib))
        # 256 calibration and 128 parity crops; a small validation set is split two to one
        n_cal = min(256, max(1, 2 * len(calib) // 3))
        pack(model, Role.SCORER, sc.contract(channels=channels), {"score": 0.5}, norm, calib[sel[:n_cal]],
             calib[sel[n_cal:n_cal + 128]], out, name, version, training_data=training_data, notes=notes,
             progress=progress, int8_max_drop=int8_max_drop, int8=int8)


def add_int8_crops(bundle: Path, calib: Path, val: Path, out: Path, version: str, *, max_drop: float,
                   max_flag_change: float, overwrite: bool, progress: Callable[[str], None]) -> Bundle:
    """``edge-export add-int8`` on a reference crop bundle, calibrated on the crops of ``calib`` and judged on those
    of ``val`` at every threshold the bundle has now."""
    from edge.bundles.loader import load_bundle
    from edge.errors import BundleError
    from export.add_int8 import add_int8
    from export.calibration import InputSet
    from export.errors import ExportError
    from export.recipes.simdata import load_crops

    try:
        contract = load_bundle(bundle).contract
        channels = next((c for c in sc.INPUTS if contract == sc.contract(channels=c)), None)
        if channels is None:
            raise ExportError(f"{bundle}: its input is not one of the recipes' {sc.CROP_SIZE}x{sc.CROP_SIZE} crops "
                              f"({', '.join(sc.INPUTS)})")
        data = InputSet(sc.crop_inputs(load_crops(calib), channels), None, str(calib))
        check = InputSet(sc.crop_inputs(load_crops(val), channels), None, str(val))
        return add_int8(bundle, data, out, version, validation=check, max_drop=max_drop,
                        max_flag_change=max_flag_change, overwrite=overwrite, progress=progress)
    except (ExportError, BundleError, FileNotFoundError) as exc:
        raise RecipeInputError(str(exc)) from exc
