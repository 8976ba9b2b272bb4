"""Dataset generation: items → raw 16-bit images, previews, camera views, ground truth, COCO, events.

Where it sits: the work behind ``edge sim generate`` (``sim/cli.py``), also usable from Python. Item ``i`` of a
dataset with seed ``s`` is drawn from ``SeedSequence([s, i])``, so the output is identical whatever the number of
worker processes or their scheduling; the scanner's fixed-pattern gain/offset is drawn from ``s``.

Layout written under ``out``::

    dataset.json            what was generated: seed, n, preset, threat rate, scanner and camera specs
    annotations.json        COCO (images = pseudo-colour previews; extra keys name the raw files)
    events.jsonl            belt/item/frame timeline of the whole stream (sim/events.py)
    reference/              dark_{low,high}.png, air_{low,high}.png: 64 flat-field reference lines each
    items/<id>/low.png      raw low-energy counts, 16-bit PNG (rows = belt lines, columns = channels)
    items/<id>/high.png     raw high-energy counts, 16-bit PNG
    items/<id>/preview.png  pseudo-colour preview (sim/preview.py)
    items/<id>/camera.jpg   exit-camera frame with the item under the camera (sim/camera.py)
    items/<id>/truth.json   objects (box, RLE mask, kind, threat, host), parcel footprints, camera travel
    items/<id>/truth.npz    z_eff (float32), material_map (uint8) + material_names

Must not: import torch or ``edge`` internals. Writes only below ``out``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sim.coco import categories, item_annotations
from sim.events import ItemSpan, event_to_dict, timeline
from sim.physics import DualEnergyScanner, RawScan, ScannerSpec
from sim.preview import ZLookup, build_zlookup, colour_table, flat_field, pseudo_colour
from sim.scene import ItemTruth, Preset, SceneConfig, build_item

REFERENCE_LINES = 64
PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


@dataclass(frozen=True, slots=True)
class GenerateConfig:
    """What to generate.

    Attributes:
        n: number of items.
        seed: dataset seed.
        preset: kind of item stream.
        threat_rate: probability of an item carrying a threat.
        camera: also render the exit-camera frame of each item.
        workers: worker processes (1 = in-process).
        spec: the scanner.
    """

    n: int
    seed: int = 0
    preset: Preset = Preset.PARCELS
    threat_rate: float = 0.2
    camera: bool = True
    workers: int = 2
    spec: ScannerSpec = field(default_factory=ScannerSpec)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n={self.n}: expected at least 1 item")
        if not 0.0 <= self.threat_rate <= 1.0:
            raise ValueError(f"threat_rate={self.threat_rate}: expected 0.0 to 1.0")
        if self.workers < 1:
            raise ValueError(f"workers={self.workers}: expected at least 1")


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What a worker reports back for one item (small: files are already written)."""

    index: int
    item_id: str
    lines: int
    threat: bool
    image: dict[str, Any]
    truth: ItemTruth | None = None


