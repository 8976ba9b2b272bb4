"""A spool directory as a frame source: the vendor's software drops finished items, we pick them up.

Atomic-completion convention (also in docs/frame-sources.md): the writer creates an item under a name that
starts with ``.`` or ends in ``.part``/``.tmp`` and renames it when complete (a rename within one file system is
atomic). We only ever open completed names:

* ``<name>.npz`` holding ``high`` and ``low`` (2-D uint16, same shape), or
* a directory ``<name>/`` holding ``high.png`` and ``low.png`` (16-bit grey PNG, same shape).

An item that cannot be read (bad archive, missing array, wrong dtype or shape) is delivered with ``problem`` set,
so that it is UNSCREENED, and moved to ``rejected/`` for inspection. Processed items are moved to
``done_directory`` or deleted, only once their decision is durably stored (``acknowledge``).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from edge.records import RawItem
from edge.sources.bounds import InputLimits, check_images, check_npz, problem_reason
from edge.sources.item_meta import file_item_meta

log = logging.getLogger(__name__)


def _size(path: Path) -> int:
    """Bytes of a spool entry (a file, or an item directory's files); 0 if it is gone."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _incomplete(path: Path) -> bool:
    return path.name.startswith(".") or path.suffix in {".part", ".tmp"}


def _check_pair(high: np.ndarray | None, low: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if high is None or low is None:
        raise ValueError("high or low image missing or unreadable")
    if high.dtype != np.uint16 or low.dtype != np.uint16:
        raise ValueError(f"expected uint16 images, got {high.dtype} and {low.dtype}")
    if high.ndim != 2 or high.shape != low.shape or min(high.shape) < 2:
        raise ValueError(f"high {high.shape} and low {low.shape} must be equal 2-D shapes")
    return high, low


def read_spool_item(path: Path, limits: InputLimits | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one completed spool entry; raises ValueError/OSError with the reason when it is unusable.

    The declared sizes (the ``.npy`` headers and zip members of an archive, the PNG/TIFF headers of a directory)
    are checked against ``limits`` before anything is decoded: an item over them raises ``OversizeError`` (a
    ValueError; ``bounds.problem_reason`` makes it UNSCREENED ``oversize``).
    """
    limits = limits or InputLimits()
    if path.is_dir():
        names = [_image_file(path, energy) for energy in ("high", "low")]
        check_images((names[0], names[1]), limits)
        high = cv2.imread(str(names[0]), cv2.IMREAD_UNCHANGED)
        low = cv2.imread(str(names[1]), cv2.IMREAD_UNCHANGED)
        return _check_pair(high, low)
    try:
        declared = check_npz(path, ("high", "low"), limits)
        for name, (shape, dtype) in declared.items():  # refuse before decoding what _check_pair would refuse
            if len(shape) != 2 or dtype != np.uint16:
                raise ValueError(f"{name} is {dtype} {shape}; expected 2-D uint16")
        with np.load(path, allow_pickle=False) as archive:
            return _check_pair(archive["high"], archive["low"])
    except (OSError, EOFError, KeyError) as exc:
        raise ValueError(f"unreadable archive ({exc})") from exc
    except Exception as exc:  # zipfile.BadZipFile and friends: still just a bad item
        if isinstance(exc, ValueError):
            raise
        raise ValueError(f"unreadable archive ({type(exc).__name__}: {exc})") from exc


def _image_file(directory: Path, energy: str) -> Path:
    """``<energy>.png`` (or ``.tif``/``.tiff``) in an item directory."""
    for suffix in (".png", ".tif", ".tiff"):
        candidate = directory / f"{energy}{suffix}"
        if candidate.is_file():
            return candidate
    raise ValueError(f"{energy}.png missing")


class SpoolSource:
    """Polls ``directory`` for completed items, oldest first; an item leaves the spool only when acknowledged.

    A taken item stays where it is until the pipeline acknowledges it (its decision durably stored): a crash in
    between leaves the file in the spool and its row in the intake journal, which settles it at the next start.
    While taken, it is never delivered again. Acknowledged items move to ``done_directory`` (a name already
    there gets a suffix, never overwritten) or are deleted; unreadable or oversize items move to ``rejected/``.
    """

    def __init__(self, directory: Path, scanner_id: str, deadline_s: float, poll_s: float = 0.2,
                 done_directory: Path | None = None, limits: InputLimits | None = None,
                 done_max_bytes: int | None = None) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._rejected = directory / "rejected"
        self._scanner_id = scanner_id
        self._deadline_s = deadline_s
        self._poll_s = poll_s
        self._done = done_directory
        self._limits = limits
        self._seq = 0
        self._lock = threading.Lock()
        self._taken: dict[Path, Path | None] = {}
        """Items handed over and not yet acknowledged -> where they go when acknowledged (done/ or rejected/)."""
        self._stuck: set[Path] = set()
        """Acknowledged items whose file could not be moved away: never handed over twice."""
        self._done_max_bytes = done_max_bytes
        self._done_items: deque[tuple[Path, int]] = deque()
        """What done/ holds, oldest first, and its size: bounded by ``done_max_bytes`` (oldest deleted past it)."""
        self._done_bytes = 0
        if done_directory is not None and done_max_bytes is not None:
            self._scan_done(done_directory)

    def _candidates(self) -> list[Path]:
        """Completed items not taken, oldest first (called with ``_lock`` held: an acknowledgement moving a file
        away cannot interleave, so a file is never listed between leaving ``_taken`` and leaving the spool)."""
        keyed = []
        skip = set(self._taken) | self._stuck
        for p in self._dir.iterdir():
            if _incomplete(p) or p == self._rejected or p in skip or not (p.suffix == ".npz" or p.is_dir()):
                continue
            if self._done is not None and p == self._done:
                continue
            try:
                keyed.append((p.stat().st_mtime, p.name, p))
            except FileNotFoundError:  # taken away between the listing and now (an operator, another reader)
                continue
        return [p for _, _, p in sorted(keyed)]

    def next_item(self, timeout_s: float) -> RawItem | None:
        end = time.monotonic() + timeout_s
        while True:
            with self._lock:
                candidates = self._candidates()
                if candidates:
                    self._taken[candidates[0]] = self._done
            if candidates:
                return self._take(candidates[0])
            if time.monotonic() >= end:
                return None
            time.sleep(min(self._poll_s, max(0.0, end - time.monotonic())))

    def _take(self, path: Path) -> RawItem:
        self._seq += 1
        name = path.name.removesuffix(".npz")
        meta = file_item_meta(self._scanner_id, self._seq, name, self._deadline_s)
        ref = str(path)
        try:
            high, low = read_spool_item(path, self._limits)
        except (OSError, ValueError) as exc:
            log.error("rejected spool item", extra={"path": ref, "error": str(exc)})
            with self._lock:
                self._taken[path] = self._rejected
            return RawItem(meta=meta, problem=f"spool item {path.name}: {exc}", problem_reason=problem_reason(exc),
                           source_ref=ref)
        with self._lock:
            self._taken[path] = self._done
        return RawItem(meta=meta, high=high, low=low, source_ref=ref)

    def acknowledge(self, source_ref: str) -> None:
        """The item's decision is stored: move it to done/ (rejected/ if unreadable) or delete it.

        Only an entry directly inside the spool directory is ever moved or deleted: any other ref (an empty
        one is ``Path(".")``, the current directory, which this once moved away whole) is ignored."""
        path = Path(source_ref)
        if not self._is_spool_entry(path):
            log.warning("acknowledge of a ref that is no item of this spool ignored", extra={"ref": source_ref})
            return
        with self._lock:
            folder = self._taken.get(path, self._done)
            if path.exists():
                self._put_away(path, folder)
            self._taken.pop(path, None)

    def _is_spool_entry(self, path: Path) -> bool:
        """``path`` names an entry directly inside the spool directory (not the spool, rejected/ or done/)."""
        if path.name in {"", ".", ".."}:  # Path("") is the current directory
            return False
        try:
            parent, spool = path.parent.resolve(), self._dir.resolve()
        except OSError:
            return False
        return parent == spool and path.resolve() not in {self._rejected.resolve(),
                                                          *([self._done.resolve()] if self._done else [])}

    def _scan_done(self, folder: Path) -> None:
        """Count what done/ already holds (oldest first) and bring it under its bound."""
        try:
            entries = [(e.stat().st_mtime, Path(e.path)) for e in os.scandir(folder)]
        except OSError:
            return
        for _, path in sorted(entries):
            self._done_items.append((path, _size(path)))
            self._done_bytes += self._done_items[-1][1]
        self._trim_done()

    def _trim_done(self) -> None:
        """Delete the oldest items in done/ while it holds more than ``done_max_bytes`` (a full disk would stop
        the whole box; done/ is a convenience for audits, the audit store keeps the decisions)."""
        if self._done_max_bytes is None:
            return
        removed = 0
        while self._done_bytes > self._done_max_bytes and self._done_items:
            path, size = self._done_items.popleft()
            self._done_bytes -= size
            try:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not delete an old item from done/", extra={"path": str(path), "error": str(exc)})
            removed += 1
        if removed:
            log.info("done/ over its bound: oldest items deleted",
                     extra={"removed": removed, "bytes": self._done_bytes, "max_bytes": self._done_max_bytes})

    def _put_away(self, path: Path, folder: Path | None) -> None:
        """Move an item into ``folder`` (or delete it); if that fails it stays, never to be read again this run.
        Called with ``_lock`` held."""
        try:
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / path.name
                if target.exists():  # the same name screened before: keep both
                    target = folder / f"{path.stem}.{uuid.uuid4().hex[:8]}{path.suffix}"
                shutil.move(str(path), str(target))
                if folder == self._done and self._done_max_bytes is not None:
                    self._done_items.append((target, _size(target)))
                    self._done_bytes += self._done_items[-1][1]
                    self._trim_done()
            elif path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            log.error("spool item decided but not moved away; it stays in the spool and is not read again",
                      extra={"path": str(path), "error": str(exc)})
            self._stuck.add(path)

    @property
    def exhausted(self) -> bool:
        """Never: a spool is live, the scanner's software may drop an item at any time."""
        return False

    def close(self) -> None:
        return None
