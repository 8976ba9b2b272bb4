"""Prometheus ``/metrics`` of the running service, through ``prometheus_client``.

Two kinds of numbers, from the same sources as every other status output:

* Histograms and counters of events, fed as they happen: the latency of every item (``Decision.latency_ms``,
  ``edge_item_latency_seconds``) and of every stage call (``edge_stage_latency_seconds{stage}``, read from the
  pipeline's stage counters by ``observe_stages``), and the UNSCREENED decisions by reason
  (``edge_unscreened_total{reason}``), all counted as decisions are stored.
* State, read at each scrape from the latest ``StatusReport`` (the status file's, so ``edge status`` and
  ``/metrics`` cannot disagree): ``edge_up`` (1 online, 0.5 degraded, 0 otherwise), ``edge_problems``,
  ``edge_component_ok{component}``, ``edge_decisions_total{verdict}`` (the ledger's counts, as in the status
  file and the MQTT health record), ``edge_queue_depth{stage}``, ``edge_in_flight``, ``edge_link_up{link}``,
  ``edge_outbox_backlog{kind}``, ``edge_outbox_bytes``, ``edge_outbox_oldest_age_seconds``,
  ``edge_outbox_evicted_total{kind}``, ``edge_late_results_total``, ``edge_uptime_seconds``.

The endpoint binds ``service.metrics_address`` (default 127.0.0.1: the box is not a web server; scrape it
through a tunnel or a local agent, or name an interface the site's Prometheus can reach).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edge.records import Decision, UnscreenedReason, Verdict
from edge.status import StatusReport

if TYPE_CHECKING:
    from edge.pipeline import StageStats

ITEM_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 60.0)
"""Item latency buckets: up to the default 10 s deadline (``decide.deadline_s``) and past it."""
STAGE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Stage call buckets: a few ms (decide, map) to a second (a model on a loaded CPU)."""


