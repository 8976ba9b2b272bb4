"""``edge watch`` through typer's CliRunner against a real broker: lines, de-duplication, images, --help."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import typer
from paho.mqtt.enums import CallbackAPIVersion
from publish_helpers import Broker, make_decision
from typer.testing import CliRunner

from edge.config.mqtt import MqttConfig
from edge.config.site import SiteConfig
from edge.publish import MqttSink
from edge_tools.watch import watch

app = typer.Typer()
app.command()(watch)


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and "edge watch --host" in result.output and "--save-dir" in result.output


def test_unreachable_broker_is_reported() -> None:
    from publish_helpers import free_port

    result = CliRunner().invoke(app, ["--port", str(free_port()), "--duration", "1"])
    assert result.exit_code == 1
    assert "connection refused" in result.output


def test_watch_prints_each_record_once_and_saves_overlays(broker: Broker, tmp_path: Path) -> None:
    ok, jpeg = cv2.imencode(".jpg", np.full((40, 60, 3), 128, np.uint8))
    assert ok
    cfg = MqttConfig.model_validate({"port": broker.port, "reconnect_min_s": 0.1,
                                     "outbox": {"path": tmp_path / "outbox.sqlite3"}})

    def publish_later() -> None:
        time.sleep(1.0)  # let watch subscribe first
        with MqttSink(cfg, SiteConfig(site_id="hub", scanner_id="s1")) as sink:
            sink.publish_decision(make_decision(0, overlay=jpeg.tobytes()))
            sink.publish_decision(make_decision(1))
            assert sink.flush(5)
            raw = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            raw.connect("127.0.0.1", broker.port)
            raw.loop_start()
            alarm = json.dumps(_alarm_body(sink)).encode()
            raw.publish("xray/hub/s1/alarms", alarm, qos=1).wait_for_publish(2)  # a redelivery
            raw.publish("xray/hub/s1/items", b"{not json", qos=1).wait_for_publish(2)
            raw.disconnect()
            raw.loop_stop()

    publisher = threading.Thread(target=publish_later)
    publisher.start()
    save = tmp_path / "overlays"
    result = CliRunner().invoke(app, ["--port", str(broker.port), "--prefix", "xray/hub/+", "--save-dir",
                                      str(save), "--count", "6", "--duration", "15"])
    publisher.join()
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("edge watch:")]
    kinds = sorted(line.split()[1] for line in lines)
    assert kinds == ["ALARM", "CORRUPT", "IMAGE", "ITEM", "ITEM", "STATUS"], result.output
    alarm_line = next(line for line in lines if line.split()[1] == "ALARM")
    assert "hub/s1 ALARM" in alarm_line and "s1-000000" in alarm_line
    assert (save / "s1-000000.jpg").read_bytes() == jpeg.tobytes()
    assert "dropped 1 redelivered record" in result.output


def _alarm_body(sink: MqttSink) -> Mapping[str, object]:
    from edge.publish.payloads import decision_payload
    from edge.publish.topics import RecordKind

    d = make_decision(0)
    return decision_payload(d, sink.site.site_id, RecordKind.ALARM, sink.topics.image(d.item_id), 1, None)
