"""The pipeline engine's promise: every item gets exactly one decision, failures are UNSCREENED with a reason.

Sources here are the real VOTI and spool readers over files in tmp; stages are small functions so that each
failure mode (raise, stall, slowness) can be provoked on purpose.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.errors import BackendError
from edge.pipeline import Pipeline, Stage
from edge.records import ItemMeta, RawItem, UnscreenedReason, Verdict
from edge.sinks.memory import MemorySink
from edge.sources.spool import SpoolSource
from edge.sources.voti import VotiSource, read_voti, write_voti
from edge.stages.decide import decide


def _write_items(directory: Path, n: int, rng: np.random.Generator) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        high = rng.integers(1000, 60000, size=(40, 64), dtype=np.uint16)
        low = rng.integers(1000, 60000, size=(40, 64), dtype=np.uint16)
        write_voti(directory / f"item{i:04d}.raw", high, low, header_lines=30)


def _clear(item: RawItem) -> Any:
    return decide(item.meta, [], time.time(), time.monotonic())


def _run(source: Any, stages: list[Stage], n: int, **kwargs: Any) -> tuple[Pipeline, MemorySink]:
    sink = MemorySink()
    pipeline = Pipeline(source, stages, [sink], **kwargs)
    pipeline.start()
    assert sink.wait_for(n, timeout_s=30), f"only {len(sink.decisions)} of {n} decisions"
    pipeline.stop(timeout_s=5)
    return pipeline, sink


def test_voti_round_trip_and_layout(tmp_path: Path) -> None:
    high = np.arange(640 * 3, dtype=np.uint16).reshape(3, 640)
    low = high[::-1].copy()
    write_voti(tmp_path / "a.raw", high, low)
    raw = np.fromfile(tmp_path / "a.raw", dtype="<u2").reshape(-1, 1280)
    assert raw.shape[0] == 33
    assert np.array_equal(raw[30, :640], low[0]) and np.array_equal(raw[30, 640:], high[0])
    got_high, got_low = read_voti(tmp_path / "a.raw")
    assert np.array_equal(got_high, high) and np.array_equal(got_low, low)


def test_every_item_gets_exactly_one_decision_and_corrupt_is_unscreened(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    _write_items(tmp_path, 20, rng)
    with open(tmp_path / "item0007.raw", "ab") as handle:
        handle.write(b"\x01\x02\x03")  # truncated: not a whole line any more
    source = VotiSource(tmp_path, "lane1", deadline_s=10, channels=64)
    pipeline, sink = _run(source, [Stage("decide", _clear)], 20, backpressure=True)
    decisions = sink.decisions
    assert len(decisions) == 20
    assert len({d.item_id for d in decisions}) == 20
    corrupt = [d for d in decisions if d.verdict is Verdict.UNSCREENED]
    assert [d.item_id for d in corrupt] == ["lane1-item0007"]
    assert corrupt[0].reason is UnscreenedReason.CORRUPT_FRAME
    assert "whole number" in corrupt[0].detail
    assert pipeline.ledger.counts["clear"] == 19


def test_stage_that_raises_gives_model_error_and_others_continue(tmp_path: Path) -> None:
    _write_items(tmp_path, 6, np.random.default_rng(2))

    def flaky(item: RawItem) -> Any:
        if item.meta.item_id.endswith("0003"):
            raise BackendError("inference failed: input shape mismatch")
        return item

    source = VotiSource(tmp_path, "lane1", deadline_s=10, channels=64)
    _, sink = _run(source, [Stage("detect", flaky), Stage("decide", _clear)], 6)
    by_id = {d.item_id: d for d in sink.decisions}
    bad = by_id["lane1-item0003"]
    assert bad.verdict is Verdict.UNSCREENED and bad.reason is UnscreenedReason.MODEL_ERROR
    assert "detect: inference failed" in bad.detail
    assert sum(d.verdict is Verdict.CLEAR for d in sink.decisions) == 5


def test_slow_item_misses_deadline_and_late_result_is_dropped(tmp_path: Path) -> None:
    _write_items(tmp_path, 3, np.random.default_rng(3))
    release = threading.Event()

    def slow(item: RawItem) -> Any:
        if item.meta.item_id.endswith("0001"):
            release.wait(5)
        return _clear(item)

    source = VotiSource(tmp_path, "lane1", deadline_s=0.5, channels=64)
    sink = MemorySink()
    pipeline = Pipeline(source, [Stage("decide", slow)], [sink], workers=2)
    pipeline.start()
    assert sink.wait_for(3, timeout_s=10)
    release.set()
    time.sleep(0.3)
    pipeline.stop(timeout_s=5)
    decisions = sink.decisions
    assert len(decisions) == 3, "the late result must not produce a second decision"
    late = next(d for d in decisions if d.item_id == "lane1-item0001")
    assert late.reason is UnscreenedReason.DEADLINE_MISSED
    assert pipeline.ledger.late == 1


def test_overload_gives_unscreened_items_never_missing_ones(tmp_path: Path) -> None:
    n = 30
    rng = np.random.default_rng(4)
    for i in range(n):  # a live spool: everything arrives at once, faster than the stage can go
        np.savez(tmp_path / f"item{i:03d}.npz", high=rng.integers(0, 65535, (20, 32), dtype=np.uint16),
                 low=rng.integers(0, 65535, (20, 32), dtype=np.uint16))

    def slow(item: RawItem) -> Any:
        time.sleep(0.05)
        return _clear(item)

    source = SpoolSource(tmp_path, "lane1", deadline_s=60, poll_s=0.01)
    _, sink = _run(source, [Stage("decide", slow)], n, queue_depth=2)
    decisions = sink.decisions
    assert len(decisions) == n and len({d.item_id for d in decisions}) == n
    reasons = Counter(d.reason for d in decisions)
    assert reasons[UnscreenedReason.OVERLOAD] > 0
    assert reasons[None] > 0


def test_announced_item_without_frames_is_source_stalled(tmp_path: Path) -> None:
    source = SpoolSource(tmp_path / "spool", "lane1", deadline_s=10, poll_s=0.02)
    sink = MemorySink()
    pipeline = Pipeline(source, [Stage("decide", _clear)], [sink], source_stall_s=0.3)
    pipeline.start()
    now = time.monotonic()
    meta = ItemMeta("lane1-ghost", "lane1", 1, time.time(), time.time(), now, now, now + 10, 100, 900)
    pipeline.announce(meta)
    assert sink.wait_for(1, timeout_s=5)
    pipeline.stop(timeout_s=2)
    (decision,) = sink.decisions
    assert decision.reason is UnscreenedReason.SOURCE_STALLED
    assert decision.encoder_start == 100


class _GapLink:
    """The link-monitor port over a fixed gap (the firmware bridge's history implements the same method)."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end

    def down_between(self, t0_mono: float, t1_mono: float) -> bool:
        return t0_mono <= self.end and t1_mono >= self.start


def test_item_scanned_during_link_gap_is_unscreened(tmp_path: Path) -> None:
    _write_items(tmp_path, 2, np.random.default_rng(5))
    source = VotiSource(tmp_path, "lane1", deadline_s=10, channels=64)
    now = time.monotonic()
    _, sink = _run(source, [Stage("decide", _clear)], 2, link=_GapLink(now - 1, now + 60))
    assert {d.reason for d in sink.decisions} == {UnscreenedReason.LINK_DOWN}


def test_spool_rejects_partial_and_corrupt_items(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    rng = np.random.default_rng(6)
    high = rng.integers(0, 65535, size=(50, 64), dtype=np.uint16)
    np.savez(spool / "good.npz", high=high, low=high)
    with open(spool / "incoming.npz.part", "wb") as handle:  # np.savez would append .npz to a path
        np.savez(handle, high=high, low=high)
    (spool / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(spool / "wrongdtype.npz", high=high.astype(np.float32), low=high)
    source = SpoolSource(spool, "lane1", deadline_s=10, poll_s=0.02)
    items = [source.next_item(0.2) for _ in range(4)]
    got = {i.meta.item_id: i for i in items if i is not None}
    assert set(got) == {"lane1-good", "lane1-broken", "lane1-wrongdtype"}
    assert got["lane1-good"].problem is None and np.array_equal(got["lane1-good"].high, high)
    assert "unreadable archive" in (got["lane1-broken"].problem or "")
    assert "uint16" in (got["lane1-wrongdtype"].problem or "")
    assert (spool / "incoming.npz.part").exists(), "a partial item must be left alone"
    # Nothing leaves the spool before its decision is stored (acknowledged): a crash now loses no item.
    assert not (spool / "rejected").exists() and (spool / "broken.npz").exists()
    assert source.next_item(0.1) is None, "a taken item is never delivered twice"
    for item in got.values():
        assert item.source_ref is not None
        source.acknowledge(item.source_ref)
    assert sorted(p.name for p in (spool / "rejected").iterdir()) == ["broken.npz", "wrongdtype.npz"]
    assert not (spool / "good.npz").exists()


def test_stop_unscreens_in_flight_items(tmp_path: Path) -> None:
    _write_items(tmp_path, 2, np.random.default_rng(7))
    block = threading.Event()

    def stuck(item: RawItem) -> Any:
        block.wait(10)
        return _clear(item)

    source = VotiSource(tmp_path, "lane1", deadline_s=60, channels=64)
    sink = MemorySink()
    pipeline = Pipeline(source, [Stage("decide", stuck)], [sink])
    pipeline.start()
    time.sleep(0.3)
    pipeline.stop(timeout_s=1.0)
    block.set()
    assert {d.reason for d in sink.decisions} == {UnscreenedReason.SHUTDOWN}
    assert len(sink.decisions) == 2


@pytest.mark.parametrize("factory", ["voti", "spool"])
def test_frame_sources_conform(tmp_path: Path, factory: str) -> None:
    """Both sources: deliver an item with matching high/low, then None when nothing is left."""
    rng = np.random.default_rng(8)
    high = rng.integers(0, 65535, size=(12, 64), dtype=np.uint16)
    low = rng.integers(0, 65535, size=(12, 64), dtype=np.uint16)
    source: Any
    if factory == "voti":
        write_voti(tmp_path / "x.raw", high, low)
        source = VotiSource(tmp_path, "s", deadline_s=5, channels=64)
    else:
        np.savez(tmp_path / "x.npz", high=high, low=low)
        source = SpoolSource(tmp_path, "s", deadline_s=5, poll_s=0.01)
    item = source.next_item(0.5)
    assert item is not None and item.high is not None and item.low is not None
    assert np.array_equal(item.high, high) and np.array_equal(item.low, low)
    assert not item.high.flags.writeable
    assert source.next_item(0.05) is None
    source.close()


class _ImpatientFiles:
    """A replay source that, once exhausted, answers ``None`` at once instead of waiting out the timeout (as
    the bench's replay source did): the pipeline must stop polling it rather than spin a core."""

    def __init__(self, items: list[RawItem]) -> None:
        self._items = list(items)
        self.exhausted = False
        self.calls = 0

    def next_item(self, timeout_s: float) -> RawItem | None:
        self.calls += 1
        if not self._items:
            self.exhausted = True
            return None
        return self._items.pop(0)

    def close(self) -> None:
        self._items.clear()


def test_exhausted_source_is_not_polled_and_idle_pipeline_does_not_spin(tmp_path: Path) -> None:
    _write_items(tmp_path, 4, np.random.default_rng(9))
    voti = VotiSource(tmp_path, "lane1", deadline_s=30, channels=64)
    items = [item for _ in range(4) if (item := voti.next_item(1.0)) is not None]
    assert len(items) == 4
    source = _ImpatientFiles(items)
    sink = MemorySink()
    pipeline = Pipeline(source, [Stage("decide", _clear)], [sink], workers=2, backpressure=True)
    pipeline.start()
    assert pipeline.wait_idle(10.0)
    calls_at_idle = source.calls
    cpu0, wall0 = time.process_time(), time.monotonic()
    time.sleep(1.0)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    pipeline.stop(timeout_s=5)
    assert len(sink.decisions) == 4
    assert source.calls == calls_at_idle, "the exhausted source was polled again"
    # Spinning on the source would burn about one core (cpu ≈ wall); idle workers and the watchdog cost ~1%.
    assert cpu < 0.25 * wall, f"idle pipeline used {cpu:.2f} s CPU in {wall:.2f} s"


def test_two_workers_screen_two_items_at_once(tmp_path: Path) -> None:
    _write_items(tmp_path, 2, np.random.default_rng(10))
    both_inside = threading.Barrier(2, timeout=5)

    def rendezvous(item: RawItem) -> Any:
        both_inside.wait()  # raises BrokenBarrierError (→ UNSCREENED) unless two items are in the stage at once
        return _clear(item)

    _, sink = _run(VotiSource(tmp_path, "lane1", deadline_s=30, channels=64), [Stage("decide", rendezvous)], 2,
                   workers=2)
    assert [d.verdict for d in sink.decisions] == [Verdict.CLEAR, Verdict.CLEAR]


class _FlakySource:
    """A frame source whose disk fails twice before it hands over its one item (the port, as a real source
    behaves when its folder is unreadable for a moment); it checks what the pipeline reports meanwhile."""

    def __init__(self, item: RawItem, pipeline_ref: list[Pipeline]) -> None:
        self._item: RawItem | None = item
        self._pipeline = pipeline_ref
        self.calls = 0
        self.problem_seen: str | None = None
        self.exhausted = False

    def next_item(self, timeout_s: float) -> RawItem | None:
        self.calls += 1
        if self.calls <= 2:
            raise OSError("spool folder unreadable")
        if self._item is not None:
            self.problem_seen = self._pipeline[0].source_problem
            item, self._item = self._item, None
            return item
        self.exhausted = True
        return None

    def close(self) -> None:
        return None


def test_a_failing_source_is_asked_again_and_reported_until_it_recovers(tmp_path: Path) -> None:
    _write_items(tmp_path, 1, np.random.default_rng(10))
    item = VotiSource(tmp_path, "lane1", deadline_s=30, channels=64).next_item(1.0)
    assert item is not None
    ref: list[Pipeline] = []
    source = _FlakySource(item, ref)
    sink = MemorySink()
    pipeline = Pipeline(source, [Stage("decide", _clear)], [sink])
    ref.append(pipeline)
    pipeline.start()
    assert sink.wait_for(1, timeout_s=10), "intake stopped at the first source error"
    assert pipeline.wait_idle(5.0)
    pipeline.stop(timeout_s=2)
    assert source.calls >= 4 and sink.decisions[0].item_id == "lane1-item0000"
    assert source.problem_seen == "frame source failing: spool folder unreadable"  # reported while failing
    assert pipeline.source_problem is None  # and cleared once it answered again


class _LateSource:
    """Hands over its item only once ``armed`` and only after ``delay_s``: an item arriving while stop() runs."""

    def __init__(self, item: RawItem, delay_s: float) -> None:
        self._item: RawItem | None = item
        self.armed = threading.Event()
        self._delay_s = delay_s
        self.exhausted = False

    def next_item(self, timeout_s: float) -> RawItem | None:
        if not self.armed.is_set() or self._item is None:
            time.sleep(timeout_s)
            return None
        time.sleep(self._delay_s)
        item, self._item = self._item, None
        return item

    def close(self) -> None:
        return None


def test_an_item_handed_over_while_stopping_still_gets_its_decision(tmp_path: Path) -> None:
    _write_items(tmp_path, 1, np.random.default_rng(11))
    item = VotiSource(tmp_path, "lane1", deadline_s=30, channels=64).next_item(1.0)
    assert item is not None
    source = _LateSource(item, delay_s=0.3)
    sink = MemorySink()
    pipeline = Pipeline(source, [Stage("decide", _clear)], [sink])
    pipeline.start()
    time.sleep(0.2)
    source.armed.set()
    time.sleep(0.2)  # the source is now inside next_item, handing the item over in 0.2 s
    pipeline.stop(timeout_s=3)
    assert [d.item_id for d in sink.decisions] == ["lane1-item0000"]
    assert pipeline.ledger.in_flight() == 0


def test_a_failing_decision_callback_does_not_stop_publishing(tmp_path: Path) -> None:
    _write_items(tmp_path, 3, np.random.default_rng(12))
    seen: list[str] = []

    def broken(decision: Any) -> None:
        seen.append(decision.item_id)
        raise OSError("disk full")

    sink = MemorySink()
    pipeline = Pipeline(VotiSource(tmp_path, "lane1", deadline_s=30, channels=64), [Stage("decide", _clear)], [sink])
    pipeline.on_decision = broken
    pipeline.start()
    assert sink.wait_for(3, timeout_s=10), f"publishing stopped after {len(sink.decisions)} decision(s)"
    assert pipeline.wait_idle(5.0)
    pipeline.stop(timeout_s=2)
    assert len(seen) == 3


def test_spool_item_that_cannot_be_moved_away_is_screened_once(tmp_path: Path) -> None:
    spool, done = tmp_path / "spool", tmp_path / "done"
    spool.mkdir()
    done.write_text("a file where the done folder should be")  # moving the item away fails
    high = np.random.default_rng(13).integers(0, 65535, size=(20, 32), dtype=np.uint16)
    np.savez(spool / "a.npz", high=high, low=high)
    source = SpoolSource(spool, "lane1", deadline_s=10, poll_s=0.01, done_directory=done)
    first = source.next_item(0.3)
    assert first is not None and first.problem is None and np.array_equal(first.high, high)
    assert source.next_item(0.1) is None  # not handed over a second time
    assert (spool / "a.npz").exists()  # and nothing lost: it is still there for the operator
