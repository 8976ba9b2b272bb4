"""Durable intake, identity and the link race, in-process with real spool folders and a real SQLite journal.

Each test fails on the code before the fault issue (29): the spool file was removed when read, the ledger was
keyed by item id, and the link check ran before the link history was final.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import PublishError
from edge.journal import IntakeJournal
from edge.pipeline import Pipeline, Stage
from edge.records import Decision, ItemMeta, RawItem, UnscreenedReason, Verdict
from edge.sinks.memory import MemorySink
from edge.sources.spool import SpoolSource
from edge.stages.decide import decide


def _clear(item: RawItem) -> Any:
    return decide(item.meta, [], time.time(), time.monotonic())


def _drop(spool: Path, name: str, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    high = rng.integers(1000, 60000, (24, 32), dtype=np.uint16)
    tmp = spool / f".{name}.npz.tmp"
    with open(tmp, "wb") as handle:
        np.savez(handle, high=high, low=high)
    final = spool / f"{name}.npz"
    tmp.rename(final)
    return final


def _killed_run(spool: Path, done: Path, journal_path: Path, name: str) -> threading.Event:
    """A run that accepts ``name`` and is "killed" while screening it: abandoned, never stopped."""
    inside = threading.Event()
    never = threading.Event()

    def stuck(item: RawItem) -> Any:
        inside.set()
        never.wait(30)
        return _clear(item)

    first = Pipeline(SpoolSource(spool, "lane1", 60, poll_s=0.02, done_directory=done), [Stage("s", stuck)],
                     [MemorySink()], workers=1, journal=IntakeJournal(journal_path))
    first.start()
    _drop(spool, name)
    assert inside.wait(10)
    assert (spool / f"{name}.npz").exists(), "the item left the spool before its decision was stored"
    return never


def test_an_item_a_killed_run_accepted_is_screened_again_under_its_identity(tmp_path: Path) -> None:
    spool, done = tmp_path / "spool", tmp_path / "done"
    spool.mkdir()
    journal_path = tmp_path / "intake.sqlite3"
    never = _killed_run(spool, done, journal_path, "parcel7")
    (left,) = IntakeJournal(journal_path).leftovers()
    # A second run over the same spool and journal (as after SIGKILL + systemd restart).
    sink = MemorySink()
    second = Pipeline(SpoolSource(spool, "lane1", 60, poll_s=0.02, done_directory=done), [Stage("s", _clear)],
                      [sink], workers=1, journal=IntakeJournal(journal_path))
    second.start()
    assert sink.wait_for(1, timeout_s=10)
    time.sleep(0.5)  # a second decision, if any, would come now
    second.stop(timeout_s=5)
    never.set()
    (decision,) = sink.decisions
    assert decision.verdict is Verdict.CLEAR, "screened again, not given up"
    assert (decision.item_id, decision.item_uid) == ("lane1-parcel7", left.meta.uid)
    assert not (spool / "parcel7.npz").exists() and (done / "parcel7.npz").exists()
    assert IntakeJournal(journal_path).pending() == 0


def test_an_item_a_killed_run_accepted_that_is_gone_is_unscreened_restart(tmp_path: Path) -> None:
    spool, done = tmp_path / "spool", tmp_path / "done"
    spool.mkdir()
    journal_path = tmp_path / "intake.sqlite3"
    never = _killed_run(spool, done, journal_path, "parcel8")
    (spool / "parcel8.npz").unlink()  # an operator took the file away while the service was down
    sink = MemorySink()
    second = Pipeline(SpoolSource(spool, "lane1", 60, poll_s=0.02, done_directory=done), [Stage("s", _clear)],
                      [sink], workers=1, source_stall_s=0.5, journal=IntakeJournal(journal_path))
    second.start()
    assert sink.wait_for(1, timeout_s=15)
    second.stop(timeout_s=5)
    never.set()
    (decision,) = sink.decisions
    assert decision.verdict is Verdict.UNSCREENED and decision.reason is UnscreenedReason.RESTART
    assert decision.item_id == "lane1-parcel8"
    assert IntakeJournal(journal_path).pending() == 0


def test_decision_written_ahead_is_stored_again_with_the_same_record_identity(tmp_path: Path) -> None:
    journal = IntakeJournal(tmp_path / "intake.sqlite3")
    now = time.monotonic()
    meta = ItemMeta("lane1-9", "lane1", 9, time.time(), time.time(), now, now, now + 10)
    journal.accept(meta, None)
    decision = decide(meta, [], time.time(), now, overlay_jpeg=b"\xff\xd8jpeg")
    journal.deciding(decision)
    journal.close()
    sink = MemorySink()
    pipeline = Pipeline(SpoolSource(tmp_path / "spool", "lane1", 60, poll_s=0.02), [Stage("s", _clear)], [sink],
                        journal=IntakeJournal(tmp_path / "intake.sqlite3"))
    pipeline.start()
    assert sink.wait_for(1, timeout_s=10)
    pipeline.stop(timeout_s=5)
    (again,) = sink.decisions
    assert again == decision  # every field, the uid (hence the record ids) and the overlay included


class _FlakySink:
    """Refuses to store the first ``failures`` decisions (disk full), then stores them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.stored: list[Decision] = []

    def publish(self, decision: Decision) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise PublishError("No space left on device")
        self.stored.append(decision)

    def close(self, timeout_s: float) -> None:
        return None


