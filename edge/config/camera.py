"""``camera:`` section: the exit camera and the cross-modal calibration that maps X-ray pixels onto it.

The encoder scale the camera selects frames with is ``firmware.encoder_counts_per_mm`` (belt positions come only
from the firmware link); ``encoder_mm_per_count`` here is a deprecated alias kept so old files still load:
``edge.config.root`` fills it from the firmware section and refuses the two disagreeing.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge.config.base import EdgeBaseConfig
from edge.config.firmware import DEFAULT_ENCODER_COUNTS_PER_MM


class CameraConfig(EdgeBaseConfig):
    """Exit camera capture. ``device`` is a V4L2 index, an RTSP/HTTP URL or a video file."""

    device: int | str = Field(description="camera index (0), RTSP/HTTP URL or video file path")
    fps: float = Field(10.0, gt=0, le=120, description="frames per second requested")
    ring_seconds: float = Field(20.0, gt=0, le=600, description="seconds of frames kept in the ring buffer")
    calibration_file: Path = Field(
        Path("/var/lib/edge/calibration/camera.yaml"), description="intrinsics + homography YAML (edge calibrate)"
    )
    reconnect_s: float = Field(2.0, gt=0, le=60, description="seconds between reopen attempts after loss")
    encoder_mm_per_count: float = Field(
        1.0 / DEFAULT_ENCODER_COUNTS_PER_MM, gt=0, le=100,
        description="deprecated alias: belt travel per encoder count in mm; set firmware.encoder_counts_per_mm "
        "instead (this then follows it as 1 / counts per mm; set both and they must agree)",
    )
    select_tolerance_mm: float = Field(
        120.0, gt=0, le=2000, description="farthest in mm the item centre may be from the view centre in a frame"
    )
    overlay_height_mm: float | None = Field(
        None, ge=0, le=1000,
        description="height in mm above the belt of the surface overlays are mapped onto (parcel tops); "
        "absent = the calibration target's plane",
    )
    wait_s: float = Field(
        0.0, ge=0, le=30,
        description="longest in s the map step waits for an item to reach the camera (never into its deadline; "
        "0 = never wait: items decided before they pass the camera get the X-ray overlay)",
    )
    overlay_max_bytes: int = Field(
        250_000, ge=2000, le=10_000_000, description="largest overlay JPEG in bytes (quality, then size drop)"
    )
