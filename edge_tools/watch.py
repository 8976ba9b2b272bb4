"""``edge watch``: the reference control-room subscriber. Prints one line per decision, alarm and status change,
with the reasons of each ALARM item (``[known:cutter, classifier]``), and one per lane action (``<prefix>/actions``:
divert done / missed_divert / failed), operator verdict (``<prefix>/verdicts``) and its acknowledgement.

It subscribes to ``<prefix>/#`` (wildcards allowed in the prefix, so ``xray/+/+`` watches every box), drops
redeliveries by ``record_id`` (the publisher sends at least once), checks each JSON payload against the
shipped schema and optionally saves overlay images to a folder. With ``--persistent`` it keeps an MQTT 5
session on the broker, so alarms published while it was away are delivered when it comes back.

It is a tool for people and a worked example for integrators; it writes nothing except the images asked for.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import typer
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config.mqtt import MqttConfig, TlsConfig
from edge.errors import EdgeError
from edge.publish.tls import build_tls_context, explain_connect_error, read_credentials
from edge.schemas import SCHEMA_NAMES, validator

_DEDUP_WINDOW = 50_000


class Watcher:
    """Turns messages into lines; separate from the CLI so tests and integrators can reuse it."""

    def __init__(self, echo: Callable[[str], None], save_dir: Path | None = None, alarms_only: bool = False,
                 show_health: bool = False) -> None:
        self.echo = echo
        self.save_dir = save_dir
        self.alarms_only = alarms_only
        self.show_health = show_health
        self.lines = 0
        self.duplicates = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._validators: dict[str, Any] = {}

    def _first_time(self, rid: str) -> bool:
        if rid in self._seen:
            self.duplicates += 1
            return False
        self._seen[rid] = None
        if len(self._seen) > _DEDUP_WINDOW:
            self._seen.popitem(last=False)
        return True

    def _emit(self, line: str) -> None:
        self.lines += 1
        self.echo(f"{time.strftime('%H:%M:%S')} {line}")

    def handle(self, topic: str, payload: bytes, user_properties: dict[str, str]) -> None:
        """Print (and save) one message, unless it is a redelivery of a record already shown."""
        parts = topic.split("/")
        if len(parts) >= 2 and parts[-2] == "images":
            self._image(parts[-1], payload, user_properties.get("record_id"))
            return
        if parts[-1] == "actions" or parts[-1] == "verdicts" or parts[-2:] == ["verdicts", "ack"]:
            self._lane(parts, payload, user_properties.get("record_id"))
            return
        kind = parts[-1]
        if kind not in ("items", "alarms", "status", "health"):
            return
        if kind == "items" and self.alarms_only:
            return
        if kind == "health" and not self.show_health:
            return
        if kind == "status" and not payload:
            return  # a cleared retained status
        try:
            body = json.loads(payload)
            schema = body.get("schema") if isinstance(body, dict) else None
            if schema not in SCHEMA_NAMES:
                raise ValueError(f"unknown schema {schema!r}")
            if schema not in self._validators:
                self._validators[schema] = validator(schema)
            errors = sorted(self._validators[schema].iter_errors(body), key=str)
            if errors:
                raise ValueError(errors[0].message)
        except (ValueError, UnicodeDecodeError) as exc:
            self._emit(f"CORRUPT    {topic}: {exc}")
            return
        if kind != "status" and not self._first_time(str(body["record_id"])):
            return
        who = f"{body['site_id']}/{body['scanner_id']}"
        if kind == "status":
            self._emit(f"STATUS     {who} {body['state']} ({body['reason']})")
        elif kind == "health":
            box = body["outbox"]
            links = " ".join(f"{link['name']}={link['state']}" for link in body["links"])
            self._emit(f"HEALTH     {who} {body['status']} outbox={box['alarm']}a/{box['item']}i {links}")
        else:
            verdict = str(body["verdict"]).upper()
            tag = "ALARM " if kind == "alarms" else "ITEM  "
            score = body["item_score"]
            extra = f"reason={body['reason']} {body['detail']}".rstrip() if body["reason"] else (
                f"score={score:.3f}" if isinstance(score, float | int) else "score=-")
            anomalous = sum(1 for o in body["objects"] if o["anomalous"])
            # item@2 / alarm@2 list why an ALARM item alarmed; item@1 has no reasons (nothing is printed then)
            reasons = body.get("reasons") or []
            why = f" [{', '.join(map(str, reasons))}]" if body["verdict"] == "alarm" and reasons else ""
            self._emit(f"{tag}     {who} {verdict:<10} {body['item_id']}{why} {extra} "
                       f"objects={len(body['objects'])} anomalous={anomalous}")

    def _lane(self, parts: list[str], payload: bytes, rid: str | None) -> None:
        """One line per lane action (``<prefix>/actions``, action-1), operator verdict (``<prefix>/verdicts``,
        verdict-1) and the box's answer to it (``<prefix>/verdicts/ack``, verdict-ack-1)."""
        ack = parts[-1] == "ack"
        prefix = parts[:-2] if ack else parts[:-1]
        who = "/".join(prefix[-2:])
        expected = "verdict-ack-1" if ack else "action-1" if parts[-1] == "actions" else "verdict-1"
        try:
            body = json.loads(payload)
            if not isinstance(body, dict) or body.get("schema") != expected:
                raise ValueError(f"expected a {expected} record")
            if expected == "verdict-1":
                if expected not in self._validators:
                    from jsonschema import Draft202012Validator

                    from edge.verdicts import verdict_schema

                    self._validators[expected] = Draft202012Validator(verdict_schema())
                errors = sorted(self._validators[expected].iter_errors(body), key=str)
                if errors:
                    raise ValueError(errors[0].message)
        except (ValueError, UnicodeDecodeError) as exc:
            self._emit(f"CORRUPT    {'/'.join(parts)}: {exc}")
            return
        if expected == "action-1":
            # the outbox record id (a user property) names one action outcome; the payload's record_id is the item's
            key = rid or f"{body.get('record_id')}/{body.get('action')}/{body.get('outcome')}"
            if not self._first_time(f"action:{key}"):
                return
            what = f"{body.get('action')}:{body.get('outcome')}"
            self._emit(f"ACTION     {who} {what:<20} {body.get('item_id')} {body.get('detail') or ''}".rstrip())
        elif expected == "verdict-1":
            if not self._first_time(f"verdict:{body['verdict_id']}"):
                return
            self._emit(f"VERDICT    {who} {str(body['verdict']).upper():<16} {body['item_id']} by "
                       f"{body['operator']} ({body['role']})")
        else:
            state = "stored" if body.get("stored") else f"REFUSED {body.get('error')}"
            self._emit(f"ACK        {who} verdict {body.get('verdict_id')} {state}")

    def _image(self, item_id: str, payload: bytes, rid: str | None) -> None:
        if rid is not None and not self._first_time(rid):
            return
        where = ""
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            path = self.save_dir / f"{item_id}.jpg"
            tmp = path.with_suffix(".jpg.part")
            tmp.write_bytes(payload)
            os.replace(tmp, path)
            where = f" -> {path}"
        self._emit(f"IMAGE      {item_id} {len(payload)} bytes{where}")


