"""Calibration, validation and parity inputs, prepared exactly as the runtime prepares them.

A data folder holds conditioned items as ``.npz`` (planes ``t_high``, ``t_low``, ``zeff`` (H, W) float32 and/or
``pc`` (H, W, 3) uint8, optional ``label``), which go through the runtime's own input composer
(``edge.condition.composer``) with the model's input contract; or already composed tensors as ``.npy``
((C, H, W) or (N, C, H, W) float32, labels optional in ``labels.json`` as ``{"<file stem>": int}``), or ``.npz``
with an ``input`` array. Mixing is allowed. Nothing here re-implements pre-processing.

Two more sources, each read as the service reads its items (``load_inputs`` tells them apart by their layout):

* a **labelled dataset folder** (COCO, Pascal VOC, YOLO txt, GDXray csv: the readers of ``edge eval``): whole
  images for a detector, or crops at the labelled boxes for a scorer or classifier (``crops``); the label is the
  item's (whole images) or the object's (crops) threat flag;
* the **audit store** (``<day>/<item_id>.npz`` raw high/low that ``audit.save_inputs`` keeps, beside the
  decision's ``<item_id>.json``): conditioned with the site's calibrations (``conditioner``), whole images or
  crops at the boxes the service decided on; the label is 1 for an ALARM.

An item whose pixels cannot be read is left out and counted in ``InputSet.source``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.contracts import InputContract
from edge.errors import EdgeError
from export.errors import ExportError

PLANES = ("t_high", "t_low", "zeff", "pc")


@dataclass(frozen=True, slots=True)
class InputSet:
    """Composed model inputs (N, C, H, W) float32 and, when known, a label per input (1 = anomalous/class)."""

    inputs: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64] | None
    source: str

    def split(self, every: int) -> tuple[InputSet, InputSet]:
        """(rest, every ``every``-th item): a deterministic calibration/validation split."""
        idx = np.arange(len(self.inputs))
        val = idx % every == every - 1
        lab = self.labels
        return (InputSet(self.inputs[~val], None if lab is None else lab[~val], self.source + " (calibration)"),
                InputSet(self.inputs[val], None if lab is None else lab[val], self.source + " (validation)"))


def composer() -> Callable[..., Any]:
    """The runtime's composer function, or ExportError if this checkout does not have it."""
    try:
        module = importlib.import_module("edge.condition.composer")
    except ImportError as exc:
        raise ExportError("conditioned .npz items need edge.condition.composer, which is not importable "
                          f"({exc}); pass already composed .npy tensors instead") from exc
    fn = getattr(module, "compose", None)
    if not callable(fn):
        raise ExportError("edge.condition.composer has no compose() function")
    return fn


def compose_conditioned(planes: dict[str, np.ndarray], contract: InputContract) -> npt.NDArray[np.float32]:
    """Compose one conditioned item to (C, H, W) with the runtime composer."""
    from edge.condition.image import ConditionedImage, Modality

    present = {k: v for k, v in planes.items() if k in PLANES}
    if {"t_high", "t_low", "zeff"} <= set(present):
        modality = Modality.DUAL_ENERGY
    elif "pc" in present:
        modality = Modality.PSEUDO_COLOUR
    else:
        modality = Modality.SINGLE_ENERGY
    image = ConditionedImage(
        modality=modality,
        t_high=None if "t_high" not in present else np.ascontiguousarray(present["t_high"], dtype=np.float32),
        t_low=None if "t_low" not in present else np.ascontiguousarray(present["t_low"], dtype=np.float32),
        zeff=None if "zeff" not in present else np.ascontiguousarray(present["zeff"], dtype=np.float32),
        pc=None if "pc" not in present else np.ascontiguousarray(present["pc"], dtype=np.uint8),
    )
    out = np.asarray(composer()(image, contract), dtype=np.float32)
    return out[0] if out.ndim == 4 else out


def _check(arr: np.ndarray, contract: InputContract, where: Path) -> npt.NDArray[np.float32]:
    want = (contract.tensor_channels, contract.height, contract.width)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != want:
        raise ExportError(f"{where}: tensor shape {arr.shape} does not match the input contract (N, "
                          f"{', '.join(map(str, want))})")
    if not np.all(np.isfinite(arr)):
        raise ExportError(f"{where}: tensor holds NaN or infinite values")
    return arr.astype(np.float32, copy=False)


def _is_dataset(folder: Path) -> bool:
    from edge_tools.eval.datasets import detect_layout
    from edge_tools.eval.records import DatasetError

    try:
        detect_layout(folder)
    except DatasetError:
        return False
    return True


