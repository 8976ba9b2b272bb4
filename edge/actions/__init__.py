"""Actions: what the box makes the lane do about its decisions (divert, beacon, belt stop, release).

``edge.actions.sink.Actions`` is a ``ResultSink`` and a firmware listener; ``store`` keeps what is owed on disk,
``belt`` knows where the belt is, ``report`` writes the outcomes (audit store, MQTT). ``build_actions`` wires them
from the config. The integrator's guide is ``docs/actions.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edge.actions.records import ActionKind, Outcome
from edge.actions.report import ActionReporter, AuditActionsFile, MqttActions
from edge.actions.sink import Actions, CommandLink
from edge.actions.store import ActionStore

if TYPE_CHECKING:
    from edge.config import EdgeConfig
    from edge.publish.mqtt import MqttSink
    from edge.sinks.audit import AuditStore

__all__ = ["ActionKind", "Actions", "CommandLink", "Outcome", "build_actions"]


def build_actions(cfg: EdgeConfig, link: CommandLink, audit: AuditStore, mqtt: MqttSink | None,
                  journal: Path) -> Actions:
    """The actions sink of ``cfg`` (which must have ``actions`` and ``firmware``), reporting to the audit store
    and, when MQTT is on, to ``<prefix>/actions``; its store is ``actions.state_file`` or beside ``journal``."""
    assert cfg.actions is not None and cfg.firmware is not None
    reporters: list[ActionReporter] = [AuditActionsFile(audit)]
    if mqtt is not None:
        reporters.append(MqttActions(mqtt.publisher, mqtt.topics.actions, cfg.mqtt.qos))
    store = ActionStore(cfg.actions.state_file or journal.with_name("actions.sqlite3"))
    return Actions(cfg.actions, link, store, cfg.site.site_id, cfg.firmware.encoder_counts_per_mm, reporters)
