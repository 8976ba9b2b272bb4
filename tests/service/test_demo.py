"""`edge demo` end to end in a subprocess: private broker, virtual firmware on a pty, decisions printed by the
subscriber, overlays saved, clean stop on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.service.conftest import Assets
from tests.service.service_helpers import REPO


def _models(tmp_path: Path, assets: Assets) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    (models / "detector-agnostic").symlink_to(assets.detector)
    (models / "classifier-threat").symlink_to(REPO / "models" / "classifier-threat")
    (models / "scorer-stfpm").symlink_to(assets.scorer)
    return models


def test_demo_prints_every_decision_and_saves_overlays(tmp_path: Path, assets: Assets) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "edge", "demo", "--items", "3", "--per-minute", "120", "--out", str(out),
         "--models", str(_models(tmp_path, assets))],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    items = re.findall(r" ITEM +demo/lane1 (ALARM|CLEAR|UNSCREENED) +(lane1-\d+)", result.stdout)
    assert sorted(i for _, i in items) == ["lane1-1", "lane1-2", "lane1-3"], result.stdout
    assert all(v != "UNSCREENED" for v, _ in items), result.stdout
    assert sorted(p.name for p in (out / "overlays").glob("*.jpg")) == ["lane1-1.jpg", "lane1-2.jpg",
                                                                        "lane1-3.jpg"]
    assert "overlays in" in result.stdout and str(out / "overlays") in result.stdout
    assert re.search(r"control-room console at https://127\.0\.0\.1:\d+/ .*user demo, password \S+", result.stdout) \
        or "no control-room console" in result.stdout, result.stdout
    # beside each decision: what the virtual scanner really put in the parcel, and the running tally
    truths = re.findall(r"truth (lane1-\d+): ([a-z_, ]+) -> (ALARM|CLEAR)[^(]*\((caught|MISSED|false alarm|cleared)\)"
                        r" \| recall (\d+)/(\d+).*, false alarms (\d+)/(\d+)", result.stdout)
    assert sorted(t[0] for t in truths) == ["lane1-1", "lane1-2", "lane1-3"], result.stdout
    last = truths[-1]
    assert int(last[5]) + int(last[7]) == 3  # every parcel counted once, as threat or benign
    for _, kinds, verdict, outcome, *_ in truths:
        assert (kinds == "benign") == (outcome in ("false alarm", "cleared"))
        assert (verdict == "ALARM") == (outcome in ("caught", "false alarm"))


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path, assets: Assets) -> None:
    out = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "demo", "--per-minute", "120", "--out", str(out),
         "--models", str(_models(tmp_path, assets))],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 60
        seen = ""
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen += line
            if " ITEM " in line:
                break
        assert " ITEM " in seen, f"no decision within 60 s:\n{seen}"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, seen + rest
    assert "edge demo: stopped" in rest
    assert "Traceback" not in seen + rest
