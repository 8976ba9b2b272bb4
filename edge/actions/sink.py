"""``Actions``: the decisions' consequences on the lane (divert, beacon, belt stop, release), as a ``ResultSink``.

Why a sink and not a stage after ``map``: an action must follow every decision the box makes, and many are never
made by the stages: UNSCREENED ``deadline_missed``, ``overload``, ``source_stalled``, ``link_down`` (settled by the
watchdog or the link gate), ``shutdown`` and ``restart`` (settled at stop and at start). All of them reach the
sinks, exactly once, through the one publish thread, after the link history for the item is final; a stage would
see only the items the workers finished. And the sink contract is the durability this needs: ``publish`` returns
once the owed actions are on disk (``edge.actions.store``), so the intake journal may forget the item, and it
raises ``PublishError`` when they are not, so the pipeline keeps the decision and asks again. It is the first
sink (``edge.runtime``), so a divert is queued before the audit and MQTT writes, which can take milliseconds.

``publish`` only writes rows; a worker thread (``actions``) sends the commands over the firmware link and follows
them: a divert is sent with a timeout equal to the belt time left before its deadline (the link resends it every
``firmware.command_retry_s`` with the same seq, also across a reconnect), re-sent whenever that runs out while the
belt position says there is still time, and reported:

* ``done`` when the firmware acknowledges it (or reports the parcel ``Diverted``);
* ``missed_divert`` when the parcel reached the point where the diverter must be armed first (the belt position
  from the encoder passed ``deadline_count``) with no acknowledgement, or the firmware answered ``TOO_LATE``;
  a divert that was sent but not acknowledged before the deadline is asked once more on a live link, because the
  firmware may have carried it out and lost only the ack (it answers OK for an item it diverted);
* ``failed`` when the firmware refused it, did not know the item, or no belt position was known all window long.

While the link is down nothing is given up on a guess (the belt estimate says "unknown"): the next session's Hello
gives the true count and the worker decides from it. Beacons, belt stops and releases have no belt deadline: they
are tried for ``WINDOW_S`` of wall time. The alarm of an item never changes: the report goes beside it.

Every finished action is reported by each ``ActionReporter`` (the audit store's ``<stem>.actions.json`` and the
MQTT ``<prefix>/actions`` record); a reporter that fails is asked again every second, and the row stays
unreported on disk until all have taken it, so a kill loses no report either.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Protocol

from edge.actions.belt import BeltEstimate
from edge.actions.records import ActionKind, Outcome, acted_verdict
from edge.actions.report import ActionReporter
from edge.actions.store import ActionRow, ActionStore
from edge.config.actions import ActionsConfig
from edge.errors import PublishError
from edge.publish.payloads import record_id
from edge.publish.topics import RecordKind
from edge.records import Decision
from firmware_bridge.errors import CommandError, CommandRejected, CommandTimeout
from firmware_bridge.history import LinkState
from firmware_bridge.link import ReceivedEvent
from firmware_bridge.messages import (
    Ack,
    AckStatus,
    BeltControl,
    Command,
    Divert,
    Diverted,
    Fault,
    FaultCode,
    Lamp,
    LampCommand,
    LampPattern,
    ReleaseDivert,
)

log = logging.getLogger(__name__)

WINDOW_S = 60.0
"""How long a beacon, belt stop or release is tried (wall time) before it is reported ``failed``."""
DIVERT_BACKSTOP_S = 600.0
"""A divert whose belt position stays unknown this long after its decision (no link) is reported ``failed``."""
MAX_ATTEMPT_S = 5.0
"""Longest single command attempt: the belt speed may change, so the time left is worked out again after it."""
STOPPED_BELT_ATTEMPT_S = 1.0
"""Attempt length while the belt stands still (no deadline approaches, the firmware may still be busy)."""
REPORT_RETRY_S = 1.0
CLOSE_WAIT_MAX_S = 3.0
"""``close`` waits at most this long (and half its timeout) for pending actions: the sinks after this one share
the service's stop time (the MQTT outbox flushes in it), and what is still pending is kept for the next start."""


