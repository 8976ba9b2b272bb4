"""Helpers for the verdict tests: a console that publishes verdicts and collects the box's answers, verdict
messages, a box-side intake over a real audit store, and Mosquitto brokers with a config of the test's own."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from publish_helpers import MOSQUITTO, Broker, Collector, free_port

from edge.config.audit import AuditConfig
from edge.config.mqtt import MqttConfig
from edge.config.site import SiteConfig
from edge.config.verdicts import VerdictsConfig
from edge.publish.payloads import RecordKind, record_id
from edge.records import Decision
from edge.sinks.audit import AuditStore
from edge.verdicts import OperatorVerdict, VerdictIntake

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples" / "mosquitto"


def mqtt_config(port: int, tmp_path: Path, **kw: object) -> MqttConfig:
    base: dict[str, object] = {"port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "keepalive_s": 5,
                               "outbox": {"path": tmp_path / "outbox.sqlite3"}}
    return MqttConfig.model_validate({**base, **kw})


def item_record_id(site: SiteConfig, d: Decision, kind: RecordKind = RecordKind.ITEM) -> str:
    return record_id(site.site_id, d.scanner_id, d.item_id, kind, d.item_uid)


def verdict(rid: str, item_id: str, kind: str = "cleared", verdict_id: str | None = None,
            **extra: object) -> dict[str, object]:
    return {"schema": "verdict-1", "verdict_id": verdict_id or str(uuid.uuid4()), "record_id": rid,
            "item_id": item_id, "verdict": kind, "operator": "jdoe", "role": "operator",
            "decided_wall": time.time(), "console_id": "console-1", "note": "looked twice", **extra}


@dataclass
class Box:
    """The box side: an audit store and the verdict intake on one broker (what the service runs)."""

    root: Path
    mqtt: MqttConfig
    site: SiteConfig
    calls: list[tuple[str, OperatorVerdict]] = field(default_factory=list)
    audit: AuditStore | None = None
    intake: VerdictIntake | None = None

    def start(self, callbacks: tuple[Callable[[str, OperatorVerdict], None], ...] = ()) -> Box:
        self.audit = AuditStore(AuditConfig(directory=self.root, min_free_mb=0), self.site.site_id)
        self.intake = VerdictIntake(self.mqtt, VerdictsConfig(), self.site, self.audit,
                                    callbacks=(lambda rid, v: self.calls.append((rid, v)), *callbacks))
        self.intake.start()
        assert self.intake.wait_subscribed(10), "verdict intake did not subscribe"
        return self

    def stop(self) -> None:
        if self.intake is not None:
            self.intake.stop()
        if self.audit is not None:
            self.audit.close(1.0)

    def verdict_files(self, suffix: str = ".json") -> list[Path]:
        return sorted(p for p in self.root.glob(f"*/*.verdict-*{suffix}")
                      if not p.name.endswith(".tdr.dcs") or suffix == ".tdr.dcs")


class Console:
    """The control-room side: publishes verdicts (QoS 1) and collects the box's acks."""

    def __init__(self, port: int, prefix: str, client_id: str = "console-test",
                 username: str | None = None, password: str | None = None) -> None:
        self.prefix = prefix
        self.acks = Collector(port, f"{prefix}/verdicts/ack", client_id=f"{client_id}-acks")
        if username is not None:
            self.acks.client.username_pw_set(username, password)
        self.acks.start()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def send(self, body: dict[str, object] | bytes, topic: str | None = None) -> mqtt.MQTTMessageInfo:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        deadline = time.monotonic() + 15
        while not self.client.is_connected() and time.monotonic() < deadline:  # back after a broker restart
            time.sleep(0.05)
        info = self.client.publish(topic or f"{self.prefix}/verdicts", payload, qos=1)
        info.wait_for_publish(10)
        return info

    def ack_list(self) -> list[dict[str, object]]:
        return self.acks.json_on("/verdicts/ack")

    def wait_acks(self, n: int, timeout: float = 10.0) -> list[dict[str, object]]:
        assert self.acks.wait_for(lambda: len(self.ack_list()) >= n, timeout), self.ack_list()
        return self.ack_list()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.acks.stop()


@dataclass
class ConfiguredBroker(Broker):
    """A Mosquitto whose config the test writes (users, ACL, bridge), keeping the port and persistence file."""

    lines: list[str] = field(default_factory=list)

    def conf(self) -> Path:
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join([
            "user root",
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            f"log_dest file {self.workdir}/mosquitto.log",
            "log_type all",
            *self.lines,
        ]) + "\n")
        return path

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def configured_broker(workdir: Path, lines: list[str], port: int | None = None) -> ConfiguredBroker:
    workdir.mkdir(parents=True, exist_ok=True)
    broker = ConfiguredBroker(workdir, port or free_port(), lines=lines)
    broker.start()
    return broker


def mosquitto_passwd(path: Path, users: dict[str, str]) -> None:
    """A real password file, made with Mosquitto's own tool (salted hashes)."""
    for index, (user, password) in enumerate(users.items()):
        args = ["mosquitto_passwd", "-b", *([] if index else ["-c"]), str(path), user, password]
        subprocess.run(args, check=True, capture_output=True, timeout=30)


__all__ = [
    "MOSQUITTO",
    "Box",
    "ConfiguredBroker",
    "Console",
    "configured_broker",
    "item_record_id",
    "mosquitto_passwd",
    "mqtt_config",
    "verdict",
]
