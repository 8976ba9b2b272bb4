"""Pick the audit records ``edge fit`` may learn from: CLEAR decisions in a date range with saved raw inputs.

The audit store (:mod:`edge.sinks.audit`) keeps ``<day>/<item_id>.json`` for every decision and, with
``audit.save_inputs``, ``<day>/<item_id>.npz`` (raw high/low). The JSON is filed under the day it was decided,
the inputs under the day the scan ended, so the inputs are looked up in the record's day and the day before.
Only CLEAR items are taken: an ALARM may be a threat and an UNSCREENED item was not screened in full, and
neither may teach the scorer what benign looks like. Reads files only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from edge_tools.fit.errors import FitError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One CLEAR decision with its raw inputs."""

    item_id: str
    decided_wall: float
    record: Path
    inputs: Path


@dataclass(frozen=True, slots=True)
class Selection:
    """The records taken and the counts behind them (for provenance and error messages)."""

    records: tuple[AuditRecord, ...]
    in_range: int
    clear: int
    first_wall: float | None
    last_wall: float | None


def parse_date(text: str, option: str) -> dt.datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO date-time (UTC unless it names a zone)."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise FitError(f"{option} {text!r}: not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _day(name: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(name)
    except ValueError:
        return None


def select_records(audit_dir: Path, since: dt.datetime, until: dt.datetime | None = None) -> Selection:
    """CLEAR records decided in ``[since, until)`` whose raw inputs were saved, oldest first.

    Raises:
        FitError: the store is missing, nothing was decided in the range, nothing in it was CLEAR, or no CLEAR
            record has saved inputs (the message says to enable ``audit.save_inputs``).
    """
    if not audit_dir.is_dir():
        raise FitError(f"{audit_dir}: no such audit store folder (the config's audit.directory)")
    lo = since.timestamp()
    hi = None if until is None else until.timestamp()
    first_day = (since - dt.timedelta(days=1)).date()
    days = sorted(p for p in audit_dir.iterdir() if p.is_dir() and (d := _day(p.name)) is not None and d >= first_day)
    taken: list[AuditRecord] = []
    in_range = clear = 0
    walls: list[float] = []
    all_walls: list[float] = []
    for day in days:
        for path in sorted(day.glob("*.json")):
            try:
                body = json.loads(path.read_text(encoding="utf-8"))
                wall = float(body["decided_wall"])
                verdict = str(body["verdict"])
                item_id = str(body["item_id"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("unreadable audit record skipped", extra={"path": str(path), "error": str(exc)})
                continue
            all_walls.append(wall)
            if wall < lo or (hi is not None and wall >= hi):
                continue
            in_range += 1
            walls.append(wall)
            if verdict != "clear":
                continue
            clear += 1
            previous = (_day(day.name) or first_day) - dt.timedelta(days=1)
            for candidate in (day / f"{path.stem}.npz", audit_dir / previous.isoformat() / f"{path.stem}.npz"):
                if candidate.is_file():
                    taken.append(AuditRecord(item_id, wall, path, candidate))
                    break
    span = f"from {since.isoformat()}" + ("" if until is None else f" until {until.isoformat()}")
    if in_range == 0:
        seen = (f"; its records were decided {_iso(min(all_walls))} .. {_iso(max(all_walls))}" if all_walls
                else "; it holds no records at all")
        raise FitError(f"{audit_dir}: no audit records decided {span}{seen}")
    if clear == 0:
        raise FitError(f"{audit_dir}: none of the {in_range} records decided {span} is CLEAR; edge fit learns "
                       "from benign (CLEAR) items only")
    if not taken:
        raise FitError(f"{audit_dir}: none of the {clear} CLEAR records decided {span} has saved raw inputs "
                       "(<item_id>.npz); enable `audit: save_inputs: true` in the config, let the service "
                       "screen items for a while, then fit again")
    taken.sort(key=lambda r: (r.decided_wall, r.item_id))
    return Selection(tuple(taken), in_range, clear, min(walls), max(walls))


def _iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
