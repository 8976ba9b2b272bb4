"""The publisher loop: drain the record store to the broker session, in order, and delete what is acknowledged.

One thread (``mqtt-publisher``) sends records in outbox order, at most the broker's Receive Maximum (capped by
``mqtt.inflight_max``) unacknowledged, and deletes a record only when its PUBACK arrives. A record the broker
rejects stays and is sent again after ``_REJECTED_RETRY_S``; one paho refuses is sent again on the next round
(the cursor does not move past it). Records held in memory (the outbox cannot write) go first, alarms first.
Every second it retries a failing store (``RecordStore.retry``). It also publishes the retained status whenever
it changes or the connection is new, and runs the one health timer (``health_tick`` every
``health_interval_s``, read at each round so a reload applies at once).

Backpressure, not eviction: while the broker is connected and acknowledging, a put that would take the outbox
over its bounds first waits (at most ``_DRAIN_WAIT_S``) for this loop to drain it, so a burst is delivered
whole; only a stalled or disconnected broker lets the bounds evict (``edge.publish.outbox``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from edge.errors import PublishError
from edge.publish.health import LinkHealthState, StageLatency, StatusState
from edge.publish.outbox import OutboxRecord, StoredRecord
from edge.publish.session import Ack, BrokerSession
from edge.publish.store import RecordStore

log = logging.getLogger(__name__)

_REJECTED_RETRY_S = 5.0
_LATENCY_WINDOW = 2000
_STORE_RETRY_S = 1.0
"""How often a failing store is retried (open, write the overflow, delete acked records)."""
_DRAIN_WAIT_S = 2.0
"""Longest a put waits for a connected broker to drain an outbox over its bounds before evicting."""
_DRAIN_STALL_S = 2.0
"""A connected broker that acknowledged nothing for this long is not draining: puts do not wait for it."""


class Publisher:
    """Moves records from ``store`` to ``session``; ``start()``, ``store_records`` from any thread, ``stop()``."""

    def __init__(self, session: BrokerSession, store: RecordStore, wake: threading.Event,
                 health_interval_s: float, health_tick: Callable[[], None]) -> None:
        self.session = session
        self.store = store
        self._wake = wake
        self.health_interval_s = health_interval_s
        """Seconds between ``health_tick`` calls; may be changed while running (a reload)."""
        self._health_tick = health_tick
        self._stop = threading.Event()
        self._flushed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._status_lock = threading.Lock()
        self._status: tuple[StatusState, str, float] = (StatusState.ONLINE, "running", time.time())
        self._status_version = 0
        self._status_sent = 0
        self._last_progress_mono = 0.0
        self._latencies_s: deque[float] = deque(maxlen=_LATENCY_WINDOW)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """End the loop (what is in flight stays in the outbox); the caller may then use the session itself."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    # ---- any thread ---------------------------------------------------------------------------------------

    def store_records(self, records: Sequence[OutboxRecord], wait_for_drain: bool) -> None:
        """Store ``records`` (those not already delivered from memory).

        Raises:
            PublishError: they are only in memory (``RecordStore.put``).
        """
        pending = self.store.undelivered(records)
        if not pending:
            return
        if wait_for_drain:
            self._wait_for_drain(pending)
        self.store.put(pending)

    def _wait_for_drain(self, pending: list[OutboxRecord]) -> None:
        deadline = time.monotonic() + _DRAIN_WAIT_S
        while self.session.connected and self.store.is_over_bound(pending):
            now = time.monotonic()
            progress = max(self._last_progress_mono, self.session.connected_mono)
            if now >= deadline or now - progress > _DRAIN_STALL_S:
                return
            with self._flushed:
                self._flushed.wait(0.05)

    def set_status(self, state: StatusState, reason: str) -> None:
        """Change the retained status (published now if connected, else on the next connect)."""
        with self._status_lock:
            if (state, reason) != self._status[:2]:
                self._status = (state, reason, time.time())
                self._status_version += 1
        self._wake.set()

    def status(self) -> tuple[StatusState, str, float]:
        """Current (state, reason, since_wall) as the status topic shows it."""
        with self._status_lock:
            return self._status

    def status_unsent(self) -> bool:
        with self._status_lock:
            return self._status_sent != self._status_version

    def publish_latency(self) -> StageLatency | None:
        """Outbox-to-PUBACK latency over the last acknowledged records (None before the first ack)."""
        values = sorted(self._latencies_s)
        if not values:
            return None
        n = len(values)
        return StageLatency("mqtt_publish", values[n // 2] * 1e3, values[min(n - 1, int(n * 0.99))] * 1e3,
                            values[-1] * 1e3, n)

    def flush(self, timeout_s: float) -> bool:
        """Wait until nothing waits (outbox, memory) and nothing is in flight; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._flushed:
            while self.store.backlog().total > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._flushed.wait(min(remaining, 0.1))
        return True

    def _progress(self) -> None:
        self._last_progress_mono = time.monotonic()
        with self._flushed:
            self._flushed.notify_all()

    # ---- the publisher thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        inflight: dict[int, StoredRecord] = {}
        memory_inflight: dict[int, str] = {}
        cursor = 0
        generation = 0
        rejected: list[int] = []
        rewind_at = 0.0
        memory_retry_at = 0.0
        next_store_retry = 0.0
        last_health = time.monotonic()
        status_mid: int | None = None
        session = self.session
        while not self._stop.is_set():
            self._wake.wait(timeout=0.25)
            self._wake.clear()
            try:
                done: list[StoredRecord] = []
                for ack in session.take_acks():
                    if ack.mid == status_mid:
                        status_mid = None
                    elif ack.mid in memory_inflight:
                        self._memory_acked(memory_inflight.pop(ack.mid), ack)
                        if ack.failed:
                            memory_retry_at = time.monotonic() + _REJECTED_RETRY_S
                    elif (stored := inflight.pop(ack.mid, None)) is None:
                        continue
                    elif ack.failed:
                        log.error("mqtt: broker rejected %s on %s (%s); kept in the outbox, retrying",
                                  stored.record.record_id, stored.record.topic, ack.reason)
                        session.set_link(LinkHealthState.DEGRADED, f"broker rejects publishing to "
                                         f"{stored.record.topic}: {ack.reason}")
                        rejected.append(stored.seq)
                        rewind_at = time.monotonic() + _REJECTED_RETRY_S
                    else:
                        done.append(stored)
                if done:
                    self.store.delete([s.seq for s in done])
                    now = time.time()
                    self._latencies_s.extend(now - s.record.created_wall for s in done)
                    self._progress()
                if time.monotonic() >= next_store_retry:
                    next_store_retry = time.monotonic() + _STORE_RETRY_S
                    self.store.retry()
                if time.monotonic() >= last_health + self.health_interval_s:
                    last_health = time.monotonic()
                    self._health_tick()
                if not session.connected:
                    continue
                with self._status_lock:
                    gen, version, status = session.connect_generation, self._status_version, self._status
                if gen != generation or version != self._status_sent:
                    generation = gen
                    status_mid = session.send_status(status).mid
                    self._status_sent = version
                exclude: frozenset[int] = frozenset()
                if rejected and time.monotonic() >= rewind_at:
                    cursor = min(rejected) - 1
                    rejected.clear()
                    exclude = frozenset(s.seq for s in inflight.values())
                # the retained status message is QoS 1 too and counts against the broker's Receive Maximum
                room = session.receive_maximum - len(inflight) - len(memory_inflight) - (status_mid is not None)
                if room > 0 and time.monotonic() >= memory_retry_at:
                    sent = self.store.send_from_memory(room, session.send)
                    memory_inflight.update(sent)
                    room -= len(sent)
                if room <= 0:
                    continue
                rows = self.store.fetch(cursor, room, exclude)
                expired: list[int] = []
                for stored in rows:
                    mid = self._send_record(stored, expired)  # raises: the cursor stays, the record is sent again
                    cursor = max(cursor, stored.seq)
                    if mid is not None:
                        inflight[mid] = stored
                if expired:
                    self.store.delete(expired)
                if len(rows) == room:
                    self._wake.set()  # more waiting: keep going as acks free room
            except PublishError as exc:
                log.error("mqtt publisher: %s", exc)
                self._stop.wait(1.0)
            except Exception:  # pragma: no cover - last line of defence; the thread must not die silently
                log.exception("mqtt publisher: unexpected error; continuing")
                self._stop.wait(1.0)

    def _memory_acked(self, record_id: str, ack: Ack) -> None:
        self.store.memory_acknowledged(record_id, not ack.failed)
        if ack.failed:
            log.error("mqtt: broker rejected %s (%s); kept in memory, retrying", record_id, ack.reason)
            return
        self._progress()

    def _send_record(self, stored: StoredRecord, expired: list[int]) -> int | None:
        mid = self.session.send(stored.record)
        if mid is None:
            expired.append(stored.seq)
        return mid
