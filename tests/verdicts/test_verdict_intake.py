"""The box side of operator verdicts over a real Mosquitto: stored once beside the item with an OPERATOR TDR,
answered on .../verdicts/ack, delivered after the box was stopped (persistent session), bad ones answered with
an error and never a crash."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from publish_helpers import Broker, make_decision
from verdict_helpers import Box, Console, item_record_id, mqtt_config, verdict

from edge.config.site import SiteConfig
from edge.dicos import read_tdr
from edge.publish.topics import RecordKind
from edge.records import Verdict
from edge.verdicts import VerdictStore, verdict_schema

SITE = SiteConfig(site_id="hub", scanner_id="s1")


def _box(tmp_path: Path, broker: Broker, name: str = "box", **mqtt: object) -> Box:
    prefix = f"t/{name}/{tmp_path.name}/{time.time_ns()}"  # unique: other tests share brokers
    return Box(tmp_path / name / "audit", mqtt_config(broker.port, tmp_path / name, topic_prefix=prefix,
                                                      client_id=f"edge-{prefix}", **mqtt), SITE)


def _prefix(box: Box) -> str:
    assert box.mqtt.topic_prefix is not None
    return box.mqtt.topic_prefix


def test_a_verdict_delivered_twice_is_stored_once_with_an_operator_tdr(broker: Broker, tmp_path: Path) -> None:
    box = _box(tmp_path, broker).start()
    console = Console(broker.port, _prefix(box), client_id=f"console-{tmp_path.name}")
    try:
        assert box.audit is not None
        d = make_decision(5, scanner_id="s1")  # an ALARM
        box.audit.publish(d)
        body = verdict(item_record_id(SITE, d), d.item_id, "threat_confirmed")
        console.send(body)
        console.send(body)  # the console's outbox sent it again (no ack seen in time)
        acks = console.wait_acks(2)
        assert [(a["verdict_id"], a["stored"], a["error"]) for a in acks] == [(body["verdict_id"], True, None)] * 2
        assert all(a["schema"] == "verdict-ack-1" for a in acks)
        (stored,) = box.verdict_files(".json")
        assert stored.name == f"{d.item_id}.verdict-{body['verdict_id']}.json"
        assert stored.with_name(f"{d.item_id}.json").exists()  # beside the item's record
        saved = json.loads(stored.read_text())
        assert {k: saved[k] for k in body} == body and saved["received_wall"] >= body["decided_wall"]  # type: ignore[operator]
        (report_path,) = box.verdict_files(".tdr.dcs")
        report = read_tdr(report_path)
        assert report.tdr_type == "OPERATOR" and report.alarm_decision == "ALARM" and report.operators == ("jdoe",)
        machine = read_tdr(stored.with_name(f"{d.item_id}.tdr.dcs"))
        assert report.referenced_uids == (machine.sop_instance_uid,)
        assert report.study_instance_uid == machine.study_instance_uid
        assert [(rid, v.verdict_id) for rid, v in box.calls] == [(body["record_id"], body["verdict_id"])]  # once
        assert box.intake is not None and box.intake.store.duplicates == 1 and box.intake.problem is None
    finally:
        console.close()
        box.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_verdict_sent_while_the_box_is_stopped_arrives_after_restart(broker: Broker, tmp_path: Path,
                                                                       protocol: str) -> None:
    """Box stops; the console publishes; the broker itself restarts; the box starts again: the verdict is
    stored and answered. (Fails without the persistent session: nothing is queued for a clean one.)"""
    box = _box(tmp_path, broker, protocol=protocol).start()
    console = Console(broker.port, _prefix(box), client_id=f"console-{tmp_path.name}")
    try:
        assert box.audit is not None
        d = make_decision(11, scanner_id="s1")  # UNSCREENED
        box.audit.publish(d)
        box.stop()
        body = verdict(item_record_id(SITE, d), d.item_id, "sent_to_search")
        console.send(body)
        broker.stop()  # SIGTERM: Mosquitto saves sessions and queued messages
        broker.start()
        box.start()
        acks = console.wait_acks(1, timeout=15)
        assert acks[0]["verdict_id"] == body["verdict_id"] and acks[0]["stored"] is True
        (stored,) = box.verdict_files(".json")
        assert json.loads(stored.read_text())["verdict_id"] == body["verdict_id"]
        assert [v.verdict_id for _, v in box.calls] == [body["verdict_id"]]
    finally:
        console.close()
        box.stop()


def test_bad_verdicts_are_answered_with_an_error_and_the_intake_goes_on(broker: Broker, tmp_path: Path) -> None:
    box = _box(tmp_path, broker).start()
    console = Console(broker.port, _prefix(box), client_id=f"console-{tmp_path.name}")
    try:
        assert box.audit is not None
        d = make_decision(5, scanner_id="s1")
        box.audit.publish(d)
        rid = item_record_id(SITE, d)
        bad: list[tuple[dict[str, object] | bytes, str]] = [
            (b"{not json", "not JSON"),
            (b"[1, 2]", "not a verdict-1 message"),
            ({k: v for k, v in verdict(rid, d.item_id).items() if k != "operator"}, "'operator' is a required"),
            (verdict(rid, d.item_id, kind="maybe"), "verdict: 'maybe' is not one of"),
            (verdict(rid, d.item_id, verdict_id="../../etc/passwd"), "verdict_id: '../../etc/passwd' does not match"),
            (verdict(rid, "../x"), "item_id: '../x' does not match"),
            (verdict(rid, d.item_id, schema="verdict-2"), "schema: 'verdict-1' was expected"),
            (verdict("0b4e7f52-3c1d-4a8e-9f00-1a2b3c4d5e6f", d.item_id), "no item record"),
            (verdict(item_record_id(SITE, d, RecordKind.ALARM), d.item_id), "item_record_id"),  # the alarm's id
        ]
        for body, _ in bad:
            console.send(body)
        good = verdict(rid, d.item_id)
        console.send(good)
        acks = console.wait_acks(len(bad) + 1)
        for ack, (body, expected) in zip(acks, bad, strict=False):
            assert ack["stored"] is False and expected in str(ack["error"]), (ack, expected)
            want = body.get("verdict_id") if isinstance(body, dict) else None
            assert ack["verdict_id"] == want
        assert acks[-1] == {"schema": "verdict-ack-1", "verdict_id": good["verdict_id"], "stored": True,
                            "error": None}
        assert [p.name for p in box.verdict_files(".json")] == [f"{d.item_id}.verdict-{good['verdict_id']}.json"]
        assert box.intake is not None and box.intake.store.refused == len(bad)
    finally:
        console.close()
        box.stop()


def test_a_failing_callback_leaves_the_verdict_stored(broker: Broker, tmp_path: Path) -> None:
    def broken(record_id: str, v: object) -> None:
        raise RuntimeError("firmware refused")

    box = _box(tmp_path, broker).start(callbacks=(broken,))
    console = Console(broker.port, _prefix(box), client_id=f"console-{tmp_path.name}")
    try:
        assert box.audit is not None
        d = make_decision(1, scanner_id="s1")  # CLEAR: an operator may judge any item
        box.audit.publish(d)
        body = verdict(item_record_id(SITE, d), d.item_id, "cleared")
        console.send(body)
        (ack,) = console.wait_acks(1)
        assert ack["stored"] is True and len(box.verdict_files()) == 1
        report = read_tdr(box.verdict_files(".tdr.dcs")[0])
        assert report.alarm_decision == "CLEAR" and report.verdict is Verdict.CLEAR
    finally:
        console.close()
        box.stop()


def test_the_schema_file_is_the_contract() -> None:
    """The shipped schema accepts the contract's example and refuses what the contract rules out."""
    from jsonschema import Draft202012Validator

    schema = verdict_schema()
    Draft202012Validator.check_schema(schema)
    v = Draft202012Validator(schema)
    ok = verdict("0b4e7f52-3c1d-4a8e-9f00-1a2b3c4d5e6f", "hub-1-000001")
    assert v.is_valid(ok) and v.is_valid({**ok, "note": None}) and v.is_valid({k: ok[k] for k in ok if k != "note"})
    assert v.is_valid({**ok, "role": "supervisor"}) and v.is_valid({**ok, "extra": 1})  # extra fields ignored
    for broken in ({**ok, "role": "admin"}, {**ok, "decided_wall": "yesterday"}, {**ok, "verdict_id": "x"},
                   {**ok, "operator": ""}):
        assert not v.is_valid(broken), broken
    ack = Draft202012Validator(schema["$defs"]["ack"])
    assert ack.is_valid({"schema": "verdict-ack-1", "verdict_id": None, "stored": False, "error": "not JSON"})


