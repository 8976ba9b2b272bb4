"""What the running service says about itself: the status file ``edge status`` reads.

The service rewrites one JSON file (``service.status_file``) every second and at once when its health changes,
atomically and with the process umask (the unit's ``UMask=`` decides who may read it); ``edge status`` reads it
and calls the service stale when the file stops changing. The same report feeds ``/metrics``
(``edge/metrics.py``). State, reason and problems come from the one health model (``edge/health.py``), the
figures from its one snapshot, as do the retained MQTT status, the MQTT health record and systemd's STATUS line.
The file's schema name is ``STATUS_FILE_SCHEMA`` (``edge/publish/payloads.py``, beside the MQTT ones).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.files import atomic_write_bytes
from edge.health import Problem
from edge.publish.payloads import STATUS_FILE_SCHEMA
from edge.records import Decision


@dataclass(frozen=True, slots=True)
class RecentDecision:
    """One line of the recent-decisions list."""

    item_id: str
    verdict: str
    reason: str | None
    decided_wall: float
    latency_ms: float


@dataclass(frozen=True, slots=True)
class StatusReport:
    """The service's state at one moment (serialised as the status file)."""

    state: str
    reason: str
    pid: int
    written_wall: float
    uptime_s: float
    versions: dict[str, str]
    models: list[str]
    links: dict[str, str]
    queues: dict[str, int]
    in_flight: int
    decisions: dict[str, int]
    late_results: int
    stage_p50_ms: dict[str, float]
    recent: list[RecentDecision] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    """Every reason the state is not online, by component (``reason`` joins them)."""
    checked: list[str] = field(default_factory=list)
    """The components whose health was asked (the ones not in ``problems`` are fine)."""
    outbox: dict[str, float] = field(default_factory=dict)
    """MQTT records waiting, by kind, and the outbox's figures (``OutboxBacklog``); empty without MQTT."""
    schema: str = STATUS_FILE_SCHEMA


class RecentDecisions:
    """A bounded, thread-safe list of the latest decisions (fed by the pipeline's publisher thread)."""

    def __init__(self, size: int = 20) -> None:
        self._items: deque[RecentDecision] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, decision: Decision) -> None:
        entry = RecentDecision(decision.item_id, decision.verdict.value,
                               decision.reason.value if decision.reason else None, decision.decided_wall,
                               round(decision.latency_ms, 1))
        with self._lock:
            self._items.append(entry)

    def snapshot(self) -> list[RecentDecision]:
        with self._lock:
            return list(self._items)


def write_status(path: Path, report: StatusReport) -> None:
    """Replace the status file atomically (readers never see half a file)."""
    # Rewritten every second: no directory fsync, a lost rename after power loss costs one second of status.
    atomic_write_bytes(path, json.dumps(asdict(report), sort_keys=True).encode(), sync_dir=False)


def read_status(path: Path) -> dict[str, Any]:
    """The last status the service wrote; OSError/ValueError when there is none or it is unreadable."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("schema") != STATUS_FILE_SCHEMA:
        raise ValueError(f"{path} is not an xray-edge status file")
    return data


def format_status(data: dict[str, Any], now_wall: float | None = None) -> str:
    """Human-readable status for a commissioning engineer."""
    now = time.time() if now_wall is None else now_wall
    age = now - float(data["written_wall"])
    lines = [f"state: {data['state']} ({data['reason']})"]
    lines += [f"  {p['component']}: {p['reason']}" for p in data.get("problems", [])]
    lines += [
        f"pid {data['pid']}, up {data['uptime_s']:.0f} s, status written {age:.1f} s ago",
        "models: " + (", ".join(data["models"]) or "none"),
        "links: " + (", ".join(f"{k}={v}" for k, v in data["links"].items()) or "none configured"),
        "queues: " + ", ".join(f"{k}={v}" for k, v in data["queues"].items()) + f"; in flight {data['in_flight']}",
        "decisions: " + ", ".join(f"{k}={v}" for k, v in sorted(data["decisions"].items()))
        + f"; late results dropped {data['late_results']}",
        "stage p50 ms: " + ", ".join(f"{k}={v:.1f}" for k, v in data["stage_p50_ms"].items()),
        *_outbox_line(data.get("outbox") or {}),
        "versions: " + ", ".join(f"{k} {v}" for k, v in sorted(data["versions"].items())),
        "recent decisions:",
    ]
    for entry in reversed(data["recent"]):
        when = time.strftime("%H:%M:%S", time.localtime(entry["decided_wall"]))
        reason = f" ({entry['reason']})" if entry["reason"] else ""
        lines.append(f"  {when} {entry['item_id']} {entry['verdict'].upper()}{reason} {entry['latency_ms']} ms")
    return "\n".join(lines)


def _outbox_line(outbox: dict[str, float]) -> list[str]:
    if not outbox:
        return []
    waiting = ", ".join(f"{k}={int(outbox.get(k, 0))}" for k in ("alarm", "item", "image", "health"))
    return [f"outbox waiting: {waiting}; oldest {outbox.get('oldest_age_s', 0.0):.0f} s"]
