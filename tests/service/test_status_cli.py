"""`edge status` reads the running service's status file; /metrics serves the same numbers."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from edge.metrics import MetricsServer
from edge.status import RecentDecision, StatusReport, write_status
from tests.service.service_helpers import REPO


def _report(written: float, state: str = "online") -> StatusReport:
    return StatusReport(
        state=state, reason="screening", pid=1234, written_wall=written, uptime_s=12.0,
        versions={"xray-edge": "0.1.0"}, models=["detector:det@0.1"], links={"firmware": "up", "mqtt": "up"},
        queues={"detect": 1}, in_flight=2, decisions={"alarm": 3, "clear": 7}, late_results=0,
        stage_p50_ms={"detect": 12.5}, recent=[RecentDecision("lane1-9", "alarm", None, written, 140.0)],
    )


def _status(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", "status", "--config", str(cfg)], capture_output=True,
                          text=True, cwd=REPO, timeout=60)


def test_status_command_reports_running_stale_and_missing(tmp_path: Path) -> None:
    status_file = tmp_path / "status.json"
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"site:\n  site_id: s\n  scanner_id: l\nmodels:\n  detector: /m\n"
                   f"service:\n  status_file: {status_file}\n")
    missing = _status(cfg)
    assert missing.returncode == 1 and "is it running?" in missing.stderr
    write_status(status_file, _report(time.time()))
    fresh = _status(cfg)
    assert fresh.returncode == 0, fresh.stderr
    assert "state: online (screening)" in fresh.stdout and "lane1-9 ALARM" in fresh.stdout
    assert "alarm=3" in fresh.stdout and "firmware=up" in fresh.stdout
    write_status(status_file, _report(time.time() - 60))
    stale = _status(cfg)
    assert stale.returncode == 1 and "not running" in stale.stderr


def test_metrics_endpoint_serves_prometheus_text() -> None:
    server = MetricsServer(0)
    try:
        server.report = _report(time.time(), state="degraded")
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    finally:
        server.close()
    assert "edge_up 0.5" in body
    assert 'edge_decisions_total{verdict="alarm"} 3' in body
    assert 'edge_link_up{link="firmware"} 1' in body and "edge_in_flight 2" in body
