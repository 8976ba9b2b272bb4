"""Operator verdicts from the control room: received over MQTT, validated, stored beside the item, answered.

Shared contract 3 (``edge/schemas/verdict-1.schema.json``): the console publishes ``verdict-1`` JSON on
``<box prefix>/verdicts`` (QoS 1, not retained); the box stores each verdict once (by ``verdict_id``) in the audit
store beside the item's record, with an OPERATOR DICOS report, and answers on ``<box prefix>/verdicts/ack`` with
``verdict-ack-1`` (``stored`` true, also for a redelivery; false with ``error`` when it cannot).

Why its own client: the decision publisher's session is clean on purpose (its outbox is the durable part), but a
verdict published while the box is down lives only in the broker. This client keeps a persistent session (MQTT 5
``clean_start`` false with a session expiry; 3.1.1 ``clean_session`` false) under a stable client id, so the
broker queues verdicts for the box and delivers them when it is back. A verdict is stored before its PUBACK is
sent (paho acknowledges after ``on_message`` returns), so one the box crashed on is delivered again.

What it must not do: crash or stall the service. Bad input (not JSON, not the schema, an unknown record) is
logged and answered with ``stored: false`` and the reason; a failing store is answered the same way and shown in
health; a failing callback (a firmware action) is logged and the verdict stays stored.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config.mqtt import MqttConfig
from edge.config.site import SiteConfig
from edge.config.verdicts import VerdictsConfig
from edge.sinks.audit import TDR_SUFFIX, AuditRecord, AuditStore

log = logging.getLogger(__name__)

VERDICT_SCHEMA: Final = "verdict-1"
ACK_SCHEMA: Final = "verdict-ack-1"
SCHEMA_FILE: Final = "verdict-1.schema.json"
MAX_PAYLOAD_BYTES: Final = 256 * 1024
"""A verdict-1 message is a few kB (the note is at most 4,000 characters); past this it is refused unread, so a
huge message costs the intake thread no parse and the ack does not echo it."""
MAX_ERROR_CHARS: Final = 300
"""An ack's error text is cut here: a schema message quotes the offending value, which may be megabytes."""
MAX_DECIDED_WALL: Final = 253_402_300_800.0
"""Year 10000 in UNIX seconds: past it a time cannot be written (the OPERATOR report's DICOM date and time)."""



@dataclass(frozen=True, slots=True)
class OperatorVerdict:
    """One operator's verdict on one item, as the console sent it (validated against ``verdict-1``)."""

    verdict_id: str
    record_id: str
    item_id: str
    verdict: str
    """``threat_confirmed`` | ``cleared`` | ``sent_to_search``."""
    operator: str
    role: str
    decided_wall: float
    console_id: str
    note: str | None = None

    @classmethod
    def from_message(cls, body: Mapping[str, Any]) -> OperatorVerdict:
        """From a message that passed the schema (extra fields are ignored)."""
        return cls(str(body["verdict_id"]), str(body["record_id"]), str(body["item_id"]), str(body["verdict"]),
                   str(body["operator"]), str(body["role"]), float(body["decided_wall"]), str(body["console_id"]),
                   None if body.get("note") is None else str(body["note"]))


VerdictCallback = Callable[[str, OperatorVerdict], None]
"""Called with (record_id, verdict) once per newly stored verdict (e.g. ``Actions.on_verdict``: release a parcel)."""


@dataclass(frozen=True, slots=True)
class VerdictAck:
    """The answer to one verdict message (``verdict-ack-1``)."""

    verdict_id: str | None
    stored: bool
    error: str | None
    duplicate: bool = False
    """Stored before (a redelivery): answered ``stored`` true, nothing written, no callback."""

    def payload(self) -> bytes:
        return json.dumps({"schema": ACK_SCHEMA, "verdict_id": self.verdict_id, "stored": self.stored,
                           "error": self.error}, separators=(",", ":")).encode()


def verdict_schema() -> dict[str, Any]:
    """The ``verdict-1`` JSON Schema shipped in ``edge/schemas``."""
    text = resources.files("edge.schemas").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return cast(dict[str, Any], json.loads(text))


def verdict_topics(mqtt: MqttConfig, site: SiteConfig) -> tuple[str, str]:
    """(verdicts topic, ack topic) under the box's prefix (``mqtt.topic_prefix`` or ``xray/<site>/<scanner>``)."""
    from edge.publish.topics import Topics

    prefix = Topics.for_site(site.site_id, site.scanner_id, mqtt.topic_prefix).prefix
    return f"{prefix}/verdicts", f"{prefix}/verdicts/ack"


