"""Helpers for the console tests and benchmark: a lane that publishes like a box, the console as a real
process (``python -m edge console run``), its database on SQLite or PostgreSQL, and the system Chromium.

The lane builds its records with the box's own composition (``edge.publish.compose``: the same item, alarm,
image, status and health payloads a running box's outbox sends) and publishes them at QoS 1 like the box's
publisher does. The console runs as the process systemd would start, so restart tests kill a real process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config.mqtt import MqttConfig
from edge.config.site import SiteConfig
from edge.publish.compose import decision_records, health_record, status_message
from edge.publish.health import HealthSnapshot, LinkHealth, LinkHealthState, OutboxBacklog, StatusState
from edge.publish.topics import Topics
from edge.records import BoxXyxy, Decision, ModelRef, ObjectResult, UnscreenedReason, Verdict

REPO = Path(__file__).resolve().parents[2]
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def overlay_jpeg(text: str, size: tuple[int, int] = (320, 200), quality: int = 80) -> bytes:
    """A small overlay-like picture with ``text`` on it (the tests check it reaches the page)."""
    img = np.full((size[1], size[0], 3), (40, 30, 20), np.uint8)
    cv2.rectangle(img, (40, 40), (size[0] - 60, size[1] - 50), (40, 40, 230), 3)
    cv2.putText(img, text, (50, size[1] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def alarm_decision(item_id: str, scanner_id: str, *, verdict: Verdict = Verdict.ALARM, camera: bool = False,
                   overlay: bytes | None = None, label: str = "knife") -> Decision:
    """A decision as the box's decide and map stages make it (one anomalous object for an ALARM)."""
    now = time.time()
    alarm = verdict is Verdict.ALARM
    obj = ObjectResult(
        object_id=0, box=BoxXyxy(10.0, 20.0, 110.0, 220.0), label=label, detector_score=0.91,
        anomaly_score=0.83 if alarm else 0.12, threshold=0.5, anomalous=alarm,
        polygon_xray=((10.0, 20.0), (110.0, 20.0), (110.0, 220.0)),
        polygon_camera=((1.0, 2.0), (3.0, 4.0), (5.0, 6.0)) if camera else None)
    return Decision(
        item_id=item_id, scanner_id=scanner_id, verdict=verdict,
        reason=UnscreenedReason.DEADLINE_MISSED if verdict is Verdict.UNSCREENED else None,
        detail="deadline of 2000 ms missed" if verdict is Verdict.UNSCREENED else "", objects=(obj,),
        item_score=obj.anomaly_score, scan_start_wall=now - 2, scan_end_wall=now - 1, decided_wall=now,
        latency_ms=40.0, encoder_start=1000, encoder_end=1800,
        models=(ModelRef("scorer", "stfpm", "1.0", "ab" * 32),), overlay_jpeg=overlay, item_uid=uuid.uuid4().hex)


