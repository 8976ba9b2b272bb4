"""Every ``FrameSource`` through the same cases (``edge.ports.FrameSource``), as pymodbus runs every framer through
one suite: a new source joins by adding one factory to :data:`SOURCES`.

The cases are the port's promises: ``next_item`` returns None when idle, no later than its timeout (plus slack
for a slow box); unreadable input comes back as an item with ``problem`` set, never as an exception; a good item
has its pixels; ``acknowledge`` of an unknown or repeated ref does not raise, and an acknowledged item is not
delivered again; ``close`` may be called twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.dicos.dx_source import write_dx_pair
from edge.ports import FrameSource
from edge.sources.dicos import DicosFrameSource
from edge.sources.spool import SpoolSource
from edge.sources.voti import VotiSource, write_voti

SLACK_S = 3.0
"""Generous: two cores are shared by many test processes."""

SCANNER = "conf"


def _pixels(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    high = rng.integers(20_000, 60_000, (32, 48), dtype=np.uint16)
    return high, (high // 2).astype(np.uint16)


@dataclass(frozen=True)
class SourceCase:
    """How to build one implementation over ``items`` ("good"/"bad" per item, in delivery order).

    ``takes_bad_data``: False for a source that makes its own items (the virtual scanner cannot be fed a bad file).
    """

    name: str
    make: Callable[[Path, list[str], Callable[[Callable[[], object]], None]], FrameSource]
    takes_bad_data: bool = True
    bad_data_bug: str | None = None
    """A known breach of the bad-data promise, expected to fail (strict) until it is fixed."""


# ----------------------------------------------------------------------------------------------- factories


def _spool(tmp: Path, items: list[str], on_teardown: Callable[[Callable[[], object]], None]) -> FrameSource:
    spool = tmp / "spool"
    spool.mkdir()
    for k, kind in enumerate(items):
        path = spool / f"item-{k}.npz"
        if kind == "good":
            high, low = _pixels(k)
            np.savez(path, high=high, low=low)
        else:
            path.write_bytes(b"not a zip archive")
        t = time.time() - 100 + k  # delivery order = mtime order
        os.utime(path, (t, t))
    return SpoolSource(spool, SCANNER, 30.0, poll_s=0.02, done_directory=tmp / "done")


def _voti(tmp: Path, items: list[str], on_teardown: Callable[[Callable[[], object]], None]) -> FrameSource:
    folder = tmp / "voti"
    folder.mkdir()
    for k, kind in enumerate(items):
        path = folder / f"item-{k}.raw"
        high, low = _pixels(k)
        write_voti(path, high, low, header_lines=2)
        if kind == "bad":
            path.write_bytes(path.read_bytes()[:-3])  # not a whole number of lines
    return VotiSource(folder, SCANNER, 30.0, channels=48, header_lines=2)


def _dicos(tmp: Path, items: list[str], on_teardown: Callable[[Callable[[], object]], None]) -> FrameSource:
    folder = tmp / "dx"
    folder.mkdir()
    for k, kind in enumerate(items):
        high, low = _pixels(k)
        pair = write_dx_pair(folder, f"bag-{k}", high, low)
        if kind == "bad":
            pair.high.write_bytes(pair.high.read_bytes()[:-200])
    return DicosFrameSource(folder, SCANNER, 30.0)


@dataclass(frozen=True)
class _SimSettings:
    seed: int = 0
    preset: str = "parcels"
    threat_rate: float = 0.0
    items_per_minute: float = 6000.0
    max_items: int | None = 1


def _sim(tmp: Path, items: list[str], on_teardown: Callable[[Callable[[], object]], None]) -> FrameSource:
    from sim.source import SimFrameSource

    # The virtual scanner makes its own items: "idle" is one that has delivered all it was asked for.
    source = SimFrameSource(_SimSettings(max_items=max(1, len(items))), SCANNER, 30.0)
    on_teardown(source.close)
    if not items:
        assert source.next_item(120.0) is not None
    return source


def _demo_scanner(tmp: Path, items: list[str], on_teardown: Callable[[Callable[[], object]], None]) -> FrameSource:
    """``edge demo``'s scanner: the virtual scanner's items, their photo-eye events sent by a virtual firmware on
    a pty (nobody listens here; the events are only written)."""
    from edge_tools.demo import DemoScanner
    from firmware_bridge.virtual import VirtualFirmware

    firmware = VirtualFirmware(tmp / "ttyVFW0").start()
    on_teardown(firmware.stop)
    return DemoScanner(_sim(tmp, items, on_teardown), firmware)  # type: ignore[arg-type]


def _bench_replay(tmp: Path, items: list[str], on_teardown: Callable[[Callable[[], object]], None]) -> FrameSource:
    from edge_tools.bench.items import ReplaySource

    folder = tmp / "bench"
    folder.mkdir()
    files = []
    for k, kind in enumerate(items):
        path = folder / f"item-{k}.npz"
        if kind == "good":
            high, low = _pixels(k)
            np.savez(path, low=low, high=high)
        else:
            path.write_bytes(b"not a zip archive")
        files.append(path)
    source: FrameSource = ReplaySource(files, SCANNER, 30.0)
    return source


def _eval_dataset(tmp: Path, items: list[str], on_teardown: Callable[[Callable[[], object]], None]) -> FrameSource:
    from edge_tools.eval.records import DatasetItem, ItemTruth, Modality
    from edge_tools.eval.runner import DatasetSource

    folder = tmp / "dataset"
    folder.mkdir()
    dataset_items = []
    for k, kind in enumerate(items):
        high, low = _pixels(k)
        low_path, high_path = folder / f"{k}_low.png", folder / f"{k}_high.png"
        cv2.imwrite(str(low_path), low)
        cv2.imwrite(str(high_path), high)
        if kind == "bad":
            high_path.write_bytes(high_path.read_bytes()[:40])
        dataset_items.append(DatasetItem(f"item-{k}", Modality.RAW, (low_path, high_path), ItemTruth(threat=False)))
    source: FrameSource = DatasetSource(dataset_items, SCANNER, 30.0, grey_as_colour=False)
    return source


SOURCES = [
    SourceCase("spool", _spool),
    SourceCase("voti", _voti),
    SourceCase("dicos", _dicos),
    SourceCase("sim", _sim, takes_bad_data=False),
    SourceCase("demo-scanner", _demo_scanner, takes_bad_data=False),
    SourceCase("bench-replay", _bench_replay),
    SourceCase("eval-dataset", _eval_dataset),
]


@pytest.fixture(params=SOURCES, ids=[c.name for c in SOURCES])
def case(request: pytest.FixtureRequest) -> SourceCase:
    param: SourceCase = request.param
    return param


@pytest.fixture
def build(case: SourceCase, tmp_path: Path) -> Iterator[Callable[[list[str]], FrameSource]]:
    """Builds the case's source over the given items; closes it (and what it needed) after the test."""
    teardown: list[Callable[[], object]] = []

    def make(items: list[str]) -> FrameSource:
        source = case.make(tmp_path, items, teardown.append)
        teardown.append(source.close)
        return source

    yield make
    for step in reversed(teardown):
        step()


