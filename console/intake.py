"""MQTT: one persistent session per configured broker, storing every message the boxes publish, and the
durable verdict outbox that sends operators' verdicts back to the boxes until each box acknowledges.

Nothing is lost across a console or broker restart, by construction:

- **Decisions**: each broker session is persistent (fixed client id, ``clean_start`` false, a session expiry of
  ``session_expiry_s``) and subscribes at QoS 1, so while the console is away the broker queues what the boxes
  publish. Each message is acknowledged to the broker (manual PUBACK) only after its row is committed; a message
  the database could not take is not acknowledged, and the session is dropped so the broker delivers it again.
- **Verdicts**: the web page writes the verdict into the database (state ``pending``) before it answers the
  operator; the sender thread publishes every verdict not yet acknowledged by its box (QoS 1), and again every
  ``verdicts.resend_s`` until the box's ``<prefix>/verdicts/ack`` arrives (contract 3; the box stores a
  redelivery once, by ``verdict_id``).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from console.config import BrokerConfig, ConsoleConfig
from console.store import ConsoleStore

log = logging.getLogger(__name__)

Notify = Callable[[str, dict[str, Any]], None]
"""Where live events go (``Hub.publish``): kind (``alarm``, ``update``, ``lane``) and JSON data."""

_SUFFIXES = ("/items", "/alarms", "/status", "/health", "/actions", "/verdicts/ack", "/verdicts")


def split_topic(topic: str) -> tuple[str, str, str] | None:
    """``(box prefix, kind, rest)`` of a box topic; ``rest`` is the image's ``<item key>[/<suffix>]``.

    >>> split_topic("xray/s1/lane2/images/bag-7")
    ('xray/s1/lane2', 'images', 'bag-7')
    >>> split_topic("xray/s1/lane2/verdicts/ack")
    ('xray/s1/lane2', 'verdicts/ack', '')
    """
    if "/images/" in topic:
        prefix, rest = topic.split("/images/", 1)
        return (prefix, "images", rest) if prefix and rest else None
    for suffix in _SUFFIXES:
        if topic.endswith(suffix) and len(topic) > len(suffix):
            return topic[: -len(suffix)], suffix[1:], ""
    return None


def ack_filters(topic_filter: str) -> list[str]:
    """Filters for the boxes' verdict acks not already covered by ``topic_filter``."""
    if topic_filter.endswith("#"):
        return []
    parent = topic_filter.rsplit("/", 1)[0]
    return [f"{parent}/verdicts/ack"]


