"""``MqttSink``: the pipeline's publisher. Decisions go into the disk outbox, a thread drains it to the broker.

Where it sits: the last stage. ``publish_decision`` commits the item, alarm and image records to the outbox
(one transaction) and returns; it never waits for the network. A publisher thread sends records in outbox
order, at most ``mqtt.inflight_max`` unacknowledged, and deletes a record only when its PUBACK arrives (paho's
``on_publish`` with the message id). paho's own network thread keeps the connection, resends unacknowledged
QoS 1 messages after a reconnect and backs off between ``reconnect_min_s`` and ``reconnect_max_s``. After a
crash the next process replays whatever is still in the outbox, in order (subscribers de-duplicate by
``record_id``).

Threads: every ``client.publish`` call happens on the publisher thread; paho callbacks only queue events and
wake it, because paho calls ``on_publish`` while holding its own message lock.

The retained ``status`` topic is not queued in the outbox: it always says the *current* state, is published
on every (re)connect and change, and the last will (set before each connect) says offline.

It must not block the pipeline on the broker, and it must not drop a record that has no PUBACK.

Storage faults: when the outbox cannot write (disk full, I/O error, read-only file system, or it could not
even be opened at start), ``publish_decision`` keeps the decision's records in a memory overflow bounded by
``mqtt.outbox.memory_max_bytes`` (over it the oldest health, image, then item records are dropped and counted;
alarms never), publishes them from memory while the broker is connected, says why in ``problem`` and raises
``PublishError`` so the pipeline offers the decision again later. The publisher thread retries the outbox
every second (opening it, writing the overflow into it, deleting acknowledged records) and clears ``problem``
once it writes again. A decision counts as stored when each of its records is in the outbox or acknowledged
by the broker from memory (``edge.publish.overflow`` remembers those), so a retry after such a delivery
returns without writing anything.
Health never raises: a health tick on a full disk used to raise out of the service's main loop and end it.

Backpressure, not eviction: while the broker is connected and acknowledging, a put that would take the outbox
over its bounds first waits (at most ``_DRAIN_WAIT_S``) for the publisher to drain it, so a burst is
delivered whole; only a stalled or disconnected broker lets the bounds evict (``edge.publish.outbox``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config.mqtt import MqttConfig
from edge.config.site import SiteConfig
from edge.errors import PublishError
from edge.publish.health import HealthSnapshot, LinkHealth, LinkState, OutboxBacklog, StageLatency, StatusState
from edge.publish.images import fit_jpeg
from edge.publish.outbox import Outbox, OutboxRecord, OutboxWriteError, StoredRecord
from edge.publish.overflow import MemoryOverflow
from edge.publish.payloads import (
    ALARM_SCHEMA,
    HEALTH_SCHEMA,
    ITEM_SCHEMA,
    STATUS_SCHEMA,
    decision_payload,
    encode,
    health_payload,
    record_id,
    status_payload,
)
from edge.publish.tls import build_tls_context, explain_connect_error, explain_lost_connection, read_credentials
from edge.publish.topics import RecordKind, Topics
from edge.records import Decision

log = logging.getLogger(__name__)

JSON = "application/json"
JPEG = "image/jpeg"
_REJECTED_RETRY_S = 5.0
_LATENCY_WINDOW = 2000
_STORE_RETRY_S = 1.0
"""How often the publisher thread retries a failing outbox (open, write the overflow, delete acked records)."""
_DRAIN_WAIT_S = 2.0
"""Longest a put waits for a connected broker to drain an outbox over its bounds before evicting."""
_DRAIN_STALL_S = 2.0
"""A connected broker that acknowledged nothing for this long is not draining: puts do not wait for it."""
_DELIVERED_MEMORY = 50_000
"""Record ids delivered from memory remembered, so a retried decision is not stored and sent again."""


@dataclass(frozen=True, slots=True)
class _Ack:
    mid: int
    failed: bool
    reason: str


class _Client(paho.Client):
    """paho client that reports why a (re)connect raised, because paho's own loop swallows the exception."""

    connect_error: BaseException | None = None
    on_connect_error: Callable[[BaseException], None] | None = None

    def reconnect(self) -> MQTTErrorCode:
        self.connect_error = None
        try:
            return super().reconnect()
        except OSError as exc:
            self.connect_error = exc
            if self.on_connect_error is not None:
                self.on_connect_error(exc)
            raise