def watch(
    host: str = typer.Option("127.0.0.1", help="broker host"),
    port: int = typer.Option(1883, help="broker port (8883 is usual for TLS)"),
    prefix: str = typer.Option("xray/+/+", help="topic prefix to watch; MQTT wildcards allowed"),
    save_dir: Path | None = typer.Option(None, "--save-dir", help="save overlay JPEGs here as <item_id>.jpg"),
    alarms_only: bool = typer.Option(False, "--alarms-only", help="print alarms and status, not every item"),
    health: bool = typer.Option(False, "--health", help="also print health records"),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help="CA file: use TLS and trust this CA"),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="client certificate (PEM)"),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="client key (PEM)"),
    tls_insecure: bool = typer.Option(False, "--tls-insecure", help="do not check the broker's host name"),
    username: str | None = typer.Option(None, help="user name"),
    password_file: Path | None = typer.Option(None, "--password-file", help="file holding the password"),
    protocol: str = typer.Option("5", help="MQTT protocol: 5 or 3.1.1"),
    client_id: str | None = typer.Option(None, "--client-id", help="client id (needed with --persistent)"),
    persistent: bool = typer.Option(
        False, "--persistent", help="keep a broker session (1 day) so alarms sent while away are delivered"
    ),
    count: int = typer.Option(0, help="exit after this many lines (0 = run until Ctrl-C)"),
    duration: float = typer.Option(0.0, help="exit after this many seconds (0 = run until Ctrl-C)"),
) -> None:
    """Watch decisions and alarms live, one line each; de-duplicates redeliveries by record_id.

    Example:

        edge watch --host broker.local --prefix xray/hub1/+ --alarms-only --save-dir /tmp/overlays

        edge watch --port 8883 --tls-ca ca.crt --tls-cert me.crt --tls-key me.key --persistent --client-id cr1
    """
    if protocol not in ("5", "3.1.1"):
        raise typer.BadParameter("expected 5 or 3.1.1", param_hint="--protocol")
    if persistent and not client_id:
        raise typer.BadParameter("a persistent session needs a fixed --client-id", param_hint="--persistent")
    try:
        cfg = MqttConfig(
            host=host, port=port, protocol=protocol,
            username=username, password_file=password_file,
            tls=None if tls_ca is None else TlsConfig(ca_file=tls_ca, cert_file=tls_cert, key_file=tls_key,
                                                      insecure_skip_hostname_check=tls_insecure),
        )
        v5 = protocol == "5"
        cid = client_id or f"edge-watch-{os.getpid()}"
        if v5:
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv5)
        else:
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv311,
                                 clean_session=not persistent)
        if cfg.tls is not None:
            client.tls_set_context(build_tls_context(cfg.tls))
            if tls_insecure:
                client.tls_insecure_set(True)
        user, password = read_credentials(cfg)
        if user is not None:
            client.username_pw_set(user, password)
    except EdgeError as exc:
        typer.echo(f"edge watch: {exc}", err=True)
        raise typer.Exit(2) from exc

    done = threading.Event()
    watcher = Watcher(typer.echo, save_dir, alarms_only, health)
    topic = f"{prefix.rstrip('/')}/#"

    def on_connect(c: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Properties | None) -> None:
        if rc.is_failure:
            typer.echo(f"edge watch: broker refused the connection: {rc}", err=True)
            return
        c.subscribe(topic, qos=1)
        typer.echo(f"edge watch: connected to {host}:{port}, watching {topic}", err=True)

    def on_message(c: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if count and watcher.lines >= count:
            return  # --count reached; the main thread is disconnecting
        users = dict(getattr(msg.properties, "UserProperty", None) or []) if msg.properties else {}
        watcher.handle(msg.topic, bytes(msg.payload), users)
        if count and watcher.lines >= count:
            done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    props = None
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 86_400 if persistent else 0
    try:
        client.connect(host, port, keepalive=30, clean_start=not persistent, properties=props)
    except (OSError, ssl.SSLError) as exc:
        _, reason = explain_connect_error(exc, cfg)
        typer.echo(f"edge watch: {reason}", err=True)
        raise typer.Exit(1) from exc
    client.loop_start()
    try:
        done.wait(duration if duration > 0 else None)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()
    if watcher.duplicates:
        typer.echo(f"edge watch: dropped {watcher.duplicates} redelivered record(s)", err=True)
