"""Topic names under the configured prefix, and the kinds of record the outbox stores.

Layout (prefix default ``xray/<site_id>/<scanner_id>``)::

    <prefix>/status              retained; online | degraded | offline (+ reason); last will = offline
    <prefix>/items               every decision               schema xray-edge/item@2
    <prefix>/alarms              ALARM and UNSCREENED only    schema xray-edge/alarm@2
    <prefix>/images/<item_id>    overlay JPEG (raw bytes, content type image/jpeg)
    <prefix>/health              periodic metrics             schema xray-edge/health@1
    <prefix>/actions             what the lane did (divert, beacon, belt stop, release)   schema action-1

Pure names: no I/O, no paho.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class RecordKind(StrEnum):
    """What an outbox record carries; decides its eviction rank when the outbox is full."""

    ALARM = "alarm"
    ITEM = "item"
    IMAGE = "image"
    HEALTH = "health"
    ACTION = "action"
    """What the lane did about an item or a fault (``edge.actions``): never evicted, like alarms (a missed divert
    is an alarm whose parcel went on down the main line)."""

    @property
    def rank(self) -> EvictionRank:
        """Lower ranks are evicted first; alarms are never evicted."""
        return _RANKS[self]


class EvictionRank(IntEnum):
    """Eviction order when the outbox is over its bound: health first, then images, then items, never alarms."""

    HEALTH = 0
    IMAGE = 1
    ITEM = 2
    ALARM = 3


_RANKS = {
    RecordKind.HEALTH: EvictionRank.HEALTH,
    RecordKind.IMAGE: EvictionRank.IMAGE,
    RecordKind.ITEM: EvictionRank.ITEM,
    RecordKind.ALARM: EvictionRank.ALARM,
    RecordKind.ACTION: EvictionRank.ALARM,
}


@dataclass(frozen=True, slots=True)
class Topics:
    """All topic names of one box; ``prefix`` has no trailing slash and no wildcards."""

    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or self.prefix.endswith("/") or "+" in self.prefix or "#" in self.prefix:
            raise ValueError(f"topic prefix {self.prefix!r} must be non-empty, without wildcards or trailing '/'")

    @classmethod
    def for_site(cls, site_id: str, scanner_id: str, prefix: str | None = None) -> Topics:
        """Default prefix ``xray/<site_id>/<scanner_id>``; a configured prefix wins (a trailing '/' is dropped)."""
        return cls((prefix or f"xray/{site_id}/{scanner_id}").rstrip("/"))

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def items(self) -> str:
        return f"{self.prefix}/items"

    @property
    def alarms(self) -> str:
        return f"{self.prefix}/alarms"

    @property
    def health(self) -> str:
        return f"{self.prefix}/health"

    @property
    def actions(self) -> str:
        return f"{self.prefix}/actions"

    def image(self, item_id: str) -> str:
        """Image topic of one item; '/', '+', '#' and NUL in the id become '_' so the topic stays one level."""
        safe = item_id.translate(_UNSAFE) or "_"
        return f"{self.prefix}/images/{safe}"


_UNSAFE = str.maketrans({"/": "_", "+": "_", "#": "_", "\0": "_"})
