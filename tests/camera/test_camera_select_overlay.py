"""Frame selection from belt travel and the overlay JPEG: right frame, right place, never blocking."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.camera.mapping import CameraMapper
from edge.camera.overlay import (
    ItemOverlayInput,
    OverlayObject,
    box_polygon,
    encode_jpeg,
    mask_polygons,
    overlay_for_item,
)
from edge.camera.ring import FrameRing, StampedFrame
from edge.camera.select import FrameChoice, ItemTravel, NoFrame, select_frame
from sim.camera import ExitCamera, PlacedFootprint
from tests.camera.camera_helpers import calibration_from_truth

MM_PER_COUNT = 0.8


@dataclass(frozen=True)
class _Box:
    centre_x_mm: float
    centre_y_mm: float
    width_mm: float
    length_mm: float
    height_mm: float
    rotation_deg: float
    surface_seed: int


def _frame(count: float, seq: int, shape: tuple[int, int] = (48, 64)) -> StampedFrame:
    return StampedFrame(np.zeros((*shape, 3), np.uint8), float(seq) * 0.1, count, seq)


def test_selection_picks_the_frame_with_the_item_under_the_camera() -> None:
    ring = FrameRing(50)
    for k in range(30):
        ring.push(_frame(k * 25.0, k))  # 25 counts = 20 mm of belt between frames
    item = ItemTravel(item_start_count=100.0, length_mm=300.0)
    got = select_frame(ring, item, view_centre_travel_mm=200.0, mm_per_count=MM_PER_COUNT)
    assert isinstance(got, FrameChoice)
    wanted = 100.0 + (200.0 + 150.0) / MM_PER_COUNT  # item centre at the view centre
    assert abs(got.frame.encoder_count - wanted) <= 12.5  # type: ignore[operator]
    assert abs(got.travel_mm - (got.frame.encoder_count - 100.0) * MM_PER_COUNT) < 1e-9  # type: ignore[operator]


def test_selection_gives_reasons_instead_of_waiting() -> None:
    empty = select_frame(FrameRing(4), ItemTravel(0.0, 100.0), 200.0, MM_PER_COUNT)
    assert isinstance(empty, NoFrame) and "no camera frames" in empty.reason
    ring = FrameRing(10)
    for k in range(5):
        ring.push(_frame(k * 10.0, k))
    early = select_frame(ring, ItemTravel(0.0, 100.0), 400.0, MM_PER_COUNT)
    assert isinstance(early, NoFrame) and "not under the camera yet" in early.reason
    gap = FrameRing(10)
    gap.push(_frame(0.0, 0))
    gap.push(_frame(2000.0, 1))  # camera lost in between
    lost = select_frame(gap, ItemTravel(0.0, 100.0), 400.0, MM_PER_COUNT)
    assert isinstance(lost, NoFrame) and "frames lost" in lost.reason
    no_cal = overlay_for_item(ring, None, ItemOverlayInput("x", ()), ItemTravel(0.0, 10.0), MM_PER_COUNT)
    assert no_cal.jpeg is None and no_cal.reason is not None and "calibrat" in no_cal.reason


def test_overlay_lands_on_the_parcel_the_camera_sees(cam: ExitCamera) -> None:
    mapper = CameraMapper(calibration_from_truth(cam))
    box = _Box(300.0, 200.0, 240.0, 260.0, 4.2, 8.0, 5)
    ring = FrameRing(40)
    view = mapper.view_centre_travel_mm()
    start_count = 1000.0
    for k in range(-4, 5):  # frames every 40 mm around the moment the item is centred
        travel = view + 200.0 + 40.0 * k
        img = cam.render(travel, parcels=[PlacedFootprint(box, 0.0)])
        ring.push(StampedFrame(img, float(k), start_count + travel / MM_PER_COUNT, k + 4))
    # an anomalous object: a 60 x 40 px rectangle inside the parcel
    obj = box_polygon(340, 220, 400, 260)
    item = ItemOverlayInput("item-7", (OverlayObject(obj, True, "knife 0.93"),), verdict="ALARM")
    out = overlay_for_item(ring, mapper, item, ItemTravel(start_count, 400 * 0.8), MM_PER_COUNT,
                           xray_shape=(500, 640), max_bytes=120_000)
    assert out.jpeg is not None and len(out.jpeg) <= 120_000, out.reason
    assert out.travel_mm is not None and abs(out.travel_mm - (view + 160.0)) <= 40.0
    img = cv2.imdecode(np.frombuffer(out.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (cam.spec.height_px, cam.spec.width_px)
    # red shading sits exactly inside the true projection of the object, not outside it
    truth = cam.xray_to_camera(obj, out.travel_mm, 4.2).astype(np.int32)
    inside = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(inside, [truth], 255)
    inside = cv2.erode(inside, np.ones((9, 9), np.uint8))
    outside = cv2.dilate(cv2.fillPoly(np.zeros(img.shape[:2], np.uint8), [truth], 255), np.ones((15, 15), np.uint8))
    redness = img[..., 2].astype(int) - img[..., 1].astype(int)
    assert np.median(redness[inside > 0]) > 40
    assert np.median(redness[(outside == 0)]) < 20


def test_jpeg_size_cap_and_mask_polygons() -> None:
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    data, q = encode_jpeg(noisy, 60_000)
    assert len(data) <= 60_000 and q <= 90
    mask = np.zeros((50, 60), bool)
    mask[10:20, 5:25] = True
    polys = mask_polygons(mask, offset_px=(100.0, 200.0))
    assert len(polys) == 1
    p = polys[0]
    assert p[:, 0].min() == 105 and p[:, 0].max() == 124 and p[:, 1].min() == 210 and p[:, 1].max() == 219
