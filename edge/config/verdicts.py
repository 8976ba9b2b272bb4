"""``verdicts:`` section: operator verdicts sent back from the control room over MQTT (``edge/verdicts.py``).

The intake uses the ``mqtt:`` section's broker, TLS and credentials with a client of its own (its own client id
and a persistent session), so verdicts published while the box was down are delivered when it is back.
"""

from __future__ import annotations

from pydantic import Field

from edge.config.base import EdgeBaseConfig


class VerdictsConfig(EdgeBaseConfig):
    """Receiving operators' verdicts on ``<mqtt topic prefix>/verdicts`` and answering on ``.../verdicts/ack``."""

    enabled: bool = Field(
        True, description="subscribe to <prefix>/verdicts and store verdicts in the audit store (needs mqtt.enabled)")
    client_id: str | None = Field(
        None, description="client id of the verdict subscriber; default <mqtt client id>-verdicts. Keep it "
        "stable: the broker keeps the session (and the verdicts queued for it) under this id")
    session_expiry_s: int = Field(
        604_800, ge=60, le=4_294_967_294,
        description="MQTT 5 session expiry: how long the broker keeps queueing verdicts for a box that is down "
        "(MQTT 3.1.1: until the broker's persistent_client_expiration)")
