"""One health model: the single answer to "is the box screening as it should?".

Every output that states the box's availability -- the status file (and so ``edge status``), the retained MQTT
``status`` topic, the Prometheus metrics and systemd's ``STATUS=`` line -- is fed from the one ``Health`` that
:func:`assess` computes, so they cannot disagree. (They used to be computed in three places, and none of them
looked at the firmware link, the outbox or the audit store: the box said "online" with its scanner link
unplugged.)

The box is online only when every component it runs says it works: the frame source and the pipeline around it,
the firmware link (when one is configured), the models, the calibrations, the outbox and the broker connection
(when MQTT is enabled), the audit store, and a config that is applied as written. Otherwise it is degraded, and
the reason lists every problem, each named by its component.

Each component reports for itself through a ``problem`` (``str | None``: None when fine, else a short reason for
people); this module only collects them, so adding a component means giving it a ``problem``, not teaching the
status outputs about it.

The figures beside the state (queues, stage latencies, links, decisions, disks) are one ``HealthSnapshot`` from
:func:`snapshot`: the MQTT health record and the status file (so ``edge status`` and ``/metrics``) read the same
numbers, and stage latencies are computed once, by :func:`stage_latencies`. (The status file took the median
over the last 200 calls and the health record over the last 500.)
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from edge.publish.health import (
    DecisionCounts,
    DiskUsage,
    HealthSnapshot,
    LinkHealth,
    LinkHealthState,
    QueueDepth,
    StageLatency,
    StatusState,
)

if TYPE_CHECKING:
    from edge.pipeline import StageStats
    from edge.runtime import Runtime

ONLINE_TEXT = "screening"
"""The reason shown while the box is online."""


class Component(StrEnum):
    """The parts of the box whose health the status reports (the metrics label ``component``)."""

    PIPELINE = "pipeline"
    """The frame source, the intake journal and the sinks as the pipeline sees them."""
    FIRMWARE_LINK = "firmware_link"
    ACTIONS = "actions"
    """Firmware commands (divert, beacon, belt stop): whether they can be stored and their outcomes reported."""
    MODELS = "models"
    CALIBRATION = "calibration"
    """Start-up notes: missing calibrations (items UNSCREENED), an uncalibrated exit camera."""
    OUTBOX = "outbox"
    MQTT_BROKER = "mqtt_broker"
    AUDIT = "audit"
    VERDICTS = "verdicts"
    """The operator-verdict subscriber: its broker link and whether verdicts can be stored."""
    CONFIG = "config"
    """A reload that failed, or config sections changed on disk that need a restart."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason the box is not fully online."""

    component: Component
    reason: str


@dataclass(frozen=True, slots=True)
class Health:
    """The box's health at one moment: online iff ``problems`` is empty.

    ``checked`` lists the components that were asked (a firmware link or a broker that is not configured is
    not checked), so the metrics can say which ones are fine rather than only which ones are not.
    """

    problems: tuple[Problem, ...] = ()
    checked: tuple[Component, ...] = ()

    @property
    def state(self) -> StatusState:
        return StatusState.DEGRADED if self.problems else StatusState.ONLINE

    @property
    def text(self) -> str:
        """Every reason, in component order, or "screening" when there is none."""
        return "; ".join(p.reason for p in self.problems) if self.problems else ONLINE_TEXT

    def ok(self, component: Component) -> bool:
        return all(p.component is not component for p in self.problems)


LATENCY_WINDOW = 500
"""Stage latencies are over each stage's last this many calls."""


