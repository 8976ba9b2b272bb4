"""The audit store: every decision (and its overlay) on disk, pruned by age, by a disk quota and to keep free space.

Layout: ``<directory>/<YYYY-MM-DD>/<item_id>.json`` (the same JSON body as the MQTT item record) beside
``<item_id>.jpg`` (overlay), ``<item_id>.tdr.dcs`` (the DICOS Threat Detection Report, type MACHINE, when
``tdr.enabled``), and, when ``save_inputs`` is on, ``<item_id>.npz`` (raw high/low). Operator verdicts sent back
from the control room land beside their record as ``<item_id>.verdict-<verdict_id>.json`` and
``<item_id>.verdict-<verdict_id>.tdr.dcs`` (OPERATOR report), one pair per verdict, so a redelivered verdict
finds its own files. Files are written to a temporary name and renamed (mode from the process umask), so a
crash never leaves a half record, and a decision offered again is written to the same names (idempotent). The
JSON record is written last: its presence means the record (picture, report) is complete. Everything of a record
(all files sharing its stem) is pruned together.

Sink contract: ``publish`` returns once the record is on disk and raises ``PublishError`` when it is not (disk
full, I/O error, read-only); ``problem`` then says why until a write succeeds again. Nothing here ever exits
the service; the store recovers by itself when space returns (the pipeline offers the decision again).

Pruning runs on its own thread (``audit-prune``), never on the publish thread: walking a store of 90,000 files
took 1.3 s every 50 decisions. The store keeps a running total of its bytes (one walk at start, on that thread,
then each write and each removal adjusts it), and the thread wakes every ``prune_interval_s``, every
``prune_every`` decisions and whenever a bound is crossed. It removes whole days older than ``retention_days``,
then the oldest records (oldest day first, oldest file first within it) while the store is over ``quota_mb``
(down to 90% of it) or its file system has less than ``min_free_mb`` free (at most a tenth of the file system):
the newest decision matters more than the oldest, and the outbox may share the disk. ``pruned_records`` tells
health that it pruned.

The TDR of each record may also be copied into a workstation's drop folder (``tdr.drop_folder``,
``edge.dicos.drop``): on that folder's own thread, so a full, missing or hung folder costs no decision its record.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config.audit import AuditConfig
from edge.dicos.drop import DropFolder
from edge.dicos.tdr import encode_machine_tdr
from edge.errors import PublishError
from edge.files import atomic_write_bytes, atomic_write_group
from edge.publish.payloads import decision_payload
from edge.publish.payloads import record_id as make_record_id
from edge.publish.topics import RecordKind
from edge.records import Decision, RawItem

log = logging.getLogger(__name__)

_MB = 1024 * 1024
_MAX_FREE_FRACTION = 0.1
_STALE_TEMP_S = 60.0
"""A hidden temporary file this much older than the store's start is a crashed write's leftover (no writer of
this process is that old), removed by the first scan; younger ones are left to the day's retention."""


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno == errno.EIO:
        return "I/O error"
    return exc.strerror or str(exc)


