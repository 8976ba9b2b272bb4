"""A screening workstation's drop folder: each TDR copied in by atomic rename, bounded, on its own thread.

Where it sits: the audit store hands every report it wrote to ``DropFolder.offer``; a workstation (or its
importer) takes the files out of the folder. What it must not do: hold up or fail a decision. ``offer`` only
puts the bytes on a bounded queue; the ``tdr-drop`` thread writes them. A folder that is missing (unmounted
share), full (over ``max_files``/``max_mb``: the workstation is not taking reports) or failing (disk full,
read-only) makes the report skipped, logged once per cause and counted, and ``problem`` says why until a write
succeeds again; the record in the audit store is not affected. The folder is never created here: a missing
mount point must not fill the root file system.

Files appear under their final name only when complete (temporary ``.<name>.<random>.tmp`` in the same folder,
fsync, rename): a workstation that ignores hidden files never reads half a report.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
from pathlib import Path

from edge.dicos._io import write_atomic

log = logging.getLogger(__name__)

_MB = 1024 * 1024
_RESCAN_S = 5.0
"""How often the folder's contents are counted again (the workstation removes files meanwhile; between counts
the figures only grow by what this thread wrote, so the bound is never overrun)."""


class DropFolder:
    """Copies reports into ``folder`` on the ``tdr-drop`` thread; ``problem`` is None while that works."""

    def __init__(self, folder: Path, max_files: int, max_mb: float, queue_size: int = 256) -> None:
        self.folder = folder
        self._max_files = max_files
        self._max_bytes = max_mb * _MB
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=queue_size)
        self._problem: str | None = None
        self._logged: str | None = None
        self.written = 0
        self.skipped = 0
        self._files = 0
        self._bytes = 0
        self._counted_mono = -_RESCAN_S
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="tdr-drop", daemon=True)
        self._thread.start()

    @property
    def problem(self) -> str | None:
        """Why reports are not reaching the drop folder now (None when they are)."""
        return self._problem

    def offer(self, name: str, data: bytes) -> bool:
        """Queue one report for the folder; False (skipped, counted) when the queue is full. Never blocks."""
        with self._pending_lock:
            try:
                self._queue.put_nowait((name, data))
            except queue.Full:
                full = True
            else:
                full = False
                self._pending += 1
                self._idle.clear()
        if full:
            self._skip("queue", f"TDR drop folder {self.folder} is not keeping up ({self._queue.maxsize} reports "
                       "waiting); reports skipped")
            return False
        return True

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every queued report has been written or skipped (tests, shutdown)."""
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float) -> None:
        """Write what is queued (within ``timeout_s``) and stop the thread."""
        try:
            self._queue.put(None, timeout=max(0.1, timeout_s))
        except queue.Full:
            return
        self._thread.join(timeout=max(0.1, timeout_s))

    # ---------------------------------------------------------------- the drop thread
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                self._idle.set()
                return
            try:
                self._deliver(*job)
            except Exception:  # the thread must go on whatever one report does
                log.exception("TDR drop failed", extra={"folder": str(self.folder)})
            with self._pending_lock:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()

    def _deliver(self, name: str, data: bytes) -> None:
        if not self.folder.is_dir():
            self._skip("missing", f"TDR drop folder {self.folder} is missing (not created by the box); reports skipped")
            return
        self._count()
        if self._files + 1 > self._max_files or self._bytes + len(data) > self._max_bytes:
            self._skip("full", f"TDR drop folder {self.folder} is full ({self._files} reports, "
                       f"{self._bytes / _MB:.1f} MB; bounds {self._max_files} / {self._max_bytes / _MB:g} MB): "
                       "the workstation is not taking them; reports skipped")
            self._counted_mono = -_RESCAN_S  # count again next time: the workstation may have emptied it
            return
        target = _free_name(self.folder, name, data)
        if target is None:
            return  # this very report is there already (a decision offered again): nothing to add
        try:
            write_atomic(target, data)
        except OSError as exc:
            cause = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
            self._skip(cause, f"TDR drop folder {self.folder} cannot be written ({cause}); reports skipped")
            return
        self._files += 1
        self._bytes += len(data)
        self.written += 1
        if self._problem is not None:
            log.warning("TDR drop folder takes reports again", extra={"folder": str(self.folder)})
            self._problem = None
            self._logged = None

    def _count(self) -> None:
        now = time.monotonic()
        if now - self._counted_mono < _RESCAN_S:
            return
        files = size = 0
        try:
            with os.scandir(self.folder) as it:
                for entry in it:
                    if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        size += entry.stat().st_size
                    except OSError:
                        continue
                    files += 1
        except OSError:
            pass
        self._files, self._bytes, self._counted_mono = files, size, now

    def _skip(self, cause: str, why: str) -> None:
        with self._pending_lock:  # offer (the publish thread) and the drop thread both count
            self.skipped += 1
        self._problem = why
        if cause != self._logged:  # one line per cause, not one per report
            self._logged = cause
            log.error(why)



def _free_name(folder: Path, name: str, data: bytes) -> Path | None:
    """Where ``data`` goes: ``name``, unless a *different* report the workstation has not taken yet holds that name
    (an item id used again on a later day: the audit store keeps them apart in day folders, the drop folder is
    flat), then ``<name>.<sha256[:12] of data>.tdr.dcs``; None when these bytes are there already (a decision
    stored again after a restart)."""
    import hashlib

    target = folder / name
    try:
        if not target.is_file():
            return target
        if target.read_bytes() == data:
            return None
    except OSError:
        return target  # unreadable: the write says what is wrong
    base, ext = (name[: -len(_TDR_SUFFIX)], _TDR_SUFFIX) if name.endswith(_TDR_SUFFIX) else (name, "")
    alt = folder / f"{base}.{hashlib.sha256(data).hexdigest()[:12]}{ext}"
    return None if alt.is_file() else alt


_TDR_SUFFIX = ".tdr.dcs"
