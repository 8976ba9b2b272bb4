"""The demo's exit camera: a moving belt, the virtual camera streaming it, and its commissioning.

Why: the box maps every alarm onto the exit camera's picture through ports a real lane uses: frames from a camera
URL read by ``edge.camera.capture`` and stamped with the belt position from the firmware's encoder counts. Here
the belt is a clock (``DemoBelt``: constant speed from the demo's start); the virtual firmware reports its counts
(``BeltStatus`` every 0.1 s, ``ItemStart`` when a parcel's leading edge passes the photo-eye, ``ItemEnd`` when its
trailing edge does); the virtual exit camera (``sim.camera_stream``) films the same belt ``downstream_mm`` past
the X-ray line and serves it as MJPEG over HTTP from a process of its own (a camera is a device of its own, and
in the service's process its rendering waited for the GIL behind the screening threads); and the camera is
commissioned by the rehearsal's code (``calib.rehearse.commission_camera``: ChArUco views, then a target pass),
exactly as ``edge calibrate camera`` and ``homography`` would do it on site.

The service sees only a camera URL, a calibration file and encoder counts.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from calib.rehearse import RehearsalCamera, commission_camera
from edge.records import RawItem
from edge_tools.demo import DemoScanner
from firmware_bridge.messages import BeltStatus, ItemEnd, ItemStart
from firmware_bridge.virtual import VirtualFirmware
from sim.camera import PlacedFootprint
from sim.camera_stream import BeltClock, CameraProcess, StreamedFrame
from sim.source import SimFrameSource

DEMO_CAMERA = RehearsalCamera(scale=0.5, downstream_mm=650.0, seed=3, fps=4.0)
"""640 x 360 at 4 frames/s (50 mm of belt per frame): one render costs 30-80 ms of CPU."""

OVERLAY_HEIGHT_MM = 150.0
"""The plane alarms are mapped onto (``camera.overlay_height_mm``): a typical parcel top (parcels are 100-250 mm)."""

BELT_REPORT_S = 0.1
KEEP_PLACED = 64
GAP_MM = 150.0
"""Belt left empty between two parcels (the demo's parcels follow each other as closely as this)."""


@dataclass
class DemoBelt:
    """A belt running at ``speed_mm_s`` since ``t0_mono_s``; encoder counts ``counts_per_mm`` per mm."""

    speed_mm_s: float
    counts_per_mm: float
    t0_mono_s: float = field(default_factory=time.monotonic)

    def travel_mm_at(self, t_mono_s: float) -> float:
        return (t_mono_s - self.t0_mono_s) * self.speed_mm_s

    def count_at(self, t_mono_s: float) -> int:
        return round(self.travel_mm_at(t_mono_s) * self.counts_per_mm)

    def count_now(self) -> int:
        return self.count_at(time.monotonic())


class BeltReporter:
    """Sends the belt's encoder count through the virtual firmware every ``period_s`` (a ``BeltStatus``)."""

    def __init__(self, belt: DemoBelt, firmware: VirtualFirmware, period_s: float = BELT_REPORT_S) -> None:
        self._belt = belt
        self._firmware = firmware
        self._period = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-belt", daemon=True)

    def start(self) -> BeltReporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        speed = round(self._belt.speed_mm_s * self._belt.counts_per_mm)
        while not self._stop.wait(self._period):
            self._firmware.send(BeltStatus(self._belt.count_now(), speed, True))


class BeltScanner(DemoScanner):
    """``DemoScanner`` on a moving belt: each parcel is scanned for as long as the belt takes to carry it
    through the X-ray line, its item events carry the belt's counts at the instants they happen, and the virtual
    camera is told where the parcel lies on the belt.

    ``next_item`` never blocks beyond its timeout: a parcel taken from the source is "in the tunnel" (ItemStart
    sent) until the belt has moved its length, then ItemEnd goes out and its frames are delivered.
    """

    def __init__(self, source: SimFrameSource, firmware: VirtualFirmware, belt: DemoBelt,
                 stream: CameraProcess, pitch_mm: float) -> None:
        super().__init__(source, firmware)
        self._belt = belt
        self._stream = stream
        self._pitch = pitch_mm
        self._in_tunnel: tuple[RawItem, float] | None = None
        self._free_at = time.monotonic()
        self.placed: OrderedDict[str, tuple[int, RawItem]] = OrderedDict()
        """Item id → (encoder count at its line 0, the item): where the last ``KEEP_PLACED`` parcels really lie on
        the belt (the truth tests compare the published outlines with)."""

    def next_item(self, timeout_s: float) -> RawItem | None:
        now = time.monotonic()
        if self._in_tunnel is None:
            if now < self._free_at:
                time.sleep(min(timeout_s, self._free_at - now))
                return None
            item = self._source.next_item(timeout_s)
            if item is None or item.high is None:
                return item
            start = self._belt.count_now()
            self._firmware.send(ItemStart(item.meta.seq, start, 0))
            self.placed[item.meta.item_id] = (start, item)
            while len(self.placed) > KEEP_PLACED:  # a demo may run for hours: keep the truth of recent items only
                self.placed.popitem(last=False)
            if item.truth is not None:
                for fp in getattr(item.truth, "footprints", ()):
                    self._stream.add_parcel(PlacedFootprint(fp, start / self._belt.counts_per_mm))
            scan_s = item.high.shape[0] * self._pitch / self._belt.speed_mm_s
            self._in_tunnel = (item, time.monotonic() + scan_s)
            return None
        item, end_at = self._in_tunnel
        if now < end_at:
            time.sleep(min(timeout_s, end_at - now))
            return None
        self._in_tunnel = None
        self._firmware.send(ItemEnd(item.meta.seq, self._belt.count_now(), 0))
        self._free_at = time.monotonic() + GAP_MM / self._belt.speed_mm_s
        time.sleep(0.05)  # let the item events reach the service before the frames do, as on a real line
        return item


@dataclass
class DemoCamera:
    """The running belt, its reporter and the camera stream, with the calibration the service maps through."""

    belt: DemoBelt
    stream: CameraProcess
    reporter: BeltReporter
    calibration_file: Path
    pitch_mm: float

    scanners: list[BeltScanner] = field(default_factory=list)

    def scanner(self, source: SimFrameSource, firmware: VirtualFirmware) -> BeltScanner:
        made = BeltScanner(source, firmware, self.belt, self.stream, self.pitch_mm)
        self.scanners.append(made)
        return made

    def config_yaml(self, wait_s: float = 8.0) -> str:
        """The ``camera:`` section of the demo's config (appended by ``add_camera_config``)."""
        spec = self.stream.camera.spec
        return (f"camera:   # the virtual exit camera, {spec.width_px}x{spec.height_px} at {spec.fps:g} fps, "
                f"{spec.downstream_mm:g} mm downstream\n"
                f"  device: {self.stream.url}\n"
                f"  fps: {spec.fps:g}\n"
                f"  ring_seconds: 30\n"
                f"  calibration_file: {self.calibration_file}\n"
                f"  overlay_height_mm: {OVERLAY_HEIGHT_MM:g}\n"
                f"  wait_s: {wait_s:g}   # the camera is downstream: wait for the parcel to pass it\n")

    served: tuple[list[StreamedFrame], int, float] | None = None
    """What the camera served (frames' truth, frames dropped, render CPU s), kept when it stops."""

    def stop(self) -> None:
        self.reporter.stop()
        try:
            self.served = self.stream.history()
        except (OSError, EOFError):
            self.served = None  # the camera process died: nothing to keep
        self.stream.stop()


def start_demo_camera(workdir: Path, firmware: VirtualFirmware, speed_mm_s: float, pitch_mm: float,
                      counts_per_mm: float, echo: Callable[[str], None] = print,
                      camera: RehearsalCamera = DEMO_CAMERA) -> DemoCamera:
    """Commission the virtual exit camera (rehearsal code path), then start the belt and the camera stream."""
    cal = workdir / "calibration" / "camera.yaml"
    commission_camera(cal, camera, say=echo)
    belt = DemoBelt(speed_mm_s, counts_per_mm)
    stream = CameraProcess(camera.spec(), BeltClock(belt.t0_mono_s, belt.speed_mm_s), camera.camera().pitch_mm,
                           camera.seed)
    reporter = BeltReporter(belt, firmware).start()
    echo(f"virtual exit camera streaming at {stream.url} ({camera.downstream_mm:g} mm downstream, belt "
         f"{speed_mm_s:g} mm/s)")
    return DemoCamera(belt, stream, reporter, cal, pitch_mm)


def add_camera_config(config: Path, camera: DemoCamera) -> None:
    """Append the ``camera:`` section to the demo's config file."""
    with config.open("a", encoding="utf-8") as f:
        f.write(camera.config_yaml())
