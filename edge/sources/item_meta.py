"""Build the ``ItemMeta`` every source hands over: stable id, times, deadline.

Sources that read finished files know neither the scan time nor the belt position precisely; they stamp the
item with the time it became available, which is what its deadline must be counted from on this box.
"""

from __future__ import annotations

import re
import time

from edge.records import ItemMeta

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_id(text: str) -> str:
    """An id fragment usable in MQTT topics and file names."""
    return _UNSAFE.sub("_", text).strip("_") or "item"


def file_item_meta(scanner_id: str, seq: int, name: str, deadline_s: float,
                   encoder_start: int | None = None, encoder_end: int | None = None) -> ItemMeta:
    """Meta for an item read from a finished file named ``name`` (its scan ended just now, as far as we know)."""
    wall = time.time()
    mono = time.monotonic()
    return ItemMeta(
        item_id=f"{scanner_id}-{safe_id(name)}",
        scanner_id=scanner_id,
        seq=seq,
        scan_start_wall=wall,
        scan_end_wall=wall,
        scan_start_mono=mono,
        scan_end_mono=mono,
        deadline_mono=mono + deadline_s,
        encoder_start=encoder_start,
        encoder_end=encoder_end,
    )
