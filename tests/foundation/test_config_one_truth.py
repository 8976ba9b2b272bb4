"""One truth per concept on the config side: one encoder scale, and ``check_*`` rules that tie related keys.

Each refusal is asserted as the whole ``file:line: key: what; what is valid`` string the engineer sees.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edge.config import load_config
from edge.config.firmware import LINK_SETTLE_MARGIN_S, FirmwareConfig
from edge.errors import ConfigError

BASE = """\
site:
  site_id: hub
  scanner_id: lane-1
models:
  detector: /opt/edge/models/det
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(BASE + textwrap.dedent(text), encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_camera_encoder_scale_follows_the_firmware_key(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "firmware:\n  port: /dev/ttyUSB0\n  encoder_counts_per_mm: 8\n"
                                       "camera:\n  device: 0\n"))
    assert cfg.camera is not None and cfg.firmware is not None
    assert cfg.camera.encoder_mm_per_count == pytest.approx(1 / 8)


def test_defaults_agree_with_each_other(tmp_path: Path) -> None:
    """The two keys' defaults were 8x apart (0.8 and 0.1 mm a count)."""
    cfg = load_config(_write(tmp_path, "firmware:\n  port: /dev/ttyUSB0\ncamera:\n  device: 0\n"))
    assert cfg.camera is not None and cfg.firmware is not None
    assert cfg.camera.encoder_mm_per_count * cfg.firmware.encoder_counts_per_mm == pytest.approx(1.0)


def test_the_deprecated_camera_key_agreeing_still_loads(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "firmware:\n  port: /dev/ttyUSB0\n  encoder_counts_per_mm: 1.25\n"
                                       "camera:\n  device: 0\n  encoder_mm_per_count: 0.8\n"))
    assert cfg.camera is not None and cfg.camera.encoder_mm_per_count == 0.8


def test_the_deprecated_camera_key_disagreeing_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "firmware:\n  port: /dev/ttyUSB0\ncamera:\n  device: 0\n  encoder_mm_per_count: 0.8\n")
    assert _problems(path) == [
        f"{path}:10: camera.encoder_mm_per_count: 0.8 mm per count disagrees with firmware.encoder_counts_per_mm "
        "(10.0 counts per mm = 0.1 mm per count); camera.encoder_mm_per_count is deprecated: remove it and set "
        "firmware.encoder_counts_per_mm (here 1.25 if the camera's value is the right one)"]


def test_a_deadline_within_the_link_settle_time_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "firmware:\n  port: /dev/ttyUSB0\n  link_timeout_s: 2.0\ndecide:\n  deadline_s: 2.5\n")
    assert _problems(path) == [
        f"{path}:10: decide.deadline_s: 2.5 is not longer than firmware.link_timeout_s (2.0) + 0.5 s, how long each "
        "result is held until the link history is final, so every item would miss its deadline; expected more "
        "than 2.5 (or a shorter firmware.link_timeout_s)"]
    ok = _write(tmp_path, "firmware:\n  port: /dev/ttyUSB0\n  link_timeout_s: 2.0\ndecide:\n  deadline_s: 2.6\n")
    assert load_config(ok).decide.deadline_s == 2.6


def test_without_a_firmware_link_nothing_is_held(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "decide:\n  deadline_s: 0.5\n")).decide.deadline_s == 0.5


def test_the_settle_margin_is_the_pipelines() -> None:
    """The config's rule and the pipeline's hold use one margin: the service passes ``link_settle_s`` to it."""
    assert FirmwareConfig(port="/dev/x", link_timeout_s=1.5).link_settle_s == 1.5 + LINK_SETTLE_MARGIN_S


def test_an_overlay_larger_than_the_mqtt_image_cap_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "camera:\n  device: 0\n  overlay_max_bytes: 400000\nmqtt:\n  image_max_bytes: 300000\n")
    assert _problems(path) == [
        f"{path}:8: camera.overlay_max_bytes: 400000 exceeds mqtt.image_max_bytes (300000); expected "
        "overlay_max_bytes <= image_max_bytes (every overlay would be re-encoded to fit the MQTT cap)"]