def test_a_sink_that_cannot_store_is_retried_and_the_item_is_acknowledged_only_after(tmp_path: Path) -> None:
    spool, done = tmp_path / "spool", tmp_path / "done"
    spool.mkdir()
    flaky = _FlakySink(failures=3)
    memory = MemorySink()
    pipeline = Pipeline(SpoolSource(spool, "lane1", 60, poll_s=0.02, done_directory=done), [Stage("s", _clear)],
                        [memory, flaky], journal=IntakeJournal(tmp_path / "intake.sqlite3"))
    pipeline.start()
    _drop(spool, "a")
    assert memory.wait_for(1, timeout_s=10)
    time.sleep(0.1)
    assert (spool / "a.npz").exists(), "acknowledged although a sink had not stored the decision"
    assert any("cannot store" in p for p in pipeline.problems())
    deadline = time.monotonic() + 15
    while not flaky.stored and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    pipeline.stop(timeout_s=5)
    assert [d.item_uid for d in flaky.stored] == [d.item_uid for d in memory.decisions]
    assert (done / "a.npz").exists() and not (spool / "a.npz").exists()
    assert pipeline.problems() == []


def test_two_items_with_one_name_both_get_a_decision(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    sink = MemorySink()
    pipeline = Pipeline(SpoolSource(spool, "lane1", 60, poll_s=0.02, done_directory=tmp_path / "done"),
                        [Stage("s", _clear)], [sink], journal=IntakeJournal(tmp_path / "intake.sqlite3"))
    pipeline.start()
    _drop(spool, "bag 1")
    assert sink.wait_for(1, timeout_s=10)
    time.sleep(0.2)
    _drop(spool, "bag 1", seed=1)  # the same name again
    _drop(spool, "bag_1", seed=2)  # a name that sanitises to the same id
    assert sink.wait_for(3, timeout_s=10)
    pipeline.stop(timeout_s=5)
    ids = [d.item_id for d in sink.decisions]
    assert len(set(ids)) == 3 and ids[0] == "lane1-bag_1", ids
    assert len({d.item_uid for d in sink.decisions}) == 3
    assert "bag 1.npz" in {p.name for p in (tmp_path / "done").iterdir()}
    assert len(list((tmp_path / "done").iterdir())) == 3, "a screened file was overwritten in done/"


class _BlindAfterLink:
    """A link whose DOWN (backdated to ``blind_at``) is only declared ``timeout_s`` later, as the real link does."""

    def __init__(self, blind_at: float, timeout_s: float) -> None:
        self.blind_at, self.timeout_s = blind_at, timeout_s

    def down_between(self, t0: float, t1: float) -> bool:
        declared = time.monotonic() >= self.blind_at + self.timeout_s
        return declared and t1 >= self.blind_at


def test_result_waits_until_the_link_history_covers_the_scan(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    sink = MemorySink()
    link = _BlindAfterLink(blind_at=time.monotonic() + 0.3, timeout_s=1.0)
    pipeline = Pipeline(SpoolSource(spool, "lane1", 60, poll_s=0.02), [Stage("s", _clear)], [sink],
                        link=link, link_settle_s=1.2)
    pipeline.start()
    time.sleep(0.4)
    # Scanned after the link went blind (its last frame at blind_at) but before the link noticed (blind_at + 1 s):
    # screening ends well within that second; the old check, made at once, found no gap and cleared it.
    _drop(spool, "late")
    assert sink.wait_for(1, timeout_s=10)
    pipeline.stop(timeout_s=5)
    (decision,) = sink.decisions
    assert decision.verdict is Verdict.UNSCREENED and decision.reason is UnscreenedReason.LINK_DOWN


def test_frames_before_their_item_end_keep_the_scanners_belt_range(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    sink = MemorySink()
    scanning = {"lane1-5"}
    pipeline = Pipeline(SpoolSource(spool, "lane1", 60, poll_s=0.02), [Stage("s", _clear)], [sink],
                        scanning=lambda item_id: item_id in scanning)
    pipeline.start()
    _drop(spool, "5")  # frames first, while the item is still in the tunnel
    time.sleep(0.5)
    assert sink.decisions == []
    now = time.monotonic()
    scanning.clear()
    pipeline.announce(ItemMeta("lane1-5", "lane1", 5, time.time() - 2, time.time(), now - 2, now, now + 10,
                               1000, 2600))
    assert sink.wait_for(1, timeout_s=10)
    time.sleep(0.3)
    pipeline.stop(timeout_s=5)
    (decision,) = sink.decisions
    assert (decision.encoder_start, decision.encoder_end) == (1000, 2600)
    assert decision.verdict is Verdict.CLEAR


def test_done_folder_keeps_within_its_bound_oldest_first(tmp_path: Path) -> None:
    """done/ grew without bound (3.9 GB after the 10,000-item soak): the oldest items go past ``done_max_bytes``."""
    spool, done = tmp_path / "spool", tmp_path / "done"
    spool.mkdir()
    done.mkdir()
    size = _drop(spool, "probe").stat().st_size
    (spool / "probe.npz").rename(done / "older.npz")  # left by an earlier run
    sink = MemorySink()
    source = SpoolSource(spool, "lane1", 60, poll_s=0.02, done_directory=done, done_max_bytes=int(size * 2.5))
    pipeline = Pipeline(source, [Stage("s", _clear)], [sink])
    pipeline.start()
    for n in range(5):
        _drop(spool, f"p{n}", seed=n)
        assert sink.wait_for(n + 1, timeout_s=10)
        time.sleep(0.1)
    pipeline.stop(timeout_s=5)
    kept = sorted(p.name for p in done.iterdir())
    assert kept == ["p3.npz", "p4.npz"], kept
    assert len(sink.decisions) == 5
