"""The MQTT sink's parts on their own: record building without a broker or a disk, and the one health timer."""

from __future__ import annotations

import json
import time
from pathlib import Path

from publish_helpers import Broker, Collector, make_decision

from edge.config.mqtt import MqttConfig
from edge.config.site import SiteConfig
from edge.ports import ResultSink
from edge.publish import HealthSnapshot, LinkHealth, LinkHealthState, MqttSink, OutboxBacklog, StatusState
from edge.publish.compose import decision_records, health_record, status_message
from edge.publish.health import StageLatency
from edge.publish.topics import RecordKind, Topics
from edge.schemas import validator

SITE = SiteConfig(site_id="hub", scanner_id="s1")
TOPICS = Topics.for_site("hub", "s1")


def test_a_decision_becomes_alarm_item_and_image_records_in_that_order() -> None:
    cfg = MqttConfig(qos=2)
    jpeg = b"0123456789"  # under the cap: passed on by its length alone, never decoded
    records = decision_records(make_decision(0, overlay=jpeg), SITE, TOPICS, cfg, now_wall=123.0)
    assert [r.kind for r in records] == [RecordKind.ALARM, RecordKind.ITEM, RecordKind.IMAGE]
    assert [r.topic for r in records] == ["xray/hub/s1/alarms", "xray/hub/s1/items", "xray/hub/s1/images/s1-000000"]
    assert all(r.qos == 2 and r.created_wall == 123.0 and r.item_id == "s1-000000" for r in records)
    item = json.loads(records[1].payload)
    validator(item["schema"]).validate(item)
    assert item["image"] == {"topic": "xray/hub/s1/images/s1-000000", "bytes": 10}
    assert json.loads(records[0].payload)["item_record_id"] == records[1].record_id
    # the same decision gives the same records (what makes a retry after a storage fault idempotent)
    again = decision_records(make_decision(0, overlay=jpeg), SITE, TOPICS, cfg, now_wall=123.0)
    assert [r.record_id for r in again] == [r.record_id for r in records]
    clear = decision_records(make_decision(1), SITE, TOPICS, cfg, now_wall=1.0)
    assert [r.kind for r in clear] == [RecordKind.ITEM]


def test_health_and_status_records_are_built_without_io() -> None:
    broker = LinkHealth("mqtt", LinkHealthState.UP, "", 1.0)
    latency = StageLatency("mqtt_publish", 5.0, 9.0, 12.0, 40)
    record = health_record(HealthSnapshot(uptime_s=7.0), SITE, TOPICS, 1, 3.0, (StatusState.ONLINE, "screening"),
                           broker, OutboxBacklog(1, 2, 3, 0, 4.0), latency, now_wall=50.0)
    body = json.loads(record.payload)
    validator("xray-edge/health@1").validate(body)
    assert record.kind is RecordKind.HEALTH and record.expiry_s == 10  # two intervals, at least 10 s
    assert body["latencies"] == [{"stage": "mqtt_publish", "p50_ms": 5.0, "p99_ms": 9.0, "max_ms": 12.0,
                                  "count": 40}]
    assert body["links"] == [{"name": "mqtt", "state": "up", "reason": "", "since_wall": 1.0}]
    payload, rid = status_message(SITE, "edge-hub-s1", StatusState.OFFLINE, "last will", 9.0)
    status = json.loads(payload)
    validator("xray-edge/status@1").validate(status)
    assert status["record_id"] == rid and status["state"] == "offline"


def test_the_sink_is_a_result_sink_and_its_one_health_timer_follows_a_reload(broker: Broker, tmp_path: Path) -> None:
    col = Collector(broker.port, "xray/hub/s1/health", client_id="cr-timer").start()
    cfg = MqttConfig.model_validate({"port": broker.port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
                                     "keepalive_s": 5, "health_interval_s": 600,
                                     "outbox": {"path": tmp_path / "outbox.sqlite3"}})
    calls: list[float] = []

    def source() -> HealthSnapshot:
        calls.append(time.monotonic())
        return HealthSnapshot(uptime_s=float(len(calls)))

    sink = MqttSink(cfg, SITE)
    port: ResultSink = sink  # mypy checks the port; no adapter
    sink.health_source = source  # set after construction, as the service does
    sink.start()
    port.publish(make_decision(0))
    time.sleep(1.5)
    assert not calls  # 600 s interval: no record yet
    sink.set_health_interval(1.0)  # a reload: the next record follows the new interval at once
    assert col.wait_for(lambda: len(col.json_on("/health")) >= 2, 6)
    assert sink.close(5)
    assert [b["uptime_s"] for b in col.json_on("/health")[:2]] == [1.0, 2.0]
    col.stop()
