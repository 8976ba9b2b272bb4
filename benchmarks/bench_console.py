"""Benchmark: one console fed by 8 lanes at 10x a nominal lane's rate; latency publication → on screen, DB growth.

A nominal lane screens 1 item/s (docs/faults.md: 3,600 parcels an hour, a busy parcel lane). Here 8 lanes each
publish 10 items/s (80 items/s into one console) for ``--items`` items in all, exactly the records a box's
outbox sends (``edge.publish.compose``: item record, the alarm record for ALARM/UNSCREENED items, the overlay
JPEG of every item), QoS 1, to a private Mosquitto. ``--alarm-every`` items one is an ALARM (default 10: 10 %).

Measured:
  * **publication → on screen**, per alarm: from the moment the lane hands the alarm to paho until the alarm
    event is read by a page's SSE stream (a Python client signed in like a browser, ``sse``), and until the card
    is in the DOM of a signed-in headless Chromium (``browser``, its ``data-shown-wall``; same clock). p50, p99,
    max, and how many alarms never arrived.
  * **database growth** per 10,000 items (SQLite file + WAL, or PostgreSQL's total relation size of the
    console's tables), pictures included, and without pictures (``--image-bytes 0``).
  * the console's CPU seconds and peak RSS.

Writes ``benchmarks/results/bench_console.json`` (``--out``). Run (about 3 min):
  nice -n 10 .venv/bin/python benchmarks/bench_console.py --items 10000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "console"), str(REPO / "tests" / "publish")]

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from console_helpers import (  # noqa: E402
    ConsoleProc,
    Database,
    Lane,
    alarm_decision,
    chromium,
    make_database,
    session,
    sign_in,
)
from publish_helpers import Broker, free_port  # noqa: E402

from edge.records import Verdict  # noqa: E402

PASSWORD = "bench-password-1"


def overlay(size_bytes: int, seed: int) -> bytes | None:
    """A JPEG of about ``size_bytes`` (noise compresses badly, like a busy X-ray overlay)."""
    if size_bytes <= 0:
        return None
    import cv2

    rng = np.random.default_rng(seed)
    side = 96
    while True:
        img = rng.integers(0, 255, (side, int(side * 1.4), 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (3, 3), 0)
        _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if len(buf) >= size_bytes or side > 2000:
            return bytes(buf)
        side = int(side * 1.25)


class SseClient(threading.Thread):
    """Reads the console's /events like a page does; records when each alarm arrived."""

    def __init__(self, client: httpx.Client) -> None:
        super().__init__(daemon=True)
        self.client, self.arrived, self.ready = client, {}, threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._read()
        except httpx.HTTPError:
            if not self.stop.is_set():
                raise

    def _read(self) -> None:
        with self.client.stream("GET", "/events", timeout=None) as stream:
            kind = ""
            for line in stream.iter_lines():
                if self.stop.is_set():
                    return
                if line.startswith("event: "):
                    kind = line[7:]
                    if kind == "hello":
                        self.ready.set()
                elif line.startswith("data: ") and kind == "alarm":
                    now = time.time()
                    self.arrived[json.loads(line[6:])["record_id"]] = now


def publish_lane(lane: Lane, n: int, rate: float, alarm_every: int, image: bytes | None, start: float,
                 sent: dict[str, float], offset: int) -> None:
    for i in range(n):
        due = start + i / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        k = offset + i
        verdict = Verdict.ALARM if k % alarm_every == 0 else Verdict.CLEAR
        decision = alarm_decision(f"{lane.scanner_id}-{i:06d}", lane.scanner_id, verdict=verdict, overlay=image)
        from edge.publish.compose import decision_records

        for record in decision_records(decision, lane.site, lane.topics, lane.mqtt_config, time.time()):
            if record.topic == lane.topics.alarms:
                sent[json.loads(record.payload)["item_record_id"]] = time.time()
            lane.client.publish(record.topic, record.payload, qos=1)


def db_bytes(db: Database) -> int:
    if db.kind == "sqlite":
        path = Path(db.url.removeprefix("sqlite:///"))
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres") as conn:
        rows = conn.execute("select coalesce(sum(pg_total_relation_size(c.oid)), 0) from pg_class c "
                            "where c.relkind = 'r' and c.relname like %s", (db.prefix + "%",)).fetchone()
    return int(rows[0]) if rows else 0


