"""The service end to end (issue 33's TDR per item, issue 34's box side of verdicts): virtual scanner → real
OpenVINO bundles → every decision's DICOS report beside its record; a verdict published on the real broker for a
record the service published is stored with an OPERATOR report, answered, and handed to the action hook."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import load_config
from edge.dicos import read_tdr
from edge.health import Component
from edge.records import Verdict
from edge.runtime import build_runtime
from edge.service import Service
from tests.service.conftest import Assets
from tests.service.service_helpers import write_config


def test_every_decision_has_a_tdr_and_a_verdict_comes_back(tmp_path: Path, assets: Assets) -> None:
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    received: dict[str, list[dict[str, object]]] = {"items": [], "ack": []}

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/items"):
            received["items"].append(json.loads(msg.payload))
        elif msg.topic.endswith("/verdicts/ack"):
            received["ack"].append(json.loads(msg.payload))

    console = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    console.on_message = on_message
    console.connect("127.0.0.1", 1883)
    console.subscribe([(f"{prefix}/items", 1), (f"{prefix}/verdicts/ack", 1)])
    console.loop_start()
    cfg_path = write_config(tmp_path / "edge.yaml", detector=assets.detector, scorer=assets.scorer,
                            flat=assets.flat, energy=assets.energy, state=tmp_path, items=4,
                            mqtt=f"host: 127.0.0.1\n  port: 1883\n  topic_prefix: {prefix}\n"
                                 f"  client_id: edge-{prefix}")
    runtime = build_runtime(load_config(cfg_path))
    assert runtime.verdicts is not None  # on by default with MQTT
    actions: list[tuple[str, str]] = []
    runtime.verdicts.add_callback(lambda record_id, v: actions.append((record_id, v.verdict)))
    service = Service(cfg_path, runtime)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert runtime.pipeline.wait_idle(90), "pipeline did not finish its items in time"
        assert runtime.verdicts.wait_subscribed(10)
        deadline = time.monotonic() + 10
        while len(received["items"]) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        items = {str(r["item_id"]): r for r in received["items"]}
        assert len(items) == 4

        # a DICOS report beside every record, saying what the record says
        for item_id, record in items.items():
            (json_path,) = (tmp_path / "audit").glob(f"*/{item_id}.json")
            report = read_tdr(json_path.with_name(f"{item_id}.tdr.dcs"))
            assert report.tdr_type == "MACHINE" and report.item_id == item_id
            assert report.verdict is Verdict(str(record["verdict"]))
            assert report.total_processing_time_ms == pytest.approx(record["latency_ms"], rel=1e-6)  # FL: float32
            models = record["models"]
            assert isinstance(models, list)
            assert {(m.role, m.name, m.version) for m in report.algorithm.models} == {
                (m["role"], m["name"], m["version"]) for m in models}
            anomalous = [o for o in record["objects"] if o["anomalous"]]  # type: ignore[union-attr, index]
            assert len(report.objects) == len(anomalous)

        # an operator's verdict on the first record comes back through the real broker
        first = items["lane1-1"]
        body = {"schema": "verdict-1", "verdict_id": str(uuid.uuid4()), "record_id": first["record_id"],
                "item_id": "lane1-1", "verdict": "cleared", "operator": "jdoe", "role": "supervisor",
                "decided_wall": time.time(), "console_id": "console-1"}
        console.publish(f"{prefix}/verdicts", json.dumps(body), qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 10
        while not received["ack"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received["ack"] == [{"schema": "verdict-ack-1", "verdict_id": body["verdict_id"], "stored": True,
                                    "error": None}]
        (verdict_path,) = (tmp_path / "audit").glob(f"*/lane1-1.verdict-{body['verdict_id']}.json")
        operator = read_tdr(verdict_path.with_name(verdict_path.name.replace(".json", ".tdr.dcs")))
        assert operator.tdr_type == "OPERATOR" and operator.alarm_decision == "CLEAR"
        assert actions == [(first["record_id"], "cleared")]
        assert service.health().ok(Component.VERDICTS)
    finally:
        service.request_stop()
        thread.join(timeout=30)
        console.loop_stop()
        console.disconnect()
    assert not thread.is_alive()
