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
* ``yolo`` — a YOLO txt folder: ``images/``, ``labels/<stem>.txt`` (``class cx cy w h``, normalised to the image),
  class names from ``classes.txt``/``obj.names`` (one a line) or ``data.yaml`` ``names`` (here or one folder up).

The same readers feed ``edge-export train … --data`` (one implementation for evaluation and training). A
malformed label raises :class:`DatasetError` naming its file; with ``bad=[]`` it is recorded there instead and
its item left out (``--skip-bad``). :func:`check_labels` judges what needs the pixels (box outside the image,
class not in the trained set); the training loader calls it once it has read the image.

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
from collections.abc import Collection, Mapping, MutableSequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.records import ItemMeta, RawItem
from edge_tools.eval.records import BoxTuple, Dataset, DatasetError, DatasetItem, ItemTruth, Modality, TruthObject

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LAYOUTS = ("auto", "coco", "gdxray", "voc", "yolo")
YOLO_NAMES = ("classes.txt", "obj.names", "data.yaml", "dataset.yaml")
BOX_TOLERANCE_PX = 2.0
"""How far a box may reach past the image edge before it is a bad label (annotation tools round outwards)."""

Bad = MutableSequence[str] | None
"""Where malformed labels go: None = raise :class:`DatasetError`; a list = record the message, drop the item."""


def _reject(bad: Bad, err: DatasetError) -> None:
    """Raise ``err``, or record it when the caller collects bad labels (``--skip-bad``)."""
    if bad is None:
        raise err
    bad.append(str(err))


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
        if (path / "labels").is_dir() and (path / "images").is_dir():
            return "yolo"
    raise DatasetError(f"{path}: not a dataset; expected a COCO .json file, or a folder holding annotations.json "
                       "(COCO / virtual scanner), boxes_xyxy.csv (GDXray-style), annotations_voc/ (SIXray VOC) or "
                       "images/ + labels/ (YOLO txt)")


