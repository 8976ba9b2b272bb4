"""Fixtures of the actions tests: a lane in one process, with real parts.

The virtual firmware on a real pty plays a steady belt (``firmware_bridge.scenarios.steady_belt``) and models the
diverter; the real ``FirmwareLink``, ``ItemTracker``, ``Pipeline`` and ``SpoolSource`` (a real spool folder, one
small file per item, written when the firmware reports the item's start, as a scanner's image computer would),
the real audit store, the real MQTT sink on the shared Mosquitto (a unique topic prefix per test) and the
``Actions`` sink under test. The screening stage decides from a fixed list of ALARM wire ids: what is under test
is what happens after the decision, not the models.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.acquire import ItemTracker
from edge.actions import Actions
from edge.actions.report import ActionReporter, AuditActionsFile, MqttActions
from edge.actions.store import ActionRow, ActionStore
from edge.config.actions import ActionsConfig, BeaconConfig, BeltStopConfig, DivertConfig
from edge.config.audit import AuditConfig
from edge.config.firmware import LINK_SETTLE_MARGIN_S
from edge.config.mqtt import MqttConfig
from edge.config.site import SiteConfig
from edge.pipeline import Pipeline, Stage
from edge.publish.mqtt import MqttSink
from edge.records import BoxXyxy, Decision, ObjectResult, RawItem
from edge.sinks.audit import AuditStore
from edge.sinks.memory import MemorySink
from edge.sources.spool import SpoolSource
from edge.stages.decide import decide
from firmware_bridge.link import FirmwareLink, LinkSettings, ReceivedEvent
from firmware_bridge.messages import ItemEnd, ItemStart
from firmware_bridge.scenarios import steady_belt
from firmware_bridge.transport import serial_opener
from firmware_bridge.virtual import DiverterModel, VirtualFirmware
from tests.faults.faults_helpers import Spool
from tests.publish.publish_helpers import Collector

SCANNER = "lane1"
SITE = "acts"
CPM = 10.0
"""Encoder counts per mm (the firmware section's default)."""
SPEED_MM_S = 250.0
ITEM_MM, GAP_MM = 200.0, 150.0
PITCH_S = (ITEM_MM + GAP_MM) / SPEED_MM_S
START_S = 0.6
"""The belt timeline starts this long after the firmware (the host link is up by then)."""
LINK = LinkSettings(heartbeat_s=0.1, link_timeout_s=0.4, reconnect_min_s=0.05, reconnect_max_s=0.2,
                    command_timeout_s=1.0, command_retry_s=0.08, encoder_counts_per_mm=CPM)
SETTLE_S = LINK.link_timeout_s + LINK_SETTLE_MARGIN_S
BROKER_PORT = 1883


def item_start_s(wire_id: int) -> float:
    """Firmware time (s) of an item's ItemStart in the steady belt below."""
    return START_S + GAP_MM / SPEED_MM_S + wire_id * PITCH_S


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _frames() -> tuple[np.ndarray, np.ndarray]:
    high = np.full((30, 64), 40000, np.uint16)
    return high, high.copy()


def alarm_object() -> ObjectResult:
    return ObjectResult(0, BoxXyxy(1, 1, 20, 20), "knife", 0.9, 0.9, 0.5, True)


@dataclass
class Lane:
    """One lane under test; ``close()`` stops everything (the fixture does it)."""

    root: Path
    firmware: VirtualFirmware
    link: FirmwareLink
    actions: Actions
    pipeline: Pipeline
    decisions: MemorySink
    audit: AuditStore
    mqtt: MqttSink
    collector: Collector
    items: int
    alarms: frozenset[int]
    starts_seen: dict[int, float] = field(default_factory=dict)
    ends_seen: dict[int, float] = field(default_factory=dict)
    on_item_end: list[Callable[[int], None]] = field(default_factory=list)

    def by_wire(self) -> dict[int, Decision]:
        return {int(d.item_id.rsplit("-", 1)[1]): d for d in self.decisions.decisions}

    def action_records(self) -> list[dict[str, Any]]:
        return self.collector.json_on("/actions")

    def action_files(self) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for path in self.audit_dir.glob("*/*.actions.json"):
            out[path.name.removesuffix(".actions.json")] = json.loads(path.read_text())
        return out

    def item_records(self) -> dict[str, dict[str, Any]]:
        return {json.loads(p.read_text())["item_id"]: json.loads(p.read_text())
                for p in self.audit_dir.glob("*/*.json") if not p.name.endswith(".actions.json")}

    @property
    def audit_dir(self) -> Path:
        return self.root / "audit"

    def run_to_end(self, timeout_s: float = 60.0) -> None:
        """Wait until every item passed the diverter (in firmware time), is decided and its actions reported."""
        last = self.items - 1
        model = self.firmware.diverter
        assert model is not None
        wait_until(lambda: last in self.ends_seen, timeout_s, "the last item's end")
        wait_until(lambda: len(self.decisions.decisions) >= self.items, timeout_s, "every decision")
        wait_until(lambda: len(self.firmware.diverted) + len(self.firmware.passed) >= self.items, timeout_s,
                   "every parcel at the diverter")
        wait_until(lambda: self.actions.pending_count() == 0, timeout_s, "every action finished")
        wanted = sum(1 for d in self.decisions.decisions if d.verdict.needs_operator)
        wait_until(lambda: len(self.action_records()) >= wanted, timeout_s, "every action record on MQTT")

    def close(self) -> None:
        self.pipeline.stop(5)
        self.link.close()
        self.firmware.stop()
        self.collector.stop()


LaneFactory = Callable[..., Lane]


@pytest.fixture
def lane(tmp_path: Path) -> Iterator[LaneFactory]:
    """``lane(items=..., alarms=..., eye_to_exit_mm=..., distance_mm=..., firmware_at_mm=None, **actions)``."""
    made: list[Lane] = []

    def make(*, items: int, alarms: frozenset[int], eye_to_exit_mm: float = 300.0, distance_mm: float = 1400.0,
             arm_mm: float = 50.0, firmware_at_mm: float | None = None, beacon: BeaconConfig | None = None,
             belt_stop: BeltStopConfig | None = None) -> Lane:
        root = tmp_path / f"lane{len(made)}"
        at_mm = firmware_at_mm if firmware_at_mm is not None else eye_to_exit_mm + distance_mm
        duration = item_start_s(items - 1) + (ITEM_MM + at_mm) / SPEED_MM_S + 1.0
        belt = steady_belt(speed_mm_s=SPEED_MM_S, counts_per_mm=CPM, item_length_mm=ITEM_MM, item_gap_mm=GAP_MM,
                           status_every_s=0.05, start_s=START_S, duration_s=duration)
        timeline = (s for s in belt if not (isinstance(s.message, ItemStart | ItemEnd) and s.message.item_id >= items))
        fw = VirtualFirmware(root / "ttyVFW", timeline, heartbeat_s=0.1,
                             diverter=DiverterModel(round(at_mm * CPM), round(arm_mm * CPM)))
        spool = Spool(root / "spool", SCANNER)
        tracker = ItemTracker(SCANNER, 30.0, lambda meta: None)
        holder: list[Any] = []
        lane_ref: list[Lane] = []

        def on_event(received: ReceivedEvent) -> None:
            tracker.on_event(received)
            for h in holder:
                h.on_event(received)
            event = received.event
            if isinstance(event, ItemStart) and lane_ref:
                lane_ref[0].starts_seen[event.item_id] = received.received_at
                spool.drop(str(event.item_id), *_frames())  # the image computer writes as the item is scanned
            elif isinstance(event, ItemEnd) and lane_ref:
                lane_ref[0].ends_seen[event.item_id] = received.received_at
                for hook in lane_ref[0].on_item_end:
                    hook(event.item_id)

        def on_state(state: Any) -> None:
            tracker.on_state(state)
            for h in holder:
                h.on_state(state)

        link = FirmwareLink(serial_opener(str(fw.port)), LINK, on_event=on_event, on_state=on_state)
        audit = AuditStore(AuditConfig(directory=root / "audit"), SITE)
        prefix = f"test/actions/{uuid.uuid4().hex[:12]}"
        mqtt = MqttSink(MqttConfig(port=BROKER_PORT, topic_prefix=prefix, reconnect_min_s=0.1, reconnect_max_s=0.5,
                                   outbox={"path": root / "outbox.sqlite3"}),
                        SiteConfig(site_id=SITE, scanner_id=SCANNER))
        collector = Collector(BROKER_PORT, f"{prefix}/#", client_id=f"ctl-{uuid.uuid4().hex[:8]}").start()
        mqtt.start()
        config = ActionsConfig(divert=DivertConfig(eye_to_exit_mm=eye_to_exit_mm, distance_mm=distance_mm,
                                                   arm_mm=arm_mm),
                               beacon=beacon, belt_stop=belt_stop, on_verdict={"cleared": "release"})
        reporters: list[ActionReporter] = [AuditActionsFile(audit), MqttActions(mqtt.publisher, mqtt.topics.actions, 1)]
        actions = Actions(config, link, ActionStore(root / "actions.sqlite3"), SITE, CPM, reporters)
        holder.append(actions)
        decisions = MemorySink()

        def screen(item: RawItem) -> Decision:
            wire = int(item.meta.item_id.rsplit("-", 1)[1])
            objects = [alarm_object()] if wire in alarms else []
            return decide(item.meta, objects, time.time(), time.monotonic())

        pipeline = Pipeline(SpoolSource(spool.directory, SCANNER, 30, poll_s=0.02), [Stage("decide", screen)],
                            [actions, audit, mqtt, decisions], source_stall_s=2.0, link=link.history,
                            link_settle_s=SETTLE_S, scanning=tracker.scanning)
        tracker.announce_to(pipeline.announce)
        the_lane = Lane(root, fw, link, actions, pipeline, decisions, audit, mqtt, collector, items, alarms)
        lane_ref.append(the_lane)
        made.append(the_lane)
        pipeline.start()
        link.start()
        fw.start()
        assert link.wait_until_up(10), "the link must come up"
        return the_lane

    yield make
    for made_lane in made:
        made_lane.close()


# ------------------------------------------------------------------------------- for tests without a pipeline


@dataclass
class Reports:
    """An ``ActionReporter`` that keeps what it is given (for tests of the worker alone)."""

    rows: list[ActionRow] = field(default_factory=list)

    def write(self, row: ActionRow, item_rows: list[ActionRow]) -> None:
        self.rows.append(row)


def future_done(future: Future[Any], timeout_s: float = 5.0) -> Any:
    return future.result(timeout=timeout_s)
