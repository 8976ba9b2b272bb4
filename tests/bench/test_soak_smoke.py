"""Smoke run of the soak benchmark (benchmarks/soak.py): a couple of hundred small items at 4x a nominal lane's
rate for ~15 s through the real service, with real faults (service SIGKILL, broker restart, cable pull) every few
seconds. Asserts the JSON result is complete and that the box's promise held: every item fed has exactly one
decision at the subscriber and in the audit store, none CLEAR without X-ray data. The 10,000-item figures live
in docs/faults.md, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIELDS = {"fed", "feed_s", "drain_s", "faults", "fault_log", "without_decision", "two_decisions", "blind_clears",
          "verdicts", "rss", "settings", "ok", "errors", "left_in_spool"}


def test_soak_smoke_keeps_the_promise_under_faults(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "soak.py"), "--items", "200", "--duration-cap",
                          "15", "--fault-every", "2.5", "--settle-timeout", "90", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=280)
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) >= FIELDS, sorted(FIELDS - set(result))
    assert result["settings"]["items_per_s"] == 4.0
    assert 40 <= result["fed"] <= 200, "the feed must run at about 4 items/s until the cap"
    assert sum(result["faults"].values()) >= 2, result["fault_log"]
    assert result["rss"]["segments"] and result["rss"]["segments"][0]["samples"] > 0
    promise = {k: result[k] for k in ("without_decision", "two_decisions", "blind_clears", "left_in_spool")}
    print(f"soak smoke: fed {result['fed']}, faults {result['faults']}, {promise}, verdicts {result['verdicts']} "
          f"{result['unscreened_reasons']}")
    assert result["errors"] == [], result["errors"]
    none = {"subscriber": 0, "audit": 0}
    assert promise == {"without_decision": none, "two_decisions": none, "blind_clears": 0, "left_in_spool": 0}, (
        result["examples"])
    assert result["ok"] and run.returncode == 0
