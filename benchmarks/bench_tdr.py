"""Benchmark: CPU of the MACHINE TDR the audit store builds and encodes for every decision.

What it measures: ``AuditStore._report`` (the store's own call path: build the DICOS report of one decision and
encode it to bytes, no disk), per decision, with ``time.process_time``; the median over every decision of a
shape, and the median of that over ``--repeats`` passes. Paired with it, pass for pass, the same report through
pydicom, ``encode(build_tdr(...))`` with the store's arguments (what the store called before
``encode_machine_tdr``; the bytes are checked equal). Two shapes, as the reference pipeline makes them:

* CLEAR: 6 benign objects (4-point box outlines, classifier and anomaly signals below threshold), no PTO written;
* ALARM: 1-3 anomalous objects (30-point outlines rasterised into bitmaps, one to three reasons each) among 4
  benign ones.

Run:  nice -n 10 .venv/bin/python benchmarks/bench_tdr.py [--decisions 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.config.audit import AuditConfig
from edge.dicos import build_tdr, encode
from edge.records import AlarmReason, BoxXyxy, Decision, ModelRef, ObjectResult, ReasonKind, Verdict
from edge.sinks.audit import AuditStore

MODELS = (
    ModelRef(role="detector", name="detector-agnostic", version="1.2.0", sha256="a1" * 32),
    ModelRef(role="classifier", name="classifier-threat", version="0.9.1", sha256="b2" * 32),
    ModelRef(role="scorer", name="stfpm-parcels", version="2.0.1", sha256="c3" * 32),
)


def _benign(k: int) -> ObjectResult:
    x, y = 40.0 + 90.0 * k, 30.0 + 11.0 * k
    signals = (AlarmReason(ReasonKind.CLASSIFIER, None, 0.11, 0.5), AlarmReason(ReasonKind.ANOMALY, None, 0.3, 1.0))
    return ObjectResult(object_id=k, box=BoxXyxy(x, y, x + 70.3, y + 52.8), label=None, detector_score=0.81,
                        anomaly_score=0.3, threshold=1.0, anomalous=False,
                        polygon_xray=((x, y), (x + 70.3, y), (x + 70.3, y + 52.8), (x, y + 52.8)),
                        classifier_score=0.11, classifier_threshold=0.5, signals=signals)


def _threat(k: int, n_reasons: int) -> ObjectResult:
    cx, cy, r = 520.0 + 60.0 * k, 200.0 + 25.0 * k, 28.0 + 3.0 * k
    outline = tuple((cx + r * math.cos(2 * math.pi * i / 30), cy + 0.7 * r * math.sin(2 * math.pi * i / 30))
                    for i in range(30))
    reasons = (AlarmReason(ReasonKind.KNOWN, "knife", 0.77, 0.5), AlarmReason(ReasonKind.CLASSIFIER, None, 0.93, 0.5),
               AlarmReason(ReasonKind.ANOMALY, None, 1.8, 1.0))[:n_reasons]
    return ObjectResult(object_id=10 + k, box=BoxXyxy(cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r), label="knife",
                        detector_score=0.77, anomaly_score=1.8, threshold=1.0, anomalous=True, polygon_xray=outline,
                        classifier_score=0.93, classifier_threshold=0.5, signals=reasons, reasons=reasons)


def decisions(n: int, verdict: Verdict) -> list[Decision]:
    """``n`` decisions of one shape, each with its own item id and time (so each gets its own UIDs)."""
    out = []
    for i in range(n):
        objects = tuple(_benign(k) for k in range(6 if verdict is Verdict.CLEAR else 4))
        if verdict is Verdict.ALARM:
            objects += tuple(_threat(k, 1 + (i + k) % 3) for k in range(1 + i % 3))
        wall = 1_795_000_000.0 + 1.37 * i
        out.append(Decision(item_id=f"bag-{i:07d}", scanner_id="hub-7/line-2", verdict=verdict, reason=None,
                            detail="", objects=objects, item_score=None, scan_start_wall=wall - 2.5,
                            scan_end_wall=wall - 0.4, decided_wall=wall, latency_ms=180.0 + i % 40, models=MODELS))
    return out


def per_item_ms(report: Callable[[Decision], bytes | None], batch: list[Decision]) -> float:
    """Median CPU ms of one report over the batch."""
    samples = []
    for decision in batch:
        t0 = time.process_time()
        data = report(decision)
        samples.append(time.process_time() - t0)
        assert data is not None
    return 1000.0 * statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = AuditStore(AuditConfig(directory=Path(tmp) / "audit"), "hub-7", prune_every=10**9)
        def pydicom_report(decision: Decision) -> bytes:
            return encode(build_tdr(decision, include_benign=store._config.tdr.include_benign, site_id=store._site_id))

        try:
            for verdict in (Verdict.CLEAR, Verdict.ALARM):
                batch = decisions(args.decisions, verdict)
                assert all(store._report(d) == pydicom_report(d) for d in batch)
                runs: dict[str, list[float]] = {"store": [], "pydicom": []}
                for _ in range(args.repeats):
                    runs["store"].append(per_item_ms(store._report, batch))
                    runs["pydicom"].append(per_item_ms(pydicom_report, batch))
                size = len(pydicom_report(batch[-1]))
                for path, ms in runs.items():
                    print(f"{verdict.value:6s} {path:8s} median {statistics.median(ms):.3f} ms CPU per report "
                          f"(runs {', '.join(f'{r:.3f}' for r in ms)}; {size} bytes)")
                print(f"{verdict.value:6s} pydicom / store: "
                      f"{statistics.median(runs['pydicom']) / statistics.median(runs['store']):.1f}x")
        finally:
            store.close(timeout_s=5.0)


if __name__ == "__main__":
    main()