def test_store_survives_a_bug_and_says_so(tmp_path: Path) -> None:
    """An unexpected error inside the store becomes an error answer, not an exception on paho's thread."""
    from edge.config.audit import AuditConfig
    from edge.sinks.audit import AuditStore

    class Exploding(AuditStore):
        def find_record(self, record_id: str, item_id: str) -> None:  # type: ignore[override]
            raise KeyError("index gone")

    audit = Exploding(AuditConfig(directory=tmp_path / "audit"), "hub")
    try:
        ack = VerdictStore(audit).handle(json.dumps(verdict("0b4e7f52-3c1d-4a8e-9f00-1a2b3c4d5e6f", "i")).encode())
    finally:
        audit.close(1.0)
    assert ack.stored is False and ack.error is not None and "internal error: KeyError" in ack.error


def test_service_builds_the_intake_and_health_names_it(tmp_path: Path, broker: Broker) -> None:
    """The wiring: mqtt + verdicts enabled gives the runtime an intake whose problems health reports."""
    from edge.config.root import EdgeConfig
    from edge.runtime import build_verdicts
    from edge.sinks.audit import AuditStore

    base = {"site": {"site_id": "hub", "scanner_id": "s1"}, "models": {"detector": str(tmp_path)},
            "mqtt": {"port": broker.port, "outbox": {"path": str(tmp_path / "o.sqlite3")}}}
    try:
        cfg = EdgeConfig.model_validate(base)
    except Exception as exc:  # the models section's own rules: only the verdict wiring is under test here
        pytest.skip(f"cannot build a minimal config here: {exc}")
    audit = AuditStore(cfg.audit.model_copy(update={"directory": tmp_path / "audit"}), "hub")
    try:
        intake = build_verdicts(cfg, audit)
        assert intake is not None and intake.topic == "xray/hub/s1/verdicts"
        assert intake.client_id == "edge-hub-s1-verdicts"
        assert intake.problem == "verdict subscriber not connected yet"
        off = cfg.model_copy(update={"verdicts": cfg.verdicts.model_copy(update={"enabled": False})})
        assert build_verdicts(off, audit) is None
        no_mqtt = cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(update={"enabled": False})})
        assert build_verdicts(no_mqtt, audit) is None
    finally:
        audit.close(1.0)


