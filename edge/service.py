"""``edge run``: the service's life — start, READY, watchdog, health, SIGHUP reload, SIGTERM stop.

* READY=1 is sent only after the bundles are loaded and warmed and the pipeline runs.
* WATCHDOG=1 is sent only while the pipeline makes progress (idle, or some stage finished an item within
  ``stall_s``); a wedged pipeline stops the pings and systemd restarts the service.
* SIGHUP reloads the config file and the bundles: the new models are loaded and warmed first and swapped in
  atomically; if anything fails, the old ones stay in service and the status says why.
* SIGTERM/SIGINT: STOPPING=1, intake stops, in-flight items finish or become UNSCREENED (``shutdown``), the
  outbox is flushed, all within ``stop_timeout_s`` (keep it below the unit's TimeoutStopSec).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from edge.config import EdgeConfig, load_config
from edge.errors import EdgeError
from edge.notify import Notifier, watchdog_interval_s
from edge.publish.health import StatusState
from edge.runtime import Runtime, build_runtime
from edge.screening import load_models
from edge.status import MetricsServer, RecentDecisions, StatusReport, write_status

log = logging.getLogger(__name__)


class Service:
    """One run of the screening service."""

    def __init__(self, config_path: Path, runtime: Runtime, notifier: Notifier | None = None,
                 stall_s: float = 30.0, stop_timeout_s: float = 20.0) -> None:
        self._config_path = config_path
        self.runtime = runtime
        self._notify = notifier or Notifier()
        self._stall_s = stall_s
        self._stop_timeout_s = stop_timeout_s
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.status_text = "starting"
        self.reload_error: str | None = None
        self.recent = RecentDecisions()
        runtime.pipeline.on_decision = self.recent.add
        self._metrics: MetricsServer | None = None

    # -------------------------------------------------------------- signals
    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads (handlers only set flags; the main loop does the work)."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload.set()

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    # -------------------------------------------------------------- status
    def _set_status(self, state: StatusState, text: str) -> None:
        self.status_text = text
        self._notify.status(f"{state.value}: {text}")
        if self.runtime.mqtt is not None:
            self.runtime.mqtt.set_status(state, text)
        log.info("status", extra={"state": state.value, "reason": text})

    def _current_state(self) -> tuple[StatusState, str]:
        problems = list(self.runtime.problems)
        if self.runtime.pipeline.source_problem:
            problems.append(self.runtime.pipeline.source_problem)
        if self.reload_error:
            problems.append(f"reload failed, previous config and models kept: {self.reload_error}")
        if problems:
            return StatusState.DEGRADED, "; ".join(problems)
        return StatusState.ONLINE, "screening"

    def report(self) -> StatusReport:
        """The service's state now, for the status file and /metrics."""
        from importlib.metadata import version

        runtime = self.runtime
        state, text = self._current_state()
        pipeline = runtime.pipeline
        links = {}
        if runtime.link is not None:
            links["firmware"] = "up" if runtime.link.is_up else "down"
        if runtime.mqtt is not None:
            links["mqtt"] = runtime.mqtt.link().state.value
        p50 = {}
        for name, stats in pipeline.stats.items():
            values = sorted(stats.latencies_ms[-200:])
            if values:
                p50[name] = round(values[len(values) // 2], 2)
        return StatusReport(
            state=state.value,
            reason=text,
            pid=os.getpid(),
            written_wall=time.time(),
            uptime_s=time.monotonic() - runtime.started_mono,
            versions={name: version(name) for name in ("xray-edge", "openvino", "onnxruntime")},
            models=[f"{r.role}:{r.name}@{r.version}" for r in runtime.models.current.refs],
            links=links,
            queues=pipeline.queue_depths(),
            in_flight=pipeline.ledger.in_flight(),
            decisions=dict(pipeline.ledger.counts),
            late_results=pipeline.ledger.late,
            stage_p50_ms=p50,
            recent=self.recent.snapshot(),
        )

    def _publish_report(self) -> None:
        try:
            report = self.report()
            write_status(self.runtime.cfg.service.status_file, report)
            if self._metrics is not None:
                self._metrics.report = report
        except OSError as exc:
            log.warning("status file not written", extra={"error": str(exc)})

    # -------------------------------------------------------------- reload
    def reload(self) -> bool:
        """Load the config and bundles again; swap them in only if all of it works."""
        self._notify.reloading()
        try:
            cfg: EdgeConfig = load_config(self._config_path)
            # The running pipeline keeps its item workers (decide.* needs a restart): streams for those.
            models = load_models(cfg.models, self.runtime.cfg.decide.workers)
        except EdgeError as exc:
            self.reload_error = str(exc).replace("\n", "; ")
            log.error("reload failed; keeping the running models", extra={"error": self.reload_error})
        else:
            old = self.runtime.models.swap(models)
            self.reload_error = None
            if old.degraded:
                self.runtime.problems = [p for p in self.runtime.problems if p != old.degraded]
            if models.degraded:
                self.runtime.problems.append(models.degraded)
            # In-flight items hold a reference to the old set; give them time before closing it.
            threading.Timer(30.0, old.close).start()
            log.info("reloaded", extra={"models": ", ".join(f"{r.name}@{r.version}" for r in models.refs)})
        state, text = self._current_state()
        self._notify.ready(f"{state.value}: {text}")
        self._set_status(state, text)
        return self.reload_error is None

    # -------------------------------------------------------------- main loop
    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        runtime = self.runtime
        runtime.started_mono = time.monotonic()
        if runtime.cfg.service.metrics_port is not None:
            self._metrics = MetricsServer(runtime.cfg.service.metrics_port)
        if runtime.mqtt is not None:
            runtime.mqtt.start()
        if runtime.link is not None:
            # Give the scanner link a moment before screening: items scanned before it is up are UNSCREENED.
            runtime.link.start()
            if not runtime.link.wait_until_up(5.0):
                log.error("scanner link not up after 5 s; items will be UNSCREENED until it is")
        if runtime.camera is not None:
            runtime.camera.start()
        runtime.pipeline.start()
        state, text = self._current_state()
        self._notify.ready(f"{state.value}: {text}")
        self._set_status(state, text)
        interval = watchdog_interval_s()
        next_ping = time.monotonic()
        next_health = time.monotonic() + runtime.cfg.mqtt.health_interval_s
        next_report = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_report:
                state, text = self._current_state()
                if text != self.status_text:  # e.g. the frame source started or stopped failing
                    self._set_status(state, text)
                self._publish_report()
                next_report = now + 1.0
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if interval is not None and now >= next_ping:
                if runtime.pipeline.making_progress(self._stall_s):
                    self._notify.watchdog()
                else:
                    log.error("pipeline stalled; withholding watchdog ping",
                              extra={"in_flight": runtime.pipeline.ledger.in_flight()})
                next_ping = now + interval
            if now >= next_health:
                if runtime.mqtt is not None:
                    runtime.mqtt.publish_health(runtime.health(now))
                next_health = now + runtime.cfg.mqtt.health_interval_s
            self._stop.wait(0.05 if interval is None else min(0.05, interval / 4))
        self._notify.stopping("stopping: finishing in-flight items and flushing the outbox")
        if runtime.mqtt is not None:
            runtime.mqtt.set_status(StatusState.OFFLINE, "service stopped")
        runtime.pipeline.stop(self._stop_timeout_s)
        if runtime.link is not None:
            runtime.link.close()
        if runtime.camera is not None:
            runtime.camera.stop()
        runtime.models.current.close()
        self._publish_report()
        if self._metrics is not None:
            self._metrics.close()
        self._notify.close()
        log.info("stopped", extra={"decisions": dict(runtime.pipeline.ledger.counts)})
        return 0


def run_service(config_path: Path, log_level: str | None = None) -> int:
    """Entry point of ``edge run``: load config, build, run. Start-up errors exit non-zero with a clear message."""
    from edge.logs import setup_logging

    cfg = load_config(config_path)
    setup_logging(log_level or cfg.logging.level, cfg.logging.format)
    runtime = build_runtime(cfg)
    service = Service(config_path, runtime)
    service.install_signal_handlers()
    return service.run()