class ServiceMetrics:
    """The service's metrics in their own registry (not the process-wide default: tests build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.report: StatusReport | None = None
        """The latest status report; state gauges are read from it at each scrape (None: none yet)."""
        self.item_latency = Histogram(
            "edge_item_latency_seconds", "Time from the item's scan end to its decision, per stored decision.",
            buckets=ITEM_BUCKETS_S, registry=self.registry)
        self.stage_latency = Histogram(
            "edge_stage_latency_seconds", "Time of one stage call on one item.", ["stage"],
            buckets=STAGE_BUCKETS_S, registry=self.registry)
        self.unscreened = Counter(
            "edge_unscreened", "UNSCREENED decisions stored since start, by reason.", ["reason"],
            registry=self.registry)
        for reason in UnscreenedReason:
            self.unscreened.labels(reason=reason.value)  # every reason shows, at 0 until it happens
        self._stages_lock = threading.Lock()
        self._stage_calls: dict[str, int] = {}
        self.registry.register(_ReportCollector(self))

    def observe_decision(self, decision: Decision) -> None:
        """Count one stored decision (the pipeline's ``on_decision``)."""
        self.item_latency.observe(max(0.0, decision.latency_ms) / 1000.0)
        if decision.verdict is Verdict.UNSCREENED and decision.reason is not None:
            self.unscreened.labels(reason=decision.reason.value).inc()

    def observe_stages(self, stats: Mapping[str, StageStats]) -> None:
        """Feed the stage calls made since the last call into the histograms.

        The pipeline keeps each stage's last 500 to 1000 call times; called every second this sees every call
        (a stage would need 500 calls a second to outrun it). Calls that did fall out of the window are left
        out of the histogram rather than guessed.
        """
        with self._stages_lock:
            for name, stage in stats.items():
                calls, window = stage.processed + stage.failed, list(stage.latencies_ms)
                seen = self._stage_calls.get(name, 0)
                new = min(calls - seen, len(window))
                self._stage_calls[name] = calls
                if new <= 0:
                    continue
                histogram = self.stage_latency.labels(stage=name)
                for ms in window[-new:]:
                    histogram.observe(ms / 1000.0)

    def text(self) -> bytes:
        """The exposition text (what a scrape gets)."""
        return generate_latest(self.registry)


class _ReportCollector(Collector):
    """State gauges and the ledger's counters, from the latest status report at scrape time."""

    def __init__(self, owner: ServiceMetrics) -> None:
        self._owner = owner

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # the families depend on the report: nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        report = self._owner.report
        if report is None:
            return
        yield GaugeMetricFamily("edge_up", "1 when the service is online, 0.5 degraded, 0 otherwise.",
                                value=dict(online=1.0, degraded=0.5).get(report.state, 0.0))
        yield GaugeMetricFamily("edge_problems", "Reasons the service is not online (0 when online).",
                                value=len(report.problems))
        ok = GaugeMetricFamily("edge_component_ok", "1 when a component the health model checks works, 0 when "
                               "it has a problem.", labels=["component"])
        failing = {p.component for p in report.problems}
        for component in report.checked:
            ok.add_metric([component], 0 if component in failing else 1)
        yield ok
        decisions = CounterMetricFamily("edge_decisions", "Decisions since start, by verdict.", labels=["verdict"])
        for verdict in Verdict:
            decisions.add_metric([verdict.value], report.decisions.get(verdict.value, 0))
        yield decisions
        yield CounterMetricFamily("edge_late_results", "Results that came after their item was decided "
                                  "(deadline, shutdown) and were dropped.", value=report.late_results)
        queues = GaugeMetricFamily("edge_queue_depth", "Items waiting in front of a stage.", labels=["stage"])
        for name, depth in report.queues.items():
            queues.add_metric([name], depth)
        yield queues
        yield GaugeMetricFamily("edge_in_flight", "Items awaiting a decision.", value=report.in_flight)
        links = GaugeMetricFamily("edge_link_up", "1 when a link is up.", labels=["link"])
        for name, state in report.links.items():
            links.add_metric([name], 1 if state == "up" else 0)
        yield links
        yield GaugeMetricFamily("edge_uptime_seconds", "Seconds since the service started.", value=report.uptime_s)
        if report.outbox:
            yield from _outbox_families(report.outbox)


def _outbox_families(outbox: Mapping[str, float]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    backlog = GaugeMetricFamily("edge_outbox_backlog", "MQTT records waiting for the broker (outbox and memory), "
                                "by kind.", labels=["kind"])
    evicted = CounterMetricFamily("edge_outbox_evicted", "MQTT records dropped over the outbox or memory bounds "
                                  "since start, by kind (alarms never are).", labels=["kind"])
    for kind in ("alarm", "item", "image", "health"):
        backlog.add_metric([kind], outbox.get(kind, 0))
    for kind in ("item", "image", "health"):
        evicted.add_metric([kind], outbox.get(f"evicted_{kind}", 0))
    yield backlog
    yield evicted
    yield GaugeMetricFamily("edge_outbox_bytes", "Payload bytes in the outbox file.", value=outbox.get("bytes", 0))
    yield GaugeMetricFamily("edge_outbox_memory_records", "MQTT records held in memory because the outbox "
                            "cannot write.", value=outbox.get("in_memory", 0))
    yield GaugeMetricFamily("edge_outbox_oldest_age_seconds", "Age of the oldest record in the outbox.",
                            value=outbox.get("oldest_age_s", 0.0))


def prometheus_text(report: StatusReport) -> str:
    """One report as exposition text (no histograms): what ``/metrics`` says about that state."""
    metrics = ServiceMetrics()
    metrics.report = report
    return metrics.text().decode()


class MetricsServer:
    """Serves ``metrics`` at ``http://ADDRESS:PORT/metrics`` from a daemon thread (port 0: any free port)."""

    def __init__(self, port: int, address: str = "127.0.0.1", metrics: ServiceMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else ServiceMetrics()
        self._server, self._thread = start_http_server(port, addr=address, registry=self.metrics.registry)
        self.port = int(self._server.server_port)

    @property
    def report(self) -> StatusReport | None:
        return self.metrics.report

    @report.setter
    def report(self, report: StatusReport | None) -> None:
        self.metrics.report = report

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
