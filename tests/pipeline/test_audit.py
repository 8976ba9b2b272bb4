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
