"""Helpers for the publishing tests: real Mosquitto brokers started and killed by the tests, a throw-away CA
made with the ``openssl`` CLI, decisions built from the lead's records, and a control-room subscriber."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.records import BoxXyxy, Decision, ModelRef, ObjectResult, UnscreenedReason, Verdict

MOSQUITTO = Path("/usr/sbin/mosquitto")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    """One mosquitto process on a fixed port; ``stop``/``start`` keep the port and the persistence file."""

    workdir: Path
    port: int
    tls: dict[str, Path] | None = None
    require_certificate: bool = True
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def conf(self) -> Path:
        lines = [
            "user root",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "max_queued_messages 100000",
            f"log_dest file {self.workdir}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if self.tls is not None:
            lines += [f"cafile {self.tls['ca']}", f"certfile {self.tls['server_crt']}",
                      f"keyfile {self.tls['server_key']}",
                      f"require_certificate {'true' if self.require_certificate else 'false'}"]
            if self.require_certificate:
                lines.append("use_identity_as_username true")
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.conf())],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM lets mosquitto save its persistence file (sessions, queued messages) like a service stop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    def log(self) -> str:
        p = self.workdir / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[object]:
    brokers: list[Broker] = []

    def make(tls: dict[str, Path] | None = None, require_certificate: bool = True) -> Broker:
        workdir = tmp_path / f"broker{len(brokers)}"
        workdir.mkdir()
        b = Broker(workdir, free_port(), tls, require_certificate)
        brokers.append(b)
        b.start()
        return b

    yield make
    for b in brokers:
        b.stop(signal.SIGKILL)


@pytest.fixture
def broker(broker_factory: object) -> Broker:
    b: Broker = broker_factory()  # type: ignore[operator]
    return b


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(cwd: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=cwd)


def _leaf(cwd: Path, name: str, ca: str, ext: str, passphrase: str | None = None) -> None:
    key_opts = ["-passout", f"pass:{passphrase}"] if passphrase else ["-nodes"]
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", *key_opts,
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=cwd)
    (cwd / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=cwd)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server cert for localhost/127.0.0.1, a client cert (plain and passphrase-protected key) and an
    unrelated CA for the wrong-CA case."""
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "other_ca")
    _leaf(d, "server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _leaf(d, "client", "ca", "extendedKeyUsage=clientAuth\n")
    _leaf(d, "client_enc", "ca", "extendedKeyUsage=clientAuth\n", passphrase="s3cret pass")
    (d / "passphrase").write_text("s3cret pass\n")
    os.chmod(d / "passphrase", 0o600)
    return {"ca": d / "ca.crt", "other_ca": d / "other_ca.crt", "server_crt": d / "server.crt",
            "server_key": d / "server.key", "client_crt": d / "client.crt", "client_key": d / "client.key",
            "client_enc_crt": d / "client_enc.crt", "client_enc_key": d / "client_enc.key",
            "passphrase": d / "passphrase"}


def make_decision(index: int, scanner_id: str = "s1", overlay: bytes | None = None) -> Decision:
    """Deterministic decisions: every 5th item ALARM, every 11th (not 5th) UNSCREENED, others CLEAR."""
    now = time.time()
    if index % 5 == 0:
        verdict, reason = Verdict.ALARM, None
    elif index % 11 == 0:
        verdict, reason = Verdict.UNSCREENED, UnscreenedReason.DEADLINE_MISSED
    else:
        verdict, reason = Verdict.CLEAR, None
    obj = ObjectResult(
        object_id=0, box=BoxXyxy(10.0, 20.0, 110.0, 220.0), label="laptop", detector_score=0.91,
        anomaly_score=0.8 if verdict is Verdict.ALARM else 0.1, threshold=0.5,
        anomalous=verdict is Verdict.ALARM, polygon_xray=((10.0, 20.0), (110.0, 20.0), (110.0, 220.0)),
        polygon_camera=((1.0, 2.0), (3.0, 4.0), (5.0, 6.0)) if index % 2 else None,
    )
    return Decision(
        item_id=f"{scanner_id}-{index:06d}", scanner_id=scanner_id, verdict=verdict, reason=reason,
        detail="deadline of 2000 ms missed" if reason else "", objects=(obj,) if reason is None else (),
        item_score=obj.anomaly_score if reason is None else None, scan_start_wall=now - 2, scan_end_wall=now - 1,
        decided_wall=now, latency_ms=12.5, encoder_start=index * 1000, encoder_end=index * 1000 + 800,
        models=(ModelRef("scorer", "stfpm", "1.0", "ab" * 32),), overlay_jpeg=overlay,
    )


@dataclass
class Collector:
    """A control-room subscriber: persistent MQTT 5 session, QoS 1, keeps every message it gets."""

    port: int
    topic: str
    client_id: str = "control-room"
    tls: dict[str, Path] | None = None
    protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5
    messages: list[mqtt.MQTTMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    connected: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.protocol == mqtt.MQTTv5:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self.protocol)
        else:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self.protocol,
                                      clean_session=False)
        if self.tls is not None:
            self.client.tls_set(ca_certs=str(self.tls["ca"]), certfile=str(self.tls["client_crt"]),
                                keyfile=str(self.tls["client_key"]))
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.connected.clear()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        client.subscribe(self.topic, qos=1)
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(msg)

    def start(self) -> Collector:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if self.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
            self.client.connect_async("127.0.0.1", self.port, keepalive=5, clean_start=False, properties=props)
        else:
            self.client.connect_async("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()
        assert self.connected.wait(10), "collector could not connect"
        time.sleep(0.2)  # let SUBACK land before the test publishes
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[mqtt.MQTTMessage]:
        with self.lock:
            return list(self.messages)

    def json_on(self, suffix: str) -> list[dict[str, object]]:
        return [json.loads(m.payload) for m in self.snapshot() if m.topic.endswith(suffix)]

    def wait_for(self, predicate: object, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return True
            time.sleep(0.05)
        return bool(predicate())  # type: ignore[operator]
