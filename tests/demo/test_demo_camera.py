"""`edge demo` with its exit camera: every ALARM published with the parcel outlined on the camera frame, and the
published outlines checked against where the virtual camera really drew the belt.

The run is the demo's own (``edge_tools.demo.run_demo``: reference bundles, virtual firmware on a pty, private
Mosquitto, the camera streamed over HTTP to the service's capture thread); the test only listens. It records the
MQTT messages the demo's subscriber receives and keeps the virtual camera's truth (each frame served: instant and
belt travel; each parcel: the encoder count at its line 0). For each published item, the overlay picture is
matched to the frame it was drawn on, and every ``polygon_camera`` is compared with the true projection of the
object's ``polygon_xray`` in that frame: on the plane the service maps onto (``camera.overlay_height_mm``) this is
the error of calibration plus belt timing; on the top of the parcel that holds the object it adds the parallax
of a parcel taller or lower than that plane. Both are printed (``-s``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import edge_tools.demo as demo
from edge_tools.demo_camera import OVERLAY_HEIGHT_MM, DemoCamera
from sim.camera_stream import identify_frame

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
SEED, ITEMS = 1, 4  # seed 1: item 4 alarms (3 anomalous objects, score 0.59 against 0.55), the others clear
PLANE_LIMIT_PX = 12.0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    for name in demo.DEMO_BUNDLES:
        if not (MODELS / name / "bundle.yaml").exists():
            pytest.skip(f"reference bundle {MODELS / name} is missing (docs/models.md)")
    cameras: list[DemoCamera] = []
    messages: list[tuple[str, bytes]] = []
    real_camera, real_subscriber = demo.start_camera, demo._subscriber

    def camera(*args: Any, **kwargs: Any) -> DemoCamera:
        cameras.append(real_camera(*args, **kwargs))
        return cameras[-1]

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
    mp.setattr(demo, "_subscriber", subscriber)
    # The scorer at the threshold these figures were taken with (the demo's default combination, issue 32, sets it
    # at 0.6376 and seed 1 then has no ALARM in 4 items): this test is about the lane, not about detection.
    mp.setitem(demo.DEMO_THRESHOLDS, "scorer-stfpm", 0.55)
    lines: list[str] = []
    try:
        code = demo.run_demo(tmp_path_factory.mktemp("demo") / "run", ITEMS, 30.0, SEED, MODELS, lines.append)
    finally:
        mp.undo()
    assert code == 0, "\n".join(lines)
    if not any(t.endswith("/items") for t, _ in messages):
        pytest.skip("no MQTT broker (mosquitto) on this machine: nothing was published")
    assert cameras and cameras[0].served is not None, "\n".join(lines)
    return {"camera": cameras[0], "messages": messages, "lines": lines}


def _records(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for topic, payload in run["messages"]:
        if topic.endswith("/items"):
            rec = json.loads(payload)
            out[rec["item_id"]] = rec
    return out


def _image(run: dict[str, Any], item_id: str) -> np.ndarray[Any, Any]:
    payloads = [p for t, p in run["messages"] if t.endswith(f"/images/{item_id}")]
    assert payloads, f"no overlay picture published for {item_id}"
    img = cv2.imdecode(np.frombuffer(payloads[-1], np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return np.asarray(img)


def _errors(run: dict[str, Any], rec: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Per object: largest vertex distance (px) from the truth on the mapped plane, and on its parcel's top."""
    camera: DemoCamera = run["camera"]
    scanner = camera.scanners[0]
    start_count, item = scanner.placed[rec["item_id"]]
    assert camera.served is not None
    frame, best, second = identify_frame(camera.served[0], _image(run, rec["item_id"]))
    assert best < 0.7 * second, f"{rec['item_id']}: overlay matches no served frame clearly ({best} vs {second})"
    travel = frame.travel_mm - start_count / camera.belt.counts_per_mm
    cam = camera.stream.camera
    plane, top = [], []
    for obj in rec["objects"]:
        xray = np.asarray(obj["polygon_xray"], dtype=np.float64)
        assert obj["polygon_camera"] is not None, f"{rec['item_id']} object {obj['object_id']}: no camera outline"
        mapped = np.asarray(obj["polygon_camera"], dtype=np.float64)
        truth = cam.xray_to_camera(xray, travel, OVERLAY_HEIGHT_MM)
        plane.append(float(np.linalg.norm(mapped - truth, axis=1).max()))
        centre_mm = (xray.mean(axis=0) + 0.5) * cam.pitch_mm
        parcel = min(item.truth.footprints, key=lambda f: np.hypot(f.centre_x_mm - centre_mm[0],
                                                                    f.centre_y_mm - centre_mm[1]))
        on_top = cam.xray_to_camera(xray, travel, parcel.height_mm)
        top.append(float(np.linalg.norm(mapped - on_top, axis=1).max()))
    return plane, top


def test_every_alarm_is_outlined_on_the_exit_camera_where_the_camera_saw_it(demo_run: dict[str, Any]) -> None:
    records = _records(demo_run)
    assert sorted(records) == [f"lane1-{i}" for i in range(1, ITEMS + 1)], demo_run["lines"]
    alarms = [r for r in records.values() if r["verdict"] in ("alarm", "unscreened")]
    assert any(r["verdict"] == "alarm" for r in alarms), "the run raised no ALARM: nothing to check"
    spec = demo_run["camera"].stream.camera.spec
    all_plane: list[float] = []
    for rec in sorted(records.values(), key=lambda r: r["item_id"]):
        if rec["verdict"] not in ("alarm", "unscreened"):
            continue
        assert rec["image_note"] is None, rec["image_note"]  # the camera overlay, not the X-ray fallback
        assert _image(demo_run, rec["item_id"]).shape[:2] == (spec.height_px, spec.width_px)
        assert any(o["anomalous"] for o in rec["objects"])
        plane, top = _errors(demo_run, rec)
        all_plane += plane
        print(f"{rec['item_id']} {rec['verdict']}: {len(plane)} outlines; largest vertex error on the "
              f"{OVERLAY_HEIGHT_MM:g} mm plane {max(plane):.1f} px (median {np.median(plane):.1f}); on the "
              f"parcel top {max(top):.1f} px (median {np.median(top):.1f})")
        assert max(plane) <= PLANE_LIMIT_PX, (rec["item_id"], plane)
    served, dropped, cpu = demo_run["camera"].served
    print(f"camera: {len(served)} frames served, {dropped} dropped, {cpu / max(len(served), 1) * 1000:.0f} ms "
          f"render CPU per frame; all ALARM outlines: max {max(all_plane):.1f} px")


def test_clear_items_are_outlined_too(demo_run: dict[str, Any]) -> None:
    """The camera path does not depend on the verdict: CLEAR items carry camera outlines mapped as well (those
    that got a camera frame: on a starved machine the camera may drop the frames a CLEAR item passed in)."""
    clear = [r for r in _records(demo_run).values() if r["verdict"] == "clear" and r["image_note"] is None]
    assert clear
    for rec in clear:
        plane, _ = _errors(demo_run, rec)
        assert max(plane) <= PLANE_LIMIT_PX, (rec["item_id"], plane)
