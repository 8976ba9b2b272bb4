"""Virtual-scanner training data: simulate items once, condition them, compose model inputs, cache as shards.

Where it sits: the data side of the recipes. One :class:`SimRig` = one virtual scanner with its own flat-field
and step-wedge energy calibration (built exactly as commissioning does, with ``calib/``), and the runtime's
``Conditioner``. Each item is rendered to raw counts, conditioned, and composed with
``edge.condition.composer.compose`` for two contracts: the detector's whole-item input (``pc`` + ``h``,
letterboxed) and the scorer's object crops (``hlz`` + ``pc``, letterboxed). Shards are ``.npz`` files:

``det_<k>.npz``
    ``images`` (N, 4, S, S) uint8 (pc RGB, h; all x255), ``boxes`` (B, 4) float32 xyxy in input pixels,
    ``box_item`` (B,) int index into images, ``box_threat`` (B,) bool, ``box_kind`` (B,) str,
    ``item_threat`` (N,) bool, ``item_shape`` (N, 2) item size in pixels.
``crops_<k>.npz``
    ``crops`` (M, 6, C, C) float16 (h, l, z, pc RGB as the composer gives them), ``item`` (M,) global item
    index, ``kind``, ``group`` (M,) str, ``threat`` (M,) bool, ``tainted`` (M,) bool = a benign object that hosts
    a threat or overlaps one (not benign evidence), ``item_threat`` (M,) bool.

Must not: write anywhere but the cache folder it is given, or be imported by the runtime.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from edge.condition.composer import compose, geometry
from edge.condition.conditioner import Conditioner
from edge.condition.image import ConditionedImage
from edge.contracts import Channel, InputContract, ResizePolicy

DET_SIZE = 384
CROP_SIZE = 64
PRESETS = ("parcels", "baggage", "electronics")
PRESET_WEIGHTS = (0.5, 0.25, 0.25)
RIG_SEED = 7
T = TypeVar("T")


def det_store_contract(size: int = DET_SIZE) -> InputContract:
    """Whole-item input the detector cache stores: pc + h, letterboxed (air padding), no normalisation."""
    return InputContract(channels=(Channel.PC, Channel.H), height=size, width=size, resize=ResizePolicy.LETTERBOX)


def crop_store_contract(size: int = CROP_SIZE) -> InputContract:
    """Object-crop input the scorer cache stores: hlz + pc, letterboxed, no normalisation."""
    return InputContract(channels=(Channel.HLZ, Channel.PC), height=size, width=size,
                         resize=ResizePolicy.LETTERBOX)


class SimRig:
    """A virtual scanner with its commissioning calibrations and the runtime conditioner."""

    def __init__(self, seed: int = RIG_SEED) -> None:
        from calib.energy import fit_energy_calibration, measure_steps, steps_from_records
        from calib.flatfield import ReferenceLines, compute_flatfield
        from edge.condition.flatfield import FlatFieldCorrector
        from edge.config.condition import PaletteConfig
        from sim.physics import DualEnergyScanner, ScannerSpec
        from sim.wedge import render_wedge

        self.scanner = DualEnergyScanner(ScannerSpec(), seed=seed)
        rng = np.random.default_rng(seed + 100)
        dark, air = self.scanner.dark_lines(128, rng), self.scanner.air_lines(128, rng)
        ff = compute_flatfield(ReferenceLines(dark.low, dark.high), ReferenceLines(air.low, air.high),
                               f"recipes sim seed={seed}")
        fit = ("pom", "water", "aluminium", "steel")
        scan = render_wedge(self.scanner, np.random.default_rng(seed + 101), materials=fit, n_steps=8)
        corr = FlatFieldCorrector(ff)
        t_low, t_high = corr.apply(scan.raw.low, 0), corr.apply(scan.raw.high, 1)
        cal = fit_energy_calibration(measure_steps(t_low, t_high, steps_from_records(scan.steps)), fit,
                                     source=f"recipes sim wedge seed={seed}")
        self.conditioner = Conditioner(ff, cal, PaletteConfig())

    def item(self, rng: np.random.Generator, preset: str, threat_rate: float, index: int = 0) -> tuple[
            ConditionedImage, object]:
        """One conditioned item and its ``sim.scene.ItemTruth``."""
        from sim.scene import SceneConfig, build_item

        truth = build_item(rng, preset, SceneConfig(threat_rate=threat_rate), item_index=index)
        raw = self.scanner.render(truth.path_mm, rng)
        return self.conditioner.condition(raw.low, raw.high), truth


@dataclass(frozen=True, slots=True)
class ObjectBox:
    """One ground-truth object (containers excluded) in item pixels."""

    xyxy: tuple[float, float, float, float]
    kind: str
    group: str
    threat: bool
    tainted: bool


def object_boxes(truth: object) -> list[ObjectBox]:
    """Ground-truth boxes of the objects a detector should find: everything but the parcels themselves.

    A benign object is ``tainted`` when it hosts a concealed threat or its box overlaps a threat's box by more
    than 10% of the smaller box: its crop then shows the threat and must not be used as benign evidence.
    """
    objs = [o for o in truth.objects if o.group != "container"]  # type: ignore[attr-defined]
    boxes = []
    threats = [o for o in objs if o.threat]
    hosts = {o.host_id for o in threats if o.host_id is not None}
    for o in objs:
        x, y, w, h = o.bbox_xywh
        xyxy = (float(x), float(y), float(x + w), float(y + h))
        tainted = (not o.threat) and (o.object_id in hosts or any(_overlap(xyxy, t.bbox_xywh) > 0.1
                                                                  for t in threats))
        boxes.append(ObjectBox(xyxy, o.kind, o.group, bool(o.threat), tainted))
    return boxes


def _overlap(a: tuple[float, float, float, float], bxywh: tuple[int, int, int, int]) -> float:
    bx, by, bw, bh = bxywh
    iw = max(0.0, min(a[2], bx + bw) - max(a[0], bx))
    ih = max(0.0, min(a[3], by + bh) - max(a[1], by))
    small = min((a[2] - a[0]) * (a[3] - a[1]), bw * bh)
    return iw * ih / max(small, 1.0)


def expand(xyxy: tuple[float, float, float, float], frac: float, height: int, width: int) -> tuple[
        float, float, float, float]:
    """A box grown by ``frac`` of its size on every side, clipped to the image (crop context)."""
    x1, y1, x2, y2 = xyxy
    dx, dy = (x2 - x1) * frac, (y2 - y1) * frac
    return (max(0.0, x1 - dx), max(0.0, y1 - dy), min(float(width), x2 + dx), min(float(height), y2 + dy))


CROP_MARGIN = 0.05
"""Context added around a ground-truth box before cropping (a detector's boxes are rarely tight)."""


def _shard(args: tuple[Path, int, int, int, float, int, int]) -> str:
    out, shard, start, count, threat_rate, det_size, crop_size = args
    det_file, crop_file = out / f"det_{shard:04d}.npz", out / f"crops_{shard:04d}.npz"
    if det_file.is_file() and crop_file.is_file():
        return f"shard {shard}: cached"
    import cv2

    cv2.setNumThreads(1)
    rig = SimRig()
    dc, cc = det_store_contract(det_size), crop_store_contract(crop_size)
    images: list[NDArray[np.uint8]] = []
    boxes: list[tuple[float, float, float, float]] = []
    box_item: list[int] = []
    box_threat: list[bool] = []
    box_kind: list[str] = []
    item_threat: list[bool] = []
    item_shape: list[tuple[int, int]] = []
    crops: list[NDArray[np.float16]] = []
    c_item: list[int] = []
    c_kind: list[str] = []
    c_group: list[str] = []
    c_threat: list[bool] = []
    c_tainted: list[bool] = []
    c_item_threat: list[bool] = []
    t0 = time.monotonic()
    for i in range(start, start + count):
        rng = np.random.default_rng([RIG_SEED, i])
        preset = PRESETS[int(rng.choice(len(PRESETS), p=PRESET_WEIGHTS))]
        image, truth = rig.item(rng, preset, threat_rate, i)
        h, w = image.shape
        objs = object_boxes(truth)
        g = geometry((0, 0, w, h), dc)
        n = len(images)
        images.append(np.clip(np.rint(compose(image, dc)[0] * 255.0), 0, 255).astype(np.uint8))
        item_threat.append(any(o.threat for o in objs))
        item_shape.append((h, w))
        for o in objs:
            x1, y1, x2, y2 = o.xyxy
            boxes.append((x1 * g.scale_x + g.pad_x, y1 * g.scale_y + g.pad_y,
                          x2 * g.scale_x + g.pad_x, y2 * g.scale_y + g.pad_y))
            box_item.append(n)
            box_threat.append(o.threat)
            box_kind.append(o.kind)
        if objs:
            cb = np.asarray([expand(o.xyxy, CROP_MARGIN, h, w) for o in objs], np.float64)
            crops.append(compose(image, cc, cb).astype(np.float16))
            for o in objs:
                c_item.append(i)
                c_kind.append(o.kind)
                c_group.append(o.group)
                c_threat.append(o.threat)
                c_tainted.append(o.tainted)
                c_item_threat.append(item_threat[-1])
    np.savez(det_file.with_suffix(".tmp.npz"), images=np.stack(images),
             boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
             box_item=np.asarray(box_item, np.int64), box_threat=np.asarray(box_threat, bool),
             box_kind=np.asarray(box_kind, str), item_threat=np.asarray(item_threat, bool),
             item_shape=np.asarray(item_shape, np.int64), item_index=np.arange(start, start + count))
    det_file.with_suffix(".tmp.npz").rename(det_file)
    save_crops(CropSet(np.concatenate(crops) if crops else np.zeros((0, 6, crop_size, crop_size), np.float16),
                       np.asarray(c_item, np.int64), np.asarray(c_kind, str), np.asarray(c_group, str),
                       np.asarray(c_threat, bool), np.asarray(c_tainted, bool), np.asarray(c_item_threat, bool)),
               crop_file)
    return f"shard {shard}: {count} items in {time.monotonic() - t0:.0f} s"


def generate(out: Path, n_items: int, first_item: int = 0, threat_rate: float = 0.3, shard_size: int = 50,
             workers: int = 2, det_size: int = DET_SIZE, crop_size: int = CROP_SIZE,
             progress: Callable[[str], None] = print) -> None:
    """Simulate ``n_items`` items (global indices from ``first_item``; item ``i`` always comes from seed
    ``(RIG_SEED, i)``) into shards under ``out``; existing shards are kept (resumable)."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for k, start in enumerate(range(first_item, first_item + n_items, shard_size)):
        count = min(shard_size, first_item + n_items - start)
        jobs.append((out, k, start, count, threat_rate, det_size, crop_size))
    run_shards(_shard, jobs, workers, progress)


def run_shards(fn: Callable[[T], str], jobs: Sequence[T], workers: int, progress: Callable[[str], None]) -> None:
    """Run shard jobs in this process (``workers`` <= 1) or in spawned processes, reporting each one's line."""
    if workers <= 1:
        for j in jobs:
            progress(fn(j))
        return
    with mp.get_context("spawn").Pool(workers) as pool:
        for msg in pool.imap_unordered(fn, jobs):
            progress(msg)


@dataclass(frozen=True, slots=True)
class DetSet:
    """The detector cache loaded in memory."""

    images: NDArray[np.uint8]
    boxes: list[NDArray[np.float32]]
    threat: list[NDArray[np.bool_]]
    item_threat: NDArray[np.bool_]
    kinds: list[NDArray[np.str_]]


def load_det(folder: Path, limit: int | None = None) -> DetSet:
    """All ``det_*.npz`` shards of a cache folder, in shard order."""
    images, boxes, threat, item_threat, kinds = [], [], [], [], []
    for f in sorted(folder.glob("det_*.npz")):
        if f.name.endswith(".tmp.npz"):
            continue
        with np.load(f) as d:
            images.append(d["images"])
            for n in range(len(d["images"])):
                sel = d["box_item"] == n
                boxes.append(d["boxes"][sel])
                threat.append(d["box_threat"][sel])
                kinds.append(d["box_kind"][sel])
            item_threat.append(d["item_threat"])
        if limit is not None and sum(len(x) for x in images) >= limit:
            break
    if not images:
        raise FileNotFoundError(f"{folder}: no det_*.npz shards (run `edge-export train simulate` first)")
    imgs = np.concatenate(images)[:limit]
    n = len(imgs)
    return DetSet(imgs, boxes[:n], threat[:n], np.concatenate(item_threat)[:n], kinds[:n])


@dataclass(frozen=True, slots=True)
class CropSet:
    """The object-crop cache loaded in memory (float16 crops, channels h, l, z, R, G, B)."""

    crops: NDArray[np.float16]
    item: NDArray[np.int64]
    kind: NDArray[np.str_]
    group: NDArray[np.str_]
    threat: NDArray[np.bool_]
    tainted: NDArray[np.bool_]
    item_threat: NDArray[np.bool_]

    def select(self, mask: NDArray[np.bool_]) -> CropSet:
        return CropSet(self.crops[mask], self.item[mask], self.kind[mask], self.group[mask], self.threat[mask],
                       self.tainted[mask], self.item_threat[mask])


def save_crops(c: CropSet, path: Path) -> None:
    """One ``crops_*.npz`` shard, written as ``*.tmp.npz`` and renamed, so a reader never sees half a shard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, crops=c.crops, item=c.item, kind=c.kind, group=c.group, threat=c.threat, tainted=c.tainted,
             item_threat=c.item_threat)
    tmp.rename(path)


def crop_shards(folder: Path) -> list[Path]:
    """The finished ``crops_*.npz`` shards of a cache folder, in order (a shard being written is ``*.tmp.npz``)."""
    return [f for f in sorted(folder.glob("crops_*.npz")) if not f.name.endswith(".tmp.npz")]


def load_crops(folder: Path, shards: list[Path] | None = None) -> CropSet:
    """All ``crops_*.npz`` shards of a cache folder (or just ``shards``, to go through a large cache in parts)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("crops", "item", "kind", "group", "threat", "tainted",
                                                          "item_threat")}
    for f in crop_shards(folder) if shards is None else shards:
        with np.load(f) as d:
            for k in parts:
                parts[k].append(d[k])
    if not parts["crops"]:
        raise FileNotFoundError(f"{folder}: no crops_*.npz shards (run `edge-export train simulate` first)")
    c = {k: np.concatenate(v) for k, v in parts.items()}
    return CropSet(c["crops"], c["item"], c["kind"], c["group"], c["threat"], c["tainted"], c["item_threat"])


def iter_items(rig: SimRig, n: int, first: int, threat_rate: float) -> Iterator[tuple[ConditionedImage, object]]:
    """Freshly simulated conditioned items with their truth (for evaluation and tests)."""
    for i in range(first, first + n):
        rng = np.random.default_rng([RIG_SEED, i])
        preset = PRESETS[int(rng.choice(len(PRESETS), p=PRESET_WEIGHTS))]
        yield rig.item(rng, preset, threat_rate, i)