class AuditStore:
    """A :class:`edge.ports.ResultSink` that keeps records on disk within age, size and free-space bounds."""

    def __init__(self, config: AuditConfig, site_id: str, prune_every: int = 50) -> None:
        self._config = config
        self._site_id = site_id
        self._root = config.directory
        self._prune_every = prune_every
        self._since_prune = 0
        self._lock = threading.Lock()
        self._prune_lock = threading.Lock()
        self.pruned_records = 0
        self.last_prune_wall: float | None = None
        self._write_problem: str | None = None
        self._tdr_problem: str | None = None
        self.tdr_failures = 0
        """Decisions whose report could not be built (a bug, logged): their JSON record is still stored."""
        self.drop: DropFolder | None = None
        if config.tdr.enabled and config.tdr.drop_folder is not None:
            self.drop = DropFolder(config.tdr.drop_folder, config.tdr.drop_max_files, config.tdr.drop_max_mb,
                                   config.tdr.drop_queue)
        self._usage = 0
        self._started_wall = time.time()
        self._fresh: dict[str, int] | None = {}
        """Paths this process writes while the first scan runs, with the size of the file each held when first
        claimed: the scan counts that size, not the file it finds (which the writer may have replaced and counts
        itself, as its new size less that one); file times come from a coarse kernel clock, so "written after the
        start" cannot be told by mtime."""
        self._scanned = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a full or read-only disk at start: degrade, retried at each publish
            self._write_problem = f"audit store cannot write: {_reason(exc)} ({self._root})"
            log.error("audit store directory not created", extra={"error": str(exc)})
        self._thread = threading.Thread(target=self._prune_loop, name="audit-prune", daemon=True)
        self._thread.start()

    @property
    def problem(self) -> str | None:
        """Why the store cannot do its job (None when it can): read by the service's health. Writing records
        first; then a report that could not be built and the drop folder's state, which cost no record."""
        found = [p for p in (self._write_problem, self._tdr_problem,
                             self.drop.problem if self.drop is not None else None) if p]
        return "; ".join(found) or None

    # ------------------------------------------------------------------ writing (publish thread)
    def _day_dir(self, wall: float) -> Path:
        day = self._root / time.strftime("%Y-%m-%d", time.gmtime(wall))
        day.mkdir(parents=True, exist_ok=True)
        return day

    def publish(self, decision: Decision) -> None:
        """Write the decision's record (and overlay) before returning.

        Raises:
            PublishError: it could not be written (``problem`` says why); nothing half-written is left.
        """
        body = decision_payload(decision, self._site_id, RecordKind.ITEM, None, None, decision.overlay_note)
        report = self._report(decision) if self._config.tdr.enabled else None
        written = 0
        try:
            day = self._day_dir(decision.decided_wall)
            stem = self._stem(day, decision.item_id, str(body["record_id"]))
            # Picture and report first, the JSON (which marks a stored record) last: one group flush.
            files: list[tuple[Path, bytes]] = []
            if decision.overlay_jpeg is not None:
                files.append((day / f"{stem}.jpg", decision.overlay_jpeg))
            if report is not None:
                files.append((day / f"{stem}{TDR_SUFFIX}", report))
            files.append((day / f"{stem}.json", json.dumps(body, sort_keys=True).encode()))
            written += self._write_group(files)
        except OSError as exc:
            self._write_problem = f"audit store cannot write: {_reason(exc)} ({self._root})"
            self._wake.set()  # pruning may make room
            raise PublishError(f"{decision.item_id}: audit record not stored ({self._write_problem})") from exc
        finally:
            with self._lock:
                self._usage += written
        if report is not None and self.drop is not None:
            self.drop.offer(f"{stem}{TDR_SUFFIX}", report)  # never blocks: the drop folder has its own thread
        if self._write_problem is not None:
            log.warning("audit store writes again", extra={"directory": str(self._root)})
            self._write_problem = None
        with self._lock:
            self._since_prune += 1
            due = self._since_prune >= self._prune_every
            if due:
                self._since_prune = 0
        if due or self._over_bounds():
            self._wake.set()

    def _report(self, decision: Decision) -> bytes | None:
        """The item's TDR bytes, or None (logged, counted, shown in health) when it cannot be built: a report
        that fails must not cost the decision its record, which is what every other reader relies on."""
        try:
            data = encode_machine_tdr(decision, include_benign=self._config.tdr.include_benign, site_id=self._site_id)
        except Exception as exc:  # a bug in building the report: keep the record, say so
            self.tdr_failures += 1
            self._tdr_problem = f"DICOS report not built for {decision.item_id} ({type(exc).__name__}: {exc})"
            log.exception("TDR not built; the record is stored without it", extra={"item_id": decision.item_id})
            return None
        self._tdr_problem = None
        return data

    # ------------------------------------------------------------------ records and verdicts (any thread)
    def find_record(self, record_id: str, item_id: str) -> AuditRecord | None:
        """The stored record whose item record id is ``record_id`` (of item ``item_id``), newest day first, or None.

        Looks only where the store puts such a record (``<item_id>.json`` or ``<item_id>.<record id prefix>.json``
        in each day folder): two file reads per day at most, never a walk of the store.

        Raises:
            ValueError: ``item_id`` cannot be a file name in the store (a path, empty, hidden).
        """
        if not _safe_name(item_id):
            raise ValueError(f"item_id {item_id!r} is not a name the audit store uses")
        for day in sorted(_dirs(self._root), key=lambda p: p.name, reverse=True):
            for stem in (item_id, f"{item_id}.{record_id[:8]}"):
                try:
                    body = json.loads((day / f"{stem}.json").read_bytes())
                except (OSError, ValueError):
                    continue
                if isinstance(body, dict) and body.get("record_id") == record_id and body.get("item_id") == item_id:
                    return AuditRecord(day, stem, body)
        return None

    def store_verdict(self, record: AuditRecord, verdict_id: str, body: bytes, report: bytes | None) -> bool:
        """Store one operator verdict beside its record (OPERATOR report first, then the JSON); True if it was
        new, False if this ``verdict_id`` was already stored (a redelivery: nothing is written again).

        Raises:
            ValueError: ``verdict_id`` cannot be a file name in the store.
            OSError: it could not be written (nothing half-written is left; the JSON marks a stored verdict).
        """
        if not _safe_name(verdict_id):
            raise ValueError(f"verdict_id {verdict_id!r} is not a name the audit store uses")
        target = record.day / f"{record.stem}.verdict-{verdict_id}.json"
        if target.exists():
            return False
        written = 0
        report_path = record.day / f"{record.stem}.verdict-{verdict_id}{TDR_SUFFIX}"
        try:
            if report is not None:
                written += self._write(report_path, report)
            written += self._write(target, body)
        except OSError:
            # The report without its JSON would be an OPERATOR verdict the box answered as not stored: remove it
            # (a resend writes both again).
            if report is not None and not target.exists():
                with contextlib.suppress(FileNotFoundError):
                    size = report_path.stat().st_size
                    report_path.unlink()
                    written -= size
            raise
        finally:
            with self._lock:
                self._usage += written
        return True

    def verdicts_of(self, record: AuditRecord) -> list[dict[str, object]]:
        """The verdicts stored for a record, oldest decision first (for tools and tests)."""
        found = []
        for path in record.day.glob(f"{_glob_escape(record.stem)}.verdict-*.json"):
            try:
                found.append(json.loads(path.read_bytes()))
            except (OSError, ValueError):
                continue
        return sorted(found, key=lambda v: (float(v.get("decided_wall") or 0.0), str(v.get("verdict_id"))))

    @staticmethod
    def _stem(day: Path, item_id: str, record_id: str) -> str:
        """``<item_id>``, unless that name already holds another item's record (an item id reused after a restart
        or a firmware power cycle): then ``<item_id>.<record id prefix>``, so no record is ever overwritten. A retry
        of the same record finds its own file and writes it again under the same name."""
        existing = day / f"{item_id}.json"
        try:
            if not existing.exists() or json.loads(existing.read_bytes()).get("record_id") == record_id:
                return item_id
        except (OSError, ValueError):
            pass
        return f"{item_id}.{record_id[:8]}"

    def _write(self, path: Path, data: bytes) -> int:
        """Write ``path``; return how many bytes the store grew by (a retried write replaces its own file)."""
        self._claim(path)
        try:
            before = path.stat().st_size
        except FileNotFoundError:
            before = 0
        atomic_write_bytes(path, data)
        return len(data) - before

    def _write_group(self, files: list[tuple[Path, bytes]]) -> int:
        """Write the files of one record (``edge.files.atomic_write_group``: one flush for all); return how many
        bytes the store grew by. A failure part-way leaves the files already renamed: they are counted here."""
        paths = [path for path, _ in files]
        for path in paths:
            self._claim(path)
        before = _sizes(paths)
        try:
            atomic_write_group(files)
        except OSError:
            with self._lock:
                self._usage += _sizes(paths) - before
            raise
        return sum(len(data) for _, data in files) - before

    def _claim(self, path: Path) -> None:
        """Mark ``path`` as counted by its writer, before it is written (see ``_fresh``)."""
        with self._lock:
            if self._fresh is not None and str(path) not in self._fresh:
                try:  # a file from before the start (a record stored again): the writer counts only its growth
                    self._fresh[str(path)] = path.stat().st_size
                except OSError:
                    self._fresh[str(path)] = 0

    def _over_bounds(self) -> bool:
        if self._usage > self._config.quota_mb * _MB:
            return True
        return self._free_bytes() < self._min_free_bytes()

    def _free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self._root).free
        except OSError:
            return 0

    def _min_free_bytes(self) -> float:
        """``min_free_mb``, but at most a tenth of the file system: on a disk smaller than the setting assumes,
        the store would otherwise prune every record it writes."""
        try:
            total = shutil.disk_usage(self._root).total
        except OSError:
            return 0.0
        return min(self._config.min_free_mb * _MB, total * _MAX_FREE_FRACTION)

    def save_inputs(self, item: RawItem) -> None:
        """Keep the raw inputs of an item (for ``edge fit`` and audits) when the config asks for it, as
        ``<record stem>.npz``: the name its JSON record will have, so ``edge fit`` pairs them. Called by the pipeline
        once the item has its final identity (``Pipeline(on_accept=...)``, see ``keep_inputs``): saved by the source
        before that, a second item under a used id overwrote the first one's inputs (the pipeline renames it
        ``<id>-2`` only later), and an id reused after a restart had its inputs under a name no record had.

        Raises:
            OSError: they could not be written (nothing half-written is left).
        """
        if not self._config.save_inputs or item.high is None or item.low is None:
            return
        meta = item.meta
        day = self._day_dir(meta.scan_end_wall)
        item_record = make_record_id(self._site_id, meta.scanner_id, meta.item_id, RecordKind.ITEM, meta.uid)
        target = day / f"{self._stem(day, meta.item_id, item_record)}.npz"
        buffer = io.BytesIO()
        np.savez_compressed(buffer, high=item.high, low=item.low)
        grew = self._write_group([(target, buffer.getvalue())])
        with self._lock:
            self._usage += grew

    def keep_inputs(self, item: RawItem) -> None:
        """``save_inputs`` for the pipeline's accept hook: a failed save is logged and never costs the item its
        decision."""
        try:
            self.save_inputs(item)
        except OSError as exc:
            log.error("audit inputs not saved", extra={"item_id": item.meta.item_id, "error": str(exc)})

    def usage_bytes(self) -> int:
        """Bytes used by the store: a running total, not a walk (files from before the start are in it once the
        prune thread's first scan has finished; it never blocks for that scan)."""
        with self._lock:
            return self._usage

    def write_beside(self, decided_wall: float, item_id: str, record_id: str, suffix: str, data: bytes) -> Path:
        """Write ``<record stem><suffix>`` beside an item's record (e.g. ``.actions.json``, what the lane did
        about it), atomically and counted in the store's usage like the record itself; written again in place
        when called again. ``record_id`` is the item record's id (it picks the stem, as for the record).

        Raises:
            OSError: it could not be written (the caller keeps what it wanted written and says why).
        """
        day = self._day_dir(decided_wall)
        path = day / f"{self._stem(day, item_id, record_id)}{suffix}"
        grew = self._write(path, data)
        with self._lock:
            self._usage += grew
        return path

    # ------------------------------------------------------------------ pruning (its own thread)
    def _prune_loop(self) -> None:
        try:
            self._initial_scan()
        finally:
            self._scanned.set()
        while not self._stop.is_set():
            self._wake.wait(self._config.prune_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.prune()
            except Exception:  # the thread must go on: a failed prune is retried at the next wake
                log.exception("audit prune failed")

    def _initial_scan(self) -> None:
        """Count what was there before this process started; later files are counted as they are written."""
        stale = 0
        for day in _dirs(self._root):
            for entry in _entries(day):
                if entry.name.startswith("."):
                    # A write in progress (its writer counts the file when it is renamed into place), or one a
                    # crash interrupted: never renamed, never counted, and it kept its day folder from going.
                    stale += self._remove_stale_temp(entry)
                    continue
                try:
                    size = entry.stat().st_size
                except OSError:
                    continue
                with self._lock:
                    if self._fresh is not None:
                        # a file a writer claimed counts as it was then: the writer adds what it changed since
                        self._usage += self._fresh.get(entry.path, size)
        with self._lock:
            self._fresh = None
        if stale:
            log.warning("audit store removed temporary files of interrupted writes",
                        extra={"files": stale, "directory": str(self._root)})

    def _remove_stale_temp(self, entry: os.DirEntry[str]) -> int:
        """Remove ``entry`` if it is a temporary file left by a write before this start; 1 if removed."""
        if not entry.name.endswith(".tmp"):
            return 0
        try:
            if entry.stat().st_mtime >= self._started_wall - _STALE_TEMP_S:
                return 0
            os.unlink(entry.path)
        except OSError:
            return 0
        return 1

    def prune(self, now_wall: float | None = None) -> int:
        """Apply retention, quota and minimum free space; return how many records were removed."""
        now = time.time() if now_wall is None else now_wall
        self._scanned.wait(60.0)
        with self._prune_lock:
            removed = 0
            cutoff = time.strftime("%Y-%m-%d", time.gmtime(now - self._config.retention_days * 86400))
            days = sorted(_dirs(self._root), key=lambda p: p.name)
            for day in [d for d in days if d.name < cutoff]:
                removed += self._remove_day(day)
            quota = self._config.quota_mb * _MB
            min_free = self._min_free_bytes()
            over_quota = self._usage > quota
            short_of_space = self._free_bytes() < min_free
            if over_quota or short_of_space:
                for day in sorted(_dirs(self._root), key=lambda p: p.name):
                    removed += self._remove_oldest(day, quota if over_quota else None,
                                                   min_free if short_of_space else None)
                    if not self._still_short(quota if over_quota else None, min_free if short_of_space else None):
                        break
            if removed:
                with self._lock:
                    self.pruned_records += removed
                    self.last_prune_wall = now
                log.info("audit store pruned", extra={"removed": removed, "usage_bytes": self._usage,
                                                      "free_bytes": self._free_bytes()})
            return removed

    def _still_short(self, quota: float | None, min_free: float | None) -> bool:
        """Whether pruning must go on: over 90% of the quota, or under the minimum free space (+10%)."""
        if quota is not None and self._usage > quota * 0.9:
            return True
        return min_free is not None and self._free_bytes() < min_free * 1.1

    def _remove_day(self, day: Path) -> int:
        records = 0
        freed = 0
        stems = set()
        for entry in _entries(day):
            if entry.name.startswith("."):
                continue  # a temporary file: never counted, so its bytes are not taken off the total
            try:
                freed += entry.stat().st_size
            except OSError:
                continue
            stems.add(record_stem(entry.name))
        records = len(stems)
        shutil.rmtree(day, ignore_errors=True)
        with self._lock:
            self._usage -= freed
        return records

    def _remove_oldest(self, day: Path, quota: float | None, min_free: float | None) -> int:
        """Remove the day's records oldest first while still short; the day folder goes when empty."""
        by_record: dict[str, list[tuple[float, Path, int]]] = {}
        for entry in _entries(day):
            if entry.name.startswith("."):
                continue  # a write in progress
            try:
                st = entry.stat()
            except OSError:
                continue
            stem = record_stem(entry.name)
            by_record.setdefault(stem, []).append((st.st_mtime, Path(entry.path), st.st_size))
        removed = 0
        for parts in sorted(by_record.values(), key=lambda ps: min(p[0] for p in ps)):
            if not self._still_short(quota, min_free):
                break
            for _, path, size in parts:
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                with self._lock:
                    self._usage -= size
            removed += 1
        if removed == len(by_record):
            with contextlib.suppress(OSError):  # not empty (a write came in) or already gone
                day.rmdir()
        return removed

    def close(self, timeout_s: float) -> None:
        """Stop the prune thread (and the drop folder's)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=max(0.1, timeout_s))
        if self.drop is not None:
            self.drop.close(timeout_s)


TDR_SUFFIX = ".tdr.dcs"
"""The DICOS report of a record (and of each verdict), beside its JSON."""

_RECORD_SUFFIXES = (TDR_SUFFIX, ".actions.json", ".json", ".jpg", ".npz")
_VERDICT_MARK = ".verdict-"


def _sizes(paths: list[Path]) -> int:
    """Bytes the files that exist among ``paths`` hold."""
    total = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def record_stem(name: str) -> str:
    """The record a file of the store belongs to: ``bag-7.tdr.dcs``, ``bag-7.jpg`` and
    ``bag-7.verdict-<id>.json`` all belong to ``bag-7`` (item ids may hold dots, so the known suffixes are
    stripped rather than everything after the first dot)."""
    for suffix in _RECORD_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = name.rsplit(".", 1)[0]
    mark = name.rfind(_VERDICT_MARK)
    return name[:mark] if mark > 0 else name


def _safe_name(name: str) -> bool:
    """A name usable as one file name in a day folder: not empty, not hidden, no path separator or NUL."""
    return bool(name) and not name.startswith(".") and "/" not in name and "\0" not in name and len(name) <= 200


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Where one decision's record is: its day folder and the stem its files share; ``body`` is its JSON."""

    day: Path
    stem: str
    body: dict[str, object]


def _dirs(root: Path) -> list[Path]:
    try:
        with os.scandir(root) as it:
            return [Path(e.path) for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _entries(day: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(day) as it:
            return [e for e in it if e.is_file(follow_symlinks=False)]
    except OSError:
        return []