def _is_audit_store(folder: Path) -> bool:
    """Day folders (``YYYY-MM-DD``) holding saved raw inputs: the audit store's layout."""
    import datetime as dt

    for day in folder.iterdir() if folder.is_dir() else ():
        try:
            dt.date.fromisoformat(day.name)
        except ValueError:
            continue
        if day.is_dir() and any(day.glob("*.npz")):
            return True
    return False


def _compose_item(image: Any, contract: InputContract, boxes: list[tuple[float, float, float, float]] | None
                  ) -> npt.NDArray[np.float32]:
    """The item (``boxes`` None) or its crops, (N, C, H, W), by the runtime composer."""
    if boxes is not None and not boxes:
        return np.zeros((0, contract.tensor_channels, contract.height, contract.width), np.float32)
    arr = np.asarray(boxes, np.float64) if boxes is not None else None
    return np.asarray(composer()(image, contract, arr), np.float32)


def dataset_inputs(path: Path, contract: InputContract, *, crops: bool = False, conditioner: Any = None,
                   limit: int | None = None, progress: Callable[[int, int], None] | None = None) -> InputSet:
    """Model inputs from a labelled dataset (module docstring): whole images, or (``crops``) one per box.

    Raises:
        ExportError: the dataset cannot be read, raw items without a ``conditioner``, no usable input, or a
            contract the images cannot provide (e.g. ``z`` from a pseudo-colour picture).
    """
    from edge.errors import EdgeError as _Edge
    from edge.sources.item_meta import file_item_meta
    from edge.stages.condition import degraded_image
    from edge_tools.eval.datasets import load_raw_item, read_dataset

    try:
        ds = read_dataset(path)
    except _Edge as exc:
        raise ExportError(str(exc)) from exc
    items = ds.items[:limit] if limit is not None else ds.items
    grey_as_colour = any(str(c) == "pc" for c in contract.channels)
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    unreadable = 0
    for n, item in enumerate(items):
        raw = load_raw_item(item, file_item_meta("calibration", n, item.key, 30.0), grey_as_colour=grey_as_colour)
        if raw.problem is not None:
            unreadable += 1
            continue
        try:
            if raw.image is not None:
                image = degraded_image(raw.image)
            elif conditioner is None:
                raise ExportError(f"{item.files[0]}: raw dual-energy counts need the site's calibrations (--config)")
            else:
                image = conditioner.condition(raw.low, raw.high)
            objs = list(item.truth.objects)
            x = _compose_item(image, contract, [o.box for o in objs] if crops else None)
        except _Edge as exc:
            raise ExportError(f"{item.files[0]}: {exc}") from exc
        arrays.append(x)
        labels.extend([int(o.threat) for o in objs] if crops else [int(item.truth.threat)])
        if progress is not None:
            progress(n + 1, len(items))
    return _finish(arrays, labels, contract, f"{path} ({'crops at the labelled boxes' if crops else 'whole images'}"
                   + (f"; {unreadable} unreadable images left out" if unreadable else "") + ")")


def audit_inputs(audit_dir: Path, contract: InputContract, conditioner: Any, *, crops: bool = False,
                 limit: int | None = None, progress: Callable[[int, int], None] | None = None) -> InputSet:
    """Model inputs from the audit store's saved raw inputs (module docstring), newest day last.

    Raises:
        ExportError: no saved inputs (``audit.save_inputs`` off), or no ``conditioner`` to condition them.
    """
    import json as _json

    from edge.errors import EdgeError as _Edge

    if conditioner is None:
        raise ExportError(f"{audit_dir}: the audit store's raw inputs need the site's calibrations: pass --config "
                          "with the service config")
    files = sorted(p for day in sorted(audit_dir.iterdir()) if day.is_dir() for p in day.glob("*.npz"))
    if limit is not None:
        files = files[:limit]
    if not files:
        raise ExportError(f"{audit_dir}: no saved inputs (<day>/<item_id>.npz); enable `audit: save_inputs: true`")
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    unreadable = 0
    for n, path in enumerate(files):
        record = path.with_suffix(".json")
        try:
            with np.load(path, allow_pickle=False) as npz:
                high, low = npz["high"], npz["low"]
            decision = _json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
            image = conditioner.condition(low, high)
            boxes = [(float(o["box"]["x1"]), float(o["box"]["y1"]), float(o["box"]["x2"]), float(o["box"]["y2"]))
                     for o in decision.get("objects", [])] if crops else None
            x = _compose_item(image, contract, boxes)
        except (OSError, KeyError, ValueError, TypeError, _Edge) as exc:
            if isinstance(exc, _Edge) and "channel" in str(exc):
                raise ExportError(f"{path}: {exc}") from exc
            unreadable += 1
            continue
        alarm = int(decision.get("verdict") == "alarm")
        arrays.append(x)
        labels.extend([alarm] * len(x))
        if progress is not None:
            progress(n + 1, len(files))
    return _finish(arrays, labels, contract, f"audit store {audit_dir} ({len(files) - unreadable} saved items"
                   + (f", {unreadable} unreadable left out" if unreadable else "") + ")")


