"""`edge demo` closes the loop at the lane: UNSCREENED parcels outlined on the exit camera, and every ALARM and
UNSCREENED parcel diverted by the virtual firmware's diverter, no CLEAR one.

The run is the demo's own (``edge_tools.demo.run_demo``: reference bundles, virtual firmware with its diverter on
a pty, private Mosquitto, the camera streamed to the service), with one fault injected the way a lane has it: the
second parcel's frames lose every fourth belt line (a detector read-out fault), so the image-quality gate makes it
UNSCREENED ``lines_missing`` inside a screening worker, where the map step never runs. The test only listens: it
records the MQTT messages the demo's subscriber receives and the printed lines, keeps the virtual camera's truth
(frames served, each parcel's encoder count at its line 0) and the virtual firmware (which parcels its diverter
took off the main line).

The UNSCREENED parcel's overlay is the exit-camera frame with the whole parcel outlined (white on black): the
outline is found in the picture's pixels and compared with where the true camera sees the scanned area (every
line and channel of the item's X-ray) on the plane the service maps onto (``camera.overlay_height_mm``).
Distances are printed (``-s``).
"""

from __future__ import annotations

import json
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import edge_tools.demo as demo
from edge.camera.mapping import densify
from edge.camera.overlay import box_polygon
from edge.records import RawItem
from edge_tools.demo_camera import OVERLAY_HEIGHT_MM, DemoCamera
from firmware_bridge.virtual import VirtualFirmware
from sim.camera_stream import identify_frame

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
SEED, ITEMS = 1, 4  # seed 1: item 4 alarms, items 1 and 3 clear; item 2 is made UNSCREENED below
BROKEN = "lane1-2"
OUTLINE_LIMIT_PX = 12.0
"""Largest distance from a point of the true outline to the drawn line (the ALARM outlines' limit)."""
DRAWN_MEDIAN_LIMIT_PX = 3.0
"""Median distance of the picture's thin white-on-black pixels from the true outline (the barcode of a parcel's
label has some too)."""
CAPTION = (50, 450)
"""Rows and columns of the top-left corner the white caption (verdict, item id) is written in."""


class LinesLost:
    """The demo's scanner with every fourth belt line of one parcel read out dark (a detector fault)."""

    def __init__(self, scanner: Any) -> None:
        self._scanner = scanner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scanner, name)

    def next_item(self, timeout_s: float) -> RawItem | None:
        item: RawItem | None = self._scanner.next_item(timeout_s)
        if item is None or item.meta.item_id != BROKEN or item.high is None or item.low is None:
            return item
        high, low = item.high.copy(), item.low.copy()
        high[::4], low[::4] = 0, 0
        return replace(item, high=high, low=low)


@pytest.fixture(scope="module")
def lane_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    for name in demo.DEMO_BUNDLES:
        if not (MODELS / name / "bundle.yaml").exists():
            pytest.skip(f"reference bundle {MODELS / name} is missing (docs/models.md)")
    cameras: list[DemoCamera] = []
    firmwares: list[VirtualFirmware] = []
    messages: list[tuple[str, bytes]] = []
    real_camera, real_subscriber, real_scanner = demo.start_camera, demo._subscriber, demo.camera_scanner

    def camera(workdir: Path, fw: VirtualFirmware, echo: Any) -> DemoCamera:
        firmwares.append(fw)
        cameras.append(real_camera(workdir, fw, echo))
        return cameras[-1]

    def scanner(*args: Any) -> Any:
        return LinesLost(real_scanner(*args))

    def subscriber(port: int, overlays: Path, echo: Any) -> Any:
        client = real_subscriber(port, overlays, echo)
        delivered = client.on_message

        def on_message(c: Any, u: Any, m: Any) -> None:
            messages.append((m.topic, bytes(m.payload)))
            delivered(c, u, m)

        client.on_message = on_message
        return client

    mp = pytest.MonkeyPatch()
    mp.setattr(demo, "start_camera", camera)
    mp.setattr(demo, "camera_scanner", scanner)
    mp.setattr(demo, "_subscriber", subscriber)
    # The scorer at the threshold these figures were taken with (the demo's default combination, issue 32, sets it
    # at 0.6376 and seed 1 then has no ALARM in 4 items): this test is about the lane, not about detection.
    mp.setitem(demo.DEMO_THRESHOLDS, "scorer-stfpm", 0.55)
    lines: list[str] = []
    handlers_before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        code = demo.run_demo(tmp_path_factory.mktemp("lane") / "run", ITEMS, 30.0, SEED, MODELS, lines.append)
    finally:
        mp.undo()
        handlers_after = {sig: signal.getsignal(sig) for sig in handlers_before}
        for sig, handler in handlers_before.items():  # whatever the outcome, the rest of the session gets its own
            signal.signal(sig, handler)
    assert handlers_after == handlers_before, (
        "edge demo left the service's flag-only signal handlers installed: SIGTERM and Ctrl-C did nothing "
        "afterwards, and a fork pool's workers inherited them (sim.dataset.generate hung in Pool.terminate)")
    assert code == 0, "\n".join(lines)
    if not any(t.endswith("/items") for t, _ in messages):
        pytest.skip("no MQTT broker (mosquitto) on this machine: nothing was published")
    assert cameras and cameras[0].served is not None, "\n".join(lines)
    return {"camera": cameras[0], "firmware": firmwares[0], "messages": messages, "lines": lines}


def _records(run: dict[str, Any], kind: str = "items") -> list[dict[str, Any]]:
    return [json.loads(p) for t, p in run["messages"] if t.endswith(f"/{kind}")]


def _by_item(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["item_id"]: r for r in _records(run)}


