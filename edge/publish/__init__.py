"""Publishing to the control room: MQTT through a disk-backed outbox that never loses an alarm.

``MqttSink`` is the only class the pipeline needs; ``HealthSnapshot`` and friends are what it fills for the
health topic. See ``docs/mqtt.md`` for topics, payloads and the outbox policy.
"""

from edge.publish.health import (
    DecisionCounts,
    DiskUsage,
    HealthSnapshot,
    LinkHealth,
    LinkHealthState,
    OutboxBacklog,
    QueueDepth,
    StageLatency,
    StatusState,
)
from edge.publish.mqtt import MqttSink
from edge.publish.outbox import Outbox, OutboxRecord
from edge.publish.topics import RecordKind, Topics

__all__ = [
    "DecisionCounts",
    "DiskUsage",
    "HealthSnapshot",
    "LinkHealth",
    "LinkHealthState",
    "MqttSink",
    "Outbox",
    "OutboxBacklog",
    "OutboxRecord",
    "QueueDepth",
    "RecordKind",
    "StageLatency",
    "StatusState",
    "Topics",
]
