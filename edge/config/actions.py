"""``actions:`` section: what the box tells the scanner's controller to do about a decision or a fault.

Absent = no commands at all (the box only reports). Each action is its own optional block, so a site turns on
exactly what its lane has: a diverter (``divert``), an alarm beacon (``beacon``), stopping the belt on chosen
faults (``belt_stop``), and what an operator's later verdict triggers (``on_verdict``). Needs the ``firmware:``
section (``edge.config.root.check_actions_need_firmware``): the commands go over the serial link.

Distances are belt travel in millimetres, measured on the lane; the service turns them into encoder counts with
``firmware.encoder_counts_per_mm`` (the timing model is in ``docs/actions.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edge.config.base import EdgeBaseConfig

ActedVerdict = Literal["alarm", "unscreened"]
"""Verdicts an action may follow. CLEAR is not one: nothing is ever done to a cleared parcel."""
FaultName = Literal["encoder_lost", "belt_jam", "belt_motor", "xray_tube", "xray_hv", "detector", "interlock_open",
                    "emergency_stop", "over_temperature", "watchdog_reset"]
"""The firmware's fault codes by name (``firmware_bridge.messages.FaultCode``, lower case)."""
OperatorVerdict = Literal["threat_confirmed", "cleared", "sent_to_search"]
"""An operator's verdict on an item (shared contract 3, ``<box prefix>/verdicts``)."""
VerdictAction = Literal["release", "belt_stop", "beacon"]


class DivertConfig(EdgeBaseConfig):
    """The diverter downstream of the tunnel and the verdicts that send a parcel to it."""

    verdicts: tuple[ActedVerdict, ...] = Field(("alarm", "unscreened"), min_length=1,
                                               description="verdicts whose parcels are diverted")
    gate: int = Field(1, ge=0, le=255, description="diverter gate number the firmware knows")
    eye_to_exit_mm: float = Field(ge=0, le=100_000, description="belt distance in mm from the item photo-eye "
                                  "(whose encoder counts ItemStart/ItemEnd carry) to the tunnel exit")
    distance_mm: float = Field(gt=0, le=100_000, description="belt distance in mm from the tunnel exit to the diverter")
    arm_mm: float = Field(50.0, ge=0, le=10_000, description="the command must reach the firmware while the "
                          "parcel's leading edge is at least this far (mm) before the diverter: the arm's swing time "
                          "at belt speed")


class BeaconConfig(EdgeBaseConfig):
    """A lamp switched on for the verdicts that need the operator."""

    verdicts: tuple[ActedVerdict, ...] = Field(("alarm", "unscreened"), min_length=1,
                                               description="verdicts that light it")
    lamp: Literal["beacon", "stack_red", "stack_amber", "stack_green"] = Field("beacon", description="which lamp")
    pattern: Literal["on", "flash"] = Field("flash", description="steady or flashing")
    duration_ms: int = Field(5000, ge=0, le=65_535, description="back off after this many ms; 0 = until changed")


class BeltStopConfig(EdgeBaseConfig):
    """Stop the belt (it is never restarted by the box: a person restarts it after looking)."""

    faults: tuple[FaultName, ...] = Field((), description="firmware faults (raised) that stop the belt")
    on_source_down: bool = Field(False, description="also when the frame source stops answering (items would pass "
                                 "UNSCREENED source_stalled)")


class ActionsConfig(EdgeBaseConfig):
    """Firmware commands on decisions, faults and operator verdicts."""

    divert: DivertConfig | None = Field(None, description="diverter; absent = no divert")
    beacon: BeaconConfig | None = Field(None, description="alarm lamp; absent = none")
    belt_stop: BeltStopConfig | None = Field(None, description="belt stop on faults; absent = never")
    on_verdict: dict[OperatorVerdict, VerdictAction] = Field(
        default_factory=dict, description="operator verdict -> command, e.g. {cleared: release}")
    state_file: Path | None = Field(None, description="SQLite file of actions not yet done or reported; absent = "
                                    "actions.sqlite3 beside the intake journal")