def test_a_full_disk_is_answered_not_stored_and_shown_then_recovers(tmp_path: Path) -> None:
    """The audit store's disk is full: the verdict is answered stored=false with the reason and health shows it;
    the console sends it again once there is room and it is stored (once)."""
    import subprocess

    from edge.config.audit import AuditConfig
    from edge.sinks.audit import AuditStore

    where = tmp_path / "fs"
    where.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1048576", "tmpfs", str(where)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk case (needs root): {mount.stderr.strip()}")
    audit = AuditStore(AuditConfig(directory=where / "audit", min_free_mb=0), "hub")
    try:
        d = make_decision(5, scanner_id="s1")
        audit.publish(d)
        store = VerdictStore(audit)
        body = json.dumps(verdict(item_record_id(SiteConfig(site_id="hub", scanner_id="s1"), d), d.item_id)).encode()
        filler = where / "filler"
        with open(filler, "wb", buffering=0) as fh:
            for size in (65536, 512, 1):
                while True:
                    try:
                        fh.write(b"\0" * size)
                    except OSError:
                        break
        ack = store.handle(body)
        assert ack.stored is False and ack.error is not None and "cannot be stored" in ack.error
        assert store.problem is not None
        assert not list((where / "audit").glob("*/*.verdict-*"))  # nothing half-written
        filler.unlink()
        assert store.handle(body).stored is True and store.problem is None
        assert store.handle(body).duplicate is True
        assert len(list((where / "audit").glob("*/*.verdict-*.json"))) == 1
    finally:
        audit.close(1.0)
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
