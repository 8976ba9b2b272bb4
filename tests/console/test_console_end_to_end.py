"""Acceptance of issue 34 over the whole chain, every part real: a running screening service (virtual scanner,
the reference bundles on OpenVINO, real calibrations) publishes to a Mosquitto of this module's own; `edge console`
runs as its own process subscribed there; an operator in headless Chromium sees the service's ALARM, clears it with
the keyboard; the box stores the verdict beside the item's record with an OPERATOR DICOS report and acknowledges;
the page shows the acknowledgement. The box also acts on the lane through the virtual firmware on a real pty
(``actions``): the ALARM parcel is diverted, and the operator's ``cleared`` releases it (``actions.on_verdict``); the
card shows both.

Run on SQLite and on PostgreSQL (a unique table prefix, dropped afterwards). The service, the broker and the browser
are shared by both runs (the service screens an item every 1.5 s for the module's life; each run takes the first
ALARM the box publishes once its page is live), so the second database costs a console start, not a service start.
About 20 s of CPU for the module.

Measured (printed, and asserted against the issue's 1 s): publication → on screen, from the moment the box handed
the item's first record to its MQTT client to the card's insertion into the DOM (``data-shown-wall``, the same
machine's clock); verdict → stored, from the console's ``decided_wall`` to the box's ``received_wall`` in the
stored verdict.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from console_helpers import ConsoleProc, Database, chromium, sign_in
from publish_helpers import Broker

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
PASSWORD = "correct horse 1"
OPERATOR = "olga"


@dataclass
class Box:
    """The running service and what it published: for each item record id, when its first record (the alarm or
    the item) was handed to the box's MQTT client, and the item record's payload."""

    prefix: str
    audit: Path
    service: Any
    thread: threading.Thread
    firmware: Any
    sent_wall: dict[str, float] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record_sent(self, topic: str, payload: bytes) -> None:
        now = time.time()
        if not topic.endswith(("/items", "/alarms")):
            return
        body = json.loads(payload)
        key = str(body.get("item_record_id") or body["record_id"])
        with self.lock:
            self.sent_wall.setdefault(key, now)
            if topic.endswith("/items"):
                self.items[key] = body

    def next_alarm(self, after_wall: float, timeout_s: float) -> tuple[dict[str, Any], float]:
        """The first ALARM item whose first record left the box after ``after_wall``: (item payload, sent wall)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.thread.is_alive(), "the service stopped"
            with self.lock:
                for key, body in self.items.items():
                    if str(body.get("verdict")).upper() == "ALARM" and self.sent_wall[key] > after_wall:
                        return body, self.sent_wall[key]
            time.sleep(0.02)
        raise AssertionError(f"the service published no ALARM within {timeout_s} s "
                             f"({len(self.items)} items published)")