class NamedVerdict(Protocol):
    """An operator's verdict record (``edge.verdicts.OperatorVerdict``): only its name is read here."""

    @property
    def verdict(self) -> str: ...


class CommandLink(Protocol):
    """What the worker needs of ``firmware_bridge.FirmwareLink``."""

    def command(self, command: Command, timeout_s: float | None = None) -> Future[Ack]: ...

    @property
    def is_up(self) -> bool: ...


def wire_id_of(item_id: str, scanner_id: str) -> int | None:
    """The firmware's item counter in ``<scanner>-<n>`` (``edge.acquire.firmware_item_id``), also when the
    pipeline renamed the item ``<scanner>-<n>-<k>`` (k >= 2) because its id was used before in this run; None
    for items the firmware did not name (a spool file's own name).

    Why the renamed form: a firmware counter that restarted (a controller power cycle) repeats ids, and the
    pipeline gives each new parcel ``<id>-2``; the controller knows that parcel as ``n``. Read as "not a
    firmware item", every ALARM after a controller restart failed its divert for the next 100,000 items (the
    ledger's memory of ids). The parcel's place is still checked against its own encoder counts.
    """
    prefix = f"{scanner_id}-"
    rest = item_id[len(prefix):] if item_id.startswith(prefix) else ""
    head, dash, repeat = rest.partition("-")
    if dash and repeat.isdigit() and int(repeat) >= 2 and not repeat.startswith("0"):
        rest = head
    return int(rest) if rest.isdigit() and int(rest) <= 0xFFFF_FFFF else None


@dataclass(slots=True)
class _Attempt:
    row: ActionRow
    future: Future[Ack] | None = None
    attempts: int = 0
    final_ask: bool = False
    earlier_run: bool = False
    """Left pending by a run that stopped: it may have been sent (and carried out) before the stop."""


