"""Durham VOTI raw line files as a frame source.

Format (from the VOTI reader, ``../shared/realdata/voti``): little-endian uint16; each line holds ``channels``
low-energy values then ``channels`` high-energy values (``[low | high]``); the first ``header_lines`` lines are
a header and are skipped. One file is one item. A file whose size is not a whole number of lines, or that has
no lines after the header, is delivered as an item with ``problem`` set (it becomes UNSCREENED), never skipped;
a file larger than the source's limits (``source.max_lines`` …, checked from its size before it is read) becomes
UNSCREENED ``oversize``.
"""

from __future__ import annotations

import logging
import queue
from pathlib import Path

import numpy as np

from edge.records import RawItem
from edge.sources.bounds import InputLimits, check_file_size, problem_reason
from edge.sources.item_meta import file_item_meta

log = logging.getLogger(__name__)


def read_voti(path: Path, channels: int = 640, header_lines: int = 30,
              limits: InputLimits | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(high, low)`` uint16 arrays (lines, channels) of one VOTI raw file.

    The file's size declares its lines; it is checked against ``limits`` before the file is read.

    Raises:
        OversizeError: more lines, channels or bytes than ``limits`` allow (UNSCREENED ``oversize``).
        ValueError: the file is truncated (not whole lines) or holds nothing after the header.
    """
    limits = limits or InputLimits()
    size = check_file_size(path, limits)
    declared_lines = size // (4 * channels) - header_lines
    limits.check(path.name, declared_lines, channels, max(0, declared_lines) * channels * 4)
    data = np.fromfile(path, dtype="<u2")
    per_line = 2 * channels
    if data.size % per_line:
        raise ValueError(f"{path.name}: {data.size * 2} bytes is not a whole number of {per_line * 2}-byte lines "
                         "(truncated file?)")
    lines = data.reshape(-1, per_line)
    if lines.shape[0] <= header_lines:
        raise ValueError(f"{path.name}: {lines.shape[0]} lines, none after the {header_lines}-line header")
    body = lines[header_lines:]
    low = np.ascontiguousarray(body[:, :channels])
    high = np.ascontiguousarray(body[:, channels:])
    return high, low


def write_voti(path: Path, high: np.ndarray, low: np.ndarray, header_lines: int = 30) -> None:
    """Write arrays in the VOTI layout (used by tests and by the virtual scanner's exporters)."""
    if high.shape != low.shape or high.ndim != 2:
        raise ValueError(f"high {high.shape} and low {low.shape} must be equal 2-D shapes")
    header = np.zeros((header_lines, 2 * high.shape[1]), dtype="<u2")
    body = np.concatenate([low.astype("<u2"), high.astype("<u2")], axis=1)
    np.concatenate([header, body]).tofile(path)


class VotiSource:
    """Delivers every ``*.raw`` file of a directory once, in name order, then reports itself exhausted."""

    def __init__(self, directory: Path, scanner_id: str, deadline_s: float, channels: int = 640,
                 header_lines: int = 30, limits: InputLimits | None = None) -> None:
        self._limits = limits or InputLimits()
        self._files: queue.SimpleQueue[Path] = queue.SimpleQueue()
        for path in sorted(directory.glob("*.raw")):
            self._files.put(path)
        self._scanner_id = scanner_id
        self._deadline_s = deadline_s
        self._channels = channels
        self._header_lines = header_lines
        self._seq = 0
        self.exhausted = False

    def next_item(self, timeout_s: float) -> RawItem | None:
        try:
            path = self._files.get_nowait()
        except queue.Empty:
            self.exhausted = True
            return None
        self._seq += 1
        meta = file_item_meta(self._scanner_id, self._seq, path.stem, self._deadline_s)
        try:
            high, low = read_voti(path, self._channels, self._header_lines, self._limits)
        except (OSError, ValueError) as exc:
            log.error("unreadable VOTI file", extra={"path": str(path), "error": str(exc)})
            return RawItem(meta=meta, problem=str(exc), problem_reason=problem_reason(exc))
        return RawItem(meta=meta, high=high, low=low)

    def acknowledge(self, source_ref: str) -> None:
        """Nothing to let go: raw line files are replayed offline and left where they are (items carry no ref)."""
        return None

    def close(self) -> None:
        return None
