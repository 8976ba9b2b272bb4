"""Render ``docs/img/overlay-*.png`` and ``docs/img/calib-*.png``: the whole chain on the virtual scanner.

Run: ``.venv/bin/python -m calib.demo_overlay docs/img``. It calibrates the virtual exit camera exactly as an
engineer would (ChArUco views → intrinsics; target pass → homography), then screens nothing: it takes the
ground truth of generated parcels (threat objects = anomalous, the rest benign), and draws them on the camera
frame chosen from belt travel. The mapped surface is the parcel top (its true height), standing in for the
``camera.overlay_height_mm`` a site would configure. A documentation tool: not used at runtime.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from calib.camera import calibrate_intrinsics
from calib.detect import xray_view
from calib.homography import CaptureFrame, CaptureSet, estimate_homography, overlay_picture
from calib.target import board_spec
from edge.camera.calibration import CameraCalibration
from edge.camera.mapping import CameraMapper
from edge.camera.overlay import ItemOverlayInput, OverlayObject, mask_polygons, overlay_for_item
from edge.camera.ring import FrameRing, StampedFrame
from edge.camera.select import ItemTravel
from sim.board import TargetGeometry
from sim.camera import ExitCamera, PlacedFootprint, simulate_intrinsics_views, simulate_target_pass
from sim.physics import DualEnergyScanner
from sim.scene import build_item
from sim.target import TargetPlacement

MM_PER_COUNT = 0.8


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cam = ExitCamera(seed=4)
    geom = TargetGeometry()
    spec = board_spec(geom)
    views = simulate_intrinsics_views(cam, geom, 9, seed=1)
    intr = calibrate_intrinsics([(f"view{i}", v) for i, v in enumerate(views)], spec).intrinsics
    scanner = DualEnergyScanner(seed=2)
    tp = simulate_target_pass(cam, scanner, geom, TargetPlacement(255.0, 220.0, 3.0), seed=3)
    cap = CaptureSet(xray_view(tp.high), tuple(CaptureFrame(f"f{i}", f, t) for i, (f, t) in
                                               enumerate(zip(tp.frames, tp.travels_mm, strict=True))), 0.8, "sim")
    rep = estimate_homography(cap, intr, spec, geom.thickness_mm)
    cal = CameraCalibration(intr, rep.homography)
    mapper = CameraMapper(cal)
    cv2.imwrite(str(out / "calib-homography-overlay.png"), overlay_picture(cap, mapper, rep.residuals))
    print(f"homography: RMS {rep.homography.accuracy.rms_px:.3f} px / {rep.homography.accuracy.rms_mm:.3f} mm")
    rng = np.random.default_rng(7)
    made = 0
    for index in range(40):
        truth = build_item(rng, "parcels", item_index=index)
        if not truth.threat or len(truth.footprints) != 1:
            continue
        fp = truth.footprints[0]
        ring = FrameRing(64)
        start = 5000.0
        lines = truth.shape[0]
        view = mapper.view_centre_travel_mm(fp.height_mm)
        for k in range(-6, 7):
            travel = view + lines * 0.8 / 2 + 35.0 * k
            img = cam.render(travel, parcels=[PlacedFootprint(fp, 0.0)], rng=rng)
            ring.push(StampedFrame(img, float(k), start + travel / MM_PER_COUNT, k + 6))
        objs = []
        for o in truth.objects:
            if o.group == "container":
                continue
            for poly in mask_polygons(o.mask, (float(o.mask_origin[1]), float(o.mask_origin[0]))):
                objs.append(OverlayObject(poly, o.threat, o.kind if o.threat else ""))
        outline = fp.corners_mm() / 0.8 - 0.5
        item = ItemOverlayInput(f"item-{index}", tuple(objs), outline, "ALARM", fp.height_mm)
        res = overlay_for_item(ring, mapper, item, ItemTravel(start, lines * 0.8), MM_PER_COUNT,
                               max_bytes=400_000)
        if res.jpeg is None:
            print(f"item {index}: no overlay: {res.reason}")
            continue
        shown = cv2.imdecode(np.frombuffer(res.jpeg, np.uint8), cv2.IMREAD_COLOR)
        made += 1
        if shown is not None:
            cv2.imwrite(str(out / f"overlay-{made}.png"), shown)
        print(f"overlay-{made}.png: item {index}, {len(objs)} objects, travel {res.travel_mm:.0f} mm")
        if made == 2:
            break


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img")
