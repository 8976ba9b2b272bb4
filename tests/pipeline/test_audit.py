"""The audit store keeps every decision on disk and stays within its age and size bounds."""

from __future__ import annotations

import json
import time
from pathlib import Path

from edge.config.audit import AuditConfig
from edge.records import BoxXyxy, Decision, ObjectResult, UnscreenedReason, Verdict
from edge.schemas import validator
from edge.sinks.audit import AuditStore


def _decision(item_id: str, wall: float, verdict: Verdict = Verdict.CLEAR, jpeg: bytes | None = None) -> Decision:
    reason = UnscreenedReason.MODEL_ERROR if verdict is Verdict.UNSCREENED else None
    obj = ObjectResult(0, BoxXyxy(1, 2, 30, 40), None, 0.9, 0.2, 0.5, False, ((1, 2), (30, 2), (30, 40)))
    return Decision(item_id, "lane1", verdict, reason, "detail", (obj,), 0.2, wall - 2, wall - 1, wall, 12.0,
                    overlay_jpeg=jpeg)


def test_records_are_schema_valid_json_with_overlay(tmp_path: Path) -> None:
    store = AuditStore(AuditConfig(directory=tmp_path), "hub")
    now = time.time()
    store.publish(_decision("lane1-7", now, Verdict.UNSCREENED, jpeg=b"\xff\xd8jpeg"))
    day = tmp_path / time.strftime("%Y-%m-%d", time.gmtime(now))
    body = json.loads((day / "lane1-7.json").read_text())
    validator("xray-edge/item@2").validate(body)
    assert body["verdict"] == "unscreened" and body["reason"] == "model_error"
    assert (day / "lane1-7.jpg").read_bytes() == b"\xff\xd8jpeg"
    assert not list(day.glob(".*.tmp")), "no temporary files left behind"


def test_prunes_by_age_and_quota(tmp_path: Path) -> None:
    store = AuditStore(AuditConfig(directory=tmp_path, retention_days=2, quota_mb=10), "hub", prune_every=10_000)
    now = time.time()
    store.publish(_decision("old", now - 5 * 86400))
    for i in range(30):
        store.publish(_decision(f"new{i}", now, jpeg=b"x" * 500_000))
    store.prune(now)  # its background thread may have pruned for the quota already
    assert store.pruned_records >= 2 and store.last_prune_wall is not None
    assert not list(tmp_path.rglob("old.json")), "records older than retention are gone"
    assert store.usage_bytes() <= 10 * 1024 * 1024
    remaining = sorted(p.stem for p in tmp_path.rglob("*.json"))
    assert remaining and "new29" in remaining, "the newest records survive"


def test_saved_inputs_are_named_as_their_records_when_an_item_id_is_used_twice(tmp_path: Path) -> None:
    """A spool file dropped twice under one name: the pipeline renames the second item ``<id>-2``. The inputs were
    saved by a source wrapper before that rename, so the second item's raw frames overwrote the first one's under
    ``<id>.npz`` (``edge fit`` then refitted on a record paired with another parcel) and ``<id>-2`` had none. An id
    reused after a restart (a new store over the old records) had its inputs under a name no record had."""
    import numpy as np

    from edge.pipeline import Pipeline, Stage
    from edge.sinks.memory import MemorySink
    from edge.sources.spool import SpoolSource
    from edge.stages.decide import decide

    spool, root = tmp_path / "spool", tmp_path / "audit"
    rng = np.random.default_rng(4)
    frames = [rng.integers(1000, 60000, size=(32, 16), dtype=np.uint16) for _ in range(3)]

    def run(first: int, count: int) -> list[Decision]:
        store = AuditStore(AuditConfig(directory=root, save_inputs=True), "hub")
        sink = MemorySink()
        source = SpoolSource(spool, "lane1", deadline_s=30, poll_s=0.02)
        pipeline = Pipeline(source, [Stage("decide", lambda item: decide(item.meta, [], time.time(),
                                                                         time.monotonic()))],
                            [store, sink], on_accept=store.keep_inputs)
        pipeline.start()
        try:
            for k in range(first, first + count):  # the same name each time, once the previous one was taken
                with open(spool / "parcel.npz.part", "wb") as handle:  # written, then renamed into the spool
                    np.savez(handle, high=frames[k], low=frames[k])
                (spool / "parcel.npz.part").rename(spool / "parcel.npz")
                assert sink.wait_for(k - first + 1, timeout_s=20), "not decided"
                # The next file under this name only once the spool has let this one go (moved to done/ after its
                # decision was stored): dropped over a file still being taken, it would be that file.
                deadline = time.monotonic() + 20
                while (spool / "parcel.npz").exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
        finally:
            pipeline.stop(timeout_s=5)
            store.close(2)
        return sink.decisions

    decided = run(0, 2) + run(2, 1)  # two in one run, then the id again after a restart
    day = next(d for d in root.iterdir() if d.is_dir())
    records = {json.loads(p.read_bytes())["record_id"]: p for p in day.glob("*.json")}
    assert len(records) == 3, sorted(p.name for p in day.iterdir())
    for k, decision in enumerate(decided):
        body = next(json.loads(p.read_bytes()) for p in records.values()
                    if json.loads(p.read_bytes())["item_id"] == decision.item_id
                    and json.loads(p.read_bytes())["decided_wall"] == decision.decided_wall)
        stem = records[body["record_id"]].name[: -len(".json")]
        with np.load(day / f"{stem}.npz") as saved:
            assert np.array_equal(saved["high"], frames[k]), f"{stem}.npz holds another parcel's frames"
    names = {p.name for p in day.glob("*.npz")}
    assert len(names) == 3 and {"lane1-parcel.npz", "lane1-parcel-2.npz"} <= names, names