class VerdictStore:
    """Validates and stores verdicts in the audit store; no MQTT (the intake feeds it, tests call it directly)."""

    def __init__(self, audit: AuditStore, callbacks: Sequence[VerdictCallback] = ()) -> None:
        from jsonschema import Draft202012Validator

        self._audit = audit
        self._validator = Draft202012Validator(verdict_schema())
        self.callbacks: list[VerdictCallback] = list(callbacks)
        self.problem: str | None = None
        """Why the last verdict could not be stored (None once one is): read by health."""
        self.stored = 0
        self.duplicates = 0
        self.refused = 0

    def handle(self, payload: bytes) -> VerdictAck:
        """Store one verdict message and say how it went; never raises."""
        try:
            return self._handle(payload)
        except Exception as exc:  # a bug must not cost the intake its thread; the console is told
            log.exception("verdict not handled")
            self.refused += 1
            return VerdictAck(None, False, f"internal error: {type(exc).__name__}: {exc}")

    def _handle(self, payload: bytes) -> VerdictAck:
        from jsonschema.exceptions import best_match

        if len(payload) > MAX_PAYLOAD_BYTES:
            return self._refuse(None, f"message of {len(payload)} bytes; a {VERDICT_SCHEMA} message is at most "
                                      f"{MAX_PAYLOAD_BYTES} bytes")
        constants: list[str] = []

        def constant(name: str) -> float:
            constants.append(name)
            return math.nan

        try:
            body = json.loads(payload, parse_constant=constant)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._refuse(None, f"not JSON: {exc}")
        except RecursionError:
            return self._refuse(None, "not JSON: nested too deep")
        verdict_id = body.get("verdict_id") if isinstance(body, dict) else None
        ack_id = verdict_id if isinstance(verdict_id, str) else None
        if constants:  # Python's extension, not JSON: stored, it would break a strict reader of the audit store
            return self._refuse(ack_id, f"not JSON: {constants[0]} is not a JSON number")
        error = best_match(self._validator.iter_errors(body))
        if error is not None:
            where = "/".join(str(p) for p in error.path) or "message"
            return self._refuse(ack_id, f"not a {VERDICT_SCHEMA} message: {where}: {error.message}")
        wall = body["decided_wall"]
        if not wall < MAX_DECIDED_WALL:  # a JSON integer may be too large for a float, 10**400
            shown = repr(wall) if isinstance(wall, float) else f"{str(wall)[:20]}… ({len(str(wall))} digits)"
            return self._refuse(ack_id, f"decided_wall: {shown} is not a time (UNIX seconds before the year 10000)")
        verdict = OperatorVerdict.from_message(body)
        record = self._audit.find_record(verdict.record_id, verdict.item_id)
        if record is None:
            return self._refuse(ack_id, f"no item record {verdict.record_id} of item {verdict.item_id!r} in this "
                                        "box's audit store (another box's, pruned, or an alarm record id: send "
                                        "the item record id, alarm records carry it as item_record_id)")
        stored = dict(body)
        stored["received_wall"] = time.time()
        try:
            new = self._audit.store_verdict(record, verdict.verdict_id,
                                            json.dumps(stored, sort_keys=True).encode(), self._report(record, verdict))
        except OSError as exc:
            self.problem = f"operator verdicts cannot be stored: {exc.strerror or exc}"
            log.error("verdict not stored", extra={"verdict_id": verdict.verdict_id, "error": str(exc)})
            self.refused += 1
            return VerdictAck(ack_id, False, self.problem)
        self.problem = None
        if not new:
            self.duplicates += 1
            log.info("verdict already stored", extra={"verdict_id": verdict.verdict_id})
            return VerdictAck(ack_id, True, None, duplicate=True)
        self.stored += 1
        log.info("verdict stored", extra={"verdict_id": verdict.verdict_id, "item_id": verdict.item_id,
                                          "verdict": verdict.verdict, "operator": verdict.operator})
        for callback in list(self.callbacks):
            try:
                callback(verdict.record_id, verdict)
            except Exception:  # an action that fails does not unstore the verdict
                log.exception("verdict callback failed", extra={"verdict_id": verdict.verdict_id})
        return VerdictAck(ack_id, True, None)

    def _refuse(self, verdict_id: str | None, error: str) -> VerdictAck:
        if len(error) > MAX_ERROR_CHARS:
            error = error[: MAX_ERROR_CHARS - 1] + "…"
        self.refused += 1
        log.warning("verdict refused", extra={"verdict_id": verdict_id, "error": error})
        return VerdictAck(verdict_id, False, error)

    @staticmethod
    def _report(record: AuditRecord, verdict: OperatorVerdict) -> bytes | None:
        """The OPERATOR TDR, built on the record's MACHINE report when it has one; None (logged) if it cannot be
        built: the verdict itself is what must not be lost."""
        from pydicom import dcmread

        from edge.dicos._io import encode
        from edge.dicos.tdr import OperatorReview, build_operator_tdr

        machine = None
        path = record.day / f"{record.stem}{TDR_SUFFIX}"
        try:
            if path.exists():
                machine = dcmread(path)
            decided = record.body.get("decided_wall")
            review = OperatorReview(
                verdict_id=verdict.verdict_id, verdict=verdict.verdict, operator=verdict.operator, role=verdict.role,
                decided_wall=verdict.decided_wall, item_id=verdict.item_id,
                scanner_id=str(record.body.get("scanner_id") or ""),
                machine_decided_wall=float(decided) if isinstance(decided, int | float) else None)
            return encode(build_operator_tdr(review, machine))
        except Exception:
            log.exception("OPERATOR TDR not built; the verdict is stored without it",
                          extra={"verdict_id": verdict.verdict_id})
            return None


