"""DICOS DX pairs as a frame source: adapts ``edge.dicos.dx_source`` to the ``FrameSource`` port.

Every pair the DICOS reader matches becomes an item; a pair it cannot use (missing energy, bad pixels) still
becomes an item, with ``problem`` set, so that it is UNSCREENED rather than dropped. Offline replay: the
pipeline waits for room rather than declaring overload.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from edge.dicos.dx_source import DicosDxSource, DxPair, DxPairError
from edge.records import RawItem
from edge.sources.item_meta import file_item_meta


class DicosFrameSource:
    """Delivers each DX pair under ``directory`` once, then reports itself exhausted."""

    def __init__(self, directory: Path, scanner_id: str, deadline_s: float) -> None:
        self._pairs: Iterator[DxPair | DxPairError] = iter(DicosDxSource(directory))
        self._scanner_id = scanner_id
        self._deadline_s = deadline_s
        self._seq = 0
        self.exhausted = False

    def next_item(self, timeout_s: float) -> RawItem | None:
        try:
            pair = next(self._pairs)
        except StopIteration:
            self.exhausted = True
            return None
        self._seq += 1
        meta = file_item_meta(self._scanner_id, self._seq, pair.item_id, self._deadline_s)
        if isinstance(pair, DxPairError):
            return RawItem(meta=meta, problem=str(pair))
        return RawItem(meta=meta, high=pair.high, low=pair.low)

    def close(self) -> None:
        return None
