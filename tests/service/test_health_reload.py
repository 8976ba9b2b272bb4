"""The reload plan (what a SIGHUP applies live, what it refuses and says) and the health model's outputs.

The end-to-end versions run the real service (tests/faults/test_fault_status.py); these pin the rules.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from edge.config import EdgeConfig
from edge.health import Component, Health, Problem, assess
from edge.metrics import prometheus_text
from edge.publish.health import LinkHealth, LinkHealthState, StatusState
from edge.reload import plan_reload
from edge.runtime import Runtime
from edge.status import StatusReport, format_status


def _config(**sections: object) -> EdgeConfig:
    base: dict[str, object] = {"site": {"site_id": "s", "scanner_id": "l"}, "models": {"detector": "/m/det"}}
    base.update(sections)
    return EdgeConfig.model_validate(base)


def test_unchanged_config_reloads_only_the_bundles() -> None:
    plan = plan_reload(_config(), _config())
    assert plan.applied == () and plan.refused == () and plan.config == _config()


def test_live_keys_apply_and_the_rest_is_refused_by_name() -> None:
    running = _config(mqtt={"topic_prefix": "xray/a"})
    wanted = _config(models={"detector": "/m/det2", "scorer": "/m/sc", "max_objects": 9},
                     mqtt={"topic_prefix": "xray/b", "health_interval_s": 7}, logging={"level": "debug"},
                     decide={"queue_depth": 3}, service={"stall_s": 12})
    plan = plan_reload(running, wanted)
    assert set(plan.applied) == {"models.detector", "models.scorer", "mqtt.health_interval_s", "logging.level",
                                 "service.stall_s"}
    assert plan.refused == (
        "reload: section 'models' changed and needs a restart (models.max_objects); it was not applied; "
        "applied: models.detector, models.scorer",
        "reload: section 'decide' changed and needs a restart (decide.queue_depth); it was not applied",
        "reload: section 'mqtt' changed and needs a restart (mqtt.topic_prefix); it was not applied; "
        "applied: mqtt.health_interval_s",
    )
    # What runs from now on: the live keys new, the refused ones as they were.
    cfg = plan.config
    assert cfg.models.detector.bundle == Path("/m/det2") and cfg.models.max_objects == running.models.max_objects
    assert cfg.mqtt.health_interval_s == 7 and cfg.mqtt.topic_prefix == "xray/a"
    assert cfg.decide == running.decide and cfg.logging.level == "debug" and cfg.service.stall_s == 12


def test_a_section_added_needs_a_restart() -> None:
    plan = plan_reload(_config(), _config(firmware={"port": "/dev/ttyUSB0"}))
    assert plan.refused == ("reload: section 'firmware' changed and needs a restart; it was not applied",)
    assert plan.config.firmware is None


def test_reloading_the_running_config_again_clears_the_refusal() -> None:
    running = _config()
    first = plan_reload(running, _config(decide={"workers": 1}))
    assert first.refused
    assert plan_reload(first.config, _config()).refused == ()


def _report(health: Health) -> StatusReport:
    return StatusReport(
        state=health.state.value, reason=health.text, pid=1, written_wall=time.time(), uptime_s=3.0, versions={},
        models=["detector:det@1"], links={"firmware": "down"}, queues={"intake": 0}, in_flight=0, decisions={},
        late_results=0, stage_p50_ms={}, problems=list(health.problems), checked=[c.value for c in health.checked])


def test_every_output_of_a_degraded_health_names_each_problem() -> None:
    health = Health((Problem(Component.FIRMWARE_LINK, "firmware link down (no frame for 2.0 s)"),
                     Problem(Component.AUDIT, "audit store cannot write: read-only file system")),
                    (Component.PIPELINE, Component.FIRMWARE_LINK, Component.AUDIT))
    assert health.state is StatusState.DEGRADED
    assert health.text == "firmware link down (no frame for 2.0 s); audit store cannot write: read-only file system"
    report = _report(health)
    text = prometheus_text(report)
    assert "edge_up 0.5" in text and "edge_problems 2" in text
    assert 'edge_component_ok{component="pipeline"} 1' in text
    assert 'edge_component_ok{component="firmware_link"} 0' in text
    assert 'edge_component_ok{component="audit"} 0' in text
    shown = format_status(json.loads(json.dumps(asdict(report))))
    assert "state: degraded (firmware link down" in shown
    assert "  audit: audit store cannot write: read-only file system" in shown


def test_healthy_is_online_screening() -> None:
    health = Health((), (Component.PIPELINE,))
    assert health.state is StatusState.ONLINE and health.text == "screening"
    assert "edge_up 1.0" in prometheus_text(_report(health))


class _Link:
    """A firmware link as the health model reads it: ``is_up`` and its history's last transition."""

    def __init__(self, up: bool, reason: str | None) -> None:
        self.is_up = up
        self.history = SimpleNamespace(current=lambda: None if reason is None else SimpleNamespace(reason=reason))


def _runtime(*, pipeline: list[str] | None = None, link: _Link | None = None, models: str | None = None,
             notes: list[str] | None = None, outbox: str | None = None, broker: LinkHealthState | None = None,
             audit: str | None = None) -> Runtime:
    mqtt = None
    if broker is not None:
        mqtt = SimpleNamespace(problem=outbox, link=lambda: LinkHealth("mqtt", broker, "connection refused"))
    fake = SimpleNamespace(pipeline=SimpleNamespace(problems=lambda: list(pipeline or [])), link=link,
                           models=SimpleNamespace(current=SimpleNamespace(degraded=models)),
                           problems=list(notes or []), mqtt=mqtt, audit=SimpleNamespace(problem=audit))
    return cast(Runtime, fake)


def test_assess_is_online_only_when_every_configured_component_works() -> None:
    health = assess(_runtime())
    assert health.state is StatusState.ONLINE
    assert health.checked == (Component.PIPELINE, Component.MODELS, Component.CALIBRATION, Component.AUDIT,
                              Component.CONFIG)  # no link, no MQTT configured: not checked
    full = assess(_runtime(link=_Link(True, "handshake ok"), broker=LinkHealthState.UP))
    assert full.state is StatusState.ONLINE
    assert Component.FIRMWARE_LINK in full.checked and Component.OUTBOX in full.checked


def test_assess_names_every_problem_once_by_component() -> None:
    outbox = "outbox cannot write: disk full (/var/lib/edge/outbox.sqlite3)"
    health = assess(_runtime(
        pipeline=[f"MqttResultSink cannot store decisions: lane1-7: not stored ({outbox})"],
        link=_Link(False, "no frame for 2.0 s"), models="bundles unsigned", notes=["bundles unsigned", "no flat"],
        outbox=outbox, broker=LinkHealthState.DOWN, audit=None), ["reload: section 'mqtt' changed"])
    assert health.state is StatusState.DEGRADED
    assert [(p.component, p.reason) for p in health.problems] == [
        (Component.FIRMWARE_LINK, "firmware link down (no frame for 2.0 s); items scanned meanwhile are UNSCREENED"),
        (Component.MODELS, "bundles unsigned"),
        (Component.CALIBRATION, "no flat"),
        (Component.OUTBOX, outbox),
        (Component.MQTT_BROKER, "MQTT broker not connected (connection refused); records wait in the outbox"),
        (Component.CONFIG, "reload: section 'mqtt' changed"),
    ]
    assert health.ok(Component.AUDIT) and not health.ok(Component.OUTBOX)


def test_a_link_never_up_says_so() -> None:
    health = assess(_runtime(link=_Link(False, None)))
    assert health.text.startswith("firmware link not up yet")
