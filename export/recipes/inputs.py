"""The recipes' inputs, read and checked: virtual-scanner caches, labelled datasets, a site's conditioner, the
detector trainers' geometry options.

Why a module: the training, evaluation and packing jobs share these readers, and a wrong input (a labelled dataset
where a cache is wanted, no shards, a bad label, an unreadable service config) must stop every command the same
way, with one line and exit 1 (:class:`~export.errors.RecipeInputError`) or typer's usage error for a malformed
option (:class:`~export.errors.RecipeOptionError`), never a traceback. ``export.recipes.cli_io.reported`` turns
both into typer's exits. Must not: import typer, print anything but through ``progress``, or be imported by the
runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from export.errors import RecipeInputError, RecipeOptionError
from export.recipes.owndata import is_dataset

if TYPE_CHECKING:
    from edge.condition.conditioner import Conditioner
    from export.recipes.detector import Geometry
    from export.recipes.detector_classes import ClassDetSet
    from export.recipes.simdata import CropSet, DetSet

NOT_A_DATASET = "or give a labelled dataset (COCO json, VOC, YOLO or GDXray csv folder)"


def geometry(scale: str, aspect: float) -> Geometry:
    """The detector trainers' ``--scale MIN,MAX`` and ``--aspect`` as a :class:`export.recipes.detector.Geometry`."""
    from export.recipes.detector import Geometry

    try:
        lo, hi = (float(v) for v in scale.split(","))
        return Geometry(lo, hi, aspect)
    except ValueError as e:
        raise RecipeOptionError(f"--scale {scale!r} / --aspect {aspect}: {e} (e.g. --scale 0.5,2 --aspect 1.3)") \
            from e


def det_cache(data: Path, progress: Callable[[str], None], sim_command: str = "") -> DetSet:
    """A virtual-scanner detection cache (``train simulate``), its size on the progress line. A missing one names
    the dataset alternative; a command that reads caches only (``sim_command``) refuses a labelled dataset first."""
    from export.recipes.simdata import load_det

    if sim_command:
        sim_only(data, sim_command)
    progress(f"loading {data} …")
    try:
        ds = load_det(data)
    except FileNotFoundError as exc:
        if sim_command:
            raise
        raise RecipeInputError(f"{exc}; {NOT_A_DATASET}") from exc
    progress(f"{len(ds.images)} items, {sum(len(b) for b in ds.boxes)} boxes")
    return ds


def class_cache(data: Path, command: str, progress: Callable[[str], None]) -> ClassDetSet:
    """A virtual-scanner cache with the class of every box (``train detector-classes``), its class counts on the
    progress line; a labelled dataset is refused."""
    import numpy as np

    from export.recipes import detector_classes as dc

    sim_only(data, command)
    progress(f"loading {data} …")
    ds = dc.load_class_det(data)
    counts = np.bincount(np.concatenate(ds.labels).clip(min=-1) + 1, minlength=len(dc.CLASSES) + 1)
    progress(f"{len(ds.images)} items, {int(counts[1:].sum())} labelled boxes ("
             + ", ".join(f"{c} {int(n)}" for c, n in zip(dc.CLASSES, counts[1:], strict=True))
             + f"), {int(counts[0])} background objects")
    return ds


def sim_only(data: Path, command: str) -> None:
    """Stop a virtual-scanner-cache command given a labelled dataset (or nothing) with a clear error, not a
    FileNotFoundError traceback."""
    if is_dataset(data):
        raise RecipeInputError(f"{data} is a labelled dataset; `train {command}` reads virtual-scanner caches (`train "
                               "simulate`): train on a dataset with `train detector --data DATASET` (class-aware by "
                               "default)")
    if not any(data.glob("det_*.npz")):
        raise RecipeInputError(f"{data}: no det_*.npz shards (run `edge-export train simulate` first), and not a "
                               "labelled dataset")


def conditioner(config: Path | None) -> Conditioner | None:
    """The site's conditioner (flat-field and energy calibrations of the service config), for raw datasets: the
    one loader ``edge-export``'s calibration data uses (``export.calibration.conditioner_from``), its refusal
    reported as a bad input."""
    from export.calibration import conditioner_from
    from export.errors import ExportError

    try:
        conditioned: Conditioner | None = conditioner_from(config)
    except ExportError as exc:
        raise RecipeInputError(str(exc)) from exc
    return conditioned


def crops(path: Path, channels: str = "hlz", skip_bad: bool = False,
          progress: Callable[[str], None] = print) -> CropSet:
    """A crop cache folder (``train simulate`` / ``detcrops``), or the crops of a labelled dataset
    (:func:`export.recipes.owncrops.dataset_crops`: labelled boxes plus benign background windows)."""
    from export.recipes.simdata import load_crops

    if not is_dataset(path):
        try:
            return load_crops(path)
        except FileNotFoundError as exc:
            raise RecipeInputError(f"{exc}; {NOT_A_DATASET}") from exc
    from edge_tools.eval.records import DatasetError
    from export.recipes.owncrops import dataset_crops

    try:
        found, skipped = dataset_crops(path, channels, skip_bad=skip_bad)
    except DatasetError as exc:
        raise RecipeInputError(str(exc)) from exc
    progress(f"{path}: {len(found.crops)} crops ({int(found.threat.sum())} threats), {len(skipped)} bad labels "
             "skipped")
    return found