class ItemRenderer:
    """Per-process state: the scanner, its flat-field references, the Z lookup and the camera."""

    def __init__(self, config: GenerateConfig, out: Path) -> None:
        self.config = config
        self.out = out
        self.scanner = DualEnergyScanner(config.spec, seed=config.seed)
        ref_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xDA7A]))
        self.dark: RawScan = self.scanner.dark_lines(REFERENCE_LINES, ref_rng)
        self.air: RawScan = self.scanner.air_lines(REFERENCE_LINES, ref_rng)
        self.zlookup: ZLookup = build_zlookup(self.scanner)
        self.palette = colour_table(self.zlookup)
        self.scene = SceneConfig(channels=config.spec.channels, pitch_mm=config.spec.pitch_mm,
                                 threat_rate=config.threat_rate)
        self._camera: Any = None
        if config.camera:
            from sim.camera import ExitCamera  # the camera is optional; keep its import out of the hot path

            self._camera = ExitCamera(pitch_mm=config.spec.pitch_mm, seed=config.seed)

    def camera_spec(self) -> dict[str, Any] | None:
        return asdict(self._camera.spec) if self._camera is not None else None

    def make(self, index: int) -> tuple[ItemTruth, RawScan, np.ndarray, np.random.Generator]:
        """Generate and render item ``index`` in memory: truth, raw counts, preview, and the item's generator."""
        rng = np.random.default_rng(np.random.SeedSequence([self.config.seed, index]))
        truth = build_item(rng, self.config.preset, self.scene, index)
        raw = self.scanner.render(truth.path_mm, rng)
        t_low, t_high = flat_field(raw, self.dark, self.air)
        return truth, raw, pseudo_colour(t_low, t_high, self.zlookup, table=self.palette), rng

    def render(self, index: int, keep_truth: bool = False) -> ItemResult:
        """Generate, render and write item ``index``."""
        truth, raw, preview, rng = self.make(index)
        item_id = f"{index:06d}"
        folder = self.out / "items" / item_id
        folder.mkdir(parents=True, exist_ok=True)
        _write_png(folder / "low.png", raw.low)
        _write_png(folder / "high.png", raw.high)
        _write_png(folder / "preview.png", preview)
        camera_travel = None
        if self._camera is not None:
            from sim.camera import PlacedFootprint

            centre_y = float(np.mean([f.centre_y_mm for f in truth.footprints]))
            camera_travel = self._camera.view_centre_travel_mm() + centre_y
            frame = self._camera.render(camera_travel, [PlacedFootprint(f, 0.0) for f in truth.footprints],
                                        rng=rng)
            cv2.imwrite(str(folder / "camera.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
        anns = item_annotations(truth, index + 1, 1)
        record = {
            "item_id": item_id,
            "index": index,
            "seed": self.config.seed,
            "preset": truth.preset,
            "height": truth.shape[0],
            "width": truth.shape[1],
            "pitch_mm": truth.pitch_mm,
            "threat": truth.threat,
            "camera_travel_mm": camera_travel,
            "footprints": [asdict(f) for f in truth.footprints],
            "objects": [
                {**{k: v for k, v in a.items() if k not in ("image_id", "category_id")},
                 "object_id": o.object_id, "kind": o.kind, "centre_mm": list(o.centre_mm),
                 "rotation_deg": o.rotation_deg}
                for a, o in zip(anns, truth.objects, strict=True)
            ],
        }
        (folder / "truth.json").write_text(json.dumps(record))
        np.savez_compressed(folder / "truth.npz", z_eff=truth.z_eff, material_map=truth.material_map,
                            material_names=np.asarray(truth.material_names))
        image = {
            "id": index + 1,
            "file_name": f"items/{item_id}/preview.png",
            "height": truth.shape[0],
            "width": truth.shape[1],
            "low_file": f"items/{item_id}/low.png",
            "high_file": f"items/{item_id}/high.png",
            "camera_file": f"items/{item_id}/camera.jpg" if self._camera is not None else None,
            "truth_file": f"items/{item_id}/truth.json",
            "threat": truth.threat,
            "preset": truth.preset,
            "annotations": anns,
        }
        return ItemResult(index, item_id, truth.shape[0], truth.threat, image, truth if keep_truth else None)


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Parallelism comes from worker processes; BLAS threads on top only fight over the cores (measured: the
    small matrix products of ``transmission`` run 4x slower with 2 BLAS threads per process on 2 busy cores).
    Forked workers inherit the limit. threadpoolctl is optional: without it nothing changes."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


@dataclass(frozen=True, slots=True)
class SimItem:
    """One generated item in memory: ground truth and the raw scan (what a frame source hands on)."""

    item_id: str
    truth: ItemTruth
    raw: RawScan


class ItemStream:
    """An endless, deterministic stream of rendered items for in-process consumers (demo, frame sources,
    the virtual firmware): item ``i`` is identical to item ``i`` of ``generate`` with the same settings.

    Example::

        stream = ItemStream(seed=1, preset=Preset.PARCELS, threat_rate=0.2)
        dark, air = stream.dark, stream.air        # flat-field references of this scanner
        for item in itertools.islice(stream, 10):
            item.raw.low, item.truth.objects
    """

    def __init__(self, seed: int = 0, preset: Preset | str = Preset.PARCELS, threat_rate: float = 0.2,
                 spec: ScannerSpec | None = None, start: int = 0) -> None:
        config = GenerateConfig(n=1, seed=seed, preset=Preset(preset), threat_rate=threat_rate, camera=False,
                                workers=1, spec=spec if spec is not None else ScannerSpec())
        self._renderer = ItemRenderer(config, Path("."))  # never writes: only make() is used
        self._next = start
        self.scanner = self._renderer.scanner
        self.dark = self._renderer.dark
        self.air = self._renderer.air

    def item(self, index: int) -> SimItem:
        # Single-threaded BLAS as in ``generate``'s workers: a threaded matrix product sums in another order,
        # and the last-bit differences change the Poisson counts (the item would not be item ``index``).
        with _single_threaded_blas():
            truth, raw, _, _ = self._renderer.make(index)
        return SimItem(f"{index:06d}", truth, raw)

    def __iter__(self) -> Iterator[SimItem]:
        return self

    def __next__(self) -> SimItem:
        item = self.item(self._next)
        self._next += 1
        return item


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image, PNG_FAST):
        raise OSError(f"could not write {path}")


# The renderer of a worker process. Pool workers can only reach per-process state through the module; it is
# set once per process (by fork inheritance or the spawn initialiser) and never changed while items render.
_WORKER: ItemRenderer | None = None


def _init_worker(config: GenerateConfig, out: Path) -> None:
    global _WORKER  # one renderer per worker process; built once, not per item
    _WORKER = ItemRenderer(config, out)


def _default_signals() -> None:
    """A forked worker starts with the default SIGTERM/SIGHUP actions, whatever its parent installed: a parent that
    had set a flag-only stop handler (``edge run``'s, installed by ``edge demo``) passed it on, and ``Pool``'s
    ``terminate`` (SIGTERM) then left an idle worker waiting for work forever, hanging ``generate``."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _work(index: int) -> ItemResult:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.render(index)


def generate(config: GenerateConfig, out: Path, progress: Callable[[int], object] | None = None) -> dict[str, Any]:
    """Write a dataset under ``out`` (see module docstring); returns the summary written to ``dataset.json``.

    Raises:
        FileExistsError: ``out`` exists and is not empty (a dataset is never mixed with another).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; give a new directory for the dataset")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; give a new directory for the dataset")
    (out / "reference").mkdir(parents=True, exist_ok=True)
    main = ItemRenderer(config, out)
    for name, img in (("dark_low", main.dark.low), ("dark_high", main.dark.high), ("air_low", main.air.low),
                      ("air_high", main.air.high)):
        _write_png(out / "reference" / f"{name}.png", img)
    with _single_threaded_blas():
        results = list(_run(config, out, main, progress))
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for r in results:
        image = dict(r.image)
        anns = image.pop("annotations")
        offset = len(annotations)  # item-local ids 1..k become dataset-wide ids
        for a in anns:
            a = dict(a)
            a["id"] += offset
            if a["host_id"] is not None:
                a["host_id"] += offset
            annotations.append(a)
        images.append(image)
    coco = {
        "info": {"description": f"xray-edge virtual scanner, preset {config.preset}, seed {config.seed}",
                 "version": "1"},
        "images": images,
        "annotations": annotations,
        "categories": categories(),
    }
    (out / "annotations.json").write_text(json.dumps(coco))
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xE7E7]))
    spans = [ItemSpan(r.item_id, r.lines, float(rng.uniform(150, 600))) for r in results]
    events = timeline(spans, speed_mm_s=config.spec.belt_speed_mm_s, pitch_mm=config.spec.pitch_mm)
    with (out / "events.jsonl").open("w") as fh:
        for e in events:
            fh.write(json.dumps(event_to_dict(e)) + "\n")
    summary = {
        "n": config.n,
        "seed": config.seed,
        "preset": str(config.preset),
        "threat_rate": config.threat_rate,
        "threat_items": sum(r.threat for r in results),
        "annotations": len(annotations),
        "scanner": asdict(config.spec),
        "camera": main.camera_spec(),
        "reference_lines": REFERENCE_LINES,
    }
    (out / "dataset.json").write_text(json.dumps(summary, indent=2))
    return summary


def _run(config: GenerateConfig, out: Path, main: ItemRenderer,
         progress: Callable[[int], object] | None) -> Iterator[ItemResult]:
    if config.workers == 1 or config.n == 1:
        for i in range(config.n):
            yield main.render(i)
            if progress:
                progress(1)
        return
    global _WORKER
    if "fork" in mp.get_all_start_methods():
        # Forked workers inherit the renderer already built here (spekpy/xraydb set-up takes seconds).
        _WORKER = main
        pool_factory = mp.get_context("fork").Pool(config.workers, initializer=_default_signals)
    else:
        pool_factory = mp.get_context("spawn").Pool(config.workers, initializer=_init_worker, initargs=(config, out))
    with pool_factory as pool:
        for result in pool.imap(_work, range(config.n), chunksize=1):
            yield result
            if progress:
                progress(1)
