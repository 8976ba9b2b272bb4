"""``edge run``: the service's life — start, READY, watchdog, health, SIGHUP reload, SIGTERM stop.

* READY=1 is sent only after the bundles are loaded and warmed and the pipeline runs.
* WATCHDOG=1 is sent only while the pipeline makes progress (idle, or some stage finished an item within
  ``stall_s``); a wedged pipeline stops the pings and systemd restarts the service.
* SIGHUP reloads the config file and the bundles: the new models are loaded and warmed first and swapped in
  atomically; if anything fails, the old ones stay in service and the status says why. Other sections are
  applied where that is safe while running (``edge/reload.py``); a changed section that needs a restart is
  refused and named in the log and the status until the file and the running config agree again.
* One health model (``edge/health.py``) feeds every status output: the status file, the retained MQTT status,
  the metrics and systemd's STATUS line. It is asked several times a second, and the retained status is
  published again whenever the state or its reasons change. Its figures are one snapshot (``health.snapshot``):
  the status file takes it every second, the MQTT health record every ``mqtt.health_interval_s`` on the MQTT
  publisher's thread (the one health timer; this loop runs none).
* SIGTERM/SIGINT: STOPPING=1, intake stops, in-flight items finish or become UNSCREENED (``shutdown``), the
  outbox is flushed, all within ``stop_timeout_s`` (keep it below the unit's TimeoutStopSec).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

from edge.config import EdgeConfig, load_config
from edge.config.preflight import refuse_if_never_alarms
from edge.errors import EdgeError
from edge.health import Health, assess, snapshot
from edge.metrics import MetricsServer, ServiceMetrics
from edge.notify import Notifier, watchdog_interval_s
from edge.publish.health import HealthSnapshot, StatusState
from edge.records import Decision
from edge.reload import plan_reload
from edge.runtime import Runtime, build_runtime
from edge.screening import load_models
from edge.status import RecentDecisions, StatusReport, write_status

log = logging.getLogger(__name__)


class Service:
    """One run of the screening service."""

    def __init__(self, config_path: Path, runtime: Runtime, notifier: Notifier | None = None,
                 stall_s: float | None = None, stop_timeout_s: float | None = None,
                 log_level: str | None = None) -> None:
        """``stall_s`` and ``stop_timeout_s`` override ``service.stall_s``/``stop_timeout_s`` (tests); else the
        config's values are read at each use, so a reload changes them. ``log_level`` is the command line's
        override of ``logging.level``, which a reload must keep."""
        self._config_path = config_path
        self.runtime = runtime
        self._notify = notifier or Notifier()
        self._stall_override = stall_s
        self._stop_timeout_override = stop_timeout_s
        self._log_level_override = log_level
        self._previous_handlers: dict[signal.Signals, Any] = {}
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.status_text = "starting"
        self._shown: tuple[StatusState, str] | None = None
        self._last_health: Health | None = None
        self._version_cache: dict[str, str] | None = None
        self.reload_error: str | None = None
        self.reload_refused: tuple[str, ...] = ()
        self.recent = RecentDecisions()
        self.metrics = ServiceMetrics()
        runtime.pipeline.on_decision = self._on_decision
        self._metrics_server: MetricsServer | None = None
        if runtime.mqtt is not None:
            runtime.mqtt.health_source = self.snapshot

    def _on_decision(self, decision: Decision) -> None:
        self.recent.add(decision)
        self.metrics.observe_decision(decision)

    def snapshot(self) -> HealthSnapshot:
        """The service's figures now (queues, stage latencies, links, decisions, disks): ``health.snapshot``."""
        return snapshot(self.runtime)

    @property
    def _stall_s(self) -> float:
        return self._stall_override if self._stall_override is not None else self.runtime.cfg.service.stall_s

    @property
    def _stop_timeout_s(self) -> float:
        if self._stop_timeout_override is not None:
            return self._stop_timeout_override
        return self.runtime.cfg.service.stop_timeout_s

    # -------------------------------------------------------------- signals
    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads (handlers only set flags; the main loop does the work)."""
        for sig, handler in ((signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop),
                             (signal.SIGHUP, self._on_hup)):
            self._previous_handlers.setdefault(sig, signal.getsignal(sig))
            signal.signal(sig, handler)

    def restore_signal_handlers(self) -> None:
        """Put back the handlers ``install_signal_handlers`` replaced: a process that ran the service in-process
        (``edge demo``, the tests) must not keep flag-only handlers that make SIGTERM and Ctrl-C do nothing once the
        service is gone (a child it forks later inherits them too)."""
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload.set()

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    # -------------------------------------------------------------- status
    def health(self) -> Health:
        """The one answer every status output gives (see ``edge/health.py``)."""
        notes = list(self.reload_refused)
        if self.reload_error:
            notes.insert(0, f"reload failed, previous config and models kept: {self.reload_error}")
        return assess(self.runtime, notes)

    def _show(self, health: Health) -> bool:
        """Send a changed state or reason to systemd, the retained MQTT status and the log; True if changed."""
        self._last_health = health
        shown = (health.state, health.text)
        if shown == self._shown:
            return False
        self._shown = shown
        self.status_text = health.text
        self._notify.status(f"{health.state.value}: {health.text}")
        if self.runtime.mqtt is not None:
            self.runtime.mqtt.set_status(health.state, health.text)
        (log.info if health.state is StatusState.ONLINE else log.warning)(
            "status", extra={"state": health.state.value, "reason": health.text})
        return True

    def report(self, health: Health | None = None) -> StatusReport:
        """The service's state now, for the status file and /metrics (``health``: as just shown elsewhere)."""
        runtime = self.runtime
        health = health if health is not None else self.health()
        pipeline = runtime.pipeline
        figures = self.snapshot()
        links = {link.name: link.state.value for link in figures.links}
        outbox: dict[str, float] = {}
        if runtime.mqtt is not None:
            links["mqtt"] = runtime.mqtt.link().state.value
            outbox = {k: v for k, v in asdict(runtime.mqtt.backlog()).items() if isinstance(v, int | float)}
        return StatusReport(
            state=health.state.value,
            reason=health.text,
            pid=os.getpid(),
            written_wall=time.time(),
            uptime_s=figures.uptime_s,
            versions=self._versions(),
            models=[f"{r.role}:{r.name}@{r.version}" for r in runtime.models.current.refs],
            links=links,
            queues={q.name: q.depth for q in figures.queues},
            in_flight=pipeline.ledger.in_flight(),
            decisions=dict(pipeline.ledger.counts),
            late_results=pipeline.ledger.late,
            stage_p50_ms={s.stage: round(s.p50_ms, 2) for s in figures.latencies},
            recent=self.recent.snapshot(),
            problems=list(health.problems),
            checked=[c.value for c in health.checked],
            outbox=outbox,
        )

    def _versions(self) -> dict[str, str]:
        """Package versions for the status file, looked up once (a metadata scan each second costs CPU)."""
        if self._version_cache is None:
            from importlib.metadata import version

            self._version_cache = {name: version(name) for name in ("xray-edge", "openvino", "onnxruntime")}
        return self._version_cache

    def _publish_report(self, health: Health | None = None) -> None:
        try:
            report = self.report(health)
            if self._metrics_server is not None:
                self.metrics.report = report
                self.metrics.observe_stages(self.runtime.pipeline.stats)
            write_status(self.runtime.cfg.service.status_file, report)
        except OSError as exc:
            log.warning("status file not written", extra={"error": str(exc)})

    # -------------------------------------------------------------- reload
    def reload(self) -> bool:
        """Read the config again; apply what can change while running, refuse (and say) what cannot, and swap
        the bundles in only once the new ones are loaded and warmed. True if the config loaded and the models
        were swapped (even when some section was refused)."""
        self._notify.reloading()
        runtime = self.runtime
        try:
            wanted: EdgeConfig = load_config(self._config_path)
            refuse_if_never_alarms(wanted, self._config_path)
            plan = plan_reload(runtime.cfg, wanted)
            # The running pipeline keeps its item workers (decide.* needs a restart): streams for those.
            models = load_models(plan.config.models, runtime.cfg.decide.workers)
        except EdgeError as exc:
            self.reload_error = str(exc).replace("\n", "; ")
            log.error("reload failed; keeping the running config and models", extra={"error": self.reload_error})
        else:
            old = runtime.models.swap(models)
            self.reload_error = None
            if old.degraded:  # the models' note is read live from the set in service (edge/health.py)
                runtime.problems = [p for p in runtime.problems if p != old.degraded]
            # In-flight items hold a reference to the old set; give them time before closing it.
            timer = threading.Timer(30.0, old.close)
            timer.daemon = True
            timer.start()
            before, runtime.cfg = runtime.cfg, plan.config
            if runtime.mqtt is not None:  # of the mqtt section, only the health interval applies live
                runtime.mqtt.set_health_interval(plan.config.mqtt.health_interval_s)
            if plan.config.logging != before.logging:
                from edge.logs import setup_logging

                setup_logging(self._log_level_override or plan.config.logging.level, plan.config.logging.format)
            self.reload_refused = plan.refused
            for message in plan.refused:
                log.warning(message)
            log.info("reloaded", extra={"models": ", ".join(f"{r.name}@{r.version}" for r in models.refs),
                                        "applied": ", ".join(plan.applied) or "models reloaded, nothing else",
                                        "refused": len(plan.refused)})
        health = self.health()
        self._notify.ready(f"{health.state.value}: {health.text}")
        self._show(health)
        self._publish_report(health)
        return self.reload_error is None

    # -------------------------------------------------------------- main loop
    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        runtime = self.runtime
        runtime.started_mono = time.monotonic()
        service_cfg = runtime.cfg.service
        if service_cfg.metrics_port is not None:
            self._metrics_server = MetricsServer(service_cfg.metrics_port, service_cfg.metrics_address, self.metrics)
        if runtime.mqtt is not None:
            # Until the first health check the retained status must not claim anything it has not checked.
            runtime.mqtt.set_status(StatusState.DEGRADED, "starting")
            runtime.mqtt.start()
        if runtime.link is not None:
            # Give the scanner link a moment before screening: items scanned before it is up are UNSCREENED.
            runtime.link.start()
            if not runtime.link.wait_until_up(5.0):
                log.error("scanner link not up after 5 s; items will be UNSCREENED until it is")
        if runtime.camera is not None:
            runtime.camera.start()
        if runtime.verdicts is not None:  # operator verdicts from the control room (edge/verdicts.py)
            runtime.verdicts.start()
        runtime.pipeline.start()
        health = self.health()
        self._notify.ready(f"{health.state.value}: {health.text}")
        self._show(health)
        interval = watchdog_interval_s()
        next_ping = time.monotonic()
        next_report = time.monotonic()
        next_check = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_check:
                # Every output from the one health model: a change is shown and written at once, not only on
                # the next round of the status file.
                health = self.health()
                if self._show(health) or now >= next_report:
                    self._publish_report(health)
                    next_report = now + 1.0
                next_check = now + 0.25
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
            self._stop.wait(0.05 if interval is None else min(0.05, interval / 4))
        self._notify.stopping("stopping: finishing in-flight items and flushing the outbox")
        if runtime.mqtt is not None:
            runtime.mqtt.set_status(StatusState.OFFLINE, "service stopped")
        runtime.pipeline.stop(self._stop_timeout_s)
        if runtime.verdicts is not None:
            runtime.verdicts.stop()
        if runtime.link is not None:
            runtime.link.close()
        if runtime.camera is not None:
            runtime.camera.stop()
        runtime.models.current.close()
        # the last health seen while running (asked now, it would report the stop itself: broker link closed)
        self._publish_report(self._last_health)
        if self._metrics_server is not None:
            self._metrics_server.close()
        self._notify.close()
        log.info("stopped", extra={"decisions": dict(runtime.pipeline.ledger.counts)})
        return 0


def run_service(config_path: Path, log_level: str | None = None) -> int:
    """Entry point of ``edge run``: load config, build, run. Start-up errors exit non-zero with a clear message."""
    from edge.logs import setup_logging

    cfg = load_config(config_path)
    refuse_if_never_alarms(cfg, config_path)
    setup_logging(log_level or cfg.logging.level, cfg.logging.format)
    runtime = build_runtime(cfg)
    service = Service(config_path, runtime, log_level=log_level)
    service.install_signal_handlers()
    return service.run()
