"""The audit store: every decision (and its overlay) on disk, pruned by age and by a disk quota.

Layout: ``<directory>/<YYYY-MM-DD>/<item_id>.json`` (the same JSON body as the MQTT item record) beside
``<item_id>.jpg`` (overlay) and, when ``save_inputs`` is on, ``<item_id>.npz`` (raw high/low). Files are written
to a temporary name and renamed, so a crash never leaves a half record. Pruning removes whole oldest days first
(age), then oldest records until usage is under the quota; it never fills the disk, and ``pruned_records``
tells health that it pruned.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from edge.config.audit import AuditConfig
from edge.files import atomic_write_bytes
from edge.ports import FrameSource
from edge.publish.payloads import decision_payload
from edge.publish.topics import RecordKind
from edge.records import Decision, RawItem

log = logging.getLogger(__name__)


class AuditStore:
    """A :class:`edge.ports.ResultSink` that keeps records on disk within age and size bounds."""

    def __init__(self, config: AuditConfig, site_id: str, prune_every: int = 50) -> None:
        self._config = config
        self._site_id = site_id
        self._root = config.directory
        self._root.mkdir(parents=True, exist_ok=True)
        self._prune_every = prune_every
        self._since_prune = 0
        self._lock = threading.Lock()
        self.pruned_records = 0
        self.last_prune_wall: float | None = None

    def _day_dir(self, wall: float) -> Path:
        day = self._root / time.strftime("%Y-%m-%d", time.gmtime(wall))
        day.mkdir(parents=True, exist_ok=True)
        return day

    def publish(self, decision: Decision) -> None:
        day = self._day_dir(decision.decided_wall)
        body = decision_payload(decision, self._site_id, RecordKind.ITEM, None, None, decision.overlay_note)
        if decision.overlay_jpeg is not None:
            atomic_write_bytes(day / f"{decision.item_id}.jpg", decision.overlay_jpeg)
        atomic_write_bytes(day / f"{decision.item_id}.json", json.dumps(body, sort_keys=True).encode())
        with self._lock:
            self._since_prune += 1
            due = self._since_prune >= self._prune_every
            if due:
                self._since_prune = 0
        if due:
            self.prune()

    def save_inputs(self, item: RawItem) -> None:
        """Keep the raw inputs of an item (for ``edge fit`` and audits) when the config asks for it."""
        if not self._config.save_inputs or item.high is None or item.low is None:
            return
        day = self._day_dir(item.meta.scan_end_wall)
        tmp = day / f".{item.meta.item_id}.npz.tmp"
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, high=item.high, low=item.low)
        os.replace(tmp, day / f"{item.meta.item_id}.npz")

    def usage_bytes(self) -> int:
        """Bytes used by the store."""
        return sum(p.stat().st_size for p in self._root.rglob("*") if p.is_file())

    def prune(self, now_wall: float | None = None) -> int:
        """Apply retention and quota; return how many records were removed."""
        now = time.time() if now_wall is None else now_wall
        removed = 0
        cutoff = time.strftime("%Y-%m-%d", time.gmtime(now - self._config.retention_days * 86400))
        days = sorted(p for p in self._root.iterdir() if p.is_dir())
        for day in days:
            if day.name < cutoff:
                removed += sum(1 for _ in day.glob("*.json"))
                shutil.rmtree(day, ignore_errors=True)
        quota = int(self._config.quota_mb * 1024 * 1024)
        usage = self.usage_bytes()
        if usage > quota:
            files = sorted((p for p in self._root.rglob("*") if p.is_file()),
                           key=lambda p: (p.parent.name, p.stat().st_mtime))
            by_record: dict[Path, list[Path]] = {}
            for path in files:
                by_record.setdefault(path.with_suffix(""), []).append(path)
            for _, parts in by_record.items():
                if usage <= quota * 0.9:
                    break
                for part in parts:
                    usage -= part.stat().st_size
                    part.unlink(missing_ok=True)
                removed += 1
        if removed:
            with self._lock:
                self.pruned_records += removed
                self.last_prune_wall = now
            log.info("audit store pruned", extra={"removed": removed, "usage_bytes": usage})
        return removed

    def close(self, timeout_s: float) -> None:
        return None


class InputSavingSource:
    """A :class:`~edge.ports.FrameSource` that hands every item on unchanged after keeping its raw inputs in
    ``store`` (when ``audit.save_inputs`` is on): the raw material ``edge fit`` learns from. A failed save
    is logged and never costs the item its decision."""

    def __init__(self, source: FrameSource, store: AuditStore) -> None:
        self._source = source
        self._store = store

    def next_item(self, timeout_s: float) -> RawItem | None:
        item = self._source.next_item(timeout_s)
        if item is not None and item.problem is None:
            try:
                self._store.save_inputs(item)
            except OSError as exc:
                log.error("audit inputs not saved", extra={"item_id": item.meta.item_id, "error": str(exc)})
        return item

    def acknowledge(self, source_ref: str) -> None:
        """Passed through to the wrapped source."""
        self._source.acknowledge(source_ref)

    def close(self) -> None:
        self._source.close()

    @property
    def exhausted(self) -> bool:
        """Passed through: the pipeline asks a finite source (sim, replay) whether it has run dry."""
        return bool(getattr(self._source, "exhausted", False))
