"""Acceptance: the console's page in a real browser (Debian's Chromium through chromedriver, headless).

A lane publishes as a box does (the box's own record composition, QoS 1) to a private Mosquitto; the console
runs as its own process; the operator's page is driven by Selenium. Run once on SQLite and once on PostgreSQL
(a unique table prefix, dropped afterwards). One browser serves every test of the module.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_helpers import (
    ConsoleProc,
    Database,
    Lane,
    Subscriber,
    alarm_decision,
    chromium,
    overlay_jpeg,
    sign_in,
)
from publish_helpers import Broker

from edge.publish.health import LinkHealthState, StatusState
from edge.records import Verdict

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse 1"


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    d = chromium()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def site() -> str:
    return f"b{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def console(module_db: Database, module_broker: Broker, site: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleProc]:
    c = ConsoleProc(tmp_path_factory.mktemp("console"), module_db, module_broker.port, (f"xray/{site}/+/#",))
    c.add_user("olga", PASSWORD, "operator")
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def signed_in(driver: Any, console: ConsoleProc) -> Any:
    sign_in(driver, console, "olga", PASSWORD)
    return driver


@pytest.fixture(scope="module")
def lanes(module_broker: Broker, site: str, console: ConsoleProc) -> Iterator[list[Lane]]:
    made = [Lane(module_broker.port, site, f"lane{i}", f"xray/{site}/lane{i}") for i in (1, 2)]
    yield made
    for lane in made:
        lane.clear_retained()
        lane.close()


def _card(driver: Any, record_id: str, timeout: float = 5.0) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.02).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, f'article[data-record-id="{record_id}"]')))
    except Exception as exc:
        raise AssertionError(f"no card {record_id} on the page; browser log: {driver.get_log('browser')}") from exc


def _settled(driver: Any) -> None:
    """Wait until the page has no list (re)load in flight (a filter change reloads the list)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 5, poll_frequency=0.05).until(
        lambda d: d.execute_script("return document.body.dataset.loading") == "0")