class VerdictIntake:
    """The box's verdict subscriber: its own paho client with a persistent session on the ``mqtt:`` broker.

    ``start()`` connects in the background (paho's thread, which reconnects by itself); each message is stored
    on that thread before paho acknowledges it; ``stop()`` disconnects. ``problem`` (health) is None while the
    subscriber is connected and the last verdict could be stored.

    Raises:
        PublishError: at construction, when TLS files or credentials are unusable (as for the publisher).
    """

    def __init__(self, mqtt: MqttConfig, config: VerdictsConfig, site: SiteConfig, audit: AuditStore,
                 callbacks: Sequence[VerdictCallback] = ()) -> None:
        from edge.publish.tls import build_tls_context, read_credentials

        self.store = VerdictStore(audit, callbacks)
        self.topic, self.ack_topic = verdict_topics(mqtt, site)
        self.client_id = config.client_id or f"{mqtt.client_id or f'edge-{site.site_id}-{site.scanner_id}'}-verdicts"
        self._mqtt = mqtt
        self._config = config
        self._v5 = mqtt.protocol == "5"
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._link_problem: str | None = "verdict subscriber not connected yet"
        if self._v5:
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5)
        else:
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv311,
                                 clean_session=False)
        if mqtt.tls is not None:
            client.tls_set_context(build_tls_context(mqtt.tls))
            if mqtt.tls.insecure_skip_hostname_check:
                client.tls_insecure_set(True)
        username, password = read_credentials(mqtt)
        if username is not None:
            client.username_pw_set(username, password)
        client.reconnect_delay_set(cast(int, mqtt.reconnect_min_s), cast(int, mqtt.reconnect_max_s))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client

    def add_callback(self, callback: VerdictCallback) -> None:
        """Also call ``callback(record_id, verdict)`` for every newly stored verdict (a firmware action)."""
        self.store.callbacks.append(callback)

    @property
    def problem(self) -> str | None:
        found = [p for p in (self._link_problem, self.store.problem) if p]
        return "; ".join(found) or None

    def start(self) -> None:
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self._config.session_expiry_s
        self._client.connect_async(self._mqtt.host, self._mqtt.port, self._mqtt.keepalive_s,
                                   clean_start=False if self._v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                                   properties=props)
        self._client.loop_start()

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Wait until the broker confirmed the subscription (tests, and ``edge demo`` before it sends one)."""
        return self._subscribed.wait(timeout_s)

    def stop(self) -> None:
        """Disconnect (the session stays on the broker, which queues verdicts until the next start)."""
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._subscribed.clear()

    # ---- paho callbacks (paho's thread) ------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            self._link_problem = (f"verdict subscriber refused by the broker at {self._mqtt.host}:{self._mqtt.port}: "
                                  f"{reason_code}")
            log.error(self._link_problem)
            return
        self._connected.set()
        self._link_problem = None
        # Subscribing again on a resumed session is harmless; on a new one it is what makes the broker queue.
        client.subscribe(self.topic, qos=1)
        log.info("verdict subscriber connected", extra={"topic": self.topic,
                                                        "session_present": bool(getattr(flags, "session_present",
                                                                                        False))})

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        if any(code.is_failure for code in reason_codes):
            self._link_problem = (f"broker refused the subscription to {self.topic} "
                                  f"({', '.join(str(c) for c in reason_codes)}); check the box user's ACL")
            log.error(self._link_problem)
            return
        self._subscribed.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        self._connected.clear()
        self._subscribed.clear()
        self._link_problem = f"verdict subscriber disconnected from the broker ({reason_code}); reconnecting"

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            if message.topic != self.topic:
                return
            ack = self.store.handle(bytes(message.payload))
            client.publish(self.ack_topic, ack.payload(), qos=1)
        except Exception:  # paho would end its network thread on an exception from a callback
            log.exception("verdict message not handled")
