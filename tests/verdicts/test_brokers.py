"""The shipped Mosquitto examples (docs/examples/mosquitto) on real brokers: the ACL keeps the console to verdicts
and each box to its own topics; a box's local broker bridges to the control room and back, and a restart of
either broker loses no decision and no verdict."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from publish_helpers import Collector, make_decision
from verdict_helpers import (
    EXAMPLES,
    Box,
    ConfiguredBroker,
    Console,
    configured_broker,
    item_record_id,
    mosquitto_passwd,
    mqtt_config,
    verdict,
)

from edge.config.site import SiteConfig
from edge.publish import MqttSink

SITE = SiteConfig(site_id="hub-7", scanner_id="line-2")
PREFIX = "xray/hub-7/line-2"
PASSWORDS = {"console": "console-pw", "box-hub-7-line-2": "box-pw", "box-hub-7-line-3": "box3-pw"}
TEST_OWNED = ("listener", "persistence_location", "password_file", "acl_file", "cafile", "certfile", "keyfile",
              "bridge_cafile", "address", "remote_password")
"""Keys of the examples the test sets itself (ports, paths, TLS files, the bridge's peer and secret)."""


def example_lines(name: str, **values: str) -> list[str]:
    """The example's settings, minus comments and the keys the test owns, plus ``values`` for those keys."""
    lines = []
    for raw in (EXAMPLES / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.split()[0] in TEST_OWNED:
            continue
        lines.append(line)
    return [*lines, *(f"{k} {v}" for k, v in values.items())]


def control_room(tmp_path: Path, port: int | None = None) -> ConfiguredBroker:
    passwd = tmp_path / "passwd"
    if not passwd.exists():
        mosquitto_passwd(passwd, PASSWORDS)
    return configured_broker(tmp_path / "control-room", example_lines(
        "control-room.conf", password_file=str(passwd), acl_file=str(EXAMPLES / "acl")), port)


def _client(port: int, user: str | None, name: str) -> tuple[mqtt.Client, list[mqtt.MQTTMessage], list[int]]:
    """A client that keeps what it receives and the PUBACK reason codes of what it publishes."""
    got: list[mqtt.MQTTMessage] = []
    acks: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{time.time_ns()}", protocol=mqtt.MQTTv5)
    if user is not None:
        client.username_pw_set(user, PASSWORDS[user])
    client.on_message = lambda c, u, m: got.append(m)
    client.on_publish = lambda c, u, mid, rc, props: acks.append(rc.value)
    connected = threading.Event()
    refused: list[object] = []
    client.on_connect = lambda c, u, f, rc, p: (refused.append(rc) if rc.is_failure else connected.set())
    client.connect("127.0.0.1", port, keepalive=5)
    client.loop_start()
    deadline = time.monotonic() + 5
    while not connected.is_set() and not refused and time.monotonic() < deadline:
        time.sleep(0.02)
    if refused or not connected.is_set():
        client.loop_stop()
        raise ConnectionRefusedError(str(refused))
    return client, got, acks


def _wait(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(predicate())  # type: ignore[operator]


def test_acl_keeps_the_console_to_verdicts_and_each_box_to_its_own_topics(tmp_path: Path) -> None:
    broker = control_room(tmp_path)
    clients: list[mqtt.Client] = []
    try:
        console, console_got, console_acks = _client(broker.port, "console", "console")
        box, box_got, box_acks = _client(broker.port, "box-hub-7-line-2", "box")
        clients += [console, box]
        console.subscribe("xray/#", qos=1)  # the console reads every box
        box.subscribe(f"{PREFIX}/verdicts", qos=1)
        time.sleep(0.3)

        def publish(client: mqtt.Client, acks: list[int], topic: str) -> int:
            before = len(acks)
            sender = "console" if client is console else "box"
            client.publish(topic, json.dumps({"from": sender}).encode(), qos=1)
            assert _wait(lambda: len(acks) > before, 5), topic
            return acks[before]

        refused = [
            (console, console_acks, f"{PREFIX}/items"),  # the console may not forge a decision
            (console, console_acks, f"{PREFIX}/alarms"),
            (console, console_acks, f"{PREFIX}/verdicts/ack"),
            (console, console_acks, f"{PREFIX}/status"),
            (box, box_acks, "xray/hub-7/line-3/items"),  # a box may not speak for another
            (box, box_acks, f"{PREFIX}/verdicts"),  # ... nor forge an operator's verdict
        ]
        allowed = [
            (console, console_acks, f"{PREFIX}/verdicts"),
            (box, box_acks, f"{PREFIX}/items"),
            (box, box_acks, f"{PREFIX}/verdicts/ack"),
        ]
        codes = {(c is console, topic): publish(c, acks, topic) for c, acks, topic in refused + allowed}
        time.sleep(0.5)
        delivered = {(json.loads(m.payload)["from"] == "console", m.topic) for m in console_got + box_got}
        for c, _, topic in refused:
            key = (c is console, topic)
            assert key not in delivered, key
            assert codes[key] == 0x87, (key, codes[key])  # MQTT 5 PUBACK: Not authorized
        for c, _, topic in allowed:
            key = (c is console, topic)
            assert key in delivered and codes[key] == 0, (key, codes[key])
        assert [m.topic for m in box_got] == [f"{PREFIX}/verdicts"]  # the box reads its verdicts only

        for user in (None, "nobody"):  # anonymous and unknown users are refused
            with pytest.raises(ConnectionRefusedError):
                if user is None:
                    _client(broker.port, None, "anonymous")
                else:
                    PASSWORDS[user] = "x"
                    try:
                        _client(broker.port, user, "nobody")
                    finally:
                        del PASSWORDS[user]
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
        broker.kill()


def test_the_box_intake_logs_in_with_the_box_user_and_gets_verdicts(tmp_path: Path) -> None:
    broker = control_room(tmp_path)
    secret = tmp_path / "box-password"
    secret.write_text(PASSWORDS["box-hub-7-line-2"] + "\n")
    secret.chmod(0o600)
    box = Box(tmp_path / "audit", mqtt_config(broker.port, tmp_path, username="box-hub-7-line-2",
                                              password_file=str(secret)), SITE)
    console = None
    try:
        box.start()  # subscribing is allowed by the ACL (wait_subscribed checks the SUBACK)
        assert box.audit is not None
        d = make_decision(5, scanner_id="line-2")
        box.audit.publish(d)
        console = Console(broker.port, PREFIX, client_id=f"console-{time.time_ns()}", username="console",
                          password=PASSWORDS["console"])
        console.send(verdict(item_record_id(SITE, d), d.item_id))
        (ack,) = console.wait_acks(1)  # the box's answer passed the ACL too
        assert ack["stored"] is True and len(box.verdict_files()) == 1
    finally:
        if console is not None:
            console.close()
        box.stop()
        broker.kill()


def test_many_sites_bridge_carries_decisions_out_and_verdicts_in_across_broker_restarts(tmp_path: Path) -> None:
    """box service -> box broker =bridge=> control-room broker -> console, and verdicts the other way; the box
    broker (the bridge) restarts, then the control-room broker restarts: every decision reaches the console and
    every verdict is stored and answered."""
    room = control_room(tmp_path)
    local = configured_broker(tmp_path / "box-broker", example_lines(
        "box-bridge.conf", address=f"127.0.0.1:{room.port}", remote_password=PASSWORDS["box-hub-7-line-2"]))
    sink = MqttSink(mqtt_config(local.port, tmp_path / "box"), SITE).start()
    box = Box(tmp_path / "audit", mqtt_config(local.port, tmp_path / "box"), SITE).start()
    watcher = Collector(room.port, "xray/+/+/items", client_id=f"watcher-{time.time_ns()}")
    watcher.client.username_pw_set("console", PASSWORDS["console"])
    watcher.start()
    console = Console(room.port, PREFIX, client_id=f"console-{time.time_ns()}", username="console",
                      password=PASSWORDS["console"])
    decisions = [make_decision(i, scanner_id="line-2") for i in range(8)]
    sent: list[dict[str, object]] = []

    def items_seen() -> set[str]:
        return {str(b["item_id"]) for b in watcher.json_on("/items")}

    def send_verdict(index: int) -> None:
        d = decisions[index]
        body = verdict(item_record_id(SITE, d), d.item_id, "threat_confirmed")
        sent.append(body)
        console.send(body)

    try:
        assert box.audit is not None
        for d in decisions[:3]:
            box.audit.publish(d)
            sink.publish(d)
        assert _wait(lambda: items_seen() >= {d.item_id for d in decisions[:3]}, 15), items_seen()
        send_verdict(0)
        console.wait_acks(1, 15)

        local.stop()  # the box's broker (the bridge) restarts: systemctl restart mosquitto
        for d in decisions[3:6]:  # decided meanwhile: they wait in the box's outbox
            box.audit.publish(d)
            sink.publish(d)
        send_verdict(3)  # sent meanwhile: the control room queues it for the bridge's session
        local.start()
        assert _wait(lambda: items_seen() >= {d.item_id for d in decisions[:6]}, 30), items_seen()
        console.wait_acks(2, 30)

        room.stop()  # the control-room broker restarts
        for d in decisions[6:]:  # queued by the box broker for the bridge
            box.audit.publish(d)
            sink.publish(d)
        room.start()
        send_verdict(6)
        assert _wait(lambda: items_seen() == {d.item_id for d in decisions}, 30), items_seen()
        acks = console.wait_acks(3, 30)
    finally:
        console.close()
        watcher.stop()
        box.stop()
        sink.close(2.0)
        local.kill()
        room.kill()
    assert {str(a["verdict_id"]) for a in acks if a["stored"]} == {str(v["verdict_id"]) for v in sent}
    stored = {json.loads(p.read_text())["verdict_id"] for p in box.verdict_files()}
    assert stored == {v["verdict_id"] for v in sent}
    assert len(box.verdict_files(".tdr.dcs")) == 3


DEBIAN_MOSQUITTO_CONF = """# Debian's /etc/mosquitto/mosquitto.conf (mosquitto 2.0.11-1.2+deb12u2), paths moved
pid_file {work}/mosquitto.pid
persistence true
persistence_location {work}/
log_dest file {work}/mosquitto.log
include_dir {work}/conf.d
"""


@pytest.mark.parametrize("name", ["control-room.conf", "box-bridge.conf"])
def test_each_example_starts_mosquitto_from_conf_d_beside_the_debian_main_config(tmp_path: Path, name: str) -> None:
    """docs/brokers.md says to drop the example into /etc/mosquitto/conf.d/; Debian's main config already sets
    persistence_location, and Mosquitto refuses to start on a second one ('Duplicate persistence_location value').
    The example goes in as written, except the settings that name this machine's ports, files and peer."""
    import subprocess

    from publish_helpers import MOSQUITTO, free_port

    port = free_port()
    local = {"listener": f"listener {port} 127.0.0.1", "password_file": f"password_file {tmp_path / 'passwd'}",
             "acl_file": f"acl_file {EXAMPLES / 'acl'}", "address": f"address 127.0.0.1:{free_port()}"}
    dropped = ("cafile", "certfile", "keyfile", "bridge_cafile")  # TLS files this machine does not have
    lines = []
    for raw in (EXAMPLES / name).read_text().splitlines():
        key = raw.split()[0] if raw.strip() and not raw.lstrip().startswith("#") else None
        if key in dropped:
            continue
        lines.append(local.get(key, raw) if key else raw)
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / name).write_text("\n".join(["user root", *lines]) + "\n")
    mosquitto_passwd(tmp_path / "passwd", {"console": PASSWORDS["console"]})
    main = tmp_path / "mosquitto.conf"
    main.write_text(DEBIAN_MOSQUITTO_CONF.format(work=tmp_path))
    proc = subprocess.Popen([str(MOSQUITTO), "-c", str(main)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    served = False
    try:
        deadline = time.monotonic() + 10
        while not served and proc.poll() is None and time.monotonic() < deadline:
            try:  # the control room takes only known users; the box's local listener takes its own processes
                client, _, _ = _client(port, "console" if name == "control-room.conf" else None, "debian")
            except OSError:
                time.sleep(0.1)
                continue
            client.disconnect()
            client.loop_stop()
            served = True
        assert proc.poll() is None, f"mosquitto exited: {proc.communicate(timeout=5)[0].decode(errors='replace')}"
        assert served, "mosquitto did not take a connection within 10 s"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
