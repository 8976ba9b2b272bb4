"""``/metrics`` through prometheus_client, scraped over real HTTP: histograms, counters, state, bind address."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.config import load_config
from edge.errors import ConfigError
from edge.health import Component, Problem
from edge.metrics import MetricsServer, ServiceMetrics
from edge.pipeline import StageStats
from edge.records import Decision, UnscreenedReason, Verdict
from edge.status import StatusReport, format_status


def _decision(i: int, verdict: Verdict, reason: UnscreenedReason | None, latency_ms: float) -> Decision:
    now = time.time()
    return Decision(item_id=f"l-{i}", scanner_id="l", verdict=verdict, reason=reason, detail="", objects=(),
                    item_score=None, scan_start_wall=now - 1, scan_end_wall=now, decided_wall=now,
                    latency_ms=latency_ms)


def _report() -> StatusReport:
    return StatusReport(
        state="degraded", reason="outbox cannot write: disk full", pid=1, written_wall=time.time(), uptime_s=42.0,
        versions={}, models=[], links={"firmware": "up", "mqtt": "down"}, queues={"intake": 3}, in_flight=2,
        decisions={"alarm": 1, "clear": 5}, late_results=1, stage_p50_ms={},
        problems=[Problem(Component.OUTBOX, "outbox cannot write: disk full")],
        checked=["pipeline", "outbox", "mqtt_broker"],
        outbox={"alarm": 4, "item": 9, "image": 2, "health": 0, "oldest_age_s": 12.5, "evicted_item": 0,
                "evicted_image": 3, "evicted_health": 1, "bytes": 12345, "in_memory": 7, "memory_bytes": 900},
    )


def _scrape(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_metrics_serve_histograms_counters_and_state_over_http() -> None:
    metrics = ServiceMetrics()
    server = MetricsServer(0, "127.0.0.1", metrics)
    try:
        assert _scrape(server.port).get("edge_up{}") is None  # no report yet: no state claimed
        metrics.observe_decision(_decision(0, Verdict.CLEAR, None, 80.0))
        metrics.observe_decision(_decision(1, Verdict.ALARM, None, 300.0))
        metrics.observe_decision(_decision(2, Verdict.UNSCREENED, UnscreenedReason.DEADLINE_MISSED, 10_500.0))
        metrics.observe_decision(_decision(3, Verdict.UNSCREENED, UnscreenedReason.LINK_DOWN, 20.0))
        metrics.observe_decision(_decision(4, Verdict.UNSCREENED, UnscreenedReason.LINK_DOWN, 20.0))
        detect, score = StageStats(), StageStats()
        for ms in (4.0, 12.0, 30.0):
            detect.record(ms / 1000, ok=True)
        score.record(0.2, ok=False)
        metrics.observe_stages({"detect": detect, "score": score})
        detect.record(0.002, ok=True)  # only the calls since the last look are added
        metrics.observe_stages({"detect": detect, "score": score})
        metrics.report = _report()
        s = _scrape(server.port)
    finally:
        server.close()

    assert s["edge_item_latency_seconds_count{}"] == 5
    assert s["edge_item_latency_seconds_bucket{le=0.1}"] == 3
    assert s["edge_item_latency_seconds_bucket{le=10.0}"] == 4
    assert s["edge_item_latency_seconds_sum{}"] == pytest.approx(10.92)
    assert s["edge_stage_latency_seconds_count{stage=detect}"] == 4
    assert s["edge_stage_latency_seconds_bucket{le=0.005,stage=detect}"] == 2
    assert s["edge_stage_latency_seconds_count{stage=score}"] == 1
    assert s["edge_unscreened_total{reason=link_down}"] == 2
    assert s["edge_unscreened_total{reason=deadline_missed}"] == 1
    assert s["edge_unscreened_total{reason=restart}"] == 0  # every reason is there from the start
    assert s["edge_up{}"] == 0.5 and s["edge_problems{}"] == 1
    assert s["edge_component_ok{component=outbox}"] == 0 and s["edge_component_ok{component=pipeline}"] == 1
    assert s["edge_decisions_total{verdict=alarm}"] == 1 and s["edge_decisions_total{verdict=unscreened}"] == 0
    assert s["edge_link_up{link=mqtt}"] == 0 and s["edge_link_up{link=firmware}"] == 1
    assert s["edge_queue_depth{stage=intake}"] == 3 and s["edge_in_flight{}"] == 2
    assert s["edge_outbox_backlog{kind=alarm}"] == 4 and s["edge_outbox_backlog{kind=item}"] == 9
    assert s["edge_outbox_evicted_total{kind=image}"] == 3
    assert s["edge_outbox_oldest_age_seconds{}"] == 12.5 and s["edge_outbox_memory_records{}"] == 7


def test_stage_calls_that_fell_out_of_the_window_are_left_out_not_guessed() -> None:
    metrics = ServiceMetrics()
    stats = StageStats()
    for _ in range(1_200):  # the pipeline keeps the last 500 to 1000 calls
        stats.record(0.003, ok=True)
    metrics.observe_stages({"detect": stats})

    def count() -> float | None:
        return metrics.registry.get_sample_value("edge_stage_latency_seconds_count", {"stage": "detect"})

    assert count() == len(stats.latencies_ms) < 1_200
    metrics.observe_stages({"detect": stats})  # nothing new
    assert count() == len(stats.latencies_ms)


def test_bind_address_is_configurable_and_checked(tmp_path: Path) -> None:
    base = "site:\n  site_id: s\n  scanner_id: l\nmodels:\n  detector: /m\nservice:\n"
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(base + "  metrics_port: 9108\n")
    assert load_config(cfg).service.metrics_address == "127.0.0.1"
    cfg.write_text(base + "  metrics_address: 0.0.0.0\n")
    assert load_config(cfg).service.metrics_address == "0.0.0.0"
    cfg.write_text(base + "  metrics_address: localhost-ish\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "edge.yaml:7: service.metrics_address: " in str(err.value) and "not an IP address" in str(err.value)

    server = MetricsServer(0, "0.0.0.0")  # every interface: reachable on the loopback too
    try:
        server.report = _report()
        assert _scrape(server.port)["edge_up{}"] == 0.5
    finally:
        server.close()


def test_the_status_file_carries_the_outbox_backlog_that_edge_status_prints() -> None:
    shown = format_status(asdict(_report()))
    assert "outbox waiting: alarm=4, item=9, image=2, health=0; oldest 12 s" in shown
