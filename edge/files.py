"""Atomic file replacement, used by everything that writes state a crash must not leave half-written
(calibrations, the audit store, the status file, DICOS reports, the printable target).

A file is written to a temporary name in the same directory, flushed and fsynced, then renamed over the target
(atomic on POSIX within one file system), and the directory is fsynced so the rename survives power loss.
Optionally the version it replaces is copied to ``history/<stem>-<UTC stamp><suffix>`` first.

The new file gets mode ``0o666 & ~umask``, as ``open()`` would give it: ``mkstemp`` creates 0600 whatever the
process umask, which made audit records and the status file unreadable to the group a unit's ``UMask=`` named.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only be read by setting it, which would
    briefly change the mode of files other threads create)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc (not Linux): the only other way to read it
    os.umask(mask)
    return mask


def history_dir(path: Path) -> Path:
    """Where superseded versions of ``path`` are kept."""
    return path.parent / "history"


def atomic_write_bytes(path: Path, data: bytes, *, keep_history: bool = False, sync_dir: bool = True) -> Path | None:
    """Replace ``path`` by ``data`` atomically; return where the previous version was archived (if any)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    archived: Path | None = None
    if keep_history and path.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        hist = history_dir(path)
        hist.mkdir(parents=True, exist_ok=True)
        archived = hist / f"{path.stem}-{stamp}{path.suffix}"
        shutil.copy2(path, archived)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if sync_dir:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return archived