# ----------------------------------------------------------------------------------------------- the cases


def test_idle_source_returns_none_within_its_timeout(build: Callable[[list[str]], FrameSource]) -> None:
    source = build([])
    for timeout_s in (0.0, 0.3):
        started = time.monotonic()
        assert source.next_item(timeout_s) is None
        assert time.monotonic() - started < timeout_s + SLACK_S


def test_exhausted_is_a_bool_and_false_while_items_remain(build: Callable[[list[str]], FrameSource]) -> None:
    """The pipeline reads ``exhausted`` straight through the port to stop polling a finished replay."""
    source = build(["good"])
    assert source.exhausted is False
    assert source.next_item(120.0) is not None
    source.next_item(0.3)
    assert isinstance(source.exhausted, bool)


def test_a_good_item_comes_with_its_pixels(build: Callable[[list[str]], FrameSource]) -> None:
    item = build(["good"]).next_item(120.0)
    assert item is not None and item.problem is None
    assert item.meta.item_id and item.meta.scanner_id == SCANNER
    assert item.high is not None and item.low is not None and item.high.shape == item.low.shape
    assert item.high.dtype == np.uint16 and not item.high.flags.writeable


def test_bad_data_is_an_item_with_a_problem_never_an_exception(case: SourceCase,
                                                                 build: Callable[[list[str]], FrameSource],
                                                                 request: pytest.FixtureRequest) -> None:
    if not case.takes_bad_data:
        pytest.skip(f"{case.name} makes its own items; it cannot be given a bad one")
    if case.bad_data_bug is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=case.bad_data_bug))
    source = build(["bad", "good"])
    first = source.next_item(10.0)
    assert first is not None and isinstance(first.problem, str) and first.problem
    assert first.high is None and first.low is None and first.image is None
    second = source.next_item(10.0)  # a bad item does not stop the source
    assert second is not None and second.problem is None


def test_acknowledge_of_an_unknown_or_repeated_ref_does_not_raise(build: Callable[[list[str]], FrameSource],
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty ref is ``Path(".")``: the spool source once moved the current directory (the whole checkout the
    tests ran in) into its done/ folder. The test runs in a scratch directory, which must survive."""
    scratch = tmp_path / "cwd"
    scratch.mkdir()
    (scratch / "keep").write_text("still here")
    monkeypatch.chdir(scratch)
    source = build(["good"])
    item = source.next_item(120.0)
    assert item is not None
    source.acknowledge("/no/such/item.npz")
    source.acknowledge("")
    if item.source_ref is not None:
        source.acknowledge(item.source_ref)
        source.acknowledge(item.source_ref)
    assert source.next_item(0.2) is None, "an acknowledged item was delivered again"
    assert (scratch / "keep").read_text() == "still here", "acknowledge('') moved or deleted the current directory"


def test_an_item_is_delivered_once_while_not_acknowledged(build: Callable[[list[str]], FrameSource]) -> None:
    source = build(["good"])
    assert source.next_item(120.0) is not None
    assert source.next_item(0.2) is None


def test_close_is_idempotent(build: Callable[[list[str]], FrameSource]) -> None:
    source = build(["good"])
    source.close()
    source.close()
