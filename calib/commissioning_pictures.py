"""Render the pictures of docs/commissioning.md by running the rehearsal's commands, as the document shows them.

Run: ``.venv/bin/python -m calib.commissioning_pictures docs/img [--work /tmp/lane]``. Every step is the ``edge``
command the document gives (in a subprocess, so the output is the engineer's); the pictures are the files those
commands write, shrunk for the repository (640 px wide, colours posterised to 32 levels: < 150 kB as PNG).
A documentation tool: not used at runtime.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from calib.detect import detect_charuco
from calib.target import board_spec
from edge.condition.flatfield import load_flatfield
from sim.board import TargetGeometry

WIDTH = 640


def edge(*args: str) -> str:
    """Run ``edge ARGS`` and return what it printed; a failing step stops the run (unless it is meant to fail)."""
    res = subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    print(f"$ edge {' '.join(args)}\n{out}", flush=True)
    return out


def small(img: npt.NDArray[np.uint8], width: int = WIDTH) -> npt.NDArray[np.uint8]:
    """Shrink to ``width`` and posterise (PNG of a noisy photo is large; 32 levels per channel is not)."""
    h = round(img.shape[0] * width / img.shape[1])
    out = cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)
    return np.asarray((out // 8) * 8 + 4, dtype=np.uint8)


def save(path: Path, img: npt.NDArray[np.uint8]) -> None:
    cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    size = path.stat().st_size
    print(f"wrote {path} ({size // 1000} kB)")
    if size > 150_000:
        raise SystemExit(f"{path} is {size} bytes; the documentation's pictures must stay under 150 kB")


def flatfield_picture(flatfield: Path, seed: int = 0) -> npt.NDArray[np.uint8]:
    """Fresh air lines of the same virtual detector: raw (top, ±20 % around the median) and flat-field corrected
    (bottom, ±2 % around 1): the column pattern the correction removes, and the noise it leaves."""
    from sim.physics import DualEnergyScanner

    ff = load_flatfield(flatfield)
    air = DualEnergyScanner(seed=seed).air_lines(64, np.random.default_rng(99))  # lines it was not fitted on
    raw = air.high.astype(np.float32)
    dark, ref = ff.dark[1][None, :], ff.air[1][None, :]  # row 1: high energy
    t = (raw - dark) / np.maximum(ref - dark, 1.0)

    def band(rel: npt.NDArray[np.float32], span: float) -> npt.NDArray[np.uint8]:
        g = np.clip(128 + rel / span * 127, 0, 255).astype(np.uint8)
        return np.asarray(cv2.resize(g, (g.shape[1], g.shape[0] * 2), interpolation=cv2.INTER_NEAREST), np.uint8)

    top, bottom = band(raw / float(np.median(raw)) - 1.0, 0.2), band(t - 1.0, 0.02)
    gap = np.full((8, top.shape[1]), 255, np.uint8)
    img = cv2.cvtColor(np.vstack([top, gap, bottom]), cv2.COLOR_GRAY2BGR)
    for text, y in (("raw air lines, high energy (grey = median, +-20 %)", 24),
                    ("after flat-field (grey = 1, +-2 %)", top.shape[0] + 8 + 22)):
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)
        cv2.rectangle(img, (4, y - h - 6), (12 + w, y + 6), (0, 0, 0), -1)
        cv2.putText(img, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return np.asarray(img, np.uint8)


def view_picture(view: Path) -> npt.NDArray[np.uint8]:
    """A ChArUco view with the corners ``calibrate camera`` finds (green) and their ids."""
    read = cv2.imread(str(view), cv2.IMREAD_COLOR)
    if read is None:
        raise SystemExit(f"{view}: cannot read")
    img = np.asarray(read, np.uint8)
    found = detect_charuco(img, board_spec(TargetGeometry()))
    for (x, y), i in zip(found.points_px.reshape(-1, 2), found.ids.ravel(), strict=True):
        cv2.circle(img, (round(x), round(y)), 7, (0, 220, 0), 2, cv2.LINE_AA)
        cv2.putText(img, str(int(i)), (round(x) + 6, round(y) - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 220, 0), 1,
                    cv2.LINE_AA)
    return np.asarray(img, np.uint8)


def main(out_dir: str, work_dir: str = "/tmp/xray-edge-commissioning") -> None:
    out, work = Path(out_dir), Path(work_dir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    cal = work / "calibration"
    edge("calibrate", "flatfield", "--from-sim", "-o", str(cal / "flatfield.npz"))
    save(out / "commission-flatfield.png", flatfield_picture(cal / "flatfield.npz"))
    edge("calibrate", "energy", "--from-sim", "-o", str(cal / "energy.yaml"), "--validate", "pvc,copper")
    edge("calibrate", "target", "--out", str(work / "target"), "--dpi", "100")
    target = cv2.imread(str(work / "target" / "target-print.png"), cv2.IMREAD_COLOR)
    save(out / "commission-target.png", small(np.asarray(target, np.uint8), 480))
    edge("calibrate", "rehearse", "views", "--out", str(work / "views"))
    save(out / "commission-view.png", small(view_picture(work / "views" / "view_04.png")))
    views = sorted(str(p) for p in (work / "views").glob("view_*.png"))
    edge("calibrate", "camera", *views, "-c", str(cal / "camera.yaml"))
    edge("calibrate", "rehearse", "pass", "--out", str(work / "pass-1"))
    edge("calibrate", "homography", str(work / "pass-1"), "-c", str(cal / "camera.yaml"))
    save(out / "commission-homography.png", small(np.asarray(cv2.imread(str(cal / "camera-overlay.png")), np.uint8)))
    edge("calibrate", "rehearse", "pass", "--out", str(work / "pass-2"), "--x-mm", "275", "--y-mm", "240",
         "--rotation-deg", "-4", "--seed", "2")
    edge("calibrate", "check", str(work / "pass-2"), "-c", str(cal / "camera.yaml"))
    edge("calibrate", "rehearse", "pass", "--out", str(work / "pass-knocked"), "--bump-deg", "0.5", "--seed", "3")
    edge("calibrate", "check", str(work / "pass-knocked"), "-c", str(cal / "camera.yaml"), "--overlay",
         str(work / "knocked.png"))
    save(out / "commission-knocked.png", small(np.asarray(cv2.imread(str(work / "knocked.png")), np.uint8)))


if __name__ == "__main__":
    main(*sys.argv[1:3])
