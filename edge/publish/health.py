"""Typed health and status records the pipeline hands to the publisher.

The service fills a ``HealthSnapshot`` (queue depths, stage latencies, link states, decision counts, disk) with
``edge.health.snapshot`` when ``MqttSink``'s publisher asks for one (every ``mqtt.health_interval_s``); the sink adds
its own outbox and broker figures before encoding. ``StatusState`` is what the retained ``status`` topic says.

This module only defines records: it does no I/O and imports nothing from paho or SQLite.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum


class StatusState(StrEnum):
    """Availability of the box as the control room sees it on the retained ``status`` topic."""

    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class LinkHealthState(StrEnum):
    """Up/down state of one link (broker, firmware serial link, camera, frame source) as health reports it.

    Not ``firmware_bridge.history.LinkState``, which is one recorded transition of the serial link (status,
    times, reason); this is only the value a health record shows.
    """

    UP = "up"
    DOWN = "down"
    DEGRADED = "degraded"
    ERROR = "error"
    """Down for a reason that retrying alone will not fix (wrong CA, refused credentials, missing cert)."""
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class LinkHealth:
    """One link's state; ``reason`` is a sentence for people (empty when up)."""

    name: str
    state: LinkHealthState
    reason: str = ""
    since_wall: float | None = None


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Depth of one bounded queue between stages; ``capacity`` 0 means unbounded."""

    name: str
    depth: int
    capacity: int = 0


@dataclass(frozen=True, slots=True)
class StageLatency:
    """Latency of one stage over the last interval, in milliseconds; ``count`` items measured."""

    stage: str
    p50_ms: float
    p99_ms: float
    max_ms: float
    count: int


@dataclass(frozen=True, slots=True)
class DecisionCounts:
    """Decisions since the service started, by verdict."""

    alarm: int = 0
    clear: int = 0
    unscreened: int = 0


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Free space of one filesystem the box writes to (outbox, audit store)."""

    path: str
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """What the pipeline knows about itself at one moment.

    The sink adds the broker link, the outbox backlog and the current status (set with ``set_status``), so
    those have one source of truth.
    """

    taken_wall: float = field(default_factory=time.time)
    uptime_s: float = 0.0
    queues: tuple[QueueDepth, ...] = ()
    latencies: tuple[StageLatency, ...] = ()
    links: tuple[LinkHealth, ...] = ()
    decisions: DecisionCounts = field(default_factory=DecisionCounts)
    disks: tuple[DiskUsage, ...] = ()


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """Records waiting to be published, by kind, and how old the oldest on disk is (seconds; 0 when empty).

    The counts include records held in memory while the outbox could not write (``in_memory`` of them,
    ``memory_bytes``); ``evicted_*`` count records dropped since start, from the outbox over its bounds and
    from the memory overflow over its bound (alarms are never evicted). ``bytes`` is the outbox's payload
    bytes (its ``max_bytes`` bound).
    """

    alarm: int
    item: int
    image: int
    health: int
    oldest_age_s: float
    evicted_item: int = 0
    evicted_image: int = 0
    evicted_health: int = 0
    bytes: int = 0
    in_memory: int = 0
    memory_bytes: int = 0

    @property
    def total(self) -> int:
        """All records waiting."""
        return self.alarm + self.item + self.image + self.health
