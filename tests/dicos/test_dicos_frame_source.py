"""The DICOS frame source lets a pair go only once its decision is stored, so a restart never screens it again.

Before the fault issue (29, point 12) processed DX files stayed where they were and a restarted service screened
every one of them a second time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.dicos.dx_source import write_dx_pair
from edge.journal import IntakeJournal
from edge.pipeline import Pipeline, Stage
from edge.records import RawItem, UnscreenedReason, Verdict
from edge.sinks.memory import MemorySink
from edge.sources.dicos import DicosFrameSource
from edge.stages.decide import decide


def _clear(item: RawItem) -> Any:
    return decide(item.meta, [], time.time(), time.monotonic())


def _run(directory: Path, journal: Path) -> MemorySink:
    sink = MemorySink()
    pipeline = Pipeline(DicosFrameSource(directory, "lane1", 60), [Stage("s", _clear)], [sink], backpressure=True,
                        journal=IntakeJournal(journal))
    pipeline.start()
    assert pipeline.wait_idle(20)
    pipeline.stop(timeout_s=5)
    return sink


def test_processed_pairs_move_away_and_are_not_screened_after_a_restart(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    incoming = tmp_path / "dx"
    incoming.mkdir()
    for name in ("bag-1", "bag-2"):
        high = rng.integers(1000, 60000, (32, 48), dtype=np.uint16)
        write_dx_pair(incoming, name, high, high)
    broken = write_dx_pair(incoming, "bag-3", high, high)
    broken.high.write_bytes(broken.high.read_bytes()[:-200])
    first = _run(incoming, tmp_path / "intake.sqlite3")
    verdicts = sorted((d.item_id, d.verdict, d.reason) for d in first.decisions)
    assert verdicts == [("lane1-bag-1", Verdict.CLEAR, None), ("lane1-bag-2", Verdict.CLEAR, None),
                        ("lane1-bag-3", Verdict.UNSCREENED, UnscreenedReason.CORRUPT_FRAME)]
    assert sorted(p.name for p in (incoming / "done").iterdir()) == [
        "bag-1_high.dcs", "bag-1_low.dcs", "bag-2_high.dcs", "bag-2_low.dcs"]
    assert sorted(p.name for p in (incoming / "rejected").iterdir()) == ["bag-3_high.dcs", "bag-3_low.dcs"]
    assert not any(p.is_file() for p in incoming.iterdir())
    second = _run(incoming, tmp_path / "intake.sqlite3")
    assert second.decisions == [], "a restarted service screened processed DICOS files again"