class MqttSink:
    """Publishes decisions, health and status; construct, ``start()``, then ``close()`` (or use ``with``).

    Args:
        config: the ``mqtt:`` section.
        site: site and scanner ids (topic prefix, record ids).
        health_source: if given, called every ``mqtt.health_interval_s`` on the publisher thread and its
            snapshot published, so the pipeline need not run a timer.

    Raises:
        PublishError: at construction, when TLS files, credentials or the outbox are unusable.
    """

    def __init__(
        self,
        config: MqttConfig,
        site: SiteConfig,
        health_source: Callable[[], HealthSnapshot] | None = None,
    ) -> None:
        self.config = config
        self.site = site
        self.topics = Topics.for_site(site.site_id, site.scanner_id, config.topic_prefix)
        self.client_id = config.client_id or f"edge-{site.site_id}-{site.scanner_id}"
        self._health_source = health_source
        self._v5 = config.protocol == "5"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._acks: queue.SimpleQueue[_Ack] = queue.SimpleQueue()
        self._state_lock = threading.Lock()
        now = time.time()
        self._link = LinkHealth("mqtt", LinkState.DOWN, "not connected yet", now)
        self._status: tuple[StatusState, str, float] = (StatusState.ONLINE, "running", now)
        self._status_version = 0
        self._status_sent = 0
        self._connected = False
        self._connect_generation = 0
        self._had_connack = False
        self._last_transport_error: str | None = None
        self._last_logged_reason = ""
        self._receive_maximum = config.inflight_max
        self._latencies_s: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._published = 0
        self._acked = 0
        self._expired = 0
        self._flushed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_progress_mono = 0.0
        # Storage faults (module docstring): all under _store_lock.
        self._store_lock = threading.RLock()
        self._memory = MemoryOverflow(config.outbox.memory_max_bytes, _DELIVERED_MEMORY)
        self._pending_deletes: list[int] = []
        self._store_problem: str | None = None

        self._client = self._build_client()
        self.outbox: Outbox | None = None
        self._open_outbox()

    def _open_outbox(self) -> bool:
        """Open the outbox; on a storage fault (disk full, read-only, I/O) set ``problem`` and return False.

        Raises:
            PublishError: the file is not an outbox this software can use (corrupt, newer schema).
        """
        cfg = self.config.outbox
        try:
            self.outbox = Outbox(cfg.path, cfg.max_records, cfg.synchronous, on_put=self._wake.set,
                                 max_bytes=cfg.max_bytes)
        except OutboxWriteError as exc:
            self._set_store_problem(exc.reason, str(exc))
            return False
        return True

    def _set_store_problem(self, reason: str, detail: str) -> None:
        problem = f"outbox cannot write: {reason} ({self.config.outbox.path})"
        if problem != self._store_problem:
            log.error("mqtt: %s; records kept in memory (at most %d bytes) and published from there: %s",
                      problem, self.config.outbox.memory_max_bytes, detail)
        self._store_problem = problem

    def _clear_store_problem(self) -> None:
        if self._store_problem is not None:
            log.warning("mqtt: outbox %s writes again", self.config.outbox.path)
        self._store_problem = None

    # ---- construction -------------------------------------------------------------------------------------

    def _build_client(self) -> _Client:
        cfg = self.config
        if self._v5:
            client = _Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5)
        else:
            client = _Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv311,
                             clean_session=True)
        if cfg.tls is not None:
            client.tls_set_context(build_tls_context(cfg.tls))
            if cfg.tls.insecure_skip_hostname_check:
                client.tls_insecure_set(True)
        username, password = read_credentials(cfg)
        if username is not None:
            client.username_pw_set(username, password)
        client.max_inflight_messages_set(cfg.inflight_max)
        client.max_queued_messages_set(0)
        # paho types the delays as int but computes with floats; sub-second delays matter for tests and LANs.
        client.reconnect_delay_set(cast(int, cfg.reconnect_min_s), cast(int, cfg.reconnect_max_s))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_pre_connect = self._on_pre_connect
        client.on_log = self._on_log
        client.on_connect_error = self._on_connect_error
        return client

    # ---- public API (any thread) -------------------------------------------------------------------------

    def start(self) -> MqttSink:
        """Start connecting and draining the outbox; returns self. Records put before start are kept."""
        if self._thread is not None:
            return self
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive_s,
                                   clean_start=True, properties=props)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()
        return self

    def publish_decision(self, decision: Decision) -> None:
        """Store the decision's records (alarm if ALARM/UNSCREENED, item, overlay image) before returning.

        Raises:
            PublishError: the outbox could not store them (disk full, I/O error) or the sink is closed.
        """
        if self._closed:
            raise PublishError(f"{decision.item_id}: publish after close")
        site_id, scanner_id, item_id = self.site.site_id, decision.scanner_id, decision.item_id
        now = time.time()
        cfg = self.config
        image_record: OutboxRecord | None = None
        image_note = decision.overlay_note
        if decision.overlay_jpeg is not None:
            fitted = fit_jpeg(decision.overlay_jpeg, cfg.image_max_bytes)
            if fitted.note is not None:
                image_note = f"{image_note}; {fitted.note}" if image_note else fitted.note
            if fitted.jpeg is not None:
                image_record = OutboxRecord(
                    record_id=record_id(site_id, scanner_id, item_id, RecordKind.IMAGE, decision.item_uid),
                    kind=RecordKind.IMAGE,
                    topic=self.topics.image(item_id), payload=fitted.jpeg, qos=cfg.qos, retain=False,
                    content_type=JPEG, created_wall=now, item_id=item_id,
                )
        image_topic = image_record.topic if image_record is not None else None
        image_bytes = len(image_record.payload) if image_record is not None else None
        records: list[OutboxRecord] = []
        kinds = (RecordKind.ALARM, RecordKind.ITEM) if decision.verdict.needs_operator else (RecordKind.ITEM,)
        for kind in kinds:
            body = decision_payload(decision, site_id, kind, image_topic, image_bytes, image_note)
            records.append(OutboxRecord(
                record_id=str(body["record_id"]), kind=kind,
                topic=self.topics.alarms if kind is RecordKind.ALARM else self.topics.items,
                payload=encode(body), qos=cfg.qos, retain=False, content_type=JSON, created_wall=now,
                schema=ALARM_SCHEMA if kind is RecordKind.ALARM else ITEM_SCHEMA, item_id=item_id,
            ))
        if image_record is not None:
            records.append(image_record)
        self._store(records, wait_for_drain=True)

    @property
    def problem(self) -> str | None:
        """Why publishing is unhealthy (None when fine): the outbox cannot write, or holds only alarms over its
        bounds, or the memory overflow does. The broker link is reported apart, by ``link()``."""
        with self._store_lock:
            parts = [self._store_problem, self._memory.over,
                     self.outbox.over_bound if self.outbox is not None else None]
        return "; ".join(p for p in parts if p) or None

    def _store(self, records: list[OutboxRecord], wait_for_drain: bool) -> None:
        """Put ``records`` in the outbox, or keep them in memory and raise (module docstring)."""
        with self._store_lock:
            pending = [r for r in records if not self._memory.was_delivered(r.record_id)]
        if not pending:
            return
        if wait_for_drain:
            self._wait_for_drain(pending)
        with self._store_lock:
            if self.outbox is not None:
                try:
                    if len(self._memory):
                        self._migrate_locked()  # older records first
                    self.outbox.put(pending)
                except OutboxWriteError as exc:
                    self._set_store_problem(exc.reason, str(exc))
                else:
                    for r in pending:
                        self._memory.forget(r.record_id)
                    if not len(self._memory) and not self._pending_deletes:
                        self._clear_store_problem()
                    return
            was_over = self._memory.over
            self._memory.add(pending)
            if self._memory.over and not was_over:
                log.warning("mqtt: %d bytes of alarms kept in memory, over mqtt.outbox.memory_max_bytes (%d): "
                            "alarms are never dropped", self._memory.bytes, self._memory.max_bytes)
            self._wake.set()
            problem = self._store_problem
        raise PublishError(f"{records[0].item_id or records[0].record_id}: not stored ({problem}); kept in "
                           "memory and published from there until the outbox writes again")

    def _wait_for_drain(self, pending: list[OutboxRecord]) -> None:
        outbox = self.outbox
        if outbox is None or not self._connected:
            return
        size = sum(len(r.payload) for r in pending)
        deadline = time.monotonic() + _DRAIN_WAIT_S
        while outbox.is_over_bound(len(pending), size):
            now = time.monotonic()
            if now >= deadline or not self._connected or now - self._last_progress_mono > _DRAIN_STALL_S:
                return
            with self._flushed:
                self._flushed.wait(0.05)

    def _migrate_locked(self) -> None:
        """Write the records held in memory (except those in flight from there) into the outbox."""
        assert self.outbox is not None
        movable = self._memory.movable()
        if movable:
            self.outbox.put(movable)
            for r in movable:
                self._memory.forget(r.record_id)
            log.info("mqtt: %d record(s) kept in memory written to the outbox", len(movable))

    def _retry_storage(self) -> None:
        """Publisher thread, every ``_STORE_RETRY_S`` while something failed: open, migrate, delete, probe."""
        with self._store_lock:
            if self._store_problem is None and not len(self._memory) and not self._pending_deletes:
                return
            if self.outbox is None and not self._open_outbox():
                return
            assert self.outbox is not None
            try:
                if self._pending_deletes:
                    self.outbox.delete(self._pending_deletes)
                    self._pending_deletes = []
                if len(self._memory):
                    self._migrate_locked()
                elif self._store_problem is not None:
                    self.outbox.probe()
            except OutboxWriteError as exc:
                self._set_store_problem(exc.reason, str(exc))
                self.outbox.compact()
                return
            if not len(self._memory):
                self._clear_store_problem()

    def publish_health(self, snapshot: HealthSnapshot) -> None:
        """Queue a health record (expires after two health intervals: stale health misleads).

        Never raises for storage faults: the record then goes out from memory (the service's main loop calls
        this, and an exception here used to end the process).
        """
        state, reason, _ = self.status()
        body = health_payload(self.site.site_id, self.site.scanner_id, snapshot, (state, reason), self.link(),
                              self.backlog())
        latency = self.publish_latency()
        if latency is not None:
            body["latencies"] = [*cast(list[Any], body["latencies"]), {
                "stage": latency.stage, "p50_ms": latency.p50_ms, "p99_ms": latency.p99_ms,
                "max_ms": latency.max_ms, "count": latency.count}]
        record = OutboxRecord(
            record_id=str(body["record_id"]), kind=RecordKind.HEALTH, topic=self.topics.health,
            payload=encode(body), qos=self.config.qos, retain=False, content_type=JSON,
            created_wall=time.time(), expiry_s=max(10, round(2 * self.config.health_interval_s)),
            schema=HEALTH_SCHEMA,
        )
        # On a storage fault the record is kept in memory and sent from there; ``problem`` already says why.
        with contextlib.suppress(PublishError):
            self._store([record], wait_for_drain=False)

    def set_status(self, state: StatusState, reason: str) -> None:
        """Change the retained status (published now if connected, else on the next connect)."""
        with self._state_lock:
            if (state, reason) != self._status[:2]:
                self._status = (state, reason, time.time())
                self._status_version += 1
        self._wake.set()

    def status(self) -> tuple[StatusState, str, float]:
        """Current (state, reason, since_wall) as the status topic shows it."""
        with self._state_lock:
            return self._status

    def link(self) -> LinkHealth:
        """Broker link as last seen: UP, DOWN (retrying) or ERROR (config/cert problem; reason says which)."""
        with self._state_lock:
            return self._link

    def backlog(self) -> OutboxBacklog:
        """Records waiting (in the outbox and in memory), by kind, and evictions since start."""
        base = self.outbox.backlog() if self.outbox is not None else OutboxBacklog(0, 0, 0, 0, 0.0)
        with self._store_lock:
            waiting = self._memory.counts()
            evicted = dict(self._memory.evicted)
            in_memory, memory_bytes = len(self._memory), self._memory.bytes
        return OutboxBacklog(
            alarm=base.alarm + waiting[RecordKind.ALARM], item=base.item + waiting[RecordKind.ITEM],
            image=base.image + waiting[RecordKind.IMAGE], health=base.health + waiting[RecordKind.HEALTH],
            oldest_age_s=base.oldest_age_s, evicted_item=base.evicted_item + evicted[RecordKind.ITEM],
            evicted_image=base.evicted_image + evicted[RecordKind.IMAGE],
            evicted_health=base.evicted_health + evicted[RecordKind.HEALTH], bytes=base.bytes,
            in_memory=in_memory, memory_bytes=memory_bytes,
        )

    def publish_latency(self) -> StageLatency | None:
        """Outbox-to-PUBACK latency over the last acknowledged records (None before the first ack)."""
        values = sorted(self._latencies_s)
        if not values:
            return None
        n = len(values)
        return StageLatency("mqtt_publish", values[n // 2] * 1e3, values[min(n - 1, int(n * 0.99))] * 1e3,
                            values[-1] * 1e3, n)

    def counters(self) -> tuple[int, int, int]:
        """(published, acknowledged, expired) records since start."""
        return self._published, self._acked, self._expired

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty and nothing is in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._flushed:
            while self.backlog().total > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._flushed.wait(min(remaining, 0.1))
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Flush for up to ``timeout`` s, publish status offline, disconnect; True if nothing was left behind.

        What is not acknowledged stays in the outbox file for the next start.
        """
        if self._closed:
            return True
        flushed = self.flush(timeout) if self._thread is not None else False
        self._closed = True
        self.set_status(StatusState.OFFLINE, "shutdown")
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=5.0)
            # The publisher thread is gone, so this thread may publish: say offline before a clean DISCONNECT
            # (after which the broker does not send the will).
            if self._connected and self._status_sent != self._status_version:
                try:
                    self._send_status(self.status()).wait_for_publish(timeout=2.0)
                except (RuntimeError, ValueError) as exc:
                    log.warning("mqtt: offline status not confirmed on close (%s)", exc)
            self._client.disconnect()
            self._client.loop_stop()
        with self._store_lock:
            self._memory.abandon_sending()
            if len(self._memory) and (self.outbox is not None or self._open_outbox()):
                try:
                    self._migrate_locked()
                except OutboxWriteError as exc:
                    self._set_store_problem(exc.reason, str(exc))
            if len(self._memory):
                kinds = {k.value: n for k, n in self._memory.counts().items() if n}
                log.error("mqtt: closing with %s record(s) only in memory (the outbox cannot write): they are "
                          "lost unless their decisions are offered again", kinds)
            if self.outbox is not None:
                self.outbox.close()
        return flushed

    def __enter__(self) -> MqttSink:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- paho callbacks (paho's thread: only record and wake) ---------------------------------------------

    def _on_pre_connect(self, client: paho.Client, userdata: Any) -> None:
        self._had_connack = False
        self._last_transport_error = None
        payload = status_payload(self.site.site_id, self.site.scanner_id, StatusState.OFFLINE,
                                 "connection to the box lost (last will)", time.time(), self.client_id)
        props = None
        if self._v5:
            props = Properties(PacketTypes.WILLMESSAGE)
            props.ContentType = JSON
            props.UserProperty = [("schema", STATUS_SCHEMA), ("record_id", str(payload["record_id"]))]
        client.will_set(self.topics.status, encode(payload), qos=1, retain=True, properties=props)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            self._set_link(LinkState.ERROR, f"broker at {self.config.host}:{self.config.port} refused the "
                           f"connection: {reason_code} (check mqtt.username / password_file / client_id)")
            return
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        self._receive_maximum = min(self.config.inflight_max, int(receive_max or self.config.inflight_max))
        self._had_connack = True
        self._last_progress_mono = time.monotonic()
        self._connected = True
        with self._state_lock:
            self._connect_generation += 1
        self._set_link(LinkState.UP, "")
        self._wake.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        self._connected = False
        if self._stop.is_set():
            with self._state_lock:
                self._link = LinkHealth("mqtt", LinkState.DOWN, "closed", time.time())
            return
        if self.link().state is LinkState.ERROR and not self._had_connack:
            return  # keep the more specific reason (e.g. CONNACK refusal)
        error = self._last_transport_error or (str(reason_code) if reason_code is not None else None)
        state, reason = explain_lost_connection(error, self._had_connack, self.config)
        self._set_link(state, reason)

    def _on_connect_error(self, exc: BaseException) -> None:
        self._connected = False
        state, reason = explain_connect_error(exc, self.config)
        self._set_link(state, reason)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        self._acks.put(_Ack(mid, bool(reason_code.is_failure), str(reason_code)))
        self._wake.set()

    def _on_log(self, client: paho.Client, userdata: Any, level: int, buf: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            self._last_transport_error = buf

    def _set_link(self, state: LinkState, reason: str) -> None:
        # Log before the state changes, so whoever sees the new state also finds its log line.
        if state is LinkState.UP:
            if self._last_logged_reason:
                log.info("mqtt: connected to %s:%d", self.config.host, self.config.port)
            self._last_logged_reason = ""
        elif reason != self._last_logged_reason:
            # One log line per distinct cause, not one per retry.
            self._last_logged_reason = reason
            (log.error if state is LinkState.ERROR else log.warning)("mqtt: %s", reason)
        with self._state_lock:
            if self._link.state is not state or self._link.reason != reason:
                self._link = LinkHealth("mqtt", state, reason, time.time())

    # ---- publisher thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        inflight: dict[int, StoredRecord] = {}
        memory_inflight: dict[int, str] = {}
        cursor = 0
        generation = 0
        rejected: list[int] = []
        rewind_at = 0.0
        memory_retry_at = 0.0
        next_store_retry = 0.0
        next_health = time.monotonic() + self.config.health_interval_s
        status_mid: int | None = None
        while not self._stop.is_set():
            self._wake.wait(timeout=0.25)
            self._wake.clear()
            try:
                done: list[StoredRecord] = []
                while True:
                    try:
                        ack = self._acks.get_nowait()
                    except queue.Empty:
                        break
                    if ack.mid == status_mid:
                        status_mid = None
                        continue
                    if ack.mid in memory_inflight:
                        self._memory_acked(memory_inflight.pop(ack.mid), ack)
                        if ack.failed:
                            memory_retry_at = time.monotonic() + _REJECTED_RETRY_S
                        continue
                    stored = inflight.pop(ack.mid, None)
                    if stored is None:
                        continue
                    if ack.failed:
                        log.error("mqtt: broker rejected %s on %s (%s); kept in the outbox, retrying",
                                  stored.record.record_id, stored.record.topic, ack.reason)
                        self._set_link(LinkState.DEGRADED, f"broker rejects publishing to "
                                       f"{stored.record.topic}: {ack.reason}")
                        rejected.append(stored.seq)
                        rewind_at = time.monotonic() + _REJECTED_RETRY_S
                    else:
                        done.append(stored)
                if done:
                    self._last_progress_mono = time.monotonic()
                    self._delete_acked([s.seq for s in done])
                    now = time.time()
                    self._acked += len(done)
                    self._latencies_s.extend(now - s.record.created_wall for s in done)
                    with self._flushed:
                        self._flushed.notify_all()
                if time.monotonic() >= next_store_retry:
                    next_store_retry = time.monotonic() + _STORE_RETRY_S
                    self._retry_storage()
                if self._health_source is not None and time.monotonic() >= next_health:
                    next_health = time.monotonic() + self.config.health_interval_s
                    self.publish_health(self._health_source())
                if not self._connected:
                    continue
                with self._state_lock:
                    gen, version, status = self._connect_generation, self._status_version, self._status
                if gen != generation or version != self._status_sent:
                    generation = gen
                    status_mid = self._send_status(status).mid
                    self._status_sent = version
                exclude: frozenset[int] = frozenset()
                if rejected and time.monotonic() >= rewind_at:
                    cursor = min(rejected) - 1
                    rejected.clear()
                    exclude = frozenset(s.seq for s in inflight.values())
                # the retained status message is QoS 1 too and counts against the broker's Receive Maximum
                room = self._receive_maximum - len(inflight) - len(memory_inflight) - (status_mid is not None)
                if room > 0 and time.monotonic() >= memory_retry_at:
                    room -= self._send_from_memory(room, memory_inflight)
                if room <= 0 or self.outbox is None:
                    continue
                rows = self.outbox.fetch(cursor, room, exclude)
                expired: list[int] = []
                for stored in rows:
                    mid = self._send_record(stored, expired)  # raises: the cursor stays, the record is sent again
                    cursor = max(cursor, stored.seq)
                    if mid is not None:
                        inflight[mid] = stored
                if expired:
                    self._expired += len(expired)
                    self._delete_acked(expired)
                if len(rows) == room:
                    self._wake.set()  # more waiting: keep going as acks free room
            except PublishError as exc:
                log.error("mqtt publisher: %s", exc)
                self._stop.wait(1.0)
            except Exception:  # pragma: no cover - last line of defence; the thread must not die silently
                log.exception("mqtt publisher: unexpected error; continuing")
                self._stop.wait(1.0)

    def _delete_acked(self, seqs: list[int]) -> None:
        """Delete acknowledged records; on a full disk keep their seqs and retry (they may be sent again)."""
        if self.outbox is None:
            return
        with self._store_lock:
            try:
                self.outbox.delete([*self._pending_deletes, *seqs])
                self._pending_deletes = []
            except OutboxWriteError as exc:
                self._pending_deletes.extend(seqs)
                self._set_store_problem(exc.reason, str(exc))

    def _send_from_memory(self, room: int, memory_inflight: dict[int, str]) -> int:
        """Send records held in memory and not yet in flight, alarms first; return how many were sent."""
        with self._store_lock:
            sent = 0
            for r in self._memory.to_send(room):
                mid = self._send(r)
                if mid is None:  # expired health
                    self._memory.forget(r.record_id)
                    continue
                memory_inflight[mid] = r.record_id
                self._memory.sending(r.record_id)
                sent += 1
            return sent

    def _memory_acked(self, record_id: str, ack: _Ack) -> None:
        with self._store_lock:
            self._memory.acknowledged(record_id, not ack.failed)
        if ack.failed:
            log.error("mqtt: broker rejected %s (%s); kept in memory, retrying", record_id, ack.reason)
            return
        self._last_progress_mono = time.monotonic()
        self._acked += 1
        with self._flushed:
            self._flushed.notify_all()

    def _send_record(self, stored: StoredRecord, expired: list[int]) -> int | None:
        mid = self._send(stored.record)
        if mid is None:
            expired.append(stored.seq)
        return mid

    def _send(self, r: OutboxRecord) -> int | None:
        """Publish one record; its message id, or None when it expired before it could be sent."""
        props = None
        if self._v5:
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = r.content_type
            users = [("record_id", r.record_id)]
            if r.schema:
                users.append(("schema", r.schema))
            if r.item_id:
                users.append(("item_id", r.item_id))
            props.UserProperty = users
            if r.expiry_s is not None:
                remaining = r.expiry_s - (time.time() - r.created_wall)
                if remaining < 1:
                    return None
                props.MessageExpiryInterval = int(remaining)
        info = self._client.publish(r.topic, r.payload, qos=r.qos, retain=r.retain, properties=props)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise PublishError(f"paho refused {r.record_id} on {r.topic}: {paho.error_string(info.rc)}")
        self._published += 1
        return info.mid

    def _send_status(self, status: tuple[StatusState, str, float]) -> paho.MQTTMessageInfo:
        state, reason, since = status
        payload = status_payload(self.site.site_id, self.site.scanner_id, state, reason, since, self.client_id)
        props = None
        if self._v5:
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = JSON
            props.UserProperty = [("schema", STATUS_SCHEMA), ("record_id", str(payload["record_id"]))]
        return self._client.publish(self.topics.status, encode(payload), qos=1, retain=True, properties=props)


def disk_usage(path: str) -> tuple[int, int]:
    """(free, total) bytes of the filesystem holding ``path``: a helper for filling ``HealthSnapshot.disks``."""
    usage = shutil.disk_usage(path)
    return usage.free, usage.total