class BrokerLink:
    """One broker: a persistent paho session that stores what arrives and sends verdicts on request."""

    def __init__(self, config: BrokerConfig, console_id: str, store: ConsoleStore, notify: Notify) -> None:
        self.config, self.store, self.notify = config, store, notify
        self.client_id = config.client_id or f"edge-console-{console_id}-{config.name}"
        self.connected = threading.Event()
        self.last_error = ""
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5,
                             manual_ack=True)
        if config.username:
            password = (config.password_file.read_text(encoding="utf-8").rstrip("\r\n")
                        if config.password_file else None)
            client.username_pw_set(config.username, password)
        if config.tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(config.tls.ca_file))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if config.tls.cert_file is not None:
                ctx.load_cert_chain(str(config.tls.cert_file),
                                    str(config.tls.key_file) if config.tls.key_file else None)
            if config.tls.insecure_skip_hostname_check:
                ctx.check_hostname = False
            client.tls_set_context(ctx)
        client.reconnect_delay_set(1, 15)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # paho's network thread
    def _on_connect(self, client: paho.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.last_error = f"refused: {reason}"
            log.warning("broker %s (%s:%d) refused the console: %s", self.config.name, self.config.host,
                        self.config.port, reason)
            return
        filters = [*self.config.topics, *(a for f in self.config.topics for a in ack_filters(f))]
        client.subscribe([(f, 1) for f in filters])
        self.last_error = ""
        self.connected.set()
        log.info("broker %s connected (session present: %s); subscribed to %s", self.config.name,
                 flags.session_present, ", ".join(filters))

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        self.last_error = f"disconnected: {reason}"
        log.warning("broker %s disconnected (%s); reconnecting", self.config.name, reason)

    def _on_message(self, client: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        try:
            self.handle(message.topic, bytes(message.payload), time.time())
        except Exception:  # the database refused: no PUBACK, drop the session so the broker redelivers
            log.exception("broker %s: could not store %s; not acknowledged, reconnecting", self.config.name,
                          message.topic)
            client.disconnect()
            return
        if message.qos > 0:
            client.ack(message.mid, message.qos)

    def handle(self, topic: str, payload: bytes, now: float) -> None:
        """Store one message (raises if the database cannot; anything unreadable goes to the rejects)."""
        parts = split_topic(topic)
        if parts is None:
            self.store.reject(topic, self.config.name, payload, "not a box topic", now)
            return
        prefix, kind, rest = parts
        if kind == "verdicts":
            return  # our own verdicts (the filters cover them too)
        if kind == "images":
            if self.store.ingest_image(topic, prefix, rest, payload, now):
                for view in self.store.items(status="all", lane=prefix, text=None,
                                             record_ids=self.store.records_of_image(prefix, rest)):
                    self.notify("update", view.as_json())
            return
        try:
            body = json.loads(payload)
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("broker %s: unreadable %s: %s (kept in the rejects table)", self.config.name, topic, exc)
            self.store.reject(topic, self.config.name, payload, f"bad JSON: {exc}", now)
            return
        if kind in ("items", "alarms"):
            if not isinstance(body.get("record_id"), str):
                self.store.reject(topic, self.config.name, payload, "no record_id", now)
                return
            fresh = self.store.ingest_decision(prefix, self.config.name, body, payload.decode(), now)
            if fresh is not None:
                self.notify("alarm", fresh.as_json())
        elif kind == "status":
            self.store.ingest_status(prefix, self.config.name, body, now)
            self._lane_changed(prefix, now)
        elif kind == "health":
            self.store.ingest_health(prefix, self.config.name, body, now)
            self._lane_changed(prefix, now)
        elif kind == "actions":
            record = self.store.ingest_action(prefix, body, now)
            self._item_changed(record)
        elif kind == "verdicts/ack":
            self._item_changed(self.store.ingest_ack(body, now))

    def _item_changed(self, record_id: str | None) -> None:
        if record_id:
            view = self.store.item(record_id)
            if view is not None:
                self.notify("update", view.as_json())

    def _lane_changed(self, prefix: str, now: float) -> None:
        for lane in self.store.lanes(now):
            if lane.prefix == prefix:
                self.notify("lane", lane.as_json())

    def send(self, topic: str, payload: bytes) -> bool:
        """Publish one verdict (QoS 1); False when the broker is not connected (it stays in the outbox)."""
        if not self.connected.is_set():
            return False
        info = self.client.publish(topic, payload, qos=1, retain=False)
        return info.rc == paho.MQTT_ERR_SUCCESS


class VerdictSender:
    """The verdict outbox's sender: publishes due verdicts through their box's broker, on request and each 0.5 s."""

    def __init__(self, store: ConsoleStore, links: dict[str, BrokerLink], resend_s: float) -> None:
        self.store, self.links, self.resend_s = store, links, resend_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="verdict-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self.send_due(time.time())
            except Exception:
                log.exception("verdict sender: the database is not answering; retrying")
                self._stop.wait(2.0)

    def send_due(self, now: float) -> int:
        """Publish every verdict due now; returns how many were handed to a broker."""
        sent = 0
        for verdict in self.store.due_verdicts(now, self.resend_s):
            link = self.links.get(verdict.broker)
            if link is not None and link.send(verdict.topic, verdict.payload):
                self.store.mark_sent(verdict.verdict_id, now)
                sent += 1
        return sent


def open_links(config: ConsoleConfig, store: ConsoleStore, notify: Notify) -> dict[str, BrokerLink]:
    return {b.name: BrokerLink(b, config.console_id, store, notify) for b in config.brokers}
