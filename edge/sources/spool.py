"""A spool directory as a frame source: the vendor's software drops finished items, we pick them up.

Atomic-completion convention (also in docs/frame-sources.md): the writer creates an item under a name that
starts with ``.`` or ends in ``.part``/``.tmp`` and renames it when complete (a rename within one file system is
atomic). We only ever open completed names:

* ``<name>.npz`` holding ``high`` and ``low`` (2-D uint16, same shape), or
* a directory ``<name>/`` holding ``high.png`` and ``low.png`` (16-bit grey PNG, same shape).

An item that cannot be read (bad archive, missing array, wrong dtype or shape) is delivered with ``problem`` set,
so that it is UNSCREENED, and moved to ``rejected/`` for inspection. Processed items are moved to
``done_directory`` or deleted.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from edge.records import RawItem
from edge.sources.item_meta import file_item_meta

log = logging.getLogger(__name__)


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


def read_spool_item(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one completed spool entry; raises ValueError/OSError with the reason when it is unusable."""
    if path.is_dir():
        high = cv2.imread(str(path / "high.png"), cv2.IMREAD_UNCHANGED)
        low = cv2.imread(str(path / "low.png"), cv2.IMREAD_UNCHANGED)
        return _check_pair(high, low)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "high" not in archive or "low" not in archive:
                raise ValueError(f"archive holds {sorted(archive.files)}, expected 'high' and 'low'")
            return _check_pair(archive["high"], archive["low"])
    except (OSError, EOFError, KeyError) as exc:
        raise ValueError(f"unreadable archive ({exc})") from exc
    except Exception as exc:  # zipfile.BadZipFile and friends: still just a bad item
        if isinstance(exc, ValueError):
            raise
        raise ValueError(f"unreadable archive ({type(exc).__name__}: {exc})") from exc


class SpoolSource:
    """Polls ``directory`` for completed items, oldest first."""

    def __init__(self, directory: Path, scanner_id: str, deadline_s: float, poll_s: float = 0.2,
                 done_directory: Path | None = None) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._rejected = directory / "rejected"
        self._scanner_id = scanner_id
        self._deadline_s = deadline_s
        self._poll_s = poll_s
        self._done = done_directory
        self._seq = 0
        self._stuck: set[Path] = set()
        """Items already handed over whose file could not be moved away: never handed over twice."""

    def _candidates(self) -> list[Path]:
        keyed = []
        for p in self._dir.iterdir():
            if _incomplete(p) or p == self._rejected or p in self._stuck or not (p.suffix == ".npz" or p.is_dir()):
                continue
            try:
                keyed.append((p.stat().st_mtime, p.name, p))
            except FileNotFoundError:  # taken away between the listing and now (an operator, another reader)
                continue
        return [p for _, _, p in sorted(keyed)]

    def next_item(self, timeout_s: float) -> RawItem | None:
        end = time.monotonic() + timeout_s
        while True:
            candidates = self._candidates()
            if candidates:
                return self._take(candidates[0])
            if time.monotonic() >= end:
                return None
            time.sleep(min(self._poll_s, max(0.0, end - time.monotonic())))

    def _take(self, path: Path) -> RawItem:
        self._seq += 1
        name = path.name.removesuffix(".npz")
        meta = file_item_meta(self._scanner_id, self._seq, name, self._deadline_s)
        try:
            high, low = read_spool_item(path)
        except (OSError, ValueError) as exc:
            log.error("rejected spool item", extra={"path": str(path), "error": str(exc)})
            self._put_away(path, self._rejected)
            return RawItem(meta=meta, problem=f"spool item {path.name}: {exc}")
        self._put_away(path, self._done)
        return RawItem(meta=meta, high=high, low=low)

    def _put_away(self, path: Path, folder: Path | None) -> None:
        """Move a taken item into ``folder`` (or delete it); if that fails the item is still screened, once."""
        try:
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), str(folder / path.name))
            elif path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            log.error("spool item screened but not moved away; it stays in the spool and is not read again",
                      extra={"path": str(path), "error": str(exc)})
            self._stuck.add(path)

    def close(self) -> None:
        return None
