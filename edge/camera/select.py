"""Pick the exit-camera frame in which an item is under the camera, from belt travel since the X-ray line.

Where it sits: the *map* stage, between the ring buffer and the overlay. It only looks at what the ring holds
now and returns at once: either a ``FrameChoice`` or a ``NoFrame`` with a reason (camera never delivered, the
item has not reached the camera yet, frames missing around the moment it passed). It must never wait for a
frame: an alarm is published without an overlay rather than late.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from edge.camera.ring import FrameRing, StampedFrame


@dataclass(frozen=True, slots=True)
class FrameChoice:
    """The chosen frame and the item-start travel at which it was taken (input of the mapping).

    Attributes:
        frame: the stamped frame.
        travel_mm: how far the item-start line had moved past the X-ray line when it was taken.
        offset_mm: distance between the item centre and the camera's view centre in that frame.
    """

    frame: StampedFrame
    travel_mm: float
    offset_mm: float


@dataclass(frozen=True, slots=True)
class NoFrame:
    """No usable frame; ``reason`` is for the operator and the audit log. ``pending``: the item has not reached
    the camera yet (a later frame may show it), as opposed to a frame that will never come."""

    reason: str
    pending: bool = False


@dataclass(frozen=True, slots=True)
class ItemTravel:
    """Where an item is on the belt scale.

    Attributes:
        item_start_count: encoder count when the item's first X-ray line (row 0) was acquired.
        length_mm: item length along the belt (rows x pitch).
    """

    item_start_count: float
    length_mm: float


def select_frame(
    ring: FrameRing,
    item: ItemTravel,
    view_centre_travel_mm: float,
    mm_per_count: float,
    tolerance_mm: float = 120.0,
) -> FrameChoice | NoFrame:
    """The frame whose belt position puts the item centre closest to the camera's view centre.

    Args:
        ring: captured frames.
        item: the item's start count and length.
        view_centre_travel_mm: downstream distance of the image centre from the X-ray line (calibration).
        mm_per_count: belt travel per encoder count.
        tolerance_mm: farthest the item centre may be from the view centre in the chosen frame.
    """
    if mm_per_count <= 0:
        return NoFrame(f"invalid encoder scale {mm_per_count} mm/count")
    frames = [f for f in ring.snapshot() if f.encoder_count is not None]
    if not frames:
        return NoFrame("no camera frames with a belt position in the ring (camera down or encoder unknown)")
    wanted_travel = view_centre_travel_mm + item.length_mm / 2.0
    wanted = item.item_start_count + wanted_travel / mm_per_count
    best = ring.nearest_count(wanted)
    assert best is not None and best.encoder_count is not None  # frames is non-empty
    offset = (best.encoder_count - wanted) * mm_per_count
    latest = max(float(f.encoder_count) for f in frames)  # type: ignore[arg-type]
    if abs(offset) <= tolerance_mm:
        travel = (best.encoder_count - item.item_start_count) * mm_per_count
        return FrameChoice(best, travel, offset)
    if latest < wanted:
        return NoFrame(f"item not under the camera yet: needs {(wanted - latest) * mm_per_count:.0f} mm more "
                       "belt travel", pending=True)
    oldest = min(float(f.encoder_count) for f in frames)  # type: ignore[arg-type]
    if oldest > wanted:
        return NoFrame("the item passed the camera before the oldest frame in the ring (ring too short)")
    return NoFrame(f"no frame within {tolerance_mm:.0f} mm of the item passing the camera (nearest is "
                   f"{abs(offset):.0f} mm off: frames lost)")


def await_frame(
    ring: FrameRing,
    item: ItemTravel,
    view_centre_travel_mm: float,
    mm_per_count: float,
    tolerance_mm: float,
    until_mono_s: float,
    *,
    poll_s: float = 0.05,
    stale_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> FrameChoice | NoFrame:
    """``select_frame``, asked again while the item is still on its way to the camera, until ``until_mono_s``.

    Why: on a lane the camera is downstream of the X-ray line, so when an item is decided it has usually not
    reached the camera yet. A frame within the tolerance is taken once the item's centre has reached the view
    centre (or the time is up), so the item is shown as central as the frame rate allows. Waiting is bounded
    (the caller passes the earlier of its wait budget and the item's deadline) and stops at once when the camera
    is not delivering (no frame for ``stale_s``): a dead camera costs no time, and the answer is then the reason
    why there is no frame.
    """
    while True:
        choice = select_frame(ring, item, view_centre_travel_mm, mm_per_count, tolerance_mm)
        latest = ring.latest()
        if isinstance(choice, FrameChoice):
            # good enough, unless it is the newest frame and the item is still short of the view centre: the
            # next frame shows it closer (waiting for it costs one frame period)
            if choice.offset_mm >= 0 or latest is None or choice.frame is not latest:
                return choice
        elif not choice.pending:
            return choice
        now = clock()
        if now + poll_s > until_mono_s or latest is None or now - latest.t_mono_s > stale_s:
            return choice
        sleep(poll_s)