@pytest.fixture(scope="module")
def site() -> str:
    return f"e{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def box(module_broker: Broker, site: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """`edge run` in this process (as tests/service runs it): the reference bundles (unsigned: the config allows
    it, as for `edge demo`), calibrations made by `edge calibrate`, an item every 1.5 s."""
    from edge.bundles.manifest import content_digest
    from edge.config import load_config
    from edge.config.source import SimSourceConfig
    from edge.runtime import build_runtime
    from edge.service import Service
    from edge_tools.demo import DemoScanner
    from firmware_bridge.messages import XrayState
    from firmware_bridge.virtual import VirtualFirmware
    from sim.source import SimFrameSource
    from tests.service.service_helpers import calibrate, write_config

    detector, scorer = MODELS / "detector-agnostic", MODELS / "scorer-stfpm"
    for bundle in (detector, scorer):
        if not (bundle / "bundle.yaml").is_file():
            pytest.skip(f"reference bundle {bundle} is missing (docs/models.md)")
    work = tmp_path_factory.mktemp("box")
    # The reference scorer clears 95% of benign items (thresholds.item 0.545); this test needs an ALARM within
    # seconds, not detection quality: a copy with its item threshold at 0.45 alarms on about half the items.
    # Resealed like `edge-export bundle` seals a manifest (unsigned either way: the config allows it).
    scorer = Path(shutil.copytree(scorer, work / "scorer-stfpm"))
    manifest = yaml.safe_load((scorer / "bundle.yaml").read_text())
    assert manifest["thresholds"]["item"] > 0.5
    manifest["thresholds"]["item"] = 0.45
    manifest["content_sha256"] = content_digest(manifest)
    (scorer / "bundle.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    flat, energy = calibrate(work)
    # The scanner's controller: the virtual firmware on a real pty, told of each item as `edge demo` tells it
    # (DemoScanner); the box diverts ALARM parcels through it and releases one an operator clears.
    firmware = VirtualFirmware(work / "ttyVFW0").start()
    firmware.send(XrayState(True, 0))
    prefix = f"xray/{site}/lane1"
    cfg_path = write_config(work / "edge.yaml", detector=detector, scorer=scorer, flat=flat, energy=energy,
                            state=work, items=400, per_minute=40.0,
                            mqtt=f"host: 127.0.0.1\n  port: {module_broker.port}\n  topic_prefix: {prefix}\n"
                                 f"  client_id: edge-{site}",
                            extra=f"firmware:\n  port: {firmware.port}\nactions:\n"
                                  "  divert: {gate: 1, eye_to_exit_mm: 800, distance_mm: 100000, arm_mm: 50}\n"
                                  "  on_verdict: {cleared: release}\n")
    cfg = load_config(cfg_path)
    assert isinstance(cfg.source, SimSourceConfig)
    scanner = DemoScanner(SimFrameSource(cfg.source, cfg.site.scanner_id, cfg.decide.deadline_s), firmware)
    runtime = build_runtime(cfg, source=scanner)
    assert runtime.mqtt is not None and runtime.verdicts is not None and runtime.actions is not None
    session = runtime.mqtt.publisher.session
    service = Service(cfg_path, runtime)
    made = Box(prefix, work / "audit", service, threading.Thread(target=service.run, daemon=True), firmware)
    send = session.send

    def stamped_send(record: Any) -> Any:  # the box's publish time of each record, taken as it goes to paho
        made.record_sent(record.topic, record.payload)
        return send(record)

    session.send = stamped_send
    made.thread.start()
    assert runtime.verdicts.wait_subscribed(30), "the box's verdict subscriber did not subscribe"
    yield made
    service.request_stop()
    made.thread.join(timeout=30)
    firmware.stop()
    assert not made.thread.is_alive(), "the service did not stop"


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    d = chromium()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def console(module_db: Database, module_broker: Broker, site: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleProc]:
    c = ConsoleProc(tmp_path_factory.mktemp("console"), module_db, module_broker.port, (f"xray/{site}/+/#",))
    c.add_user(OPERATOR, PASSWORD, "operator")
    c.start()
    yield c
    c.stop()


def _wait(what: str, predicate: Any, timeout_s: float, poll_s: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(poll_s)
    raise AssertionError(f"{what} within {timeout_s} s")


def test_service_alarm_on_page_within_1s_cleared_by_key_stored_by_box_as_operator_tdr(
        box: Box, console: ConsoleProc, driver: Any, module_db: Database) -> None:
    from pydicom import dcmread
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from edge.dicos import read_tdr
    from firmware_bridge.messages import ReleaseDivert

    driver.delete_all_cookies()  # the other database's console ran on the same host
    sign_in(driver, console, OPERATOR, PASSWORD)
    live_wall = time.time()
    item, sent_wall = box.next_alarm(live_wall, timeout_s=30)
    record_id, item_id = str(item["record_id"]), str(item["item_id"])
    selector = f'article[data-record-id="{record_id}"]'
    try:
        card = WebDriverWait(driver, 5, poll_frequency=0.02).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, selector))[0]
    except Exception as exc:
        raise AssertionError(f"the service's alarm {record_id} never reached the page; browser log: "
                             f"{driver.get_log('browser')}; console log: {console.log()}") from exc
    on_screen_s = float(card.get_attribute("data-shown-wall")) / 1000.0 - sent_wall
    print(f"\n[{module_db.kind}] box publish -> on screen: {on_screen_s * 1000:.0f} ms ({item_id})")
    assert on_screen_s < 1.0, f"on screen {on_screen_s:.3f} s after the box published it"
    assert "ALARM" in card.text and item_id in card.text and "test-site / lane1" in card.text
    # the box diverted the parcel through the firmware and said so (contract 4): the card shows it live
    WebDriverWait(driver, 10, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: "divert: done" in d.find_element(By.CSS_SELECTOR, selector).text)

    wire_id = int(item_id.rsplit("-", 1)[1])
    assert ReleaseDivert(wire_id, 1) not in [c.command for c in box.firmware.commands]  # held until a verdict

    # the operator selects the card and clears it with the keyboard ("2": cleared after review)
    driver.execute_script("arguments[0].click()", card.find_element(By.CLASS_NAME, "item"))
    driver.find_element(By.TAG_NAME, "body").send_keys("2")
    WebDriverWait(driver, 5, poll_frequency=0.05).until(lambda d: not d.find_elements(By.CSS_SELECTOR, selector))

    # the box stores it beside the item's record, with an OPERATOR report
    stored = _wait("the verdict stored beside the record in the box's audit store",
                   lambda: list(box.audit.glob(f"*/{item_id}.verdict-*.json")), 10)
    assert len(stored) == 1, stored
    (record_path,) = box.audit.glob(f"*/{item_id}.json")
    assert stored[0].parent == record_path.parent
    verdict = json.loads(stored[0].read_text())
    assert (verdict["record_id"], verdict["item_id"], verdict["verdict"], verdict["operator"], verdict["role"],
            verdict["console_id"]) == (record_id, item_id, "cleared", OPERATOR, "operator", console.console_id)
    assert json.loads(record_path.read_text())["record_id"] == record_id
    stored_s = verdict["received_wall"] - verdict["decided_wall"]
    print(f"[{module_db.kind}] console verdict -> stored by the box: {stored_s * 1000:.0f} ms")
    tdr_path = stored[0].with_name(stored[0].name.replace(".json", ".tdr.dcs"))
    dataset = dcmread(tdr_path)
    assert str(dataset.OperatorsName) == OPERATOR
    report = read_tdr(tdr_path)
    assert (report.tdr_type, report.item_id, report.alarm_decision, report.operators) == (
        "OPERATOR", item_id, "CLEAR", (OPERATOR,))
    machine = read_tdr(record_path.with_name(f"{item_id}.tdr.dcs"))
    assert machine.tdr_type == "MACHINE" and report.referenced_uids == (machine.sop_instance_uid,)

    # `actions.on_verdict` {cleared: release}: the box releases the held parcel through the firmware
    _wait("the release command at the firmware", lambda: ReleaseDivert(wire_id, 1) in [
        c.command for c in box.firmware.commands], 10)

    # the box's ack and its release reach the console: the history shows the verdict as delivered
    Select(driver.find_element(By.ID, "f-verdict")).select_by_value("cleared")
    try:
        WebDriverWait(driver, 10, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda d: all(s in d.find_element(By.CSS_SELECTOR, selector).text
                          for s in ("to the box: acked", "release: done")))
    except Exception as exc:
        raise AssertionError(f"no ack shown: {driver.find_element(By.CSS_SELECTOR, selector).text!r}; "
                             f"console log: {console.log()}") from exc
    assert f"cleared by {OPERATOR}" in driver.find_element(By.CSS_SELECTOR, selector).text
    # acknowledged, the verdict is not sent again: past verdicts.resend_s the box has seen no redelivery
    store = box.service.runtime.verdicts.store
    duplicates = store.duplicates
    time.sleep(console.resend_s + 0.5)
    assert store.duplicates == duplicates and store.refused == 0
    assert len(list(box.audit.glob(f"*/{item_id}.verdict-*.json"))) == 1
    Select(driver.find_element(By.ID, "f-verdict")).select_by_value("open")