@dataclass
class Lane:
    """One box: site, scanner and its topic prefix; publishes what the box's outbox would."""

    port: int
    site_id: str
    scanner_id: str
    prefix: str
    client: mqtt.Client = field(init=False)

    def __post_init__(self) -> None:
        self.site = SiteConfig(site_id=self.site_id, scanner_id=self.scanner_id)
        self.topics = Topics(self.prefix)
        self.mqtt_config = MqttConfig(topic_prefix=self.prefix)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"box-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()

    def publish_decision(self, decision: Decision) -> dict[str, object]:
        """Publish the decision's records (alarm, item, image); returns the item record's payload."""
        item: dict[str, object] = {}
        for record in decision_records(decision, self.site, self.topics, self.mqtt_config, time.time()):
            info = self.client.publish(record.topic, record.payload, qos=1)
            info.wait_for_publish(10)
            if record.topic == self.topics.items:
                item = json.loads(record.payload)
        return item

    def publish_raw(self, topic_suffix: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(f"{self.prefix}/{topic_suffix}", payload, qos=1, retain=retain).wait_for_publish(10)

    def publish_status(self, state: StatusState, reason: str = "") -> None:
        payload, _ = status_message(self.site, "box", state, reason, time.time())
        self.client.publish(self.topics.status, payload, qos=1, retain=True).wait_for_publish(10)

    def publish_health(self, link_state: LinkHealthState = LinkHealthState.UP, reason: str = "") -> None:
        snapshot = HealthSnapshot(links=(LinkHealth("firmware", link_state, reason),))
        status = (StatusState.ONLINE if link_state is LinkHealthState.UP else StatusState.DEGRADED, reason)
        record = health_record(snapshot, self.site, self.topics, 1, 10.0, status,
                               LinkHealth("broker", LinkHealthState.UP), OutboxBacklog(0, 0, 0, 0, 0.0), None,
                               time.time())
        self.client.publish(record.topic, record.payload, qos=1).wait_for_publish(10)

    def clear_retained(self) -> None:
        self.client.publish(self.topics.status, b"", qos=1, retain=True).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Subscriber:
    """What the box's verdict intake sees: a persistent QoS 1 session on ``<prefix>/verdicts``."""

    port: int
    topic: str
    client_id: str = field(default_factory=lambda: f"box-verdicts-{uuid.uuid4().hex[:8]}")
    messages: list[dict[str, object]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Subscriber:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        ready = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.topic, qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert ready.wait(10), "subscriber did not subscribe"
        return self

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append({"topic": msg.topic, "qos": msg.qos, "retain": msg.retain,
                                  **json.loads(msg.payload)})

    def wait_for(self, n: int, timeout: float) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.05)
        with self.lock:
            return list(self.messages)

    def ack(self, verdict: dict[str, object], stored: bool = True, error: str | None = None) -> None:
        """Answer like the box (contract 3) on ``<prefix>/verdicts/ack``."""
        body = {"schema": "verdict-ack-1", "verdict_id": verdict["verdict_id"], "stored": stored, "error": error}
        self.client.publish(f"{verdict['topic']}/ack", json.dumps(body), qos=1).wait_for_publish(10)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Database:
    """The console's database for one test run: SQLite in a temp folder or a unique prefix in PostgreSQL."""

    kind: str
    url: str
    prefix: str

    def drop(self) -> None:
        from console.config import DatabaseConfig
        from console.db import Tables, drop_tables, open_engine

        engine = open_engine(DatabaseConfig(url=self.url, table_prefix=self.prefix))
        drop_tables(engine, Tables(self.prefix))
        engine.dispose()


def make_database(kind: str, tmp: Path) -> Database:
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    if kind == "sqlite":
        return Database(kind, f"sqlite:///{tmp}/console.sqlite3", prefix)
    try:
        import psycopg

        psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", connect_timeout=3).close()
    except Exception as exc:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 (database test) is not reachable: {exc}")
    return Database(kind, POSTGRES_URL, prefix)


@dataclass
class ConsoleProc:
    """``edge console run`` as a real process with a config written for one test."""

    workdir: Path
    db: Database
    broker_port: int
    topics: tuple[str, ...]
    port: int = field(default_factory=free_port)
    resend_s: float = 2.0
    extra: str = ""
    console_id: str = field(default_factory=lambda: f"c{uuid.uuid4().hex[:6]}")
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        path = self.workdir / "console.yaml"
        topics = ", ".join(json.dumps(t) for t in self.topics)
        path.write_text(
            f"console_id: {self.console_id}\n"
            f"data_dir: {self.workdir}/data\n"
            f"listen: {{host: 127.0.0.1, port: {self.port}}}\n"
            f"database: {{url: {json.dumps(self.db.url)}, table_prefix: {self.db.prefix}}}\n"
            f"verdicts: {{resend_s: {self.resend_s}}}\n"
            f"brokers:\n  - name: site-a\n    port: {self.broker_port}\n    topics: [{topics}]\n"
            f"    client_id: edge-console-{self.console_id}\n"
            + self.extra)
        return path

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge", "console", *args, "--config", str(self.config)],
                              input=stdin, capture_output=True, text=True, cwd=REPO, timeout=60)

    def add_user(self, login: str, password: str, role: str = "operator") -> None:
        """What ``edge console add-user`` does, in this process (the CLI itself is tested once, by
        test_console_auth; a Python start per user would cost seconds of CPU)."""
        from console.auth import hash_password
        from console.config import load_console_config
        from console.service import open_store

        store = open_store(load_console_config(self.config))
        store.add_user(login, hash_password(password), role, by="test")
        store.engine.dispose()

    def start(self) -> ConsoleProc:
        log = open(self.workdir / "console.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "edge", "console", "run", "--config", str(self.config)],
                                     stdout=log, stderr=log, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
        import httpx

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                if httpx.get(f"{self.url}/healthz", verify=False, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"console did not answer: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def log(self) -> str:
        path = self.workdir / "console.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def session(console: ConsoleProc, login: str, password: str) -> Any:
    """An httpx client signed in as ``login`` (cookie and CSRF token set)."""
    import re

    import httpx

    client = httpx.Client(base_url=console.url, verify=False, timeout=10)
    page = client.get("/login")
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert token is not None
    answer = client.post("/login", json={"login": login, "password": password},
                         headers={"X-CSRF-Token": token.group(1)})
    assert answer.status_code == 200, answer.text
    client.headers["X-CSRF-Token"] = answer.json()["csrf"]
    return client


# ---- Chromium ----

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver when missing (the tests run as root); skip if apt cannot."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.skip("chromium/chromium-driver missing and apt-get unavailable or not root: "
                    "apt-get install -y chromium chromium-driver")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run([apt, "install", "-y", "chromium", "chromium-driver"], capture_output=True, text=True,
                            env=env, timeout=900)
    if result.returncode != 0:
        subprocess.run([apt, "update"], capture_output=True, env=env, timeout=600)
        result = subprocess.run([apt, "install", "-y", "chromium", "chromium-driver"], capture_output=True,
                                text=True, env=env, timeout=900)
    if result.returncode != 0 or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"apt-get could not install chromium chromium-driver: {result.stderr[-500:]}")


def chromium(width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium through the system chromedriver, trusting the console's self-signed certificate."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--ignore-certificate-errors", f"--window-size={width},{height}", "--disable-extensions",
                "--renderer-process-limit=1", "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # JS errors, for failing tests' messages
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def sign_in(driver: Any, console: ConsoleProc, login: str, password: str) -> None:
    """Sign in on the login page like an operator and wait until the queue's live stream is connected."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{console.url}/login")
    driver.find_element(By.ID, "login").send_keys(login)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, 10).until(ec.text_to_be_present_in_element((By.ID, "live"), "live"))
