"""Soak benchmark (issue 29): many items through the real service at 4x a nominal lane's rate while the broker
restarts, the service is SIGKILLed and the scanner cable is pulled, at random. The box's promise is measured,
not assumed: every item fed gets exactly one decision at a persistent MQTT subscriber and in the audit store.

Nominal lane: 1 item/s (3,600 parcels/h, a busy parcel lane); ``--rate-factor 4`` feeds 4 items/s. Items are
virtual-scanner items cropped to ``--max-lines`` belt lines (all 640 channels) so that the rate is sustainable
on 2 cores with the tiny test bundles; the point is the fault handling, not the models' speed (see
``bench_pipeline.py`` for that).

Parts, all real: ``edge run`` as a child process (SIGKILL = no handler runs; restarted after 1 s as systemd's
Restart= would), Mosquitto with persistence (restarted with SIGTERM: the broker keeps its sessions, so a lost
record is the box's fault, not the broker's), the virtual firmware on a pty (ItemStart/ItemEnd per item, cable
pulled and re-plugged), a spool folder written atomically, and a persistent QoS 1 subscriber.

Reports: items fed, items without a decision and items with two different decisions (subscriber and audit),
CLEARs without X-ray data, verdicts and UNSCREENED reasons (per distinct record), redeliveries, the faults
injected, and RSS per service lifetime (start = first sample 5 s after ready, end = last sample before it was
killed or stopped) as JSON in ``benchmarks/results/soak.json``. Exit status 1 if the promise broke.

Run: ``.venv/bin/python benchmarks/soak.py`` (10,000 items at 4 items/s: about 45 minutes).
Smoke: ``.venv/bin/python benchmarks/soak.py --items 200 --duration-cap 15 --fault-every 2.5 --out /tmp/s.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.bundles import Role  # noqa: E402
from firmware_bridge.messages import ItemEnd, ItemStart  # noqa: E402
from firmware_bridge.virtual import VirtualFirmware  # noqa: E402
from tests.faults.faults_helpers import (  # noqa: E402
    EdgeProcess,
    FaultAssets,
    FedItem,
    ItemPool,
    Spool,
    Subscriber,
    exactly_one_decision,
    write_fault_config,
)
from tests.publish.publish_helpers import Broker, free_port  # noqa: E402
from tests.service.service_helpers import build_bundle, calibrate  # noqa: E402

NOMINAL_ITEMS_PER_S = 1.0
"""A nominal lane: 1 item/s = 3,600 parcels/h."""
FAULT_KINDS = ("kill", "broker", "link")


@dataclass
class Segment:
    """One life of the service process: from ready to killed or stopped."""

    pid: int
    started_wall: float
    ended_by: str = ""
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since ready, RSS MB)."""

    def summary(self) -> dict[str, object]:
        settled = [s for s in self.samples if s[0] >= 5.0] or self.samples
        if not settled:
            return {"pid": self.pid, "ended_by": self.ended_by, "samples": 0}
        return {"pid": self.pid, "ended_by": self.ended_by, "samples": len(self.samples),
                "seconds": round(settled[-1][0], 1), "rss_start_mb": round(settled[0][1], 1),
                "rss_end_mb": round(settled[-1][1], 1), "rss_max_mb": round(max(s[1] for s in settled), 1),
                "drift_mb": round(settled[-1][1] - settled[0][1], 1)}


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class Soak:
    """Feeds items, injects faults, samples RSS; all state one run needs."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()  # one fault at a time; the service handle is shared with the sampler
        self.stop = threading.Event()
        self.faults: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)
        self.fault_log: list[tuple[float, str]] = []
        self.segments: list[Segment] = []
        self.fed: list[FedItem] = []
        self.errors: list[str] = []

    # ---------------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        args, work = self.args, self.work
        t0 = time.monotonic()
        print("soak: building bundles and calibration ...", flush=True)
        assets_dir = work / "assets"
        assets_dir.mkdir()
        flat, energy = calibrate(assets_dir)
        assets = FaultAssets(build_bundle(Role.DETECTOR, assets_dir, "det"),
                             build_bundle(Role.SCORER, assets_dir, "scorer"), flat, energy)
        self.pool = ItemPool(seed=args.seed, count=args.pool, max_lines=args.max_lines)
        broker_dir = work / "broker"
        broker_dir.mkdir()
        self.broker = Broker(broker_dir, free_port())
        self.broker.start()
        self.firmware = VirtualFirmware(work / "ttyVFW0", heartbeat_s=0.2).start()
        self.state = work / "state"
        self.spool = Spool(work / "spool")
        prefix = f"soak/{os.getpid()}"
        self.config = write_fault_config(work / "edge.yaml", assets, self.state, self.spool.directory,
                                         broker_port=self.broker.port, topic_prefix=prefix,
                                         firmware_port=self.firmware.port, link_timeout_s=2.0)
        self.subscriber = Subscriber(self.broker.port, prefix, client_id=f"soak-room-{os.getpid()}").start()
        self.service = EdgeProcess(self.config, self.state / "status.json", work / "edge.log")
        self._start_service()
        self.setup_s = time.monotonic() - t0
        print(f"soak: ready after {self.setup_s:.1f} s", flush=True)

    def _start_service(self) -> None:
        self.service.start(ready_timeout_s=180.0)
        assert self.service.pid is not None
        self.segments.append(Segment(self.service.pid, time.time()))

    def _end_segment(self, how: str) -> None:
        if self.segments and not self.segments[-1].ended_by:
            self.segments[-1].ended_by = how

    # ---------------------------------------------------------------------------------------------- threads
    def sampler(self) -> None:
        while not self.stop.wait(2.0):
            with self.lock:
                seg = self.segments[-1] if self.segments else None
                if seg is None or seg.ended_by:
                    continue
                value = rss_mb(seg.pid)
                if value is not None:
                    seg.samples.append((time.time() - seg.started_wall, value))

    def injector(self, feed_s: float) -> None:
        """Faults as a Poisson process (mean ``--fault-every`` s), kinds drawn uniformly, none in the last 10%
        of the feed (so the final state is reached under the same service that then drains)."""
        t0 = time.monotonic()
        kinds = list(FAULT_KINDS)
        self.rng.shuffle(kinds)  # the first three faults are one of each kind
        n = 0
        while not self.stop.is_set():
            mean = self.args.fault_every
            # Exponential gaps, clamped so that a short run still sees faults and a long one no long lull.
            wait = min(max(self.rng.expovariate(1.0 / mean), 0.3 * mean), 3.0 * mean)
            if self.stop.wait(wait) or time.monotonic() - t0 > 0.9 * feed_s:
                return
            kind = kinds[n] if n < len(kinds) else self.rng.choice(FAULT_KINDS)
            n += 1
            try:
                self.inject(kind)
            except Exception as exc:  # a harness failure must show in the result, not kill the feed silently
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")

    def inject(self, kind: str) -> None:
        at = time.time()
        if kind == "kill":
            with self.lock:
                self.service.kill()
                self._end_segment("sigkill")
            time.sleep(1.0)  # systemd's RestartSec
            with self.lock:
                self._start_service()
        elif kind == "broker":
            self.broker.stop(signal.SIGTERM)
            time.sleep(self.rng.uniform(0.5, 3.0))
            self.broker.start()
        else:
            self.firmware.pull_cable()
            time.sleep(self.rng.uniform(0.2, 3.0))
            self.firmware.plug_cable()
        self.faults[kind] += 1
        self.fault_log.append((round(at - self.t_start, 2), kind))
        print(f"soak: t={at - self.t_start:7.1f} s  {kind}", flush=True)

    # ---------------------------------------------------------------------------------------------- run
    def feed(self) -> float:
        """Drop items at the target rate until ``--items`` or ``--duration-cap``; returns the feed time."""
        rate = NOMINAL_ITEMS_PER_S * self.args.rate_factor
        period = 1.0 / rate
        t0 = time.monotonic()
        cap = self.args.duration_cap
        encoder = 0
        for i in range(1, self.args.items + 1):
            due = t0 + (i - 1) * period
            now = time.monotonic()
            if cap and now - t0 >= cap:
                break
            if due > now:
                time.sleep(due - now)
            lines = self.pool.arrays(i)[0].shape[0]
            self.firmware.send(ItemStart(i, encoder, 0))
            encoder += lines * 8
            self.firmware.send(ItemEnd(i, encoder, 0))
            encoder += 400
            self.fed.append(self.spool.drop(str(i), *self.pool.arrays(i), batch=len(self.segments)))
            if i % 500 == 0:
                print(f"soak: {i} items fed, {len(self.subscriber.records())} records received", flush=True)
        return time.monotonic() - t0

    def drain(self) -> float:
        """Wait until every fed item has a record at the subscriber (cheap check), or ``--settle-timeout``."""
        t0 = time.monotonic()
        want = {f.item_id for f in self.fed}
        while time.monotonic() - t0 < self.args.settle_timeout:
            got = {str(r.get("item_id")) for r in self.subscriber.records()}
            if want <= got and not self.spool.pending():
                break
            if not self.service.alive:
                self.errors.append("service died while draining:\n" + self.service.log_tail())
                break
            time.sleep(1.0)
        time.sleep(3.0)  # late redeliveries and second decisions show up too
        return time.monotonic() - t0

    def run(self) -> dict[str, object]:
        self.t_start = time.time()
        expected_feed_s = self.args.items / (NOMINAL_ITEMS_PER_S * self.args.rate_factor)
        feed_s_planned = min(expected_feed_s, self.args.duration_cap or expected_feed_s)
        threads = [threading.Thread(target=self.sampler, daemon=True),
                   threading.Thread(target=self.injector, args=(feed_s_planned,), daemon=True)]
        for t in threads:
            t.start()
        feed_s = self.feed()
        self.stop.set()
        threads[1].join(timeout=60)
        if not self.service.alive:  # a fault was mid-way when the feed ended
            with self.lock:
                self._start_service()
        self.stop.clear()
        sampler = threading.Thread(target=self.sampler, daemon=True)
        sampler.start()
        drain_s = self.drain()
        self.stop.set()
        sampler.join(timeout=5)
        with self.lock:
            code = self.service.stop()
            self._end_segment(f"sigterm (exit {code})")
        report = exactly_one_decision(self.fed, self.subscriber.records(), self.state / "audit")
        received = self.subscriber.records()
        distinct = {str(body.get("record_id")): body for body in received}  # redeliveries counted once
        verdicts: dict[str, int] = {}
        reasons: dict[str, int] = {}
        for body in distinct.values():
            verdicts[str(body.get("verdict"))] = verdicts.get(str(body.get("verdict")), 0) + 1
            if body.get("reason"):
                reasons[str(body.get("reason"))] = reasons.get(str(body.get("reason")), 0) + 1
        segs = [s.summary() for s in self.segments]
        measured = [s for s in segs if s.get("samples")]
        return {
            "benchmark": "soak",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "settings": {"items": self.args.items, "duration_cap_s": self.args.duration_cap,
                         "nominal_items_per_s": NOMINAL_ITEMS_PER_S, "rate_factor": self.args.rate_factor,
                         "items_per_s": NOMINAL_ITEMS_PER_S * self.args.rate_factor,
                         "item_shape": list(self.pool.arrays(0)[0].shape), "fault_every_s": self.args.fault_every,
                         "seed": self.args.seed},
            "fed": report.fed,
            "setup_s": round(self.setup_s, 1),
            "feed_s": round(feed_s, 1),
            "drain_s": round(drain_s, 1),
            "faults": self.faults,
            "fault_log": self.fault_log,
            "without_decision": {"subscriber": report.missing_subscriber, "audit": report.missing_audit},
            "two_decisions": {"subscriber": report.extra_subscriber, "audit": report.extra_audit},
            "blind_clears": len(report.blind_clears),
            "records_received": len(received),
            "redeliveries": len(received) - len(distinct),
            "verdicts": verdicts,
            "unscreened_reasons": reasons,
            "left_in_spool": len(self.spool.pending()),
            "service_exit_code": code,
            "rss": {"segments": segs,
                    "first_start_mb": measured[0]["rss_start_mb"] if measured else None,
                    "last_end_mb": measured[-1]["rss_end_mb"] if measured else None,
                    "max_drift_mb": max((float(str(s["drift_mb"])) for s in measured), default=None)},
            "examples": report.summary(),
            "errors": self.errors,
            "ok": report.ok and not self.errors,
        }

    def close(self) -> None:
        self.stop.set()
        for action in (self.service.kill, self.subscriber.stop, self.firmware.stop,
                       lambda: self.broker.stop(signal.SIGKILL)):
            try:
                action()
            except Exception as exc:  # teardown: keep closing the rest
                print(f"soak: teardown: {exc}", file=sys.stderr)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--items", type=int, default=10_000, help="items to feed (default 10,000)")
    p.add_argument("--rate-factor", type=float, default=4.0, help="multiple of the nominal 1 item/s (default 4)")
    p.add_argument("--duration-cap", type=float, default=0.0, help="stop feeding after this many seconds (0 = no)")
    p.add_argument("--fault-every", type=float, default=30.0, help="mean seconds between faults (default 30)")
    p.add_argument("--max-lines", type=int, default=160, help="belt lines per item (default 160 x 640 channels)")
    p.add_argument("--pool", type=int, default=12, help="distinct virtual-scanner items, fed round-robin")
    p.add_argument("--settle-timeout", type=float, default=300.0, help="seconds to wait for the last decisions")
    p.add_argument("--seed", type=int, default=29)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "soak.json")
    p.add_argument("--keep", action="store_true", help="keep the working folder (logs, audit store)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="edge-soak-"))
    soak = Soak(args, work)
    try:
        soak.setup()
        result = soak.run()
    finally:
        soak.close()
    result["workdir"] = str(work) if args.keep else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("fed", "faults", "without_decision", "two_decisions", "blind_clears",
                                             "verdicts", "ok")}), flush=True)
    print(f"soak: {result['examples']}; result in {args.out}", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"soak: working folder kept: {work}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
