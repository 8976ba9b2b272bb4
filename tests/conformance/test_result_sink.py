"""Every ``ResultSink`` through the same cases (``edge.ports.ResultSink``): the audit store, the in-memory sink and
the MQTT sink against a real Mosquitto on a free port. A new sink joins by adding one factory to :data:`SINKS`.

The cases are the port's promises: ``publish`` stores the decision before it returns (what a reader of the
sink's durable side sees: the audit files, the memory list, a control-room subscriber); publishing the same
decision again stores nothing new (the pipeline calls again with the same decision after a failure: the records
keep their ids and contents, so a subscriber drops the repeat); ``close(timeout_s)`` returns within about its
timeout and may be called twice.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.config.audit import AuditConfig
from edge.config.mqtt import MqttConfig, OutboxConfig
from edge.config.site import SiteConfig
from edge.ports import ResultSink
from edge.records import Decision
from edge.sinks.audit import AuditStore
from edge.sinks.memory import MemorySink

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "publish"))

from publish_helpers import MOSQUITTO, Broker, Collector, free_port, make_decision

SLACK_S = 5.0
"""Generous: two cores are shared by many test processes."""

Stored = Callable[[int], dict[str, bytes]]
"""The sink's durable side as record id -> content, once at least ``n`` records are there (or a wait ran out)."""


@dataclass(frozen=True)
class SinkCase:
    name: str
    make: Callable[[Path, Callable[[Callable[[], object]], None]], tuple[ResultSink, Stored]]


def _audit(tmp: Path, on_teardown: Callable[[Callable[[], object]], None]) -> tuple[ResultSink, Stored]:
    store = AuditStore(AuditConfig(directory=tmp / "audit"), "site")

    def stored(n: int) -> dict[str, bytes]:
        out = {}
        for path in sorted((tmp / "audit").rglob("*.json")):
            out[str(json.loads(path.read_bytes())["record_id"])] = path.read_bytes()
        for path in sorted((tmp / "audit").rglob("*.jpg")):
            out[path.name] = path.read_bytes()
        return out

    return store, stored


def _memory(tmp: Path, on_teardown: Callable[[Callable[[], object]], None]) -> tuple[ResultSink, Stored]:
    sink = MemorySink()

    def stored(n: int) -> dict[str, bytes]:
        # The memory sink keeps every call on purpose (the tests' window for catching a decision published
        # twice); what it stores for one decision is that decision, identified by its uid.
        return {f"{d.item_id}/{d.item_uid}": repr(d).encode() for d in sink.decisions}

    return sink, stored


def _mqtt(tmp: Path, on_teardown: Callable[[Callable[[], object]], None]) -> tuple[ResultSink, Stored]:
    if not MOSQUITTO.exists():
        pytest.skip(f"mosquitto not installed at {MOSQUITTO}")
    from edge.publish.mqtt import MqttSink

    workdir = tmp / "broker"
    workdir.mkdir()
    broker = Broker(workdir, free_port())
    broker.start()
    on_teardown(lambda: broker.stop(signal.SIGKILL))
    prefix = "conformance/site/s1"
    collector = Collector(broker.port, f"{prefix}/#", client_id="conformance-room").start()
    on_teardown(collector.stop)
    config = MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix=prefix, keepalive_s=5,
                        reconnect_min_s=0.1, reconnect_max_s=0.5, outbox=OutboxConfig(path=tmp / "outbox.sqlite3"))
    mqtt = MqttSink(config, SiteConfig(site_id="site", scanner_id="s1")).start()
    on_teardown(lambda: mqtt.close(1.0))
    sink: ResultSink = mqtt  # the MQTT sink implements the port itself

    def records() -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        for message in collector.snapshot():
            if message.topic.endswith(("/items", "/alarms")):
                out.setdefault(str(json.loads(message.payload)["record_id"]), []).append(bytes(message.payload))
            elif "/images/" in message.topic:
                out.setdefault(message.topic, []).append(bytes(message.payload))
        return out

    def stored(n: int) -> dict[str, bytes]:
        collector.wait_for(lambda: len(records()) >= n, timeout=20.0)
        time.sleep(0.3)  # a repeat, if one were sent, would arrive now
        got = records()
        for key, payloads in got.items():
            assert all(p == payloads[0] for p in payloads), f"{key}: redelivered with other content"
        return {key: payloads[0] for key, payloads in got.items()}

    return sink, stored


SINKS = [SinkCase("audit", _audit), SinkCase("memory", _memory), SinkCase("mqtt", _mqtt)]


@pytest.fixture(params=SINKS, ids=[c.name for c in SINKS])
def sink_and_view(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ResultSink, Stored]]:
    case: SinkCase = request.param
    teardown: list[Callable[[], object]] = []
    made = case.make(tmp_path, teardown.append)
    yield made
    for step in reversed(teardown):
        step()


def _alarm(index: int = 5) -> Decision:
    """An ALARM (every 5th of ``make_decision``) with an overlay: the most records one decision makes."""
    return make_decision(index, overlay=_jpeg())


def _jpeg() -> bytes:
    import cv2
    import numpy as np

    ok, data = cv2.imencode(".jpg", np.full((32, 48, 3), 128, np.uint8))
    assert ok
    return bytes(data)


def test_publish_stores_the_decision_before_it_returns(sink_and_view: tuple[ResultSink, Stored]) -> None:
    sink, stored = sink_and_view
    decision = _alarm()
    sink.publish(decision)
    view = stored(1)
    assert view, "nothing stored"
    assert any(decision.item_id.encode() in content or decision.item_id in key for key, content in view.items())


def test_publishing_the_same_decision_again_stores_nothing_new(sink_and_view: tuple[ResultSink, Stored]) -> None:
    sink, stored = sink_and_view
    decision = _alarm()
    sink.publish(decision)
    once = stored(1)
    sink.publish(decision)
    assert stored(len(once)) == once


def test_every_decision_of_a_run_is_stored(sink_and_view: tuple[ResultSink, Stored]) -> None:
    sink, stored = sink_and_view
    decisions = [make_decision(k) for k in range(1, 8)]  # CLEAR, ALARM and UNSCREENED among them
    for decision in decisions:
        sink.publish(decision)
    view = stored(len(decisions))
    for decision in decisions:
        assert any(decision.item_id.encode() in content or decision.item_id in key for key, content in view.items()), \
            decision.item_id


def test_close_returns_within_its_timeout_and_may_be_called_twice(sink_and_view: tuple[ResultSink, Stored]) -> None:
    sink, _ = sink_and_view
    sink.publish(make_decision(1))
    started = time.monotonic()
    sink.close(1.0)
    sink.close(1.0)
    assert time.monotonic() - started < 2 * 1.0 + SLACK_S
