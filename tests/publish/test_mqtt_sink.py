"""MqttSink against a real Mosquitto started by the test: topics, MQTT 5 properties, 3.1.1, outage, health."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from publish_helpers import Broker, Collector, make_decision

from edge.config.mqtt import MqttConfig
from edge.config.site import SiteConfig
from edge.errors import PublishError
from edge.publish import HealthSnapshot, LinkHealthState, MqttSink, QueueDepth, StatusState
from edge.schemas import validator

SITE = SiteConfig(site_id="hub", scanner_id="s1")
PREFIX = "xray/hub/s1"


def config(port: int, tmp_path: Path, **kw: object) -> MqttConfig:
    base: dict[str, object] = {"port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "keepalive_s": 5,
                               "outbox": {"path": tmp_path / "outbox.sqlite3"}}
    return MqttConfig.model_validate({**base, **kw})


def user_props(msg: mqtt.MQTTMessage) -> dict[str, str]:
    return dict(getattr(msg.properties, "UserProperty", []) or [])


def big_overlay() -> bytes:
    rng = np.random.default_rng(3)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 256, (700, 900, 3), dtype=np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, 97])
    assert ok
    return buf.tobytes()


def test_decisions_reach_items_alarms_and_images_with_mqtt5_properties(broker: Broker, tmp_path: Path) -> None:
    col = Collector(broker.port, f"{PREFIX}/#", client_id="cr-props").start()
    overlay = big_overlay()
    cfg = config(broker.port, tmp_path, image_max_bytes=50_000)
    sink = MqttSink(cfg, SITE).start()
    for i in range(12):
        sink.publish_decision(make_decision(i, overlay=overlay if i in (0, 1) else None))
    sink.publish_health(HealthSnapshot(uptime_s=3.0, queues=(QueueDepth("frames", 2, 8),)))
    assert sink.flush(10)
    assert sink.link().state is LinkHealthState.UP
    assert col.wait_for(lambda: len(col.json_on("/items")) == 12 and col.json_on("/health"), 5)

    msgs = col.snapshot()
    items = [m for m in msgs if m.topic == f"{PREFIX}/items"]
    alarms = [m for m in msgs if m.topic == f"{PREFIX}/alarms"]
    images = [m for m in msgs if m.topic.startswith(f"{PREFIX}/images/")]
    alarm_items = sorted(json.loads(m.payload)["item_id"] for m in alarms)
    assert alarm_items == ["s1-000000", "s1-000005", "s1-000010", "s1-000011"]
    for m in items + alarms:
        body = json.loads(m.payload)
        validator(body["schema"]).validate(body)
        assert getattr(m.properties, "ContentType", None) == "application/json"
        assert user_props(m)["record_id"] == body["record_id"]
        assert user_props(m)["schema"] == body["schema"]
    assert sorted(m.topic for m in images) == [f"{PREFIX}/images/s1-000000", f"{PREFIX}/images/s1-000001"]
    for m in images:
        assert getattr(m.properties, "ContentType", None) == "image/jpeg"
        assert len(m.payload) <= 50_000 < len(overlay)
        assert cv2.imdecode(np.frombuffer(m.payload, np.uint8), cv2.IMREAD_COLOR) is not None
    item0 = next(json.loads(m.payload) for m in items if json.loads(m.payload)["item_id"] == "s1-000000")
    assert item0["image"]["topic"] == f"{PREFIX}/images/s1-000000"
    assert item0["image"]["bytes"] == len(next(m.payload for m in images if m.topic.endswith("s1-000000")))
    assert "reduced" in item0["image_note"]

    health = next(m for m in msgs if m.topic == f"{PREFIX}/health")
    hbody = json.loads(health.payload)
    validator("xray-edge/health@1").validate(hbody)
    assert 0 < getattr(health.properties, "MessageExpiryInterval", 0) <= 2 * cfg.health_interval_s
    assert any(link["name"] == "mqtt" and link["state"] == "up" for link in hbody["links"])

    # A late subscriber sees the retained status; after close it says offline (shutdown), not the will.
    late = Collector(broker.port, f"{PREFIX}/status", client_id="cr-late").start()
    assert late.wait_for(lambda: late.json_on("/status"), 3)
    assert late.json_on("/status")[-1]["state"] == "online"
    assert sink.close(5)
    assert late.wait_for(lambda: late.json_on("/status")[-1]["state"] == "offline", 3)
    status = late.json_on("/status")[-1]
    validator("xray-edge/status@1").validate(status)
    assert status["reason"] == "shutdown"
    late.stop()
    col.stop()


def test_protocol_311_fallback_publishes_without_properties(broker: Broker, tmp_path: Path) -> None:
    col = Collector(broker.port, f"{PREFIX}/#", client_id="cr-311", protocol=mqtt.MQTTv311).start()
    with MqttSink(config(broker.port, tmp_path, protocol="3.1.1"), SITE) as sink:
        for i in range(6):
            sink.publish_decision(make_decision(i))
        assert sink.flush(10)
    assert col.wait_for(lambda: len(col.json_on("/items")) == 6, 5)
    alarms = col.json_on("/alarms")
    assert [a["item_id"] for a in alarms] == ["s1-000000", "s1-000005"]
    for a in alarms:
        validator("xray-edge/alarm@2").validate(a)
    col.stop()


def test_broker_outage_keeps_records_until_the_broker_is_back(broker: Broker, tmp_path: Path) -> None:
    col = Collector(broker.port, f"{PREFIX}/#", client_id="cr-outage").start()
    sink = MqttSink(config(broker.port, tmp_path), SITE).start()
    assert col.wait_for(lambda: sink.link().state is LinkHealthState.UP, 5)
    broker.stop()
    assert col.wait_for(lambda: sink.link().state is LinkHealthState.DOWN, 5)
    for i in range(30):
        sink.publish_decision(make_decision(i))
    time.sleep(0.5)
    backlog = sink.backlog()
    assert (backlog.alarm, backlog.item) == (8, 30)  # 0,5,..,25 alarms + 11, 22 unscreened
    assert "connection refused" in sink.link().reason or "lost" in sink.link().reason
    broker.start()
    assert sink.flush(10), sink.backlog()
    assert col.wait_for(lambda: len({p["item_id"] for p in col.json_on("/items")}) == 30, 5)
    assert {p["item_id"] for p in col.json_on("/alarms")} == {
        f"s1-{i:06d}" for i in range(30) if i % 5 == 0 or i % 11 == 0}
    sink.close(2)
    col.stop()


def test_health_source_is_polled_every_interval(broker: Broker, tmp_path: Path) -> None:
    col = Collector(broker.port, f"{PREFIX}/health", client_id="cr-health").start()
    calls: list[float] = []

    def source() -> HealthSnapshot:
        calls.append(time.time())
        return HealthSnapshot(uptime_s=float(len(calls)))

    sink = MqttSink(config(broker.port, tmp_path, health_interval_s=1.0), SITE, health_source=source).start()
    sink.set_status(StatusState.DEGRADED, "camera lost")
    assert col.wait_for(lambda: len(col.json_on("/health")) >= 2, 4)
    sink.close(2)
    bodies = col.json_on("/health")
    assert [b["uptime_s"] for b in bodies[:2]] == [1.0, 2.0]
    assert bodies[0]["status"] == "degraded" and bodies[0]["status_reason"] == "camera lost"
    col.stop()


def test_a_record_paho_refuses_once_is_sent_again_not_skipped(broker: Broker, tmp_path: Path) -> None:
    """paho can refuse a publish (e.g. MQTT_ERR_QUEUE_SIZE); the record stays in the outbox and must be sent on
    the next round (the publisher once moved past it, so it sat on disk until a restart and flush() never
    succeeded)."""
    col = Collector(broker.port, f"{PREFIX}/items", client_id="cr-refused").start()
    sink = MqttSink(config(broker.port, tmp_path), SITE)
    send = sink.publisher._send_record
    refused: list[str] = []

    def refuse_first(stored: Any, expired: list[int]) -> int | None:
        if stored.record.item_id == "s1-000002" and not refused:
            refused.append(stored.record.record_id)
            raise PublishError("paho refused it: queue full")
        return send(stored, expired)

    sink.publisher._send_record = refuse_first  # type: ignore[method-assign]
    sink.start()
    for i in range(4):
        sink.publish_decision(make_decision(i))
    assert sink.flush(10), sink.backlog()
    assert refused
    want = {f"s1-{i:06d}" for i in range(4)}
    assert col.wait_for(lambda: {p["item_id"] for p in col.json_on("/items")} == want, 5)
    sink.close(2)
    col.stop()
