"""The ``firmware:`` config section becomes the link's settings, field for field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge.config.firmware import FirmwareConfig
from firmware_bridge.link import LinkSettings, counts_to_mm


def test_link_settings_from_config() -> None:
    cfg = FirmwareConfig(port="/dev/ttyUSB0", heartbeat_s=0.25, link_timeout_s=1.5, reconnect_min_s=0.1,
                         reconnect_max_s=3.0, command_timeout_s=2.0, command_retry_s=0.4,
                         encoder_counts_per_mm=12.5)
    s = LinkSettings.from_config(cfg)
    assert (s.heartbeat_s, s.link_timeout_s, s.reconnect_min_s, s.reconnect_max_s, s.command_timeout_s,
            s.command_retry_s, s.encoder_counts_per_mm) == (0.25, 1.5, 0.1, 3.0, 2.0, 0.4, 12.5)


def test_every_config_field_has_a_description() -> None:
    for name, info in FirmwareConfig.model_fields.items():
        assert info.description, name


def test_encoder_resolution_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="encoder_counts_per_mm"):
        FirmwareConfig(port="/dev/ttyUSB0", encoder_counts_per_mm=0)


def test_counts_to_mm() -> None:
    assert counts_to_mm(2500, 12.5) == 200.0
    assert counts_to_mm(-80, 8.0) == -10.0