def test_every_alarm_and_unscreened_parcel_is_diverted_and_no_clear_one(lane_run: dict[str, Any]) -> None:
    records = _by_item(lane_run)
    lines = lane_run["lines"]
    assert sorted(records) == [f"lane1-{i}" for i in range(1, ITEMS + 1)], lines
    assert records[BROKEN]["verdict"] == "unscreened" and records[BROKEN]["reason"] == "lines_missing", \
        records[BROKEN]
    assert any(r["verdict"] == "alarm" for r in records.values()), "the run raised no ALARM: nothing to check"
    assert any(r["verdict"] == "clear" for r in records.values())
    fw: VirtualFirmware = lane_run["firmware"]
    placed = lane_run["camera"].scanners[0].placed
    wire = {item_id: item.meta.seq for item_id, (_, item) in placed.items()}
    diverted = {d.item_id for d in fw.diverted}
    reports = {(r["item_id"], r["action"]): r for r in _records(lane_run, "actions")}
    for line in lines:
        if " LANE " in line:
            print(line)
    for item_id, rec in sorted(records.items()):
        if rec["verdict"] == "clear":
            assert wire[item_id] not in diverted, f"CLEAR {item_id} was diverted"
            assert wire[item_id] in fw.passed, item_id
            assert (item_id, "divert") not in reports
            continue
        assert wire[item_id] in diverted, (item_id, rec["verdict"], fw.diverted, fw.passed, lines)
        assert reports[(item_id, "divert")]["outcome"] == "done", reports[(item_id, "divert")]
        assert reports[(item_id, "beacon")]["outcome"] == "done", reports[(item_id, "beacon")]
        # the demo's own line says what the lane did with the parcel
        assert any(" LANE " in line and f" {item_id} diverted " in line for line in lines), lines


def _outline_errors(run: dict[str, Any], rec: dict[str, Any]) -> tuple[float, float, float]:
    """Where the picture's white parcel outline lies against the true outline of the scanned area: (largest and
    median distance, px, from each true outline point to the drawn line; from each drawn
    line pixel to the true outline: median, as a parcel label's barcode has a few such pixels too)."""
    camera: DemoCamera = run["camera"]
    start_count, item = camera.scanners[0].placed[rec["item_id"]]
    payloads = [p for t, p in run["messages"] if t.endswith(f"/images/{rec['item_id']}")]
    assert payloads, f"no overlay picture published for {rec['item_id']}: {rec['image_note']}"
    image = np.asarray(cv2.imdecode(np.frombuffer(payloads[-1], np.uint8), cv2.IMREAD_COLOR))
    spec = camera.stream.camera.spec
    assert image.shape[:2] == (spec.height_px, spec.width_px), "not the exit-camera frame"
    assert camera.served is not None
    frame, best, second = identify_frame(camera.served[0], image)
    assert best < 0.7 * second, f"{rec['item_id']}: overlay matches no served frame clearly ({best} vs {second})"
    travel = frame.travel_mm - start_count / camera.belt.counts_per_mm
    lines_, channels = item.high.shape
    truth = camera.stream.camera.xray_to_camera(densify(box_polygon(0, 0, channels - 1, lines_ - 1), 2.0),
                                                travel, OVERLAY_HEIGHT_MM)
    h, w = image.shape[:2]
    caption = (truth[:, 1] < CAPTION[0]) & (truth[:, 0] < CAPTION[1])  # the caption may hide the line there
    inside = truth[(truth[:, 0] >= 2) & (truth[:, 0] < w - 2) & (truth[:, 1] >= 2) & (truth[:, 1] < h - 2)
                   & ~caption]
    assert len(inside) > 50, "the parcel's true outline is hardly in the frame: nothing to compare"
    white = (image.min(axis=2) >= 200).astype(np.uint8)
    white[:CAPTION[0], :CAPTION[1]] = 0  # the caption (verdict and item id) is white too
    # the outline is a thin white line on a black one: white pixels that an opening removes (not a white area
    # such as a parcel's label) and that have black beside them
    thin = white & (1 - cv2.morphologyEx(white, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)))
    white = thin & cv2.dilate((image.max(axis=2) < 60).astype(np.uint8), np.ones((5, 5), np.uint8))
    assert white.sum() > 100, "no white outline drawn on the camera frame"
    to_white = cv2.distanceTransform(1 - white, cv2.DIST_L2, 5)
    at = np.round(inside).astype(np.intp)
    along = to_white[at[:, 1], at[:, 0]]
    truth_line = np.full((h, w), 255, np.uint8)
    cv2.polylines(truth_line, [np.round(truth).astype(np.int32).reshape(-1, 1, 2)], True, 0, 1)
    to_truth = cv2.distanceTransform(truth_line, cv2.DIST_L2, 5)
    back = to_truth[white > 0]
    return float(along.max()), float(np.median(along)), float(np.median(back))


def test_unscreened_parcel_is_outlined_on_the_exit_camera_where_the_camera_saw_it(lane_run: dict[str, Any]) -> None:
    rec = _by_item(lane_run)[BROKEN]
    assert rec["verdict"] == "unscreened"
    assert rec["image"] is not None, f"no overlay for the UNSCREENED parcel: {rec['image_note']}"
    assert rec["image_note"] is None, rec["image_note"]  # the camera overlay, not the raw X-ray fallback
    worst, median, back = _outline_errors(lane_run, rec)
    print(f"{BROKEN} unscreened: parcel outline vs truth on the {OVERLAY_HEIGHT_MM:g} mm plane: largest "
          f"{worst:.1f} px, median {median:.1f} px; drawn line {back:.1f} px from it (median)")
    assert worst <= OUTLINE_LIMIT_PX and back <= DRAWN_MEDIAN_LIMIT_PX, (worst, median, back)