def proc_cpu_rss(pid: int) -> tuple[float, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    status = Path(f"/proc/{pid}/status").read_text()
    peak = re.search(r"VmHWM:\s+(\d+) kB", status)
    return cpu, int(peak.group(1)) * 1024 if peak else 0


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values), q))


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-console-"))
    broker = Broker(work / "broker", free_port())
    broker.workdir.mkdir()
    broker.start()
    db = make_database(args.db, work) if args.db == "postgresql" else Database(
        "sqlite", f"sqlite:///{work}/db/console.sqlite3", "console_")
    site = f"bench{uuid.uuid4().hex[:4]}"
    console = ConsoleProc(work, db, broker.port, (f"xray/{site}/+/#",))
    console.add_user("bench", PASSWORD, "operator")
    driver = None
    lanes: list[Lane] = []
    try:
        console.start()
        assert console.proc is not None
        base_bytes = db_bytes(db)
        cpu0, _ = proc_cpu_rss(console.proc.pid)
        sse = SseClient(session(console, "bench", PASSWORD))  # type: ignore[arg-type]
        sse.start()
        assert sse.ready.wait(10)
        if args.browser:
            driver = chromium()
            sign_in(driver, console, "bench", PASSWORD)
        lanes = [Lane(broker.port, site, f"lane{i + 1}", f"xray/{site}/lane{i + 1}") for i in range(args.lanes)]
        per_lane = args.items // args.lanes
        sent: dict[str, float] = {}
        image = overlay(args.image_bytes, 0)
        start = time.time() + 1.0
        threads = [threading.Thread(target=publish_lane, args=(lane, per_lane, args.rate, args.alarm_every, image,
                                                               start, sent, i * 7), daemon=True)
                   for i, lane in enumerate(lanes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        published_s = time.time() - start
        # wait until every alarm has arrived (or 30 s)
        deadline = time.time() + 30
        while time.time() < deadline and not set(sent) <= set(sse.arrived):
            time.sleep(0.2)
        drained_s = time.time() - start
        sse_lat = [sse.arrived[r] - t for r, t in sent.items() if r in sse.arrived]
        browser_lat: list[float] = []
        if driver is not None:
            time.sleep(2)
            shown = driver.execute_script(
                "return [...document.querySelectorAll('article[data-record-id]')]"
                ".map(a => [a.dataset.recordId, Number(a.dataset.shownWall)])")
            browser_lat = [w / 1000.0 - sent[r] for r, w in shown if r in sent]
        sse.stop.set()
        client: Any = session(console, "bench", PASSWORD)
        time.sleep(2)
        cpu1, rss = proc_cpu_rss(console.proc.pid)
        grown = db_bytes(db) - base_bytes
        open_count = len(client.get("/api/items", params={"status": "open", "limit": 1000}).json()["items"])
        n_items = per_lane * args.lanes
        return {
            "benchmark": "bench_console", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": platform.node(), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(),
            "db": args.db, "lanes": args.lanes, "rate_per_lane": args.rate,
            "nominal_rate_per_lane": 1.0, "items": n_items, "alarms": len(sent),
            "image_bytes": len(image) if image else 0, "published_s": round(published_s, 2),
            "drained_s": round(drained_s, 2), "items_per_s": round(n_items / published_s, 1),
            "sse": {"n": len(sse_lat), "missing": len(sent) - len(sse_lat),
                    "p50_ms": _ms(pct(sse_lat, 50)), "p99_ms": _ms(pct(sse_lat, 99)),
                    "max_ms": _ms(max(sse_lat) if sse_lat else None)},
            "browser": None if driver is None else {
                "n": len(browser_lat), "missing": len(sent) - len(browser_lat),
                "p50_ms": _ms(pct(browser_lat, 50)), "p99_ms": _ms(pct(browser_lat, 99)),
                "max_ms": _ms(max(browser_lat) if browser_lat else None)},
            "open_alarms_listed": open_count,
            "db_growth_bytes": grown, "db_growth_per_10k_items_mb": round(grown / n_items * 10_000 / 1e6, 1),
            "console_cpu_s": round(cpu1 - cpu0, 1), "console_cpu_per_item_ms": round((cpu1 - cpu0) / n_items * 1e3, 2),
            "console_peak_rss_mb": round(rss / 1e6, 1),
            "median_ms_check": _ms(statistics.median(sse_lat)) if sse_lat else None,
        }
    finally:
        if driver is not None:
            driver.quit()
        for lane in lanes:
            lane.close()
        console.stop()
        if db.kind == "postgresql":
            db.drop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000, help="items in all (split over the lanes)")
    parser.add_argument("--lanes", type=int, default=8)
    parser.add_argument("--rate", type=float, default=10.0, help="items/s per lane (10 = 10x nominal)")
    parser.add_argument("--alarm-every", type=int, default=10, help="one ALARM every this many items")
    parser.add_argument("--image-bytes", type=int, default=60_000, help="overlay JPEG size (0 = none)")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--browser", action="store_true", help="also measure in a headless Chromium")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_console.json")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else []
    runs = previous if isinstance(previous, list) else [previous]
    args.out.write_text(json.dumps([*runs, result], indent=2) + "\n")


if __name__ == "__main__":
    main()
