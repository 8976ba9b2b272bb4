"""Take docs/img/console.png: the console's page in headless Chromium with three lanes' alarms.

The lanes publish through the box's own record composition; the overlay pictures are the product's own overlays
(docs/img/overlay-*.png, JPEG-encoded as the box sends them). One lane's firmware link is down, so the lane panel
shows a degraded lane. Run: .venv/bin/python tests/console/make_screenshot.py [--out docs/img/console.png]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(HERE), str(REPO / "tests" / "publish")]

import cv2  # noqa: E402
from console_helpers import ConsoleProc, Database, Lane, alarm_decision, chromium, sign_in  # noqa: E402
from publish_helpers import Broker, free_port  # noqa: E402

from edge.publish.compose import decision_records  # noqa: E402
from edge.publish.health import LinkHealthState, StatusState  # noqa: E402
from edge.records import Verdict  # noqa: E402


def jpeg(path: Path, width: int = 480) -> bytes:
    img = cv2.imread(str(path))
    img = cv2.resize(img, (width, int(img.shape[0] * width / img.shape[1])), interpolation=cv2.INTER_AREA)
    return bytes(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "console.png")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="console-shot-"))
    broker = Broker(work / "broker", free_port())
    broker.workdir.mkdir()
    broker.start()
    console = ConsoleProc(work, Database("sqlite", f"sqlite:///{work}/console.sqlite3", "console_"), broker.port,
                          ("xray/+/+/#",), console_id="control-room-1")
    console.add_user("alice", "screenshot-pass-1", "operator")
    lanes = [Lane(broker.port, site, lane, f"xray/{site}/{lane}")
             for site, lane in (("hub-north", "lane1"), ("hub-north", "lane2"), ("hub-south", "lane1"))]
    driver = None
    try:
        console.start()
        for lane in lanes:
            lane.publish_status(StatusState.ONLINE)
            lane.publish_health(*(LinkHealthState.DOWN, "serial port /dev/ttyUSB0 gone")
                                if lane.site_id == "hub-south" else (LinkHealthState.UP, ""))
        pictures = [jpeg(REPO / "docs" / "img" / "overlay-1.png"), jpeg(REPO / "docs" / "img" / "overlay-2.png")]
        shots = [(lanes[0], "parcel-20417", Verdict.ALARM, "cutter", pictures[0], ["known:cutter"]),
                 (lanes[2], "bag-0093", Verdict.ALARM, "bottle", pictures[1], ["anomaly"]),
                 (lanes[1], "parcel-88120", Verdict.UNSCREENED, "laptop", None, [])]
        for lane, item_id, verdict, label, picture, reasons in shots:
            decision = alarm_decision(item_id, lane.scanner_id, verdict=verdict, overlay=picture, label=label,
                                      camera=picture is not None)  # the pictures are exit-camera overlays
            for record in decision_records(decision, lane.site, lane.topics, lane.mqtt_config, time.time()):
                payload = record.payload
                if reasons and record.topic.endswith(("/items", "/alarms")):
                    body = json.loads(payload)
                    body["reasons"] = reasons
                    kind, _, cls = reasons[0].partition(":")
                    body["objects"][0]["reasons"] = [{"kind": kind, "label": cls or None, "score": 0.87,
                                                      "threshold": 0.5}]
                    payload = json.dumps(body).encode()
                lane.client.publish(record.topic, payload, qos=1).wait_for_publish(10)
            time.sleep(1.5)
        driver = chromium(1280, 860)
        sign_in(driver, console, "alice", "screenshot-pass-1")
        time.sleep(4)  # the waiting times tick
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        img = cv2.imread(str(args.out))
        cv2.imwrite(str(args.out), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"{args.out}: {args.out.stat().st_size} bytes")
    finally:
        if driver is not None:
            driver.quit()
        for lane in lanes:
            lane.close()
        console.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