def _until_text(driver: Any, record_id: str, text: str, timeout: float = 5.0) -> None:
    """Wait until the card shows ``text`` (the card may be re-rendered meanwhile: a reload after a filter)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: text in _card(d, record_id).text)


def _gone(driver: Any, record_id: str, timeout: float = 5.0) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, f'article[data-record-id="{record_id}"]'))


def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads((REPO / "edge/schemas/verdict-1.schema.json").read_text()))


def test_published_alarm_is_on_screen_within_1s_and_clearing_it_sends_the_verdict(
        signed_in: Any, console: ConsoleProc, lanes: list[Lane], module_broker: Broker) -> None:
    from selenium.webdriver.common.by import By

    driver = signed_in
    lane = lanes[0]
    box = Subscriber(module_broker.port, f"{lane.prefix}/verdicts").start()
    try:
        decision = alarm_decision(f"bag-{uuid.uuid4().hex[:6]}", lane.scanner_id, camera=True,
                                  overlay=overlay_jpeg("knife"))
        published = time.time()
        item = lane.publish_decision(decision)
        card = _card(driver, str(item["record_id"]))
        shown = float(card.get_attribute("data-shown-wall")) / 1000.0
        assert shown - published < 1.0, f"on screen {shown - published:.3f} s after publication"
        # what the operator sees: lane, item, the box's verdict, the overlay picture (loaded), waiting time
        assert f"{lane.site_id} / {lane.scanner_id}" in card.text and decision.item_id in card.text
        assert "ALARM" in card.text and "knife" in card.text
        from selenium.webdriver.support.ui import WebDriverWait

        waited = card.find_element(By.CLASS_NAME, "waited")
        WebDriverWait(driver, 4).until(lambda _d: waited.text in ("waiting 1 s", "waiting 2 s", "waiting 3 s"))
        img = card.find_element(By.CSS_SELECTOR, ".images img")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == 320
        assert "exit camera overlay" in card.text

        card.find_element(By.CSS_SELECTOR, "button[data-verdict=cleared]").click()
        _gone(driver, str(item["record_id"]))
        got = box.wait_for(1, 5.0)
        assert len(got) == 1, "the verdict did not reach the box's topic"
        verdict = got[0]
        assert verdict["topic"] == f"{lane.prefix}/verdicts" and verdict["qos"] == 1 and not verdict["retain"]
        body = {k: v for k, v in verdict.items() if k not in ("topic", "qos", "retain")}
        assert list(_validator().iter_errors(body)) == []
        assert body["record_id"] == item["record_id"] and body["item_id"] == decision.item_id
        assert (body["verdict"], body["operator"], body["role"], body["console_id"]) == (
            "cleared", "olga", "operator", console.console_id)

        # the box acknowledges; the history shows the verdict as delivered
        box.ack(verdict)
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element(By.ID, "f-verdict")).select_by_value("cleared")
        _settled(driver)
        _until_text(driver, str(item["record_id"]), "to the box: acked")
        assert "cleared by olga" in _card(driver, str(item["record_id"])).text
        time.sleep(2.5)  # past verdicts.resend_s: an acknowledged verdict is not sent again
        assert len(box.wait_for(2, 0.1)) == 1
    finally:
        box.stop()
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element(By.ID, "f-verdict")).select_by_value("open")
        _settled(driver)


def test_keyboard_verdict_filters_reasons_and_actions(signed_in: Any, lanes: list[Lane],
                                                       module_broker: Broker) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = signed_in
    box = Subscriber(module_broker.port, f"{lanes[1].prefix}/verdicts").start()
    try:
        # lane 2 publishes an item-2 style payload (contract 2: reasons), lane 1 an alarm-1 one (no reasons)
        d2 = alarm_decision(f"parcel-{uuid.uuid4().hex[:6]}", lanes[1].scanner_id, overlay=overlay_jpeg("p"))
        records = []
        from edge.publish.compose import decision_records

        for record in decision_records(d2, lanes[1].site, lanes[1].topics, lanes[1].mqtt_config, time.time()):
            payload = record.payload
            if record.topic.endswith(("/items", "/alarms")):
                body = json.loads(payload)
                body["reasons"] = ["known:knife"]
                body["objects"][0]["reasons"] = [{"kind": "known", "label": "knife", "score": 0.93,
                                                  "threshold": 0.5}]
                payload = json.dumps(body).encode()
                records.append(body)
            lanes[1].client.publish(record.topic, payload, qos=1).wait_for_publish(10)
        rid2 = next(str(b["record_id"]) for b in records if "item_record_id" not in b)
        d1 = alarm_decision(f"bag-{uuid.uuid4().hex[:6]}", lanes[0].scanner_id, verdict=Verdict.UNSCREENED)
        rid1 = str(lanes[0].publish_decision(d1)["record_id"])
        card2 = _card(driver, rid2)
        assert "known:knife" in card2.find_element(By.CLASS_NAME, "reasons").text
        assert "known:knife 0.930/0.500" in card2.find_element(By.CLASS_NAME, "scores").text
        card1 = _card(driver, rid1)
        assert card1.find_element(By.CLASS_NAME, "reasons").text == ""  # missing reasons = []
        assert "UNSCREENED" in card1.text

        # the box reports what it did (contract 4): the card shows it live
        lanes[1].publish_raw("actions", json.dumps({
            "schema": "action-1", "record_id": rid2, "item_id": d2.item_id, "action": "divert",
            "outcome": "done", "detail": "gate 2", "wall": time.time()}).encode())
        _until_text(driver, rid2, "divert: done")

        # filter by lane: only lane 2's alarm; then the key "1" confirms the selected (first) one
        Select(driver.find_element(By.ID, "f-lane")).select_by_value(lanes[1].prefix)
        _settled(driver)
        _gone(driver, rid1)
        card2 = _card(driver, rid2)
        driver.execute_script("arguments[0].click()", card2.find_element(By.CLASS_NAME, "item"))
        driver.find_element(By.TAG_NAME, "body").send_keys("1")
        _gone(driver, rid2)
        got = box.wait_for(1, 5.0)
        assert [(m["record_id"], m["verdict"]) for m in got] == [(rid2, "threat_confirmed")]

        # history: search by item id finds it with its verdict; the lane-1 alarm is still open
        Select(driver.find_element(By.ID, "f-lane")).select_by_value("")
        Select(driver.find_element(By.ID, "f-verdict")).select_by_value("threat_confirmed")
        search = driver.find_element(By.ID, "f-q")
        search.clear()
        search.send_keys(d2.item_id)
        driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
        _until_text(driver, rid2, "threat confirmed by olga")
        search.clear()
        Select(driver.find_element(By.ID, "f-verdict")).select_by_value("open")
        _settled(driver)
        driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
        _settled(driver)
        _card(driver, rid1)
    finally:
        box.stop()


def test_lane_health_shows_online_degraded_and_why(signed_in: Any, lanes: list[Lane]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = signed_in
    lane = lanes[0]
    lane.publish_status(StatusState.ONLINE)
    lane.publish_health()
    selector = f'#lanes li[data-prefix="{lane.prefix}"]'
    WebDriverWait(driver, 5).until(
        lambda d: "online" in d.find_element(By.CSS_SELECTOR, selector).get_attribute("class"))
    lane.publish_health(LinkHealthState.DOWN, "serial port /dev/ttyUSB0 gone")
    WebDriverWait(driver, 5).until(
        lambda d: "degraded" in d.find_element(By.CSS_SELECTOR, selector).get_attribute("class"))
    text = driver.find_element(By.CSS_SELECTOR, selector).text
    assert "firmware down" in text and "ttyUSB0" in text and "last item" in text
    assert "site-a connected" in driver.find_element(By.ID, "brokers").text  # the console's own broker link
    lane.publish_status(StatusState.OFFLINE, "connection lost")
    WebDriverWait(driver, 5).until(
        lambda d: "offline" in d.find_element(By.CSS_SELECTOR, selector).get_attribute("class"))


def test_an_open_alarm_older_than_keep_days_stays_in_the_queue_and_is_said(signed_in: Any, console: ConsoleProc,
                                                                            lanes: list[Lane]) -> None:
    """An alarm nobody decided within keep_days (90 days, the default) used to leave the queue at the next hourly
    prune. After the prune it is still a card with its picture, and the page says how many open alarms are older
    than keep_days, above the queue and on their lane; once decided, it goes at the next prune."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from console.config import load_console_config
    from console.service import open_store

    driver = signed_in
    lane = lanes[1]
    record_id = f"old-{uuid.uuid4().hex[:8]}"
    received = time.time() - 100 * 86400
    body = {"record_id": record_id, "site_id": lane.site_id, "scanner_id": lane.scanner_id,
            "item_id": f"bag-{record_id}", "verdict": "alarm", "image": {"topic": f"{lane.prefix}/images/{record_id}"}}
    store = open_store(load_console_config(console.config))
    try:
        with store.engine.begin() as conn:  # what the console stored 100 days ago
            store.ingest_decision(conn, lane.prefix, "site-a", body, json.dumps(body), received)
            store.ingest_image(conn, f"{lane.prefix}/images/{record_id}", lane.prefix, record_id,
                               overlay_jpeg("old"), received)
        pruned = store.prune(time.time() - 90 * 86400)  # the console's hourly prune, keep_days 90

        driver.get(console.url)
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "live").text == "live")
        card = _card(driver, record_id)
        assert pruned.kept_open == 1 and pruned.oldest_open_wall == received
        WebDriverWait(driver, 3).until(lambda _d: "waiting 100 days" in card.find_element(By.CLASS_NAME, "waited").text)
        assert card.find_elements(By.CSS_SELECTOR, ".images img")
        banner = driver.find_element(By.ID, "overdue")
        WebDriverWait(driver, 5).until(lambda _d: banner.is_displayed())
        assert "1 open alarm older than 90 days" in banner.text and "kept until an operator" in banner.text
        selector = f'#lanes li[data-prefix="{lane.prefix}"] .overdue'
        assert driver.find_element(By.CSS_SELECTOR, selector).text == "1 open alarm older than 90 days"

        card.find_element(By.CSS_SELECTOR, "button[data-verdict=cleared]").click()
        _gone(driver, record_id)
        from console.service import prune_once

        assert prune_once(store, keep_days=90).items == 1 and store.item(record_id) is None
        driver.execute_script("loadLanes()")
        WebDriverWait(driver, 5).until(lambda _d: not banner.is_displayed())
        assert not driver.find_elements(By.CSS_SELECTOR, selector)
    finally:
        store.engine.dispose()
