"""Cold start: time from exec of ``edge run`` to its ``READY=1`` on a ``NOTIFY_SOCKET`` we bind.

Where it sits: the bench plays systemd's part, as ``tests/service/test_systemd.py`` does. The service sends
READY=1 only after the bundles are verified, compiled and warmed and the pipeline runs, so this is the time a
restart leaves the lane unscreened. The source is an empty spool directory (what a real box starts with; the
virtual scanner's own start-up is not the service's cost) and MQTT is off (the broker is not measured).
Each run pairs a start with an empty ``models.cache_dir`` (compiles everything) and one that finds it filled.

Must not: import torch; leave the service running (it is stopped with SIGTERM, killed only if it hangs).
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge.bundles.signing import generate_key, signed_copy
from edge_tools.bench.stats import load_average


@dataclass(frozen=True, slots=True)
class ColdStart:
    """READY times of ``runs`` starts, in seconds from exec."""

    backend: str
    precision: str
    cached: bool
    ready_s: tuple[float, ...]
    median_s: float
    status: str
    load_avg: tuple[float, float, float]


def write_service_config(path: Path, state: Path, detector: Path, scorer: Path | None, flatfield: Path,
                         energy: Path, backend: str, precision: str, cache_dir: Path | None,
                         trusted_key: Path | None = None, classifier: Path | None = None) -> Path:
    """A minimal production-like edge.yaml: spool source, no MQTT, state under ``state``."""
    lines = [
        "site:", "  site_id: bench", "  scanner_id: bench",
        "source:", "  type: spool", f"  directory: {state / 'spool'}",
        "condition:", f"  flatfield_file: {flatfield}", f"  energy_file: {energy}",
        "models:", f"  detector: {detector}", f"  backend: {backend}", f"  precision: {precision}",
        "  threads: 2",
    ]
    if scorer is not None:
        lines.append(f"  scorer: {scorer}")
    if classifier is not None:
        lines.append(f"  classifier: {classifier}")
    if cache_dir is not None:
        lines.append(f"  cache_dir: {cache_dir}")
    if trusted_key is not None:
        lines.append(f"  trusted_keys: [{trusted_key}]")
    lines += ["audit:", f"  directory: {state / 'audit'}", "mqtt:", "  enabled: false",
              "service:", f"  status_file: {state / 'status.json'}", "  stop_timeout_s: 5"]
    (state / "spool").mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def time_to_ready(config: Path, timeout_s: float = 120.0) -> tuple[float, str]:
    """Start ``edge run``, return (seconds to READY=1, its STATUS); stop it with SIGTERM.

    Raises:
        RuntimeError: the service exited or sent no READY within ``timeout_s`` (stderr tail included).
    """
    with tempfile.TemporaryDirectory(prefix="edge-notify-") as tmp:
        address = Path(tmp) / "notify.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(address))
        sock.settimeout(0.05)
        env = {**os.environ, "NOTIFY_SOCKET": str(address)}
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(config)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            while time.monotonic() - started < timeout_s:
                try:
                    data = sock.recv(4096).decode()
                except TimeoutError:
                    if proc.poll() is not None:
                        break
                    continue
                fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
                if fields.get("READY") == "1":
                    return time.monotonic() - started, fields.get("STATUS", "")
            tail = proc.stderr.read()[-2000:] if proc.poll() is not None and proc.stderr else ""
            raise RuntimeError(f"edge run sent no READY=1 within {timeout_s:.0f} s "
                               f"(exit code {proc.poll()}): {tail}")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            sock.close()


def measure_cold_start(detector: Path, scorer: Path | None, flatfield: Path, energy: Path, backend: str,
                       precision: str, runs: int = 3, classifier: Path | None = None) -> list[ColdStart]:
    """``runs`` pairs of starts: one with an empty compiled-model cache (it compiles everything and fills the
    cache, as the first start after an install does), then one that finds that cache warm."""
    cold: list[float] = []
    warm: list[float] = []
    status = {False: "", True: ""}
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="edge-coldstart-") as tmp:
        root = Path(tmp)
        # Start as a box does, signature check included: copies signed with a key made for this run.
        key, trusted = generate_key(root / "keys" / "bench.key")
        detector = signed_copy(detector, root / "detector", key)
        scorer = None if scorer is None else signed_copy(scorer, root / "scorer", key)
        classifier = None if classifier is None else signed_copy(classifier, root / "classifier", key)
        for run in range(runs):
            cache = root / f"cache-{run}"
            cache.mkdir()
            for cached, times in ((False, cold), (True, warm)):
                state = root / f"state-{run}-{int(cached)}"
                state.mkdir()
                cfg = write_service_config(state / "edge.yaml", state, detector, scorer, flatfield, energy,
                                           backend, precision, cache, trusted, classifier)
                seconds, status[cached] = time_to_ready(cfg)
                times.append(round(seconds, 3))
    return [ColdStart(backend, precision, cached, tuple(times), round(statistics.median(times), 3), status[cached],
                      load) for cached, times in ((False, cold), (True, warm))]
