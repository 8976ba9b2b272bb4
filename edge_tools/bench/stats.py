"""Small measuring helpers for the bench: percentiles, resident memory, load average.

Where it sits: used by the bench runner and by ``benchmarks/``. Linux only (reads ``/proc/self/status``).
Must not: import torch, or keep global state.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency summary in milliseconds over ``n`` samples (nearest-rank percentiles)."""

    n: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def percentiles(samples_ms: Sequence[float]) -> Percentiles:
    """Nearest-rank p50/p95/p99: with few samples p99 is simply the slowest one, never an interpolation."""
    values = sorted(float(v) for v in samples_ms)
    if not values:
        return Percentiles(0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"))

    def rank(q: float) -> float:
        index = max(0, min(len(values) - 1, int(-(-q * len(values) // 1)) - 1))
        return round(values[index], 3)

    return Percentiles(len(values), rank(0.50), rank(0.95), rank(0.99), round(values[-1], 3),
                       round(sum(values) / len(values), 3))


def _status_kb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return float("nan")


def rss_mb() -> float:
    """Resident set size of this process now (VmRSS), in MiB."""
    return _status_kb("VmRSS") / 1024.0


def peak_rss_mb() -> float:
    """Highest resident set size of this process so far (VmHWM), in MiB."""
    return _status_kb("VmHWM") / 1024.0


def load_average() -> tuple[float, float, float]:
    """1/5/15-minute load average: the cores are shared, so every figure is reported with it."""
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


class RssSampler:
    """Samples VmRSS every ``period_s`` in a daemon thread; ``max_mb`` is the steady-state high-water mark of
    the sampled window (unlike VmHWM it excludes whatever happened before ``start``)."""

    def __init__(self, period_s: float = 0.05) -> None:
        self._period = period_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples: list[float] = []

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_mb())
            self._stop.wait(self._period)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    @property
    def max_mb(self) -> float:
        return round(max(self.samples), 1) if self.samples else float("nan")

    @property
    def median_mb(self) -> float:
        if not self.samples:
            return float("nan")
        ordered = sorted(self.samples)
        return round(ordered[len(ordered) // 2], 1)
