"""What the running service says about itself: a status file for ``edge status`` and Prometheus ``/metrics``.

The service rewrites one JSON file (``service.status_file``) every second and at once when its health changes,
atomically and with the process umask (the unit's ``UMask=`` decides who may read it); ``edge status`` reads it
and calls the service stale when the file stops changing. The optional metrics endpoint serves the same numbers
in Prometheus text format on 127.0.0.1 only (the box is not a web server; scrape it through a tunnel or a local
agent). State, reason and problems come from the one health model (``edge/health.py``), as do the retained MQTT
status and systemd's STATUS line.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge.files import atomic_write_bytes
from edge.health import Problem
from edge.records import Decision

STATUS_SCHEMA = "xray-edge/service-status@1"


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
    schema: str = STATUS_SCHEMA


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
    if not isinstance(data, dict) or data.get("schema") != STATUS_SCHEMA:
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
        "versions: " + ", ".join(f"{k} {v}" for k, v in sorted(data["versions"].items())),
        "recent decisions:",
    ]
    for entry in reversed(data["recent"]):
        when = time.strftime("%H:%M:%S", time.localtime(entry["decided_wall"]))
        reason = f" ({entry['reason']})" if entry["reason"] else ""
        lines.append(f"  {when} {entry['item_id']} {entry['verdict'].upper()}{reason} {entry['latency_ms']} ms")
    return "\n".join(lines)


def prometheus_text(report: StatusReport) -> str:
    """The report as Prometheus exposition text."""
    out = [
        "# HELP edge_up 1 when the service is online, 0.5 degraded, 0 otherwise.",
        "# TYPE edge_up gauge",
        f"edge_up {dict(online=1.0, degraded=0.5).get(report.state, 0.0)}",
        "# HELP edge_problems Reasons the service is not online (0 when online).",
        "# TYPE edge_problems gauge",
        f"edge_problems {len(report.problems)}",
        "# HELP edge_component_ok 1 when a component the health model checks works, 0 when it has a problem.",
        "# TYPE edge_component_ok gauge",
    ]
    failing = {p.component for p in report.problems}
    out += [f'edge_component_ok{{component="{c}"}} {0 if c in failing else 1}' for c in report.checked]
    out += [
        "# HELP edge_decisions_total Decisions since start, by verdict.",
        "# TYPE edge_decisions_total counter",
    ]
    out += [f'edge_decisions_total{{verdict="{k}"}} {v}' for k, v in sorted(report.decisions.items())]
    out += ["# HELP edge_queue_depth Items waiting in front of a stage.", "# TYPE edge_queue_depth gauge"]
    out += [f'edge_queue_depth{{stage="{k}"}} {v}' for k, v in report.queues.items()]
    out += ["# HELP edge_stage_p50_ms Median stage time.", "# TYPE edge_stage_p50_ms gauge"]
    out += [f'edge_stage_p50_ms{{stage="{k}"}} {v}' for k, v in report.stage_p50_ms.items()]
    out += ["# HELP edge_in_flight Items awaiting a decision.", "# TYPE edge_in_flight gauge",
            f"edge_in_flight {report.in_flight}",
            "# HELP edge_link_up 1 when a link is up.", "# TYPE edge_link_up gauge"]
    out += [f'edge_link_up{{link="{k}"}} {1 if v == "up" else 0}' for k, v in report.links.items()]
    return "\n".join(out) + "\n"


class MetricsServer:
    """Serves the latest report at ``http://127.0.0.1:PORT/metrics`` from a daemon thread."""

    def __init__(self, port: int) -> None:
        self.report: StatusReport | None = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics" or owner.report is None:
                    self.send_error(404)
                    return
                body = prometheus_text(owner.report).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
