"""MQTT: one persistent session per configured broker, storing every message the boxes publish, and the
durable verdict outbox that sends operators' verdicts back to the boxes until each box acknowledges.

Nothing is lost across a console or broker restart, by construction:

- **Decisions**: each broker session is persistent (fixed client id, ``clean_start`` false, a session expiry of
  ``session_expiry_s``) and subscribes at QoS 1, so while the console is away the broker queues what the boxes
  publish. Each message is acknowledged to the broker (manual PUBACK) only after its row is committed; while the
  database refuses writes nothing is acknowledged and the batch is tried again (the broker redelivers whatever
  was not acknowledged to the next run).
  One writer thread stores what every broker delivers, a batch per transaction (:class:`Writer`).
- **Verdicts**: the web page writes the verdict into the database (state ``pending``) before it answers the
  operator; the sender thread publishes every verdict not yet acknowledged by its box (QoS 1), and again every
  ``verdicts.resend_s`` until the box's ``<prefix>/verdicts/ack`` arrives (contract 3; the box stores a
  redelivery once, by ``verdict_id``).
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from console.config import BrokerConfig, ConsoleConfig
from console.store import ConsoleStore, ItemView

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


@dataclass(frozen=True, slots=True)
class Received:
    """One message as paho delivered it, waiting for the writer."""

    link: BrokerLink
    topic: str
    payload: bytes
    mid: int
    qos: int
    wall: float


class Writer:
    """The one thread that stores what every broker delivers, many messages per transaction.

    Why one writer and batches: each commit is a disk flush (SQLite ``synchronous=FULL``); at 8 lanes x 10
    items/s a commit per message kept the console seconds behind (p99 3.1 s publication → page, measured with
    benchmarks/bench_console.py), while one commit for whatever arrived meanwhile keeps up. One writer also
    means no two transactions race to create the same row. Messages are acknowledged to their broker after the
    commit; the page is told after the commit too.
    """

    BATCH = 500

    def __init__(self, store: ConsoleStore, notify: Notify) -> None:
        self.store, self.notify = store, notify
        self.queue: queue.Queue[Received | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch, end = [first], False
            while len(batch) < self.BATCH:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    end = True
                    break
                batch.append(nxt)
            delay = 1.0
            while True:
                try:
                    if self._store(batch):
                        break
                except Exception:  # the writer must outlive anything; unacknowledged messages come again
                    log.exception("console writer: a batch of %d messages failed; not acknowledged", len(batch))
                    break
                if self._stopping.is_set():
                    return  # not acknowledged: the brokers deliver them again to the next run
                time.sleep(delay)
                delay = min(2 * delay, 10.0)
            if end:
                return

    def _store(self, batch: list[Received]) -> bool:
        """Store and acknowledge ``batch``; False (nothing acknowledged) when the database refuses writes."""
        try:
            with self.store.engine.begin() as conn:
                events = [e for m in batch for e in m.link.handle(conn, m.topic, m.payload, m.wall)]
                self.store.flush_lanes(conn)
        except OperationalError:
            self._refuse(batch)
            return False
        except Exception:  # one bad message must not hold up the others: store them one by one
            log.exception("storing %d messages failed; storing them one by one", len(batch))
            events = []
            try:
                for m in batch:
                    events += self._store_one(m)
            except OperationalError:
                self._refuse(batch)
                return False
        for m in batch:
            if m.qos > 0:
                m.link.client.ack(m.mid, m.qos)
        for kind, data in events:
            self.notify(kind, data)
        return True

    def _refuse(self, batch: list[Received]) -> None:
        """The database is not taking writes: nothing is acknowledged and the batch is tried again (with
        back-off). Unacknowledged, the broker sends no more than its in-flight window meanwhile, and redelivers
        them to the next run if the console stops first."""
        log.exception("the database refused %d messages; not acknowledged, retrying", len(batch))
        self.store.drop_pending()

    def _store_one(self, m: Received) -> list[tuple[str, dict[str, Any]]]:
        try:
            with self.store.engine.begin() as conn:
                events = m.link.handle(conn, m.topic, m.payload, m.wall)
                self.store.flush_lanes(conn)
                return events
        except OperationalError:
            raise
        except Exception as exc:  # kept as a reject with the reason: never silently dropped
            log.exception("could not store %s; kept in the rejects table", m.topic)
            with self.store.engine.begin() as conn:
                self.store.reject(conn, m.topic, m.link.config.name, m.payload, f"{type(exc).__name__}: {exc}",
                                  m.wall)
            return []


class BrokerLink:
    """One broker: a persistent paho session; what arrives goes to the writer, verdicts go out on request."""

    def __init__(self, config: BrokerConfig, console_id: str, store: ConsoleStore, writer: Writer) -> None:
        self.config, self.store, self.writer = config, store, writer
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
        client.on_connect_fail = self._on_connect_fail
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

    def _on_connect_fail(self, _c: paho.Client, _u: Any) -> None:
        """The TCP or TLS connection failed (broker down, unknown host, refused port, bad certificate). paho
        calls this inside its ``except OSError``, so the exception at hand is the reason; said once per change
        (paho retries every 1-15 s), else an unreachable broker was silent in the log and on the page."""
        exc = sys.exc_info()[1]
        error = f"cannot connect: {exc}" if exc is not None else "cannot connect"
        if error != self.last_error:
            log.warning("broker %s (%s:%d): %s; retrying", self.config.name, self.config.host, self.config.port,
                        error)
        self.last_error = error

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        self.last_error = f"disconnected: {reason}"
        log.warning("broker %s disconnected (%s); reconnecting", self.config.name, reason)

    def _on_message(self, _client: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        self.writer.queue.put(Received(self, message.topic, bytes(message.payload), message.mid, message.qos,
                                       time.time()))

    def handle(self, conn: Connection, topic: str, payload: bytes, now: float) -> list[tuple[str, dict[str, Any]]]:
        """Store one message in ``conn``'s transaction; returns the page events it causes (sent after commit).

        Anything unreadable is kept in the rejects table with the reason."""
        store, name = self.store, self.config.name
        parts = split_topic(topic)
        if parts is None:
            store.reject(conn, topic, name, payload, "not a box topic", now)
            return []
        prefix, kind, rest = parts
        if kind == "verdicts":
            return []  # our own verdicts (the filters cover them too)
        if kind == "images":
            return [("update", v.as_json()) for v in store.ingest_image(conn, topic, prefix, rest, payload, now)]
        if kind == "status" and not payload:
            return []  # a retained status cleared (an empty retained message is MQTT's way to delete it)
        try:
            body = json.loads(payload)
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("broker %s: unreadable %s: %s (kept in the rejects table)", name, topic, exc)
            store.reject(conn, topic, name, payload, f"bad JSON: {exc}", now)
            return []
        view: ItemView | None = None
        if kind in ("items", "alarms"):
            if not isinstance(body.get("record_id"), str) or (
                    kind == "alarms" and not isinstance(body.get("item_record_id"), str)):
                store.reject(conn, topic, name, payload, "no record_id / item_record_id", now)
                return []
            fresh = store.ingest_decision(conn, prefix, name, body, payload.decode(), now)
            return [("alarm", fresh.as_json())] if fresh is not None else []
        if kind in ("status", "health"):
            (store.ingest_status if kind == "status" else store.ingest_health)(conn, prefix, name, body, now)
            return [("lane", lane.as_json()) for lane in store.lanes(now, prefix=prefix, conn=conn)]
        if kind == "actions":
            view = store.ingest_action(conn, prefix, body, now)
        elif kind == "verdicts/ack":
            view = store.ingest_ack(conn, body, now)
        return [("update", view.as_json())] if view is not None else []

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
        connected = [name for name, link in self.links.items() if link.connected.is_set()]
        if not connected:
            return 0
        for verdict in self.store.due_verdicts(now, self.resend_s, brokers=connected):
            link = self.links.get(verdict.broker)
            if link is not None and link.send(verdict.topic, verdict.payload):
                self.store.mark_sent(verdict.verdict_id, now)
                sent += 1
        return sent


def open_links(config: ConsoleConfig, store: ConsoleStore, writer: Writer) -> dict[str, BrokerLink]:
    return {b.name: BrokerLink(b, config.console_id, store, writer) for b in config.brokers}
