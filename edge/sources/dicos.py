"""DICOS DX pairs as a frame source: adapts ``edge.dicos.dx_source`` to the ``FrameSource`` port.

Every pair the DICOS reader matches becomes an item; a pair it cannot use (missing energy, bad pixels) still
becomes an item, with ``problem`` set, so that it is UNSCREENED rather than dropped. Offline replay: the
pipeline waits for room rather than declaring overload. A pair whose decision is stored is acknowledged: its two
files move to ``done/`` inside the directory (``rejected/`` when unreadable), so a restart does not screen them
again.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from edge.dicos.dx_source import DicosDxSource, DxPairError, DxPairFiles
from edge.records import RawItem
from edge.sources.bounds import InputLimits, problem_reason
from edge.sources.item_meta import file_item_meta

log = logging.getLogger(__name__)


class DicosFrameSource:
    """Delivers each DX pair under ``directory`` once, then reports itself exhausted."""

    def __init__(self, directory: Path, scanner_id: str, deadline_s: float,
                 limits: InputLimits | None = None) -> None:
        self._reader = DicosDxSource(directory, limits)
        self._pairs: Iterator[DxPairFiles] | None = None
        self._directory = directory
        self._scanner_id = scanner_id
        self._deadline_s = deadline_s
        self._seq = 0
        self._lock = threading.Lock()
        self._rejected: set[str] = set()
        self.exhausted = False

    def next_item(self, timeout_s: float) -> RawItem | None:
        if self._pairs is None:
            self._pairs = iter(self._reader.scan().pairs)
        try:
            files = next(self._pairs)
        except StopIteration:
            self.exhausted = True
            return None
        self._seq += 1
        meta = file_item_meta(self._scanner_id, self._seq, files.item_id, self._deadline_s)
        ref = os.pathsep.join((str(files.low), str(files.high)))
        try:
            pair = self._reader.load(files)
        except DxPairError as exc:
            with self._lock:
                self._rejected.add(ref)
            return RawItem(meta=meta, problem=str(exc), problem_reason=problem_reason(exc), source_ref=ref)
        return RawItem(meta=meta, high=pair.high, low=pair.low, source_ref=ref)

    def acknowledge(self, source_ref: str) -> None:
        """Move the pair's files to ``done/`` (``rejected/`` if unreadable) so they are not replayed again."""
        with self._lock:
            rejected = source_ref in self._rejected
            self._rejected.discard(source_ref)
        folder = self._directory / ("rejected" if rejected else "done")
        for name in source_ref.split(os.pathsep):
            path = Path(name)
            # Only a file of this source is ever moved: an empty ref is Path("."), the current directory.
            if not path.is_file() or not path.resolve().is_relative_to(self._directory.resolve()):
                continue
            try:
                folder.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), str(folder / path.name))
            except OSError as exc:
                log.error("DICOS file decided but not moved away; a restart will screen it again",
                          extra={"path": name, "error": str(exc)})

    def close(self) -> None:
        return None
