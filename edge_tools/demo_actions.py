"""The demo's lane actions: a virtual diverter downstream of the exit camera, and what the lane did per item.

Why: the box diverts every ALARM and UNSCREENED parcel (``actions:``, docs/actions.md) by commands to the
scanner's controller over the serial link. In the demo the controller is the virtual firmware, which models the
diverter (``firmware_bridge.virtual.DiverterModel``): it diverts a parcel whose ``Divert`` came while its leading
edge was at least ``ARM_MM`` before the diverter, and lets every other parcel pass. The service reports each
outcome on ``<prefix>/actions`` (``action-1``); the demo prints one line per report (:func:`action_line`).

Where the diverter stands: the demo decides ALARMs once the parcel's centre is under the exit camera (650 mm
downstream, ``camera.wait_s``), so the diverter is further: ``EYE_TO_EXIT_MM + DISTANCE_MM`` = 1800 mm past the
photo-eye, 9 s of belt at 200 mm/s, which leaves a 600 mm parcel decided at the camera about 2 s to spare.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from firmware_bridge.virtual import DiverterModel, VirtualFirmware

EYE_TO_EXIT_MM = 800.0
"""Belt mm from the photo-eye (the counts in ItemStart) to the tunnel exit."""
DISTANCE_MM = 1000.0
"""Belt mm from the tunnel exit to the diverter."""
ARM_MM = 50.0
"""A divert must reach the controller while the parcel's leading edge is at least this far before the diverter."""
GATE = 1

OUTCOME_WORDS = {"done": "diverted", "missed_divert": "MISSED_DIVERT", "failed": "FAILED"}
"""How a divert's outcome is printed (other actions print their outcome as it is)."""


def demo_diverter(counts_per_mm: float) -> DiverterModel:
    """The virtual controller's diverter, where the demo's ``actions.divert`` says it is."""
    return DiverterModel(round((EYE_TO_EXIT_MM + DISTANCE_MM) * counts_per_mm), round(ARM_MM * counts_per_mm))


def actions_yaml() -> str:
    """The ``actions:`` section of the demo's config: divert and beacon on ALARM and UNSCREENED; an operator's
    ``cleared`` verdict (the console) releases the diverted parcel."""
    return (f"actions:   # the virtual firmware's diverter stands {EYE_TO_EXIT_MM + DISTANCE_MM:g} mm past the "
            "photo-eye\n"
            f"  divert:\n"
            f"    verdicts: [alarm, unscreened]\n"
            f"    gate: {GATE}\n"
            f"    eye_to_exit_mm: {EYE_TO_EXIT_MM:g}\n"
            f"    distance_mm: {DISTANCE_MM:g}\n"
            f"    arm_mm: {ARM_MM:g}\n"
            f"  beacon:\n"
            f"    verdicts: [alarm, unscreened]\n"
            f"    lamp: beacon\n"
            f"    pattern: flash\n"
            f"    duration_ms: 3000\n"
            f"  on_verdict:   # an operator's 'cleared' in the console releases the diverted parcel\n"
            f"    cleared: release\n")


def add_actions_config(config: Path) -> None:
    """Append the ``actions:`` section to the demo's config file."""
    with config.open("a", encoding="utf-8") as f:
        f.write(actions_yaml())


def action_line(payload: bytes) -> str | None:
    """The line the demo prints for one ``<prefix>/actions`` report (None: not an action report)."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("schema") != "action-1":
        return None
    action, outcome = str(body.get("action")), str(body.get("outcome"))
    what = OUTCOME_WORDS.get(outcome, outcome) if action == "divert" else f"{action} {outcome}"
    item = body.get("item_id") or "-"
    return f"{time.strftime('%H:%M:%S')} LANE       {item} {what} ({body.get('detail') or ''})"


def wait_for_diverter(firmware: VirtualFirmware, items: int, timeout_s: float) -> bool:
    """Wait until ``items`` parcels have reached the diverter (diverted or passed on); False on timeout."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if len(firmware.diverted) + len(firmware.passed) >= items:
            return True
        time.sleep(0.1)
    return False
