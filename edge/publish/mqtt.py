"""``MqttSink``: the pipeline's MQTT ``ResultSink``. Decisions go into the disk outbox; a thread drains it.

Where it sits: the last stage. ``publish`` commits the item, alarm and image records to the outbox (one
transaction) and returns; it never waits for the network. After a crash the next process replays whatever is
still in the outbox, in order (subscribers de-duplicate by ``record_id``). It must not block the pipeline on
the broker, and it must not drop a record that has no PUBACK.

The parts, one job each:

* ``edge.publish.compose``: decision, health snapshot, status -> records (pure, no I/O);
* ``edge.publish.store``: the outbox and, while it cannot write, the memory overflow (``problem`` says why);
* ``edge.publish.session``: the paho client (connect, TLS, will, callbacks, link state);
* ``edge.publish.publisher``: the thread that drains the store to the session, deletes on PUBACK, retries,
  publishes the retained status and runs the one health timer.

The retained ``status`` topic is not queued in the outbox: it always says the *current* state, is published
on every (re)connect and change, and the last will (set before each connect) says offline.

Health never raises: a health tick on a full disk used to raise out of the service's main loop and end it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from edge.config.mqtt import MqttConfig
from edge.config.site import SiteConfig
from edge.errors import PublishError
from edge.publish.compose import decision_records, health_record
from edge.publish.health import HealthSnapshot, LinkHealth, OutboxBacklog, StageLatency, StatusState
from edge.publish.publisher import Publisher
from edge.publish.session import BrokerSession
from edge.publish.store import RecordStore
from edge.publish.topics import Topics
from edge.records import Decision

log = logging.getLogger(__name__)


class MqttSink:
    """Publishes decisions, health and status; construct, ``start()``, then ``close()`` (or use ``with``).

    Args:
        config: the ``mqtt:`` section.
        site: site and scanner ids (topic prefix, record ids).
        health_source: if given, called every ``mqtt.health_interval_s`` on the publisher thread and its
            snapshot published: the box's one health timer. May also be set later (``health_source``).

    Raises:
        PublishError: at construction, when TLS files, credentials or the outbox are unusable.
    """

    def __init__(self, config: MqttConfig, site: SiteConfig,
                 health_source: Callable[[], HealthSnapshot] | None = None) -> None:
        self.config = config
        self.site = site
        self.topics = Topics.for_site(site.site_id, site.scanner_id, config.topic_prefix)
        self.client_id = config.client_id or f"edge-{site.site_id}-{site.scanner_id}"
        self.health_source = health_source
        self._closed = False
        wake = threading.Event()
        self._session = BrokerSession(config, site, self.topics, self.client_id, on_event=wake.set)
        self._store = RecordStore(config.outbox, on_put=wake.set)
        self.publisher = Publisher(self._session, self._store, wake, config.health_interval_s, self._health_tick)

    def start(self) -> MqttSink:
        """Start connecting and draining the outbox; returns self. Records put before start are kept."""
        if not self.publisher.running:
            self._session.start()
            self.publisher.start()
        return self

    # ---- ResultSink ---------------------------------------------------------------------------------------

    def publish(self, decision: Decision) -> None:
        """Store the decision's records (alarm if ALARM/UNSCREENED, item, overlay image) before returning.

        Raises:
            PublishError: the outbox could not store them (disk full, I/O error) or the sink is closed; the
                records are kept in memory and published from there, and the pipeline offers the decision
                again (the same records: a retry after their delivery writes nothing).
        """
        if self._closed:
            raise PublishError(f"{decision.item_id}: publish after close")
        records = decision_records(decision, self.site, self.topics, self.config, time.time())
        self.publisher.store_records(records, wait_for_drain=True)

    publish_decision = publish
    """The name callers used before the sink was a ``ResultSink`` itself (tests, benchmarks)."""

    def close(self, timeout_s: float = 5.0) -> bool:
        """Flush for up to ``timeout_s``, publish status offline, disconnect; True if nothing was left behind.

        What is not acknowledged stays in the outbox file for the next start.
        """
        if self._closed:
            return True
        flushed = self.publisher.flush(timeout_s) if self.publisher.running else False
        self._closed = True
        self.publisher.set_status(StatusState.OFFLINE, "shutdown")
        if self.publisher.running:
            self._session.closing()
            self.publisher.stop()
            # The publisher thread is gone, so this thread may publish: say offline before a clean DISCONNECT
            # (after which the broker does not send the will).
            if self._session.connected and self.publisher.status_unsent():
                try:
                    self._session.send_status(self.publisher.status()).wait_for_publish(timeout=2.0)
                except (RuntimeError, ValueError) as exc:
                    log.warning("mqtt: offline status not confirmed on close (%s)", exc)
            self._session.stop()
        self._store.close()
        return flushed

    def __enter__(self) -> MqttSink:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- health and status --------------------------------------------------------------------------------

    def publish_health(self, snapshot: HealthSnapshot) -> None:
        """Queue a health record (expires after two health intervals: stale health misleads).

        Never raises for storage faults: the record then goes out from memory and ``problem`` says why.
        """
        record = health_record(snapshot, self.site, self.topics, self.config.qos, self.publisher.health_interval_s,
                               self.status()[:2], self.link(), self.backlog(), self.publish_latency(), time.time())
        with contextlib.suppress(PublishError):
            self.publisher.store_records([record], wait_for_drain=False)

    def _health_tick(self) -> None:
        """The publisher's health timer: a snapshot from ``health_source`` published (nothing without one)."""
        source = self.health_source
        if source is None:
            return
        try:
            snapshot = source()
        except Exception:  # the snapshot reads the whole service; a bug there must not stop the publisher
            log.exception("mqtt: health snapshot failed; no health record this time")
            return
        self.publish_health(snapshot)

    def set_health_interval(self, interval_s: float) -> None:
        """Change ``mqtt.health_interval_s`` while running (a reload); the next record follows the new one."""
        self.publisher.health_interval_s = interval_s

    def set_status(self, state: StatusState, reason: str) -> None:
        """Change the retained status (published now if connected, else on the next connect)."""
        self.publisher.set_status(state, reason)

    def status(self) -> tuple[StatusState, str, float]:
        """Current (state, reason, since_wall) as the status topic shows it."""
        return self.publisher.status()

    @property
    def problem(self) -> str | None:
        """Why publishing is unhealthy (None when fine): the outbox cannot write, or holds only alarms over its
        bounds, or the memory overflow does. The broker link is reported apart, by ``link()``."""
        return self._store.problem

    def link(self) -> LinkHealth:
        """Broker link as last seen: UP, DOWN (retrying) or ERROR (config/cert problem; reason says which)."""
        return self._session.link()

    def backlog(self) -> OutboxBacklog:
        """Records waiting (in the outbox and in memory), by kind, and evictions since start."""
        return self._store.backlog()

    def publish_latency(self) -> StageLatency | None:
        """Outbox-to-PUBACK latency over the last acknowledged records (None before the first ack)."""
        return self.publisher.publish_latency()

    def flush(self, timeout_s: float) -> bool:
        """Wait until the outbox is empty and nothing is in flight; False on timeout."""
        return self.publisher.flush(timeout_s)
