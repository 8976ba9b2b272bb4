"""Own-data object crops: a labelled dataset → the crop cache layout the scorer and classifier recipes train on.

Where it sits: ``edge-export train classifier|scorer --data DATASET`` (:mod:`export.recipes.inputs`) reads the
dataset through the readers ``edge eval`` uses (:mod:`edge_tools.eval.datasets`) and crops every labelled box
(grown by the recipes' margin) with the runtime's composer, exactly as the score stage crops a detector's box.
The crops land in a :class:`export.recipes.simdata.CropSet` (channels hlz then pc); a channel group the images
cannot provide (``hlz`` from a pseudo-colour picture) stays zero and is refused by :func:`require`.

Public threat datasets box only the threats; benign evidence then comes from ``background`` random windows per
image that overlap no labelled box (kind ``background``), sized like the labelled boxes. Such windows may hold an
unlabelled threat (SIXray boxes one object per image): docs/models.md says what that costs.

Must not: be imported by the runtime.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.condition.composer import MissingChannelsError, compose
from edge.contracts import Channel, InputContract, ResizePolicy
from edge_tools.eval.datasets import check_labels, load_raw_item, read_dataset
from edge_tools.eval.records import DatasetError
from export.recipes.owndata import conditioned_image
from export.recipes.simdata import CROP_MARGIN, CROP_SIZE, CropSet, expand

BACKGROUND = "background"
GROUPS = {"hlz": (Channel.HLZ, slice(0, 3)), "pc": (Channel.PC, slice(3, 6))}


def _windows(rng: np.random.Generator, n: int, sizes: NDArray[np.float64], height: int, width: int,
             boxes: NDArray[np.float64]) -> list[tuple[float, float, float, float]]:
    """Up to ``n`` random windows (sizes drawn from ``sizes`` (M, 2) w/h) inside the image that overlap no box."""
    out: list[tuple[float, float, float, float]] = []
    for _ in range(20 * n):
        if len(out) >= n:
            break
        w, h = sizes[int(rng.integers(len(sizes)))]
        w, h = min(w, width - 1), min(h, height - 1)
        if w < 4 or h < 4:
            continue
        x1, y1 = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
        cand = np.array([x1, y1, x1 + w, y1 + h])
        if len(boxes):
            iw = np.clip(np.minimum(cand[2], boxes[:, 2]) - np.maximum(cand[0], boxes[:, 0]), 0, None)
            ih = np.clip(np.minimum(cand[3], boxes[:, 3]) - np.maximum(cand[1], boxes[:, 1]), 0, None)
            if (iw * ih).max() > 0:
                continue
        out.append((x1, y1, x1 + float(w), y1 + float(h)))
    return out


def dataset_crops(path: Path, channels: str = "pc", *, threat_kinds: Collection[str] = (), background: int = 2,
                  seed: int = 0, skip_bad: bool = False, conditioner: object | None = None,
                  layout: str = "auto") -> tuple[CropSet, tuple[str, ...]]:
    """(crops, bad labels skipped) of the dataset at ``path``: one crop per labelled box (threat flag by the
    readers' rule, ``threat_kinds``) and ``background`` benign windows per image.

    Raises:
        DatasetError: unreadable dataset, a raw item without ``conditioner``, images that cannot provide
            ``channels``, or (without ``skip_bad``) a bad label, naming its file.
    """
    from edge.sources.item_meta import file_item_meta

    if channels not in GROUPS:
        raise DatasetError(f"crop channels {channels!r}: expected one of {', '.join(GROUPS)}")
    group, where = GROUPS[channels]
    contract = InputContract(channels=(group,), height=CROP_SIZE, width=CROP_SIZE, resize=ResizePolicy.LETTERBOX)
    bad: list[str] = []
    ds = read_dataset(Path(path), layout, threat_kinds=threat_kinds, bad=bad if skip_bad else None)
    rng = np.random.default_rng([seed, 31])
    sizes = np.asarray([(o.box[2] - o.box[0], o.box[3] - o.box[1]) for i in ds.items for o in i.truth.objects],
                       np.float64).reshape(-1, 2)
    if not len(sizes):
        sizes = np.asarray([[48.0, 48.0]])
    crops: list[NDArray[np.float16]] = []
    item_ix: list[int] = []
    kind: list[str] = []
    threat: list[bool] = []
    item_threat: list[bool] = []
    for n, item in enumerate(ds.items):
        raw = load_raw_item(item, file_item_meta("crops", n, item.key, 30.0), grey_as_colour=channels == "pc")
        why = f"{item.source + ': ' if item.source else ''}unreadable image: {raw.problem}" if raw.problem else None
        if why is None:
            image = conditioned_image(item, raw, conditioner)
            height, width = image.shape
            why = check_labels(item, height, width)
        if why is not None:
            if not skip_bad:
                raise DatasetError(why + " (fix it, or pass --skip-bad to leave such items out)")
            bad.append(why)
            continue
        objs = list(item.truth.objects)
        boxes = np.asarray([o.box for o in objs], np.float64).reshape(-1, 4)
        regions = [expand(tuple(b), CROP_MARGIN, height, width) for b in boxes.tolist()]  # type: ignore[arg-type]
        windows = _windows(rng, background, sizes, height, width, boxes)
        if not regions and not windows:
            continue
        try:
            x = compose(image, contract, np.asarray(regions + windows, np.float64))
        except MissingChannelsError as exc:
            raise DatasetError(f"{item.files[0]}: {exc}; train with --channels pc") from None
        full = np.zeros((len(x), 6, CROP_SIZE, CROP_SIZE), np.float16)
        full[:, where] = x.astype(np.float16)
        crops.append(full)
        item_ix.extend([n] * len(x))
        kind.extend([o.kind for o in objs] + [BACKGROUND] * len(windows))
        threat.extend([o.threat for o in objs] + [False] * len(windows))
        item_threat.extend([item.truth.threat] * len(x))
    if not crops:
        raise DatasetError(f"{path}: no crops (no labelled boxes and no background windows)")
    n_all = len(kind)
    c = CropSet(np.concatenate(crops), np.asarray(item_ix, np.int64), np.asarray(kind, str),
                np.asarray(kind, str), np.asarray(threat, bool), np.zeros(n_all, bool),
                np.asarray(item_threat, bool))
    return c, tuple(bad)
