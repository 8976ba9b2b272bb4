"""COCO ground truth of generated items: categories, uncompressed RLE masks, per-item annotation records.

Where it sits: used by ``sim/dataset.py`` to write ``annotations.json`` (readable by pycocotools or any COCO
reader) and the per-item ``truth.json``. Boxes are the tight boxes of the masks in X-ray pixels, ``[x, y, w, h]``
with x = channel and y = belt line; segmentation is uncompressed RLE (column-major run lengths, starting with
background), which ``pycocotools.mask.frPyObjects`` accepts.

Extra keys on each annotation (ignored by standard readers): ``threat``, ``group``, ``host_id`` (annotation id
of the electronics host of a concealed object), ``effective_z``, ``materials``, ``parcel_index``.

Must not: render or do file I/O itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from sim.objects import BENIGN, Group
from sim.scene import ItemTruth, ObjectTruth
from sim.threats import CONCEALMENTS, FIREARM_PARTS, KNIVES

CONTAINER_KINDS: tuple[str, ...] = ("box", "envelope", "polybag", "suitcase", "backpack", "tray")


def categories() -> list[dict[str, Any]]:
    """All categories with stable ids: containers, benign kinds, then threats (order of the libraries)."""
    out: list[dict[str, Any]] = []
    groups: list[tuple[str, tuple[str, ...]]] = [
        (str(Group.CONTAINER), CONTAINER_KINDS),
        ("benign", tuple(BENIGN)),
        (str(Group.FIREARM), tuple(FIREARM_PARTS)),
        (str(Group.KNIFE), tuple(KNIVES)),
        (str(Group.CONCEALMENT), tuple(CONCEALMENTS)),
    ]
    for supercategory, kinds in groups:
        for kind in kinds:
            out.append({"id": len(out) + 1, "name": kind, "supercategory": supercategory})
    return out


def category_ids() -> dict[str, int]:
    return {c["name"]: int(c["id"]) for c in categories()}


def rle_encode(mask: NDArray[np.bool_]) -> dict[str, Any]:
    """COCO uncompressed RLE of an ``(H, W)`` mask: column-major run lengths, first run = background."""
    flat = np.asarray(mask, bool).ravel(order="F")
    if flat.size == 0:
        return {"counts": [], "size": list(mask.shape)}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def rle_encode_window(window: NDArray[np.bool_], origin: tuple[int, int], shape: tuple[int, int]) -> dict[str, Any]:
    """Same as ``rle_encode(full_mask)`` for a mask given as a window at ``origin`` (row, col) of ``shape``,
    without building the full image (objects are small next to the item)."""
    h = int(shape[0])
    cols, rows = np.nonzero(np.asarray(window, bool).T)  # column-major order of the True pixels
    if cols.size == 0:
        return {"counts": [h * int(shape[1])], "size": [h, int(shape[1])]}
    flat = (cols.astype(np.int64) + origin[1]) * h + (rows.astype(np.int64) + origin[0])
    breaks = np.flatnonzero(np.diff(flat) != 1)
    starts = np.concatenate([[flat[0]], flat[breaks + 1]])
    ends = np.concatenate([flat[breaks], [flat[-1]]]) + 1
    gaps = starts - np.concatenate([[0], ends[:-1]])
    counts = np.empty(2 * starts.size + 1, np.int64)
    counts[0:-1:2] = gaps
    counts[1::2] = ends - starts
    counts[-1] = h * int(shape[1]) - ends[-1]
    out = counts.tolist()
    if out[-1] == 0:
        out.pop()
    return {"counts": [int(c) for c in out], "size": [h, int(shape[1])]}


def rle_decode(rle: dict[str, Any]) -> NDArray[np.bool_]:
    """Inverse of :func:`rle_encode` (for tests and readers without pycocotools)."""
    h, w = rle["size"]
    values = np.zeros(h * w, bool)
    pos = 0
    for k, n in enumerate(rle["counts"]):
        if k % 2:
            values[pos:pos + n] = True
        pos += n
    return values.reshape((w, h)).T


def object_annotation(obj: ObjectTruth, shape: tuple[int, int], image_id: int, ann_id: int,
                      host_ann_id: int | None, cat_ids: dict[str, int]) -> dict[str, Any]:
    """One COCO annotation for an object."""
    x, y, w, h = obj.bbox_xywh
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat_ids[obj.kind],
        "bbox": [float(x), float(y), float(w), float(h)],
        "area": float(obj.area),
        "iscrowd": 0,
        "segmentation": rle_encode_window(obj.mask, obj.mask_origin, shape),
        "threat": bool(obj.threat),
        "group": obj.group,
        "host_id": host_ann_id,
        "effective_z": round(float(obj.effective_z), 3),
        "materials": list(obj.materials),
        "parcel_index": obj.parcel_index,
    }


def item_annotations(truth: ItemTruth, image_id: int, first_ann_id: int) -> list[dict[str, Any]]:
    """COCO annotations of all objects of an item, ids from ``first_ann_id``; hosts resolved to ann ids."""
    cat_ids = category_ids()
    ann_of = {o.object_id: first_ann_id + k for k, o in enumerate(truth.objects)}
    return [
        object_annotation(o, truth.shape, image_id, ann_of[o.object_id],
                          ann_of.get(o.host_id) if o.host_id is not None else None, cat_ids)
        for o in truth.objects
    ]
