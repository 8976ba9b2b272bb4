"""The console scripts work from a real subprocess, and the runtime packages never pull in torch."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from io import StringIO
from pathlib import Path

from edge.logs import setup_logging

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_runtime_packages_do_not_import_torch() -> None:
    code = (
        "import sys, importlib, pkgutil\n"
        "for top in ('edge', 'edge_tools', 'calib', 'firmware_bridge', 'sim'):\n"
        "    pkg = importlib.import_module(top)\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, top + '.'):\n"
        "        if m.name.endswith('__main__'): continue\n"
        "        importlib.import_module(m.name)\n"
        "print('torch' in sys.modules)\n"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_edge_help_lists_working_commands() -> None:
    result = _run("-m", "edge", "--help")
    assert result.returncode == 0, result.stderr
    assert "check" in result.stdout


def test_edge_check_accepts_example_and_rejects_bad(tmp_path: Path) -> None:
    ok = _run("-m", "edge", "check", "--config", "systemd/edge.example.yaml", "--no-preflight")
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "edge.yaml"
    bad.write_text("site:\n  site_id: a\n  scanner_id: b\nmodels:\n  detector: /m\nmqtt:\n  port: 0\n")
    result = _run("-m", "edge", "check", "--config", str(bad))
    assert result.returncode == 1
    assert result.stderr.strip() == f"{bad}:7: mqtt.port: must be 1..65535, got 0"


def test_logfmt_and_json_lines_carry_extras() -> None:
    stream = StringIO()
    setup_logging("info", "logfmt", stream)
    logging.getLogger("edge.test").info("item decided", extra={"item_id": "lane 1:7", "verdict": "alarm"})
    line = stream.getvalue().strip()
    assert 'msg="item decided"' in line and 'item_id="lane 1:7"' in line and "verdict=alarm" in line
    stream = StringIO()
    setup_logging("info", "json", stream)
    logging.getLogger("edge.test").debug("hidden")
    logging.getLogger("edge.test").warning("shown", extra={"n": 3})
    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "warning" and record["n"] == 3 and record["msg"] == "shown"
