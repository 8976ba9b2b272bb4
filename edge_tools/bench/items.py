"""Bench inputs: virtual-scanner items rendered once to disk, their calibrations, and a replay source.

Where it sits: feeds the bench runner (and the PyTorch-eager comparison in ``benchmarks/``) the same items.
Items are rendered by ``sim.dataset.ItemStream`` (the virtual scanner fake: raw 640-channel low/high uint16
counts) and stored as ``<index>.npz``; the flat-field and energy calibrations are made from the same virtual
scanner seed the way ``edge calibrate flatfield|energy --from-sim`` makes them. Rendering is slow (~0.4 s per
item), so a directory is reused when its manifest matches.

:class:`ReplaySource` implements the ``FrameSource`` port over those files. It reads one item when asked, as a
scanner source holds one item at a time, so that the items do not inflate the measured memory.

Must not: import torch; write outside the directory it is given.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.records import ItemMeta, RawItem

MANIFEST = "items.json"


@dataclass(frozen=True, slots=True)
class ItemSet:
    """Rendered items on disk and the calibrations that condition them."""

    directory: Path
    seed: int
    preset: str
    threat_rate: float
    files: tuple[Path, ...]
    flatfield: Path
    energy: Path

    @property
    def lines(self) -> list[int]:
        """Belt lines (rows) of each item, read from the manifest."""
        data = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        return [int(x) for x in data["lines"]][: len(self.files)]

    @property
    def channels(self) -> int:
        """Detector channels per energy (columns), read from the manifest."""
        return int(json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))["channels"])


@dataclass(frozen=True, slots=True)
class _Manifest:
    seed: int
    preset: str
    threat_rate: float
    n: int
    lines: list[int]
    channels: int


def _read_manifest(directory: Path) -> _Manifest | None:
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        return _Manifest(**data)
    except (OSError, ValueError, TypeError):
        return None


def prepare_items(directory: Path, n: int, seed: int = 0, preset: str = "parcels", threat_rate: float = 0.2,
                  progress: bool = False) -> ItemSet:
    """Render ``n`` items of virtual scanner ``seed`` into ``directory`` (reused if already there) and make
    its calibrations. ``progress`` prints one dot per rendered item (rendering dominates a first run)."""
    directory.mkdir(parents=True, exist_ok=True)
    flat, energy = directory / "flatfield.npz", directory / "energy.yaml"
    old = _read_manifest(directory)
    reusable = (old is not None and (old.seed, old.preset, old.threat_rate) == (seed, preset, threat_rate)
                and old.n >= n and all((directory / f"{i:06d}.npz").is_file() for i in range(n))
                and flat.is_file() and energy.is_file())
    if not reusable:
        from sim.dataset import ItemStream  # the scanner fake: imported only when items must be rendered

        stream = ItemStream(seed=seed, preset=preset, threat_rate=threat_rate)
        lines: list[int] = []
        channels = 0
        for index in range(n):
            item = stream.item(index)
            np.savez(directory / f"{index:06d}.npz", low=item.raw.low, high=item.raw.high)
            lines.append(int(item.raw.high.shape[0]))
            channels = int(item.raw.high.shape[1])
            if progress:
                print(".", end="", flush=True)
        if progress:
            print(flush=True)
        make_calibrations(seed, flat, energy, (stream.dark.low, stream.dark.high, stream.air.low, stream.air.high))
        manifest = _Manifest(seed, preset, threat_rate, n, lines, channels)
        (directory / MANIFEST).write_text(json.dumps(asdict(manifest)), encoding="utf-8")
    files = tuple(directory / f"{i:06d}.npz" for i in range(n))
    return ItemSet(directory, seed, preset, threat_rate, files, flat, energy)


def make_calibrations(seed: int, flatfield: Path, energy: Path,
                      references: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
    """Flat-field and effective-Z calibration of virtual scanner ``seed`` (as ``edge calibrate … --from-sim``).

    ``references`` (dark low, dark high, air low, air high) are the item stream's own reference lines: the
    same scanner, without building it a second time (several seconds). The energy curves are fitted on the
    default fit materials only, which is all the conditioner uses.
    """
    from calib.energy import DEFAULT_FIT_MATERIALS, calibrate_from_sim, save_energy_calibration
    from calib.flatfield import ReferenceLines, capture_from_sim, compute_flatfield, save_flatfield

    if references is None:
        dark, air = capture_from_sim(seed, 256)
    else:
        dark, air = ReferenceLines(references[0], references[1]), ReferenceLines(references[2], references[3])
    save_flatfield(compute_flatfield(dark, air, f"sim seed={seed}"), flatfield,
                   (int(dark.low.shape[0]), int(air.low.shape[0])))
    cal, report = calibrate_from_sim(seed, list(DEFAULT_FIT_MATERIALS), list(DEFAULT_FIT_MATERIALS))
    save_energy_calibration(cal, energy, report, [])


def load_raw(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) raw counts of one stored item."""
    with np.load(path) as data:
        return np.asarray(data["low"]), np.asarray(data["high"])


class ReplaySource:
    """Replays stored items through the ``FrameSource`` port, as fast as taken or one per ``period_s``.

    An item's scan is taken to end when it is handed over, so a decision's ``latency_ms`` is the time from
    hand-over to decision: the service's own share of the item latency.
    """

    def __init__(self, files: Sequence[Path], scanner_id: str = "bench", deadline_s: float = 30.0,
                 period_s: float | None = None) -> None:
        self._files = list(files)
        self._scanner = scanner_id
        self._deadline = deadline_s
        self._period = period_s
        self._next = 0
        self._due = time.monotonic()
        self.exhausted = False

    def next_item(self, timeout_s: float) -> RawItem | None:
        if self._next >= len(self._files):
            self.exhausted = True
            return None
        if self._period is not None:
            wait = self._due - time.monotonic()
            if wait > timeout_s:
                time.sleep(timeout_s)
                return None
            time.sleep(max(0.0, wait))
            self._due = max(self._due + self._period, time.monotonic())
        path = self._files[self._next]
        self._next += 1
        now_mono, now_wall = time.monotonic(), time.time()
        meta = ItemMeta(item_id=f"{self._scanner}-{self._next}", scanner_id=self._scanner, seq=self._next,
                        scan_start_wall=now_wall, scan_end_wall=now_wall, scan_start_mono=now_mono,
                        scan_end_mono=now_mono, deadline_mono=now_mono + self._deadline)
        try:
            low, high = load_raw(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # the port: bad data is an item
            return RawItem(meta=meta, problem=f"{path.name}: unreadable ({exc})")
        return RawItem(meta=meta, high=high, low=low)

    def acknowledge(self, source_ref: str) -> None:
        """Nothing to let go: benchmark items are read, never moved."""
        return None

    def close(self) -> None:
        self._next = len(self._files)
