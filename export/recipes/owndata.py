"""Own-data training input: a labelled dataset on disk (COCO, Pascal VOC, YOLO txt, GDXray csv) → model inputs.

Where it sits: between the dataset readers ``edge eval`` uses (:mod:`edge_tools.eval.datasets`, one
implementation for both) and the own-data trainer (:mod:`export.recipes.owntrain`). Every item is read exactly as
the service would see it: its pixels through ``load_raw_item`` (pseudo-colour or grey image, or raw dual-energy
counts), conditioned by the runtime's own functions (``degraded_image``, or the site's ``Conditioner`` for raw
counts), composed by the runtime's composer at the model's input size (letterbox, air padding) and kept as uint8.
Boxes are mapped through the same geometry. So a model trained here sees in service what it saw in training.

Bad labels (a box outside the image, a class not trained, an unreadable image, a malformed annotation) stop the
load with an error naming the file, or, with ``skip_bad``, are left out and counted.

Must not: be imported by the runtime, or read labels any other way than through the readers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.condition.composer import MissingChannelsError, compose, geometry
from edge.condition.image import ConditionedImage
from edge.contracts import Channel, InputContract, ResizePolicy
from edge.records import RawItem
from edge_tools.eval.datasets import check_labels, load_raw_item, read_dataset
from edge_tools.eval.records import DatasetError, DatasetItem, Modality

CHANNELS = ("pc", "h")
"""Inputs the own-data detectors read: pseudo-colour (colour and grey images, raw counts through the palette) or
the high-energy grey plane (grey images, raw counts)."""


def store_contract(channels: str, size: int) -> InputContract:
    """What the cache holds per item: the model's channels letterboxed to ``size`` (air padding), not normalised."""
    if channels not in CHANNELS:
        raise DatasetError(f"channels {channels!r} are not valid for own-data training; expected one of "
                           f"{', '.join(CHANNELS)}")
    return InputContract(channels=(Channel(channels),), height=size, width=size, resize=ResizePolicy.LETTERBOX)


@dataclass(frozen=True, slots=True)
class LabelledSet:
    """A labelled dataset as model inputs: ``images`` (N, C, S, S) uint8 (the contract's channels, letterboxed,
    255 = air), per item its boxes (model-input pixels) and class indices into ``classes``."""

    images: NDArray[np.uint8]
    boxes: list[NDArray[np.float32]]
    labels: list[NDArray[np.int64]]
    classes: tuple[str, ...]
    keys: tuple[str, ...]
    channels: str

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: Sequence[int] | NDArray[np.int64]) -> LabelledSet:
        ids = [int(i) for i in idx]
        return LabelledSet(self.images[ids], [self.boxes[i] for i in ids], [self.labels[i] for i in ids],
                           self.classes, tuple(self.keys[i] for i in ids), self.channels)

    def inputs(self, idx: Sequence[int] | None = None) -> NDArray[np.float32]:
        """Normalised model inputs (N, C, S, S) as the detector contract says ((x - 0.5) / 0.25)."""
        from export.recipes.detector import PC_MEAN, PC_STD

        sel = self.images if idx is None else self.images[list(idx)]
        return np.asarray((sel.astype(np.float32) / np.float32(255.0) - PC_MEAN) / PC_STD, np.float32)


@dataclass(frozen=True, slots=True)
class Loaded:
    """What :func:`load_labelled` read: the set, the bad labels it skipped (one message each), the reader's
    notes and the layout."""

    data: LabelledSet
    skipped: tuple[str, ...]
    notes: tuple[str, ...]
    layout: str


def dataset_classes(items: Sequence[DatasetItem]) -> tuple[str, ...]:
    """The classes a dataset annotates, sorted (the class order of a bundle trained on it)."""
    return tuple(sorted({o.kind for i in items for o in i.truth.objects}))