def _finish(arrays: list[np.ndarray], labels: list[int], contract: InputContract, source: str) -> InputSet:
    kept = [a for a in arrays if len(a)]
    if not kept:
        raise ExportError(f"{source}: no usable inputs")
    inputs = np.concatenate(kept, axis=0).astype(np.float32, copy=False)  # normalised by the composer
    return InputSet(inputs=inputs, labels=np.asarray(labels, np.int64), source=source)


def load_inputs(folder: Path, contract: InputContract, limit: int | None = None,
                progress: Callable[[int, int], None] | None = None, *, crops: bool = False,
                conditioner: Any = None) -> InputSet:
    """Read every item of ``folder`` (sorted by name), composing conditioned items with the runtime composer.

    A labelled dataset folder and the audit store are read by :func:`dataset_inputs` and :func:`audit_inputs`
    (``crops``: one input per box, for scorers and classifiers; ``conditioner``: the site's calibrations for raw
    counts)."""
    if _is_dataset(folder):
        return dataset_inputs(folder, contract, crops=crops, conditioner=conditioner, limit=limit,
                              progress=progress)
    if _is_audit_store(folder):
        return audit_inputs(folder, contract, conditioner, crops=crops, limit=limit, progress=progress)
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such data folder")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".npy", ".npz"))
    if limit is not None:
        files = files[:limit]
    if not files:
        raise ExportError(f"{folder}: no .npy or .npz items")
    label_file = folder / "labels.json"
    label_map: dict[str, int] = json.loads(label_file.read_text()) if label_file.is_file() else {}
    arrays: list[np.ndarray] = []
    labels: list[int | None] = []
    for i, path in enumerate(files):
        try:
            if path.suffix == ".npy":
                arr = _check(np.load(path, allow_pickle=False), contract, path)
                label = label_map.get(path.stem)
            else:
                with np.load(path, allow_pickle=False) as npz:
                    data = {k: npz[k] for k in npz.files}
                if "input" in data:
                    arr = _check(data["input"], contract, path)
                else:
                    arr = _check(compose_conditioned(data, contract), contract, path)
                label = int(data["label"]) if "label" in data else label_map.get(path.stem)
        except (OSError, ValueError, EdgeError) as exc:
            raise ExportError(f"{path}: unreadable item: {exc}") from exc
        arrays.append(arr)
        labels.extend([label] * len(arr))
        if progress is not None:
            progress(i + 1, len(files))
    inputs = np.concatenate(arrays, axis=0)
    have = [lab for lab in labels if lab is not None]
    lab_arr = np.array(have, dtype=np.int64) if len(have) == len(labels) else None
    return InputSet(inputs=inputs, labels=lab_arr, source=str(folder))


def synthetic_inputs(contract: InputContract, n: int, seed: int = 0) -> InputSet:
    """Uniform [0, 1] planes, normalised per the contract: for parity checks when no data folder is given."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, contract.tensor_channels, contract.height, contract.width), dtype=np.float32)
    if contract.mean and contract.std:
        x = (x - np.array(contract.mean, np.float32)[:, None, None]) / np.array(contract.std, np.float32)[:, None, None]
    return InputSet(inputs=x.astype(np.float32), labels=None, source=f"synthetic uniform (seed {seed})")


def conditioner_from(config: Path | None) -> Any:
    """The site's conditioner (the flat-field and energy calibrations a service config names), for raw counts in a
    dataset or the audit store; None without a config.

    Raises:
        ExportError: the config or its calibrations cannot be loaded (the service's own message).
    """
    if config is None:
        return None
    from edge.condition.conditioner import Conditioner
    from edge.config import load_config

    try:
        return Conditioner.from_config(load_config(config).condition)
    except EdgeError as exc:
        raise ExportError(str(exc)) from exc


def crops_for(role: object) -> bool:
    """Does a model of ``role`` read object crops (scorers, classifiers) rather than whole items (detectors)?"""
    return str(role) != "detector"
