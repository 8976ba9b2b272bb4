"""Benchmark: records per second through the disk outbox to a real Mosquitto (target >= 500 records/s, 2 cores).

Three measurements, each with ``synchronous=full`` (survives power loss) and ``normal`` (survives a crash):
  * ``burst``: the pipeline publishes N decisions as fast as it can while connected; records/s from the first
    put to the outbox being empty (every record PUBACKed and deleted).
  * ``replay``: N decisions stored while the broker is unknown (sink not started), then drained; records/s.
  * ``sustained``: a producer at a fixed 500 records/s for a few seconds; put->PUBACK latency p50/p99 and the
    largest backlog seen (it must stay small if the outbox keeps up).

Starts its own mosquitto on a free port (``--host/--port`` to use another broker). Writes JSON to
``benchmarks/results/bench_outbox.json``. Run: ``.venv/bin/python benchmarks/bench_outbox.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.config.mqtt import MqttConfig  # noqa: E402
from edge.config.site import SiteConfig  # noqa: E402
from edge.publish import MqttSink  # noqa: E402
from edge.records import BoxXyxy, Decision, ObjectResult, Verdict  # noqa: E402

SITE = SiteConfig(site_id="bench", scanner_id="s1")


def decision(i: int) -> Decision:
    now = time.time()
    obj = ObjectResult(0, BoxXyxy(1, 2, 30, 40), "bag", 0.9, 0.7 if i % 10 == 0 else 0.1, 0.5, i % 10 == 0,
                       ((1.0, 2.0), (30.0, 2.0), (30.0, 40.0)))
    return Decision(f"s1-{i:08d}", "s1", Verdict.ALARM if i % 10 == 0 else Verdict.CLEAR, None, "", (obj,),
                    obj.anomaly_score, now - 1, now, now, 5.0)


def records_for(n: int) -> int:
    return n + sum(1 for i in range(n) if i % 10 == 0)


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"log_dest file {workdir}/mosquitto.log\n")
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def make_sink(host: str, port: int, path: Path, sync: str) -> MqttSink:
    cfg = MqttConfig.model_validate({"host": host, "port": port, "reconnect_min_s": 0.1,
                                     "outbox": {"path": path, "synchronous": sync}})
    return MqttSink(cfg, SITE)


def burst(host: str, port: int, workdir: Path, sync: str, n: int) -> dict[str, float]:
    sink = make_sink(host, port, workdir / f"burst-{sync}.sqlite3", sync).start()
    assert sink.flush(5)
    time.sleep(0.3)
    t0 = time.perf_counter()
    for i in range(n):
        sink.publish_decision(decision(i))
    t_put = time.perf_counter() - t0
    assert sink.flush(120), "outbox did not drain"
    total = time.perf_counter() - t0
    sink.close(5)
    return {"decisions": n, "records": records_for(n), "put_decisions_per_s": n / t_put,
            "records_per_s": records_for(n) / total, "seconds": total}


def replay(host: str, port: int, workdir: Path, sync: str, n: int) -> dict[str, float]:
    sink = make_sink(host, port, workdir / f"replay-{sync}.sqlite3", sync)
    for i in range(n):
        sink.publish_decision(decision(i))
    t0 = time.perf_counter()
    sink.start()
    assert sink.flush(120), "outbox did not drain"
    total = time.perf_counter() - t0
    sink.close(5)
    return {"records": records_for(n), "records_per_s": records_for(n) / total, "seconds": total}


def sustained(host: str, port: int, workdir: Path, sync: str, rate: float, seconds: float) -> dict[str, float]:
    sink = make_sink(host, port, workdir / f"sustained-{sync}.sqlite3", sync).start()
    assert sink.flush(5)
    per_decision = records_for(1000) / 1000
    n = int(rate * seconds / per_decision)
    t0 = time.perf_counter()
    max_backlog = 0
    for i in range(n):
        sink.publish_decision(decision(i))
        if i % 50 == 0:
            max_backlog = max(max_backlog, sink.backlog().total)
        delay = t0 + (i + 1) * per_decision / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    produce_s = time.perf_counter() - t0
    assert sink.flush(60)
    lat = sink.publish_latency()
    sink.close(5)
    return {"target_records_per_s": rate, "achieved_records_per_s": records_for(n) / produce_s,
            "max_backlog": max_backlog, "p50_put_to_puback_ms": lat.p50_ms if lat else -1,
            "p99_put_to_puback_ms": lat.p99_ms if lat else -1}


def sqlite_commit_rate(workdir: Path, sync: str, n: int = 300) -> float:
    """Bare SQLite WAL commits/s of one small row: the disk's (and scheduler's) bound on stored decisions/s."""
    import sqlite3

    db = sqlite3.connect(str(workdir / f"baseline-{sync}.sqlite3"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync.upper()}")
    db.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b BLOB)")
    t0 = time.perf_counter()
    for _ in range(n):
        db.execute("BEGIN")
        db.execute("INSERT INTO t (b) VALUES (?)", (b"x" * 800,))
        db.execute("COMMIT")
    rate = n / (time.perf_counter() - t0)
    db.close()
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default=None)
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--decisions", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_outbox.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker = None
        host, port = args.host, args.port
        if host is None:
            broker, port = start_broker(workdir)
            host = "127.0.0.1"
        try:
            results: dict[str, object] = {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()},
                "target_records_per_s": 500,
                "load_average_at_start": os.getloadavg()[0],
            }
            for sync in ("full", "normal"):
                results[sync] = {
                    "bare_sqlite_commits_per_s": sqlite_commit_rate(workdir, sync),
                    "burst": burst(host, port, workdir, sync, args.decisions),
                    "replay": replay(host, port, workdir, sync, args.decisions),
                    "sustained": sustained(host, port, workdir, sync, 500.0, args.seconds),
                }
                print(sync, json.dumps(results[sync], indent=1), flush=True)
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait()
    for sync in ("full", "normal"):
        r = results[sync]
        assert isinstance(r, dict)
        results[f"meets_target_{sync}"] = min(r["burst"]["records_per_s"], r["replay"]["records_per_s"]) >= 500
    results["load_average_at_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}; meets 500 records/s: full={results['meets_target_full']} "
          f"normal={results['meets_target_normal']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