def load_labelled(path: Path, channels: str = "pc", size: int = 320, *, classes: Sequence[str] | None = None,
                  skip_bad: bool = False, layout: str = "auto", conditioner: object | None = None,
                  progress: bool = True) -> Loaded:
    """Read the dataset at ``path`` into model inputs of ``channels`` at ``size``.

    Args:
        classes: the classes to train, in bundle order; None = every class the dataset annotates (sorted).
            A box of another class is a bad label.
        skip_bad: leave bad labels' items out and count them, instead of raising.
        conditioner: an ``edge.condition.Conditioner`` (the site's calibrations) for raw dual-energy items.

    Raises:
        DatasetError: the dataset cannot be read, or (without ``skip_bad``) a bad label, naming its file.
    """
    from tqdm import tqdm

    from edge.sources.item_meta import file_item_meta

    bad: list[str] = []
    ds = read_dataset(Path(path), layout, modality="auto", exclude_groups=("container",),
                      bad=bad if skip_bad else None)
    if not ds.items:
        raise DatasetError(f"{path}: no images found")
    names = tuple(classes) if classes is not None else dataset_classes(ds.items)
    contract = store_contract(channels, size)
    images: list[NDArray[np.uint8]] = []
    boxes: list[NDArray[np.float32]] = []
    labels: list[NDArray[np.int64]] = []
    keys: list[str] = []

    def reject(why: str) -> None:
        if not skip_bad:
            raise DatasetError(why + " (fix it, or pass --skip-bad to leave such items out)")
        bad.append(why)

    bar = tqdm(ds.items, desc=f"reading {Path(path).name}", unit="image", disable=None if progress else True,
               leave=False)
    for n, item in enumerate(bar):
        raw = load_raw_item(item, file_item_meta("train", n, item.key, 30.0), grey_as_colour=channels == "pc")
        if raw.problem is not None:
            reject(f"{item.source + ': ' if item.source else ''}unreadable image: {raw.problem}")
            continue
        image = conditioned_image(item, raw, conditioner)
        height, width = image.shape
        why = check_labels(item, height, width, names)
        if why is not None:
            reject(why)
            continue
        try:
            x = compose(image, contract)[0]
        except MissingChannelsError as exc:
            raise DatasetError(f"{item.files[0]}: {exc}") from None
        g = geometry((0, 0, width, height), contract)
        b = np.asarray([o.box for o in item.truth.objects], np.float32).reshape(-1, 4)
        b = np.clip(b, 0, [width, height, width, height]).astype(np.float32)
        b = b * np.array([g.scale_x, g.scale_y, g.scale_x, g.scale_y], np.float32) \
            + np.array([g.pad_x, g.pad_y, g.pad_x, g.pad_y], np.float32)
        images.append(np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8))
        boxes.append(b)
        labels.append(np.asarray([names.index(o.kind) for o in item.truth.objects], np.int64))
        keys.append(item.key)
    if not images:
        raise DatasetError(f"{path}: every item was skipped as a bad label ({len(bad)}); first: {bad[0]}"
                           if bad else f"{path}: no usable items")
    data = LabelledSet(np.stack(images), boxes, labels, names, tuple(keys), channels)
    return Loaded(data, tuple(bad), ds.notes, ds.layout)


def conditioned_image(item: DatasetItem, raw: RawItem, conditioner: object | None) -> ConditionedImage:
    """A readable dataset item conditioned as the service conditions it: raw counts by the site's ``Conditioner``,
    a colour or grey image by ``degraded_image`` (the one place the own-data readers do this).

    Raises:
        DatasetError: raw counts and no conditioner (no ``--config``).
    """
    from edge.stages.condition import degraded_image

    if item.modality is Modality.RAW:
        if conditioner is None:
            raise DatasetError(f"{item.files[0]}: raw dual-energy counts need the site's calibrations to be "
                               "conditioned: pass --config with the service config that names them")
        return conditioner.condition(raw.low, raw.high)  # type: ignore[attr-defined]
    assert raw.image is not None
    return degraded_image(raw.image)


def split(n: int, fraction: float, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(train, validation) indices: a seeded random ``fraction`` of ``n`` items held out (at least one of each)."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise ValueError(f"cannot split {n} item(s) into training and validation")
    order = np.random.default_rng([seed, 31]).permutation(n)
    k = min(n - 1, max(1, round(n * fraction)))
    return np.sort(order[k:]), np.sort(order[:k])


def is_dataset(path: Path) -> bool:
    """Is ``path`` a labelled dataset (rather than a virtual-scanner training cache of ``det_*.npz`` shards)?"""
    path = Path(path)
    if path.is_dir() and any(path.glob("det_*.npz")):
        return False
    from edge_tools.eval.datasets import detect_layout

    try:
        detect_layout(path)
    except DatasetError:
        return False
    return True


ProgressFn = Callable[[str], None]
