"""Render the README's picture: one ALARM of ``edge demo``, its X-ray overlay beside its exit-camera overlay.

Run: ``.venv/bin/python -m edge_tools.demo_picture docs/img/demo-alarm.jpg``. It runs ``edge demo`` (seed 1,
4 items: the fourth alarms), takes the first ALARM's record (the audit store's copy of what was published) and
the camera overlay the demo's MQTT subscriber saved, and draws the record's ``polygon_xray`` outlines on the
item's own X-ray picture (the virtual scanner regenerates the item from the seed; conditioned with the demo's
calibrations), in the palette the box uses. A documentation tool: not used at runtime.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.camera.overlay import OverlayObject, draw_on_xray
from edge.condition.conditioner import Conditioner
from edge.config import load_config
from edge.stages.map import xray_canvas
from sim.dataset import ItemStream
from sim.scene import Preset

MAX_BYTES = 150_000


def _label(img: npt.NDArray[np.uint8], text: str) -> None:
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)
    cv2.rectangle(img, (0, img.shape[0] - h - 14), (w + 12, img.shape[0]), (0, 0, 0), -1)
    cv2.putText(img, text, (6, img.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)


def main(out: str = "docs/img/demo-alarm.jpg", work: str = "/tmp/xray-edge-demo-picture", seed: int = 1,
         items: int = 4) -> None:
    workdir = Path(work)
    subprocess.run([sys.executable, "-m", "edge", "demo", "--items", str(items), "--seed", str(seed), "--out",
                    str(workdir)], check=True, timeout=900)
    records = [json.loads(p.read_text()) for p in sorted((workdir / "audit").glob("*/*.json"))]
    alarm = next(r for r in records if r["verdict"] == "alarm" and r.get("image_note") is None)
    read = cv2.imread(str(workdir / "overlays" / f"{alarm['item_id']}.jpg"), cv2.IMREAD_COLOR)
    if read is None:
        raise SystemExit(f"no camera overlay saved for {alarm['item_id']}")
    camera = np.asarray(read, np.uint8)
    cfg = load_config(workdir / "edge.yaml")
    index = int(alarm["item_id"].rsplit("-", 1)[1]) - 1  # lane1-<n> is the stream's item n - 1
    threat_rate = float(getattr(cfg.source, "threat_rate", 0.3))
    item = ItemStream(seed=seed, preset=Preset("parcels"), threat_rate=threat_rate).item(index)
    image = Conditioner.from_config(cfg.condition).condition(item.raw.low, item.raw.high)
    objects = [OverlayObject(np.asarray(o["polygon_xray"], np.float64), bool(o["anomalous"]))
               for o in alarm["objects"] if o["polygon_xray"]]
    xray = draw_on_xray(xray_canvas(image), objects)
    height = camera.shape[0]
    xray = np.asarray(cv2.resize(xray, (round(xray.shape[1] * height / xray.shape[0]), height),
                                 interpolation=cv2.INTER_AREA), np.uint8)
    _label(xray, "X-ray")
    _label(camera, f"exit camera, {alarm['item_id']} ALARM")
    both = np.hstack([xray, np.full((height, 6, 3), 255, np.uint8), camera])
    for quality in (90, 85, 80, 70, 60):
        ok, buf = cv2.imencode(".jpg", both, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and buf.size <= MAX_BYTES:
            Path(out).write_bytes(buf.tobytes())
            print(f"wrote {out}: {alarm['item_id']}, {len(objects)} outlines, {buf.size // 1000} kB (q {quality})")
            return
    raise SystemExit(f"cannot fit the picture into {MAX_BYTES} bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/demo-alarm.jpg")
