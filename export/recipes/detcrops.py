"""Object crops where the service takes them: at a detector bundle's boxes, not at the ground truth.

Why: the scorers were trained on ground-truth boxes (+5% context) but at run time see the detector's boxes,
which are looser, partial, merged and duplicated (about 3 per object). On the benchmark the supervised
classifier ranks threat items at AUROC_M 0.97 on ground-truth crops and 0.81 through the pipeline. Training on
the crops the runtime will really compose closes that gap. Each item is simulated exactly as in
:mod:`export.recipes.simdata` (item ``i`` from seed ``(7, i)``), detected by the runtime's own ``DetectStage``
on the given bundle, and every detection is labelled from the ground truth:

* ``threat``: the box holds at least half of a threat object's box (the crop shows the threat);
* ``tainted``: not a threat crop, but it touches a threat (more than 10% of the smaller box, or a threat's
  host): never benign evidence, as for ground-truth crops;
* ``kind``/``group``: of the ground-truth object the box matches best at IoU >= 0.5, else ``""`` (a partial or
  merged box; still benign evidence for a student, no kind for a teacher).

The shards have :class:`~export.recipes.simdata.CropSet`'s layout (plus ``iou``, the detector's ``det_score``
and the ``box`` in item pixels, for studies of how detection quality and anomaly combine), so every recipe reads them
with ``load_crops``. Must not: be imported by the runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.boxes import box_area, box_iou, intersection
from edge.condition.composer import compose
from export.recipes.simdata import (
    PRESET_WEIGHTS,
    PRESETS,
    RIG_SEED,
    SimRig,
    crop_store_contract,
    object_boxes,
    run_shards,
)

MATCH_IOU = 0.5
THREAT_COVER = 0.5


def _covered(det: NDArray[np.float64], gt: NDArray[np.float64]) -> NDArray[np.float64]:
    """(D, G) fraction of each ground-truth box's area inside each detection."""
    return intersection(det, gt) / np.maximum(box_area(gt), 1.0)[None, :]


def _touch(det: NDArray[np.float64], gt: NDArray[np.float64]) -> NDArray[np.float64]:
    """(D, G) intersection over the smaller of the two boxes."""
    return intersection(det, gt) / np.maximum(np.minimum(box_area(det)[:, None], box_area(gt)[None, :]), 1.0)


def label_detections(det: NDArray[np.float64], truth: object) -> dict[str, NDArray[np.generic]]:
    """Labels of detections ``det`` (D, 4) item-pixel xyxy against an item's ground truth (see module doc)."""
    objs = object_boxes(truth)
    n = len(det)
    kind = np.full(n, "", dtype=object)
    group = np.full(n, "", dtype=object)
    threat = np.zeros(n, bool)
    tainted = np.zeros(n, bool)
    best_iou = np.zeros(n, np.float32)
    if objs and n:
        gt = np.asarray([o.xyxy for o in objs], np.float64)
        is_threat = np.asarray([o.threat for o in objs], bool)
        iou = box_iou(det, gt)
        best = iou.argmax(axis=1)
        best_iou = iou.max(axis=1).astype(np.float32)
        matched = best_iou >= MATCH_IOU
        kind[matched] = np.asarray([o.kind for o in objs], dtype=object)[best[matched]]
        group[matched] = np.asarray([o.group for o in objs], dtype=object)[best[matched]]
        if is_threat.any():
            threat = np.asarray((_covered(det, gt)[:, is_threat] >= THREAT_COVER).any(axis=1), bool)
            touches = np.asarray((_touch(det, gt)[:, is_threat] > 0.1).any(axis=1), bool)
            # a benign host of (or overlapper with) a threat, matched as such, is tainted like its GT crop
            host = matched & np.asarray([o.tainted for o in objs], bool)[best]
            tainted = ~threat & (touches | host)
    return {"kind": kind.astype(str), "group": group.astype(str), "threat": threat, "tainted": tainted,
            "iou": best_iou}


def _shard(args: tuple[Path, int, int, int, float, str, int]) -> str:
    out, shard, start, count, threat_rate, detector, max_objects = args
    path = out / f"crops_{shard:04d}.npz"
    if path.is_file():
        return f"shard {shard}: cached"
    import cv2

    from edge.config.models import ModelsConfig
    from edge.records import ItemMeta
    from edge.screening import ModelHolder, load_models
    from edge.stages.condition import ConditionedItem
    from edge.stages.detect import DetectStage

    cv2.setNumThreads(1)
    rig = SimRig()
    # The engineer's own detector on the training machine: not necessarily signed yet (signing is for release).
    models = load_models(ModelsConfig(detector=Path(detector), backend="onnxruntime", threads=1, allow_unsigned=True))
    detect = DetectStage(ModelHolder(models), max_objects)
    cc = crop_store_contract()
    parts: dict[str, list[NDArray[np.generic]]] = {k: [] for k in ("crops", "item", "kind", "group", "threat",
                                                                   "tainted", "item_threat", "iou", "det_score",
                                                                   "box")}
    t0 = time.monotonic()
    try:
        for i in range(start, start + count):
            rng = np.random.default_rng([RIG_SEED, i])
            preset = PRESETS[int(rng.choice(len(PRESETS), p=PRESET_WEIGHTS))]
            image, truth = rig.item(rng, preset, threat_rate, i)
            meta = ItemMeta(f"sim-{i}", "sim", 0, 0.0, 0.0, 0.0, 0.0, time.monotonic() + 600)
            found = detect(ConditionedItem(meta, image))
            if not found.detections:
                continue
            det = np.asarray([(d.box.x1, d.box.y1, d.box.x2, d.box.y2) for d in found.detections], np.float64)
            labels = label_detections(det, truth)
            parts["crops"].append(compose(image, cc, det).astype(np.float16))
            parts["det_score"].append(np.asarray([d.score for d in found.detections], np.float32))
            parts["box"].append(det.astype(np.float32))
            parts["item"].append(np.full(len(det), i, np.int64))
            parts["item_threat"].append(np.full(len(det), any(o.threat for o in object_boxes(truth)), bool))
            for k, v in labels.items():
                parts[k].append(v)
    finally:
        models.close()
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.rename(path)
    return f"shard {shard}: {count} items, {len(arrays['crops'])} detections in {time.monotonic() - t0:.0f} s"


def generate(out: Path, n_items: int, first_item: int, threat_rate: float, detector: Path, max_objects: int = 32,
             shard_size: int = 50, workers: int = 2, progress: Callable[[str], None] = print) -> None:
    """Detector crops of ``n_items`` items from ``first_item`` into resumable shards under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out, k, s, min(shard_size, first_item + n_items - s), threat_rate, str(detector), max_objects)
            for k, s in enumerate(range(first_item, first_item + n_items, shard_size))]
    run_shards(_shard, jobs, workers, progress)