def stage_latencies(stats: Mapping[str, StageStats]) -> tuple[StageLatency, ...]:
    """p50, p99 and max of each stage over its last ``LATENCY_WINDOW`` calls (stages not called yet left out)."""
    out = []
    for name, stage in stats.items():
        values = sorted(stage.latencies_ms[-LATENCY_WINDOW:])
        if values:
            out.append(StageLatency(name, values[len(values) // 2], values[int(len(values) * 0.99)], values[-1],
                                    stage.processed))
    return tuple(out)


def snapshot(runtime: Runtime, now_mono: float | None = None) -> HealthSnapshot:
    """What the running service knows about itself now: the one snapshot every health output reads.

    The broker link and the outbox backlog are the MQTT sink's own (it adds them to the record it publishes).
    Never raises for a store's folder that is not there (yet): the store's own ``problem`` says why, and health
    must still go out.
    """
    now_mono = time.monotonic() if now_mono is None else now_mono
    pipeline = runtime.pipeline
    links: list[LinkHealth] = []
    if runtime.link is not None:
        # the same reason the status gives, and since when
        current = runtime.link.history.current()
        links.append(LinkHealth("firmware", LinkHealthState.UP if runtime.link.is_up else LinkHealthState.DOWN,
                                link_problem(runtime.link) or "",
                                current.wall_time if current is not None else None))
    disks = []
    stores = [runtime.cfg.audit.directory]
    if runtime.mqtt is not None:
        stores.append(runtime.cfg.mqtt.outbox.path.parent)
    for path in dict.fromkeys(stores):
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            continue
        disks.append(DiskUsage(str(path), usage.free, usage.total))
    counts = pipeline.ledger.counts
    return HealthSnapshot(
        uptime_s=now_mono - runtime.started_mono,
        queues=tuple(QueueDepth(name, depth) for name, depth in pipeline.queue_depths().items()),
        latencies=stage_latencies(pipeline.stats),
        links=tuple(links),
        decisions=DecisionCounts(counts["alarm"], counts["clear"], counts["unscreened"]),
        disks=tuple(disks),
    )


def link_problem(link: Any) -> str | None:
    """Why the firmware link is not up (None when it is): its last recorded transition says why it went down."""
    if link.is_up:
        return None
    current = link.history.current() if getattr(link, "history", None) is not None else None
    if current is None:
        return "firmware link not up yet (no handshake with the scanner controller); items are UNSCREENED"
    return f"firmware link down ({current.reason}); items scanned meanwhile are UNSCREENED"


def assess(runtime: Runtime, config_notes: Sequence[str] = ()) -> Health:
    """Ask every component of ``runtime`` how it is; ``config_notes`` are the reload's own problems.

    Cheap and side-effect free (reads attributes only), so the service calls it several times a second.
    """
    found: list[tuple[Component, Iterable[str | None]]] = [
        (Component.PIPELINE, runtime.pipeline.problems()),
    ]
    checked = [Component.PIPELINE]
    if runtime.link is not None:
        found.append((Component.FIRMWARE_LINK, [link_problem(runtime.link)]))
        checked.append(Component.FIRMWARE_LINK)
    actions = getattr(runtime, "actions", None)  # stand-ins of a Runtime (tests) may not have it
    if actions is not None:
        found.append((Component.ACTIONS, [actions.problem]))
        checked.append(Component.ACTIONS)
    models_note = runtime.models.current.degraded
    found.append((Component.MODELS, [models_note]))
    # runtime.problems holds the start-up notes; the models' note in it is the one read live above (a reload
    # replaces it), so it is not repeated.
    found.append((Component.CALIBRATION, [p for p in runtime.problems if p != models_note]))
    checked += [Component.MODELS, Component.CALIBRATION]
    if runtime.mqtt is not None:
        found.append((Component.OUTBOX, [runtime.mqtt.problem]))
        broker = runtime.mqtt.link()
        found.append((Component.MQTT_BROKER, [None if broker.state is LinkHealthState.UP
                                              else f"MQTT broker not connected ({broker.reason}); records wait "
                                                   "in the outbox"]))
        checked += [Component.OUTBOX, Component.MQTT_BROKER]
    found.append((Component.AUDIT, [runtime.audit.problem]))
    verdicts = getattr(runtime, "verdicts", None)  # stand-ins of a Runtime (tests) may not have it
    if verdicts is not None:
        found.append((Component.VERDICTS, [verdicts.problem]))
        checked.append(Component.VERDICTS)
    found.append((Component.CONFIG, config_notes))
    checked += [Component.AUDIT, Component.CONFIG]
    problems: list[Problem] = []
    for component, reasons in found:
        for reason in reasons:
            if reason and all(reason != p.reason for p in problems):
                problems.append(Problem(component, reason))
    return Health(tuple(_without_repeats(problems)), tuple(checked))


def _without_repeats(problems: list[Problem]) -> list[Problem]:
    """Leave out a pipeline reason that only repeats a component's own one with more words around it.

    A store that cannot write is told twice: by the store ("outbox cannot write: disk full (...)") and by the
    pipeline, whose text wraps the store's error with the item that failed ("MqttSink cannot store
    decisions: lane1-7: not stored (outbox cannot write: disk full (...))"). The pipeline's changes with every
    item, so keeping it would re-publish the retained status once per item for one unchanged fault; the store's
    own reason is kept (and its component is the one the metrics show failing).
    """
    return [p for p in problems
            if p.component is not Component.PIPELINE
            or not any(q.component is not Component.PIPELINE and q.reason in p.reason for q in problems)]
