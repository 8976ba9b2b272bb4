"""The paho session to the broker: connect, TLS and credentials, last will, callbacks, sending, link state.

paho's own network thread keeps the connection, resends unacknowledged QoS 1 messages after a reconnect and
backs off between ``reconnect_min_s`` and ``reconnect_max_s``. Its callbacks only record and wake the
publisher (``on_event``), because paho calls ``on_publish`` while holding its own message lock: every
``send`` happens on the publisher's thread. What the outbox holds and when a record may be deleted is not
known here (``edge.publish.publisher``).

The link state says why the broker cannot be used, in words for people, and one log line per distinct cause
(not one per retry). The last will (set before each connect) says offline.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config.mqtt import MqttConfig
from edge.config.site import SiteConfig
from edge.errors import PublishError
from edge.publish.compose import JSON, status_message
from edge.publish.health import LinkHealth, LinkHealthState, StatusState
from edge.publish.outbox import OutboxRecord
from edge.publish.payloads import MQTT_STATUS_SCHEMA
from edge.publish.tls import build_tls_context, explain_connect_error, explain_lost_connection, read_credentials
from edge.publish.topics import Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Ack:
    """The broker's answer to one publish (paho's message id)."""

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


class BrokerSession:
    """One client connection to the broker; ``start()``, ``send``/``send_status`` from one thread, ``stop()``.

    Raises:
        PublishError: at construction, when TLS files or credentials are unusable.
    """

    def __init__(self, config: MqttConfig, site: SiteConfig, topics: Topics, client_id: str,
                 on_event: Callable[[], None]) -> None:
        self.config = config
        self.site = site
        self.topics = topics
        self.client_id = client_id
        self._on_event = on_event
        self._v5 = config.protocol == "5"
        self._acks: queue.SimpleQueue[Ack] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._link = LinkHealth("mqtt", LinkHealthState.DOWN, "not connected yet", time.time())
        self.connected = False
        self.connect_generation = 0
        """Counts CONNACKs: a new one means the retained status must be published again."""
        self.connected_mono = 0.0
        self.receive_maximum = config.inflight_max
        """What the broker lets be in flight at once (MQTT 5 Receive Maximum, capped by ``inflight_max``)."""
        self._closing = False
        self._had_connack = False
        self._last_transport_error: str | None = None
        self._last_logged_reason = ""
        self._client = self._build_client()

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

    # ---- life ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (paho's thread); reconnects by itself."""
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive_s,
                                   clean_start=True, properties=props)
        self._client.loop_start()

    def closing(self) -> None:
        """From now on a lost connection is the close itself, not a fault to report."""
        self._closing = True

    def stop(self) -> None:
        """Clean DISCONNECT (after which the broker does not send the will) and stop paho's thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def link(self) -> LinkHealth:
        """Broker link as last seen: UP, DOWN (retrying) or ERROR (config/cert problem; reason says which)."""
        with self._lock:
            return self._link

    def take_acks(self) -> list[Ack]:
        """The broker's answers received since the last call."""
        acks: list[Ack] = []
        while True:
            try:
                acks.append(self._acks.get_nowait())
            except queue.Empty:
                return acks

    # ---- sending (the publisher's thread only) ------------------------------------------------------------

    def send(self, r: OutboxRecord) -> int | None:
        """Publish one record; its message id, or None when it expired before it could be sent.

        Raises:
            PublishError: paho refused it (e.g. its queue is full); the record stays where it is.
        """
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
        return info.mid

    def send_status(self, status: tuple[StatusState, str, float]) -> paho.MQTTMessageInfo:
        """Publish the retained status (QoS 1)."""
        state, reason, since = status
        payload, rid = status_message(self.site, self.client_id, state, reason, since)
        return self._client.publish(self.topics.status, payload, qos=1, retain=True,
                                    properties=self._status_properties(PacketTypes.PUBLISH, rid))

    def _status_properties(self, packet: int, rid: str) -> Properties | None:
        if not self._v5:
            return None
        props = Properties(packet)
        props.ContentType = JSON
        props.UserProperty = [("schema", MQTT_STATUS_SCHEMA), ("record_id", rid)]
        return props

    # ---- paho callbacks (paho's thread: only record and wake) ---------------------------------------------

    def _on_pre_connect(self, client: paho.Client, userdata: Any) -> None:
        self._had_connack = False
        self._last_transport_error = None
        payload, rid = status_message(self.site, self.client_id, StatusState.OFFLINE,
                                      "connection to the box lost (last will)", time.time())
        client.will_set(self.topics.status, payload, qos=1, retain=True,
                        properties=self._status_properties(PacketTypes.WILLMESSAGE, rid))

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            self.set_link(LinkHealthState.ERROR, f"broker at {self.config.host}:{self.config.port} refused the "
                           f"connection: {reason_code} (check mqtt.username / password_file / client_id)")
            return
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        self.receive_maximum = min(self.config.inflight_max, int(receive_max or self.config.inflight_max))
        self._had_connack = True
        self.connected_mono = time.monotonic()
        self.connected = True
        with self._lock:
            self.connect_generation += 1
        self.set_link(LinkHealthState.UP, "")
        self._on_event()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        self.connected = False
        if self._closing:
            with self._lock:
                self._link = LinkHealth("mqtt", LinkHealthState.DOWN, "closed", time.time())
            return
        if self.link().state is LinkHealthState.ERROR and not self._had_connack:
            return  # keep the more specific reason (e.g. CONNACK refusal)
        error = self._last_transport_error or (str(reason_code) if reason_code is not None else None)
        state, reason = explain_lost_connection(error, self._had_connack, self.config)
        self.set_link(state, reason)

    def _on_connect_error(self, exc: BaseException) -> None:
        self.connected = False
        state, reason = explain_connect_error(exc, self.config)
        self.set_link(state, reason)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        self._acks.put(Ack(mid, bool(reason_code.is_failure), str(reason_code)))
        self._on_event()

    def _on_log(self, client: paho.Client, userdata: Any, level: int, buf: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            self._last_transport_error = buf

    def set_link(self, state: LinkHealthState, reason: str) -> None:
        """Record the link's state (paho's callbacks; the publisher when the broker rejects a topic)."""
        # Log before the state changes, so whoever sees the new state also finds its log line.
        if state is LinkHealthState.UP:
            if self._last_logged_reason:
                log.info("mqtt: connected to %s:%d", self.config.host, self.config.port)
            self._last_logged_reason = ""
        elif reason != self._last_logged_reason:
            # One log line per distinct cause, not one per retry.
            self._last_logged_reason = reason
            (log.error if state is LinkHealthState.ERROR else log.warning)("mqtt: %s", reason)
        with self._lock:
            if self._link.state is not state or self._link.reason != reason:
                self._link = LinkHealth("mqtt", state, reason, time.time())
