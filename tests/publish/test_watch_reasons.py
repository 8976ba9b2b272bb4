"""``edge watch`` shows why an item alarmed and what the lane did (issue 32 follow-up), against a real broker:
reason codes of ALARM items, item@1 payloads without reasons, ``action-1`` records (divert done, missed divert)
de-duplicated by their record id, operator verdicts and the box's acks."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import typer
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from publish_helpers import Broker
from typer.testing import CliRunner

from edge.actions.records import ActionKind, Outcome, action_payload
from edge.publish.payloads import decision_payload
from edge.publish.topics import RecordKind
from edge.records import AlarmReason, BoxXyxy, ItemMeta, ObjectResult, ReasonKind
from edge.schemas import validator
from edge.stages.decide import decide
from edge_tools.watch import watch

app = typer.Typer()
app.command()(watch)
META = ItemMeta("s1-000007", "s1", 7, 100.0, 101.0, 0.0, 1.0, 1e9)


def _alarm_with_reasons() -> dict[str, object]:
    signals = (AlarmReason(ReasonKind.KNOWN, "cutter", 0.7, 0.5), AlarmReason(ReasonKind.CLASSIFIER, None, 0.98, 0.97),
               AlarmReason(ReasonKind.ANOMALY, None, 0.2, 0.55))
    obj = ObjectResult(0, BoxXyxy(10, 10, 40, 40), "cutter", 0.7, 0.2, 0.55, False,
                       ((10.0, 10.0), (40.0, 10.0), (40.0, 40.0)), signals=signals)
    body = decision_payload(decide(META, [obj], 200.0, 2.0), "hub", RecordKind.ALARM, None, None, None)
    validator("xray-edge/alarm@2").validate(body)
    return body


def _item_v1() -> dict[str, object]:
    """An ALARM item as a box from before issue 32 published it (item@1: no reasons anywhere)."""
    obj = ObjectResult(0, BoxXyxy(10, 10, 40, 40), None, 0.7, 0.9, 0.55, False, ((10.0, 10.0), (40.0, 10.0)),
                       signals=(AlarmReason(ReasonKind.ANOMALY, None, 0.9, 0.55),))
    meta = ItemMeta("s1-000008", "s1", 8, 100.0, 101.0, 0.0, 1.0, 1e9)
    body = decision_payload(decide(meta, [obj], 200.0, 2.0), "hub", RecordKind.ITEM, None, None, None)
    body.pop("reasons")
    for o in body["objects"]:  # type: ignore[attr-defined]
        for key in ("reasons", "classifier_score", "classifier_threshold"):
            o.pop(key, None)
    body["schema"], body["schema_version"] = "xray-edge/item@1", 1
    validator("xray-edge/item@1").validate(body)
    return body


def _publish(port: int) -> None:
    time.sleep(1.0)  # let watch subscribe first
    raw = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    raw.connect("127.0.0.1", port)
    raw.loop_start()

    def send(topic: str, body: object, record_id: str | None = None) -> None:
        props = None
        if record_id is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("record_id", record_id)]
        raw.publish(f"xray/hub/s1/{topic}", json.dumps(body).encode(), qos=1, properties=props).wait_for_publish(2)

    send("alarms", _alarm_with_reasons())
    send("items", _item_v1())
    done = action_payload("rec-7", "s1-000007", ActionKind.DIVERT, Outcome.DONE, "gate 2", 201.0)
    missed = action_payload("rec-9", "s1-000009", ActionKind.DIVERT, Outcome.MISSED_DIVERT, "parcel gone", 202.0)
    send("actions", done, "act-1")
    send("actions", done, "act-1")  # a redelivery: printed once
    send("actions", missed, "act-2")
    verdict = {"schema": "verdict-1", "verdict_id": "0b5e7c1a-3d1e-4f5a-9c1e-2f3a4b5c6d7e",
               "record_id": "5f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f", "item_id": "s1-000007",
               "verdict": "threat_confirmed", "operator": "alice", "role": "operator", "decided_wall": 203.0,
               "console_id": "cr1"}
    send("verdicts", verdict)
    send("verdicts/ack", {"schema": "verdict-ack-1", "verdict_id": verdict["verdict_id"], "stored": True,
                          "error": None})
    raw.disconnect()
    raw.loop_stop()


def test_watch_shows_reasons_actions_and_verdicts(broker: Broker, tmp_path: Path) -> None:
    publisher = threading.Thread(target=_publish, args=(broker.port,))
    publisher.start()
    result = CliRunner().invoke(app, ["--port", str(broker.port), "--prefix", "xray/hub/+", "--count", "7",
                                      "--duration", "15"])
    publisher.join()
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("edge watch:")]
    by_kind: dict[str, list[str]] = {}
    for line in lines:
        by_kind.setdefault(line.split()[1], []).append(line)
    assert sorted(by_kind) == ["ACK", "ACTION", "ALARM", "ITEM", "VERDICT"], result.output
    alarm = by_kind["ALARM"][0]
    assert "ALARM      s1-000007 [classifier, known:cutter] " in alarm, alarm
    item = by_kind["ITEM"][0]
    assert "s1-000008" in item and "[" not in item  # item@1: no reasons, and no crash
    actions = by_kind["ACTION"]
    assert len(actions) == 2, result.output  # the redelivered action is dropped
    assert "divert:done" in actions[0] and "s1-000007" in actions[0] and "gate 2" in actions[0]
    assert "divert:missed_divert" in actions[1] and "s1-000009" in actions[1]
    assert "THREAT_CONFIRMED" in by_kind["VERDICT"][0] and "alice (operator)" in by_kind["VERDICT"][0]
    assert "stored" in by_kind["ACK"][0]
    assert "dropped 1 redelivered record" in result.output