def read_dataset(path: Path, layout: str = "auto", *, modality: str = "auto",
                 threat_kinds: Collection[str] = (), exclude_groups: Collection[str] = ("container",),
                 bad: Bad = None) -> Dataset:
    """Read the dataset at ``path``.

    Args:
        layout: ``auto``, ``coco``, ``gdxray``, ``voc`` or ``yolo``.
        modality: ``auto`` (raw when the COCO image names raw files) or ``image`` (always the image file).
        threat_kinds: kinds that are threats when an annotation has no ``threat`` key.
        exclude_groups: annotation groups that are not objects to find (the sim's parcels themselves).
        bad: None (a malformed label raises) or a list collecting one message per malformed label, whose item
            is then left out.

    Raises:
        DatasetError: unknown layout, unreadable annotation file, or (``bad`` None) a malformed label.
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
        return read_coco(ann, modality=modality, threat_kinds=threat_kinds, exclude_groups=exclude_groups, bad=bad)
    if chosen == "gdxray":
        return read_gdxray(path, bad=bad)
    if chosen == "yolo":
        return read_yolo(path, threat_kinds=threat_kinds, bad=bad)
    return read_voc(path, threat_kinds=threat_kinds, bad=bad)


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
              exclude_groups: Collection[str] = ("container",), bad: Bad = None) -> Dataset:
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
        try:
            image_id = int(image["id"])
        except (KeyError, TypeError, ValueError):
            _reject(bad, DatasetError(f"{ann_file}: image {image!r:.80} has no valid id"))
            continue
        where = f"{ann_file}: image {image_id}"
        raw_ann = by_image.get(image_id, [])
        boxes: dict[int, BoxTuple] = {}
        objects: list[tuple[dict[str, Any], TruthObject]] = []
        try:
            for ann in raw_ann:
                box = _xywh_to_xyxy(ann.get("bbox"), f"{where} ({image.get('file_name')}) annotation {ann.get('id')}")
                boxes[int(ann.get("id", -1))] = box
                cat = ann.get("category_id", -1)
                if names and int(cat) not in names:
                    raise DatasetError(f"{where} ({image.get('file_name')}) annotation {ann.get('id')}: category_id "
                                       f"{cat!r} is not among the categories ({sorted(names)})")
                objects.append((ann, _coco_object(ann, names, kinds, box)))
        except (DatasetError, TypeError, ValueError) as exc:
            _reject(bad, exc if isinstance(exc, DatasetError) else DatasetError(f"{where}: {exc}"))
            continue
        assumed_threat = assumed_threat or (not kinds and any("threat" not in a for a, _ in objects))
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
                               ItemTruth(item_threat, tuple(truth_objects), threat_kinds_present), where)
        else:
            if not image.get("file_name"):
                _reject(bad, DatasetError(f"{where}: no file_name"))
                continue
            item = DatasetItem(_coco_key(image), Modality.IMAGE, (root / str(image["file_name"]),),
                               ItemTruth(item_threat, tuple(truth_objects), threat_kinds_present), where)
        items.append(item)
    if assumed_threat:
        notes.append("annotations without a 'threat' key were taken as threats")
    if exclude_groups:
        notes.append(f"objects of group {', '.join(sorted(exclude_groups))} are not ground truth for the detector")
    raw = sum(i.modality is Modality.RAW for i in items)
    layout = "sim" if raw else "coco"
    return Dataset(ann_file.parent.name or str(ann_file), layout, root, tuple(items), tuple(notes))


def _coco_object(ann: Mapping[str, Any], names: Mapping[int, str], kinds: Collection[str],
                 box: BoxTuple) -> TruthObject:
    """One COCO annotation as a truth object (threat rule in the module docstring)."""
    kind = names.get(int(ann.get("category_id", -1)), str(ann.get("category_id")))
    threat = bool(ann["threat"]) if "threat" in ann else (kind in kinds if kinds else True)
    return TruthObject(box, kind, threat, ann.get("group"))


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


def read_gdxray(folder: Path, bad: Bad = None) -> Dataset:
    """GDXray-style folder: every image in ``images/``; boxes and kinds from ``boxes_xyxy.csv``."""
    csv_path = folder / "boxes_xyxy.csv"
    rows: dict[str, list[TruthObject]] = {}
    lines: dict[str, list[int]] = {}
    rejected: set[str] = set()
    try:
        with csv_path.open(newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    box = tuple(float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
                    if not row.get("image"):
                        raise DatasetError(f"{csv_path}:{n}: no image name")
                    if not all(np.isfinite(box)) or box[2] < box[0] or box[3] < box[1]:
                        raise DatasetError(f"{csv_path}:{n}: {row['image']}: box corners out of order {box}")
                except (KeyError, TypeError, ValueError):
                    _reject(bad, DatasetError(f"{csv_path}:{n}: expected x_min,y_min,x_max,y_max numbers"))
                    rejected.add(str(row.get("image")))
                    continue
                except DatasetError as exc:
                    _reject(bad, exc)
                    rejected.add(str(row.get("image")))
                    continue
                kind = row.get("class_assumed") or row.get("class") or "threat"
                rows.setdefault(row["image"], []).append(TruthObject((box[0], box[1], box[2], box[3]), kind, True))
                lines.setdefault(row["image"], []).append(n)
    except OSError as exc:
        raise DatasetError(f"{csv_path}: cannot read: {exc}") from None
    images = [p for p in _images_in(folder / "images") if p.name not in rejected]
    listed = {p.name for p in images}
    missing = sorted(set(rows) - listed - rejected)

    def where(name: str) -> str:
        return f"{csv_path}:{','.join(map(str, lines[name]))}" if name in lines else ""

    items = [DatasetItem(p.name, Modality.IMAGE, (p,), _truth(rows.get(p.name, []), ()), where(p.name))
             for p in images]
    # A box whose image is missing still is an item to screen: it becomes UNSCREENED (unreadable) and counted.
    items += [DatasetItem(name, Modality.IMAGE, (folder / "images" / name,), _truth(rows[name], ()), where(name))
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


def read_voc(folder: Path, *, threat_kinds: Collection[str] = (), bad: Bad = None) -> Dataset:
    """SIXray-style folder: every image in ``images/``; VOC boxes where present; image-level labels if given."""
    ann_dir = folder / "annotations_voc" if (folder / "annotations_voc").is_dir() else folder / "Annotations"
    boxes: dict[str, list[TruthObject]] = {}
    sources: dict[str, str] = {}
    rejected: set[str] = set()
    for xml in sorted(ann_dir.glob("*.xml")):
        try:
            filename, objects = _voc_boxes(xml, threat_kinds)
        except DatasetError as exc:
            _reject(bad, exc)
            rejected.add(xml.stem)
            continue
        stem = Path(filename).stem if filename else xml.stem
        boxes[stem], sources[stem] = objects, str(xml)
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
        if stem in rejected:
            continue
        items.append(DatasetItem(path.name, Modality.IMAGE, (path,), _truth(boxes.get(stem, []),
                                                                            labels.get(stem, set())),
                                 sources.get(stem, "")))
    return Dataset(folder.name, "voc", folder, tuple(items), tuple(notes))


# ------------------------------------------------------------------------------------------------- YOLO
def yolo_names(folder: Path) -> tuple[str, ...]:
    """Class names of a YOLO folder: ``classes.txt``/``obj.names`` (one a line) or ``data.yaml`` ``names`` (a
    list, or a mapping id → name), looked for in the folder and one folder up (Ultralytics' layout).

    Raises:
        DatasetError: no names file, or one that cannot be read.
    """
    import yaml

    for base in (folder, folder.parent):
        for name in YOLO_NAMES:
            path = base / name
            if not path.is_file():
                continue
            try:
                text = path.read_text(encoding="utf-8")
                if path.suffix != ".yaml":
                    return tuple(line.strip() for line in text.splitlines() if line.strip())
                names = (yaml.safe_load(text) or {}).get("names")
            except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError) as exc:
                raise DatasetError(f"{path}: cannot read class names: {exc}") from None
            if isinstance(names, dict):
                return tuple(str(names[k]) for k in sorted(names, key=int))
            if isinstance(names, list):
                return tuple(str(n) for n in names)
            raise DatasetError(f"{path}: 'names' is not a list or a mapping of class names")
    raise DatasetError(f"{folder}: YOLO folder without class names (expected one of {', '.join(YOLO_NAMES)} here "
                       "or one folder up)")


def _image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of an image file, or None when it cannot be read."""
    try:
        return _read(path, cv2.IMREAD_UNCHANGED).shape[:2]
    except _Unreadable:
        return None


def read_yolo(folder: Path, *, threat_kinds: Collection[str] = (), bad: Bad = None) -> Dataset:
    """YOLO txt folder: every image in ``images/``; ``labels/<stem>.txt`` rows ``class cx cy w h`` (normalised).

    The image is read once for its size (YOLO boxes are fractions of it); an unreadable image keeps its item
    (evaluated as UNSCREENED; the trainer's :func:`check_labels` refuses or skips it)."""
    names = yolo_names(folder)
    kinds = set(threat_kinds)
    items = []
    for path in _images_in(folder / "images"):
        txt = folder / "labels" / f"{path.stem}.txt"
        objects: list[TruthObject] = []
        try:
            rows = txt.read_text(encoding="utf-8").splitlines() if txt.is_file() else []
        except (OSError, UnicodeDecodeError) as exc:
            _reject(bad, DatasetError(f"{txt}: cannot read YOLO labels: {exc}"))
            continue
        size = _image_size(path) if rows else None
        try:
            for n, line in enumerate(rows, start=1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
                except (IndexError, ValueError):
                    raise DatasetError(f"{txt}:{n}: expected 'class cx cy w h', got {line.strip()!r}") from None
                if not 0 <= cls < len(names):
                    raise DatasetError(f"{txt}:{n}: class {cls} is not one of the {len(names)} class names")
                if not all(np.isfinite((cx, cy, w, h))) or w <= 0 or h <= 0:
                    raise DatasetError(f"{txt}:{n}: box {cx} {cy} {w} {h} has no positive, finite size")
                if size is None:
                    break  # the box cannot be placed: check_labels / the runner report the unreadable image
                ih, iw = size
                box = ((cx - w / 2) * iw, (cy - h / 2) * ih, (cx + w / 2) * iw, (cy + h / 2) * ih)
                objects.append(TruthObject(box, names[cls], names[cls] in kinds if kinds else True))
        except DatasetError as exc:
            _reject(bad, exc)
            continue
        items.append(DatasetItem(path.name, Modality.IMAGE, (path,), _truth(objects, ()), str(txt) if rows else ""))
    notes = ["YOLO boxes are threats" + (f" when their class is one of {sorted(kinds)}" if kinds
                                         else " (every annotated class)"), f"classes {list(names)}"]
    return Dataset(folder.name, "yolo", folder, tuple(items), tuple(notes))


# ------------------------------------------------------------------------------------------------- checks
def check_labels(item: DatasetItem, height: int, width: int, classes: Collection[str] | None = None) -> str | None:
    """Why ``item``'s labels are bad for an image of ``height`` x ``width`` (None when they are good): a box
    reaching more than :data:`BOX_TOLERANCE_PX` past the image or of no area, or a class outside ``classes``.
    The message names the label file (or the image when there is none)."""
    where = item.source or str(item.files[0])
    for obj in item.truth.objects:
        x1, y1, x2, y2 = obj.box
        t = BOX_TOLERANCE_PX
        if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
            return (f"{where}: {item.files[0].name}: {obj.kind} box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside "
                    f"the {width}x{height} image")
        if min(x2, width) - max(x1, 0) < 1 or min(y2, height) - max(y1, 0) < 1:
            return f"{where}: {item.files[0].name}: {obj.kind} box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has no area"
        if classes is not None and obj.kind not in classes:
            return (f"{where}: {item.files[0].name}: class {obj.kind!r} is not one of the classes trained "
                    f"({', '.join(sorted(classes))})")
    return None


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
