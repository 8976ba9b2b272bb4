"""Labelled dataset readers for ``edge eval``: annotation files → ``DatasetItem`` lists; files → ``RawItem``.

Where it sits: before the offline runner. Readers only parse annotations and list files (cheap, in the main
process); ``load_raw_item`` reads one item's pixels inside a worker process, exactly as a frame source would
hand them to the pipeline. Layouts:

* ``coco`` — a COCO ``annotations.json``. Images that name ``low_file``/``high_file`` (the virtual scanner's
  output, ``docs/sim.md``) are read as raw dual-energy counts; any other image (pseudo-colour or grey) as a
  degraded ``RawItem.image``. ``--modality image`` forces the latter (the sim's pseudo-colour previews).
* ``gdxray`` — a folder with ``images/`` and ``boxes_xyxy.csv`` (``image,…,class_assumed,x_min,y_min,x_max,y_max``).
* ``voc`` — a SIXray-style folder: ``images/``, Pascal VOC ``annotations_voc/*.xml`` (or ``Annotations/``), and
  optionally ``labels_cls/labels.csv`` with image-level labels (``name,Gun,Knife,…`` as 1/-1).

Threat flags: an annotation's own ``threat`` key wins; else a kind listed in ``threat_kinds``; else (public
threat datasets annotate only prohibited items) every annotated object is a threat. An item is a threat item if
its image says so (``threat`` key, image-level label) or any of its objects is a threat. The reader records such
assumptions in ``Dataset.notes``.

Must not: drop an item because its pixels are unreadable (it is evaluated as UNSCREENED and counted), or
import torch.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.records import ItemMeta, RawItem
from edge_tools.eval.records import BoxTuple, Dataset, DatasetError, DatasetItem, ItemTruth, Modality, TruthObject

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LAYOUTS = ("auto", "coco", "gdxray", "voc")


def detect_layout(path: Path) -> str:
    """Which reader fits ``path`` (a COCO json file, or a folder in one of the layouts).

    Raises:
        DatasetError: nothing recognisable at ``path``.
    """
    if path.is_file() and path.suffix == ".json":
        return "coco"
    if path.is_dir():
        if (path / "annotations.json").is_file():
            return "coco"
        if (path / "boxes_xyxy.csv").is_file():
            return "gdxray"
        if (path / "annotations_voc").is_dir() or (path / "Annotations").is_dir():
            return "voc"
    raise DatasetError(f"{path}: not a dataset; expected a COCO .json file, or a folder holding annotations.json "
                       "(COCO / virtual scanner), boxes_xyxy.csv (GDXray-style) or annotations_voc/ (SIXray VOC)")


def read_dataset(path: Path, layout: str = "auto", *, modality: str = "auto",
                 threat_kinds: Collection[str] = (), exclude_groups: Collection[str] = ("container",)) -> Dataset:
    """Read the dataset at ``path``.

    Args:
        layout: ``auto``, ``coco``, ``gdxray`` or ``voc``.
        modality: ``auto`` (raw when the COCO image names raw files) or ``image`` (always the image file).
        threat_kinds: kinds that are threats when an annotation has no ``threat`` key.
        exclude_groups: annotation groups that are not objects to find (the sim's parcels themselves).

    Raises:
        DatasetError: unknown layout, unreadable or malformed annotation file.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if layout not in LAYOUTS:
        raise DatasetError(f"layout {layout!r} is not valid; expected one of {', '.join(LAYOUTS)}")
    if modality not in ("auto", "image"):
        raise DatasetError(f"modality {modality!r} is not valid; expected auto or image")
    chosen = detect_layout(path) if layout == "auto" else layout
    if chosen == "coco":
        ann = path / "annotations.json" if path.is_dir() else path
        return read_coco(ann, modality=modality, threat_kinds=threat_kinds, exclude_groups=exclude_groups)
    if chosen == "gdxray":
        return read_gdxray(path)
    return read_voc(path, threat_kinds=threat_kinds)


# ------------------------------------------------------------------------------------------------- COCO
def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read COCO annotations: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: not a COCO file (no 'images' list)")
    return data


def _xywh_to_xyxy(bbox: Any, where: str) -> BoxTuple:
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: bbox {bbox!r} is not [x, y, w, h]") from None
    if w < 0 or h < 0 or not all(np.isfinite([x, y, w, h])):
        raise DatasetError(f"{where}: bbox {bbox!r} has a negative or non-finite size")
    return (x, y, x + w, y + h)


def read_coco(ann_file: Path, *, modality: str = "auto", threat_kinds: Collection[str] = (),
              exclude_groups: Collection[str] = ("container",)) -> Dataset:
    """COCO annotations (the virtual scanner's, or any COCO set of pseudo-colour/grey images)."""
    data = _load_json(ann_file)
    root = ann_file.parent
    names: dict[int, str] = {}
    for cat in data.get("categories", []):
        names[int(cat["id"])] = str(cat.get("name", cat["id"]))
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in data.get("annotations", []):
        try:
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{ann_file}: annotation {ann.get('id')!r} has no valid image_id") from None
    kinds = set(threat_kinds)
    notes: list[str] = []
    assumed_threat = False
    items: list[DatasetItem] = []
    for image in data["images"]:
        image_id = int(image["id"])
        where = f"{ann_file}: image {image_id}"
        raw_ann = by_image.get(image_id, [])
        boxes: dict[int, BoxTuple] = {}
        objects: list[tuple[dict[str, Any], TruthObject]] = []
        for ann in raw_ann:
            box = _xywh_to_xyxy(ann.get("bbox"), f"{where} annotation {ann.get('id')}")
            boxes[int(ann.get("id", -1))] = box
            kind = names.get(int(ann.get("category_id", -1)), str(ann.get("category_id")))
            if "threat" in ann:
                threat = bool(ann["threat"])
            elif kinds:
                threat = kind in kinds
            else:
                threat, assumed_threat = True, True
            objects.append((ann, TruthObject(box, kind, threat, ann.get("group"))))
        truth_objects: list[TruthObject] = []
        for ann, obj in objects:
            if obj.group is not None and obj.group in exclude_groups:
                continue
            host = ann.get("host_id")
            host_box = boxes.get(int(host)) if host is not None else None
            truth_objects.append(TruthObject(obj.box, obj.kind, obj.threat, obj.group, host_box))
        threat_kinds_present = tuple(sorted({o.kind for o in truth_objects if o.threat}))
        item_threat = bool(image["threat"]) if "threat" in image else bool(threat_kinds_present)
        if modality == "auto" and image.get("low_file") and image.get("high_file"):
            item = DatasetItem(_coco_key(image), Modality.RAW,
                               (root / str(image["low_file"]), root / str(image["high_file"])),
                               ItemTruth(item_threat, tuple(truth_objects), threat_kinds_present))
        else:
            if not image.get("file_name"):
                raise DatasetError(f"{where}: no file_name")
            item = DatasetItem(_coco_key(image), Modality.IMAGE, (root / str(image["file_name"]),),
                               ItemTruth(item_threat, tuple(truth_objects), threat_kinds_present))
        items.append(item)
    if assumed_threat:
        notes.append("annotations without a 'threat' key were taken as threats")
    if exclude_groups:
        notes.append(f"objects of group {', '.join(sorted(exclude_groups))} are not ground truth for the detector")
    raw = sum(i.modality is Modality.RAW for i in items)
    layout = "sim" if raw else "coco"
    return Dataset(ann_file.parent.name or str(ann_file), layout, root, tuple(items), tuple(notes))


def _coco_key(image: Mapping[str, Any]) -> str:
    """A stable, readable key: the sim's item folder name when there is one, else the image's file stem."""
    name = str(image.get("low_file") or image.get("file_name") or image["id"])
    parts = Path(name).parts
    if len(parts) >= 2 and parts[0] == "items":
        return parts[1]
    return f"{int(image['id']):06d}-{Path(name).stem}"


# ------------------------------------------------------------------------------------------------- GDXray
def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: images folder missing")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_gdxray(folder: Path) -> Dataset:
    """GDXray-style folder: every image in ``images/``; boxes and kinds from ``boxes_xyxy.csv``."""
    csv_path = folder / "boxes_xyxy.csv"
    rows: dict[str, list[TruthObject]] = {}
    try:
        with csv_path.open(newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    box = tuple(float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
                except (KeyError, TypeError, ValueError):
                    raise DatasetError(f"{csv_path}:{n}: expected x_min,y_min,x_max,y_max numbers") from None
                if box[2] < box[0] or box[3] < box[1]:
                    raise DatasetError(f"{csv_path}:{n}: box corners out of order {box}")
                kind = row.get("class_assumed") or row.get("class") or "threat"
                rows.setdefault(row["image"], []).append(TruthObject((box[0], box[1], box[2], box[3]), kind, True))
    except OSError as exc:
        raise DatasetError(f"{csv_path}: cannot read: {exc}") from None
    images = _images_in(folder / "images")
    listed = {p.name for p in images}
    missing = sorted(set(rows) - listed)
    items = [DatasetItem(p.name, Modality.IMAGE, (p,), _truth(rows.get(p.name, []), ())) for p in images]
    # A box whose image is missing still is an item to screen: it becomes UNSCREENED (unreadable) and counted.
    items += [DatasetItem(name, Modality.IMAGE, (folder / "images" / name,), _truth(rows[name], ()))
              for name in missing]
    notes = ["every box is a threat (kind from class_assumed); images without boxes are benign items"]
    return Dataset(folder.name, "gdxray", folder, tuple(items), tuple(notes))


def _truth(objects: list[TruthObject], image_kinds: Collection[str]) -> ItemTruth:
    kinds = sorted({o.kind for o in objects if o.threat} | set(image_kinds))
    return ItemTruth(bool(kinds), tuple(objects), tuple(kinds))


# ------------------------------------------------------------------------------------------------- VOC
def _voc_boxes(xml: Path, threat_kinds: Collection[str]) -> tuple[str | None, list[TruthObject]]:
    try:
        tree = ET.parse(xml).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(f"{xml}: cannot read VOC annotation: {exc}") from None
    objects = []
    for obj in tree.iter("object"):
        name = (obj.findtext("name") or "object").strip().lower()
        try:
            box = tuple(float(obj.findtext(f"bndbox/{k}") or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise DatasetError(f"{xml}: object {name!r}: bndbox is not numeric") from None
        if not all(np.isfinite(box)) or box[2] < box[0] or box[3] < box[1]:
            raise DatasetError(f"{xml}: object {name!r}: bndbox {box} is missing or out of order")
        threat = name in threat_kinds if threat_kinds else True
        objects.append(TruthObject((box[0], box[1], box[2], box[3]), name, threat))
    return tree.findtext("filename"), objects


def _image_labels(path: Path) -> dict[str, set[str]]:
    """SIXray ``labels.csv``: name, then one column per class with 1 (present) or -1/0 (absent)."""
    out: dict[str, set[str]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            for row in reader:
                if row:
                    out[row[0]] = {h.strip().lower() for h, v in zip(header[1:], row[1:], strict=False)
                                   if v.strip() == "1"}
    except (OSError, StopIteration) as exc:
        raise DatasetError(f"{path}: cannot read image labels: {exc}") from None
    return out


def read_voc(folder: Path, *, threat_kinds: Collection[str] = ()) -> Dataset:
    """SIXray-style folder: every image in ``images/``; VOC boxes where present; image-level labels if given."""
    ann_dir = folder / "annotations_voc" if (folder / "annotations_voc").is_dir() else folder / "Annotations"
    boxes: dict[str, list[TruthObject]] = {}
    for xml in sorted(ann_dir.glob("*.xml")):
        filename, objects = _voc_boxes(xml, threat_kinds)
        boxes[Path(filename).stem if filename else xml.stem] = objects
    labels_csv = folder / "labels_cls" / "labels.csv"
    labels = _image_labels(labels_csv) if labels_csv.is_file() else {}
    notes = ["VOC boxes are threats" + (f" when their class is one of {sorted(threat_kinds)}" if threat_kinds
                                        else " (every annotated class)")]
    if labels:
        notes.append("item labels and threat kinds also from labels_cls/labels.csv (image-level, may list kinds "
                     "without boxes)")
    items = []
    for path in _images_in(folder / "images"):
        stem = path.stem
        items.append(DatasetItem(path.name, Modality.IMAGE, (path,), _truth(boxes.get(stem, []),
                                                                            labels.get(stem, set()))))
    return Dataset(folder.name, "voc", folder, tuple(items), tuple(notes))


# ------------------------------------------------------------------------------------------------- pixels
def load_raw_item(item: DatasetItem, meta: ItemMeta, grey_as_colour: bool = True) -> RawItem:
    """The ``RawItem`` a frame source would deliver for ``item``; unreadable pixels set ``problem`` instead of
    raising, so that the item still gets its (UNSCREENED) decision.

    ``grey_as_colour``: a grey image (GDXray) is handed on as an RGB image with R = G = B, so that a detector
    that reads ``pc`` can run on it (as the training recipes' real-image check does); otherwise as a grey
    image, which gives only the ``h`` channel.
    """
    try:
        if item.modality is Modality.RAW:
            low, high = (_read(p, cv2.IMREAD_UNCHANGED) for p in item.files)
            for name, arr in (("low", low), ("high", high)):
                if arr.ndim != 2 or arr.dtype != np.uint16:
                    return RawItem(meta, problem=f"{name} image is {arr.shape} {arr.dtype}; expected (H, W) uint16",
                                   truth=item.truth)
            if low.shape != high.shape:
                return RawItem(meta, problem=f"low {low.shape} and high {high.shape} differ", truth=item.truth)
            return RawItem(meta, high=high, low=low, truth=item.truth)
        image = _read(item.files[0], cv2.IMREAD_UNCHANGED)
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]
        if image.ndim == 3 and image.shape[2] == 3:
            if np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 1], image[:, :, 2]):
                image = np.ascontiguousarray(image[:, :, 0])
            else:
                return RawItem(meta, image=_as_uint8(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)), truth=item.truth)
        if image.ndim != 2:
            return RawItem(meta, problem=f"image shape {image.shape} is neither grey nor colour", truth=item.truth)
        grey = _as_uint8(image)
        if grey_as_colour:
            return RawItem(meta, image=np.repeat(grey[:, :, None], 3, axis=2), truth=item.truth)
        return RawItem(meta, image=grey, truth=item.truth)
    except _Unreadable as exc:
        return RawItem(meta, problem=str(exc), truth=item.truth)


class _Unreadable(Exception):
    pass


def _read(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise _Unreadable(f"{path}: file missing")
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise _Unreadable(f"{path}: not a readable image (truncated or corrupt)")
    return np.asarray(image)


def _as_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == np.uint16:
        return np.ascontiguousarray((image // 257).astype(np.uint8))
    raise _Unreadable(f"pixel type {image.dtype} is not 8- or 16-bit")
