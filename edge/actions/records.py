"""The vocabulary of actions: what the box can tell the lane to do and how it can end, and the ``action-1``
payload every report carries (shared contract 4: ``<box prefix>/actions``, and ``<record stem>.actions.json``
beside the item's record in the audit store). No I/O.
"""

from __future__ import annotations

from enum import StrEnum

from edge.publish.payloads import JsonValue
from edge.records import Verdict

ACTION_SCHEMA = "action-1"


class ActionKind(StrEnum):
    """What the box asked of the scanner's controller."""

    DIVERT = "divert"
    BEACON = "beacon"
    BELT_STOP = "belt_stop"
    RELEASE = "release"


class Outcome(StrEnum):
    """How an action ended.

    ``missed_divert``: the parcel passed the diverter before the firmware had the command (or the firmware said
    it was too late); it went on down the main line and its alarm stands. ``failed``: the command could not be
    carried out (refused, unknown item, no belt position, no link for the whole window).
    """

    DONE = "done"
    MISSED_DIVERT = "missed_divert"
    FAILED = "failed"


def acted_verdict(verdict: Verdict, configured: tuple[str, ...]) -> bool:
    """Whether an action configured for ``configured`` verdicts follows this one (CLEAR never does)."""
    return verdict is not Verdict.CLEAR and verdict.value in configured


def action_payload(record_id: str | None, item_id: str | None, action: ActionKind, outcome: Outcome, detail: str,
                   wall: float) -> dict[str, JsonValue]:
    """The ``action-1`` record: exactly the keys of shared contract 4."""
    return {"schema": ACTION_SCHEMA, "record_id": record_id, "item_id": item_id, "action": action.value,
            "outcome": outcome.value, "detail": detail, "wall": wall}