class Actions:
    """ResultSink and firmware listener; see the module docstring. ``close`` stops the worker."""

    def __init__(self, config: ActionsConfig, link: CommandLink, store: ActionStore, site_id: str,
                 counts_per_mm: float, reporters: Sequence[ActionReporter] = (),
                 source_problem: Callable[[], str | None] | None = None, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 poll_s: float = 0.05) -> None:
        self.config = config
        self.belt = BeltEstimate()
        self.source_problem = source_problem
        """Asked every half second when ``belt_stop.on_source_down`` is set (the runtime wires the pipeline's)."""
        self.problem: str | None = None
        """Why actions cannot be stored or reported now (None when they can)."""
        self._link = link
        self._store = store
        self._site = site_id
        self._cpm = counts_per_mm
        self._reporters = list(reporters)
        self._mono = clock
        self._wall = wall
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], _Attempt] = {}
        self._to_report: dict[tuple[str, str], ActionRow] = {}
        self._next_report_try = 0.0
        self._confirmed: deque[tuple[int, int]] = deque(maxlen=1024)
        """(wire id, encoder count) of the parcels the firmware reported ``Diverted`` (guarded by ``_lock``)."""
        self._stop_faults = frozenset() if config.belt_stop is None else frozenset(
            int(FaultCode[name.upper()]) for name in config.belt_stop.faults)
        self._faults: queue.SimpleQueue[Fault] = queue.SimpleQueue()
        self._source_down = False
        self._next_source_check = 0.0
        self._next_prune = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        for row in store.pending():  # what a killed run left: re-sent if still in time, else reported
            self._pending[row.key] = _Attempt(row, earlier_run=True)
        for row in store.unreported():
            self._to_report[row.key] = row
        if self._pending or self._to_report:
            log.warning("actions left by the previous run", extra={"pending": len(self._pending),
                                                                   "unreported": len(self._to_report)})
        self._thread = threading.Thread(target=self._run, name="actions", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ ResultSink (publish thread)
    def publish(self, decision: Decision) -> None:
        """Queue the actions ``decision`` calls for, on disk, before returning (idempotent by item uid).

        Raises:
            PublishError: they could not be stored (the pipeline keeps the decision and asks again).
        """
        rows = []
        now = self._wall()
        divert, beacon = self.config.divert, self.config.beacon
        if divert is not None and acted_verdict(decision.verdict, divert.verdicts):
            rows.append(self._divert_row(decision, now))
        if beacon is not None and acted_verdict(decision.verdict, beacon.verdicts):
            rows.append(self._item_row(decision, ActionKind.BEACON, now))
        if rows:
            self._add(rows, decision.item_id)

    def close(self, timeout_s: float) -> None:
        """Give pending actions until ``timeout_s`` / 2 (at most ``CLOSE_WAIT_MAX_S``) to finish and be reported,
        then stop; what is left stays on disk for the next start."""
        end = self._mono() + min(timeout_s / 2, CLOSE_WAIT_MAX_S)
        while self._mono() < end:
            with self._lock:
                busy = bool(self._pending) or bool(self._to_report)
            if not busy:
                break
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2.0)
        self._store.close()

    # ------------------------------------------------------------------ firmware listener (link I/O thread)
    def on_event(self, received: ReceivedEvent) -> None:
        self.belt.on_event(received)
        event = received.event
        if isinstance(event, Diverted):
            with self._lock:
                self._confirmed.append((event.item_id, event.encoder_count))
            self._wake.set()
        elif isinstance(event, Fault) and event.active and self.config.belt_stop is not None:
            self._faults.put(event)
            self._wake.set()

    def on_state(self, state: LinkState) -> None:
        self.belt.on_state(state)
        self._wake.set()

    # ------------------------------------------------------------------ operator verdicts (any thread)
    def on_verdict(self, record_id_: str, verdict: str | NamedVerdict) -> ActionKind | None:
        """An operator's verdict on the item whose item (or alarm) record id is ``record_id_``: queue the command
        ``actions.on_verdict`` names for it, if any; returns what was queued (None: nothing to do).

        ``verdict`` is the verdict's name (``cleared``...) or a record that carries it as ``.verdict`` (the
        verdict intake's ``OperatorVerdict``), so this is a verdict callback as it is.

        ``release`` is queued only for an item whose divert was done (nothing else is held at a gate).

        Raises:
            PublishError: the action could not be stored.
        """
        name = verdict if isinstance(verdict, str) else verdict.verdict
        action = self.config.on_verdict.get(name)  # type: ignore[call-overload]
        if action is None:
            return None
        verdict = name
        divert = self._store.divert_of(record_id_)
        now = self._wall()
        if action == "release":
            if divert is None or divert.outcome is not Outcome.DONE:
                log.info("operator verdict: nothing to release", extra={
                    "record_id": record_id_, "verdict": verdict,
                    "divert": "none" if divert is None else (divert.outcome or "pending")})
                return None
            row = replace(divert, action=ActionKind.RELEASE, deadline_count=None, window_end_wall=now + WINDOW_S,
                          created_wall=now, outcome=None, detail="", done_wall=None, reported=False)
        else:
            kind = ActionKind.BELT_STOP if action == "belt_stop" else ActionKind.BEACON
            base = divert.uid if divert is not None else record_id_
            row = ActionRow(f"{base}:verdict", kind, None if divert is None else divert.item_id, record_id_,
                            None, None, None, None, now + WINDOW_S,
                            divert.decided_wall if divert is not None else now, now)
        added = self._add([row], row.item_id)
        return row.action if added else None

    # ------------------------------------------------------------------ building rows
    def _record_ids(self, decision: Decision) -> tuple[str, str]:
        return (record_id(self._site, decision.scanner_id, decision.item_id, RecordKind.ITEM, decision.item_uid),
                record_id(self._site, decision.scanner_id, decision.item_id, RecordKind.ALARM, decision.item_uid))

    def _item_row(self, decision: Decision, kind: ActionKind, now: float) -> ActionRow:
        item_rid, alarm_rid = self._record_ids(decision)
        return ActionRow(decision.item_uid, kind, decision.item_id, item_rid, alarm_rid,
                         wire_id_of(decision.item_id, decision.scanner_id), None, None, now + WINDOW_S,
                         decision.decided_wall, now)

    def _divert_row(self, decision: Decision, now: float) -> ActionRow:
        divert = self.config.divert
        assert divert is not None
        row = replace(self._item_row(decision, ActionKind.DIVERT, now), gate=divert.gate,
                      window_end_wall=now + DIVERT_BACKSTOP_S)
        anchor = decision.encoder_start if decision.encoder_start is not None else decision.encoder_end
        if row.wire_id is None:
            return replace(row, outcome=Outcome.FAILED, done_wall=now,
                           detail=f"item id {decision.item_id!r} is not a firmware item (<scanner>-<n>): the diverter "
                                  "cannot be told which parcel")
        if anchor is None:
            return replace(row, outcome=Outcome.FAILED, done_wall=now,
                           detail="no encoder count for the item: its place on the belt is unknown")
        travel_mm = divert.eye_to_exit_mm + divert.distance_mm - divert.arm_mm
        return replace(row, deadline_count=anchor + round(travel_mm * self._cpm))

    def _add(self, rows: list[ActionRow], item_id: str | None) -> list[ActionRow]:
        try:
            added = self._store.add(rows)
        except (sqlite3.Error, OSError) as exc:
            self.problem = f"actions store {self._store.path} cannot write ({exc})"
            raise PublishError(f"{item_id}: actions not stored ({self.problem})") from exc
        self.problem = None
        with self._lock:
            for row in added:
                if row.outcome is None:
                    self._pending[row.key] = _Attempt(row)
                else:
                    self._to_report[row.key] = row
                    log.error("action not possible", extra={"item_id": row.item_id, "action": row.action.value,
                                                            "detail": row.detail})
        self._wake.set()
        return added

    # ------------------------------------------------------------------ worker thread
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # the worker must go on: a bug on one action must not strand the others
                log.exception("actions worker step failed")
            self._wake.wait(self._poll_s)
            self._wake.clear()

    def _step(self) -> None:
        now_mono, now_wall = self._mono(), self._wall()
        self._belt_stop_triggers(now_mono, now_wall)
        with self._lock:
            attempts = list(self._pending.values())
        for att in attempts:
            self._advance(att, now_mono, now_wall)
        if now_mono >= self._next_report_try:
            self._report()
        if now_mono >= self._next_prune:
            self._next_prune = now_mono + 3600.0
            try:
                self._store.prune()
            except sqlite3.Error as exc:
                log.warning("actions store not pruned", extra={"error": str(exc)})

    def _belt_stop_triggers(self, now_mono: float, now_wall: float) -> None:
        stop = self.config.belt_stop
        if stop is None:
            return
        rows = []
        while True:
            try:
                fault = self._faults.get_nowait()
            except queue.Empty:
                break
            if fault.code in self._stop_faults:
                name = FaultCode(fault.code).name.lower()
                rows.append(ActionRow(f"fault:{name}:{now_wall:.3f}", ActionKind.BELT_STOP, None, None, None, None,
                                      None, None, now_wall + WINDOW_S, now_wall, now_wall,
                                      detail=f"fault {name} raised: {fault.detail}"))
        if stop.on_source_down and self.source_problem is not None and now_mono >= self._next_source_check:
            self._next_source_check = now_mono + 0.5
            problem = self.source_problem()
            if problem and not self._source_down:
                rows.append(ActionRow(f"source:{now_wall:.3f}", ActionKind.BELT_STOP, None, None, None, None, None,
                                      None, now_wall + WINDOW_S, now_wall, now_wall,
                                      detail=f"frame source down: {problem}"))
            self._source_down = bool(problem)
        if rows:
            try:
                self._add(rows, None)
            except PublishError:
                log.error("belt stop not stored; sent anyway", extra={"problem": self.problem})
                with self._lock:
                    for row in rows:
                        self._pending[row.key] = _Attempt(row)

    def _command_of(self, row: ActionRow) -> Command:
        if row.action is ActionKind.DIVERT:
            assert row.wire_id is not None and row.gate is not None
            return Divert(row.wire_id, row.gate)
        if row.action is ActionKind.RELEASE:
            assert row.wire_id is not None and row.gate is not None
            return ReleaseDivert(row.wire_id, row.gate)
        if row.action is ActionKind.BELT_STOP:
            return BeltControl(False)
        beacon = self.config.beacon
        assert beacon is not None
        return LampCommand(Lamp[beacon.lamp.upper()], LampPattern[beacon.pattern.upper()], beacon.duration_ms)

    def _advance(self, att: _Attempt, now_mono: float, now_wall: float) -> None:
        row = att.row
        if row.action is ActionKind.DIVERT and self._confirmed_divert(row):
            self._finish(att, Outcome.DONE, f"diverted to gate {row.gate}: the firmware reported the parcel diverted "
                         f"({att.attempts} attempt(s))")
            return
        if att.future is not None:
            if not att.future.done():
                return
            future, att.future = att.future, None
            try:
                future.result()
            except CommandRejected as exc:
                status = AckStatus(exc.status)
                if status is AckStatus.TOO_LATE and row.action is ActionKind.DIVERT:
                    self._finish(att, Outcome.MISSED_DIVERT, "the firmware answered TOO_LATE: the parcel was past "
                                 "the diverter's arming point when the command arrived; it went on down the main "
                                 f"line ({att.attempts} attempt(s))")
                    return
                if status is not AckStatus.BUSY:
                    self._finish(att, Outcome.FAILED, f"the firmware refused {row.action.value}: {status.name}")
                    return
            except CommandTimeout:
                pass
            except CommandError:
                return  # the link is closing: the row stays pending for the next start
            else:
                self._finish(att, Outcome.DONE, self._done_detail(att, now_mono))
                return
            if att.final_ask:
                self._finish(att, Outcome.MISSED_DIVERT, "no acknowledgement before the parcel reached the "
                             f"diverter's arming point ({att.attempts} attempt(s))")
                return
        timeout = self._attempt_timeout(att, now_mono, now_wall)
        if timeout is None:
            return
        att.future = self._link.command(self._command_of(row), timeout_s=timeout)
        att.future.add_done_callback(lambda _: self._wake.set())
        att.attempts += 1

    def _confirmed_divert(self, row: ActionRow) -> bool:
        """The firmware reported this parcel diverted (its counter's id, at a count past the item's own: an id
        reused after a controller restart is another parcel)."""
        if row.wire_id is None or row.deadline_count is None:
            return False
        anchor = row.deadline_count - self._travel_counts()
        with self._lock:
            return any(w == row.wire_id and count >= anchor for w, count in self._confirmed)

    def _attempt_timeout(self, att: _Attempt, now_mono: float, now_wall: float) -> float | None:
        """How long the next attempt may run; None = do not send now (finished here, or waiting for the link)."""
        row = att.row
        if row.action is not ActionKind.DIVERT:
            if now_wall >= row.window_end_wall:
                self._finish(att, Outcome.FAILED, f"not acknowledged within {WINDOW_S:g} s ({att.attempts} "
                             f"attempt(s){'' if self._link.is_up else ', firmware link down'})")
                return None
            return min(MAX_ATTEMPT_S, max(0.05, row.window_end_wall - now_wall))
        assert row.deadline_count is not None
        position = self.belt.position(now_mono)
        if position is None:
            if now_wall >= row.window_end_wall:
                self._finish(att, Outcome.FAILED, f"no belt position for {DIVERT_BACKSTOP_S:g} s (firmware link "
                             "down): whether the parcel was diverted is unknown")
            return None  # the link is down: wait for the next session's count
        travel = self._travel_counts()
        if position < row.deadline_count - travel - 1:
            self._finish(att, Outcome.MISSED_DIVERT, f"the firmware's encoder count ({position:.0f}) is below the "
                         f"item's ({row.deadline_count - travel}): the controller restarted and lost the parcel")
            return None
        remaining = row.deadline_count - position
        if remaining <= 0:
            if att.attempts == 0 and not att.earlier_run:
                self._finish(att, Outcome.MISSED_DIVERT, "too late to send: the parcel was "
                             f"{-remaining / self._cpm:.0f} mm past the diverter's arming point when the divert "
                             "could first be sent (decided late, or the box was down meanwhile)")
                return None
            if att.final_ask or not self._link.is_up:
                return None
            # sent (by this run or, maybe, the one before), never acknowledged: the firmware may have done it and
            # lost only the ack; it answers OK for a parcel it diverted, TOO_LATE for one that went past
            att.final_ask = True
            return 1.0
        speed = self.belt.speed() or 0.0
        if speed <= 0:
            return STOPPED_BELT_ATTEMPT_S
        return min(MAX_ATTEMPT_S, max(0.05, remaining / speed))

    def _travel_counts(self) -> int:
        divert = self.config.divert
        assert divert is not None
        return round((divert.eye_to_exit_mm + divert.distance_mm - divert.arm_mm) * self._cpm)

    def _done_detail(self, att: _Attempt, now_mono: float) -> str:
        row = att.row
        if row.action is ActionKind.DIVERT:
            position = self.belt.position(now_mono)
            margin = "" if position is None or row.deadline_count is None else (
                f", {(row.deadline_count - position) / self._cpm:.0f} mm before its deadline")
            return f"divert to gate {row.gate} acknowledged by the firmware ({att.attempts} attempt(s){margin})"
        if row.action is ActionKind.RELEASE:
            return f"release from gate {row.gate} acknowledged by the firmware"
        return f"{row.detail + '; ' if row.detail else ''}acknowledged by the firmware ({att.attempts} attempt(s))"

    def _finish(self, att: _Attempt, outcome: Outcome, detail: str) -> None:
        now = self._wall()
        try:
            row = self._store.finish(att.row, outcome, detail, now)
        except sqlite3.Error as exc:
            self.problem = f"actions store {self._store.path} cannot write ({exc})"
            row = replace(att.row, outcome=outcome, detail=detail, done_wall=now)
        with self._lock:
            self._pending.pop(att.row.key, None)
            self._to_report[row.key] = row
        self._next_report_try = 0.0
        (log.info if outcome is Outcome.DONE else log.error)(
            "action finished", extra={"item_id": row.item_id, "action": row.action.value, "outcome": outcome.value,
                                      "detail": detail})

    def _report(self) -> None:
        with self._lock:
            rows = list(self._to_report.values())
        failed = False
        for row in rows:
            try:
                item_rows = self._store.finished_for(row.uid) if row.item_id is not None else [row]
                if row.key not in {r.key for r in item_rows}:
                    item_rows.append(row)
                for reporter in self._reporters:
                    reporter.write(row, item_rows)
                self._store.mark_reported(row)
            except Exception as exc:  # disk full, outbox in memory only: asked again in a second
                failed = True
                self.problem = f"action reports cannot be stored ({exc}); retried"
                continue
            with self._lock:
                self._to_report.pop(row.key, None)
        if not failed and rows and self.problem and self.problem.startswith("action reports"):
            self.problem = None
        self._next_report_try = self._mono() + (REPORT_RETRY_S if failed else 0.0)

    # ------------------------------------------------------------------ for tests and the status
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def in_flight(self) -> int:
        """Actions with a command out and not answered yet."""
        with self._lock:
            return sum(1 for a in self._pending.values() if a.future is not None)
