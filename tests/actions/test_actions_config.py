"""The ``actions:`` section: a good one loads with its defaults; every mistake is ``file:line: key: ...``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edge.config import load_config
from edge.errors import ConfigError

BASE = """\
site:
  site_id: hub
  scanner_id: lane-1
models:
  detector: /opt/edge/models/det
firmware:
  port: /dev/ttyUSB0
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_a_lane_with_diverter_beacon_and_belt_stop_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE + "actions:\n  divert:\n    eye_to_exit_mm: 800\n    distance_mm: 1500\n"
                             "  beacon: {}\n  belt_stop:\n    faults: [xray_tube, encoder_lost]\n"
                             "  on_verdict: {cleared: release}\n"))
    acts = cfg.actions
    assert acts is not None and acts.divert is not None and acts.beacon is not None and acts.belt_stop is not None
    assert acts.divert.verdicts == ("alarm", "unscreened") and acts.divert.gate == 1 and acts.divert.arm_mm == 50
    assert (acts.beacon.lamp, acts.beacon.pattern, acts.beacon.duration_ms) == ("beacon", "flash", 5000)
    assert acts.belt_stop.faults == ("xray_tube", "encoder_lost")
    assert acts.on_verdict == {"cleared": "release"}
    assert load_config(_write(tmp_path, BASE)).actions is None  # absent: the box sends no command


def test_clear_can_never_be_diverted(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "actions:\n  divert:\n    verdicts: [alarm, clear]\n    eye_to_exit_mm: 800\n"
                  "    distance_mm: 1500\n")
    [problem] = _problems(path)
    assert problem.startswith(f"{path}:10: actions.divert.verdicts[1]: ")
    assert "'alarm'" in problem and "'unscreened'" in problem


def test_a_diverter_without_its_distance_is_refused_at_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "actions:\n  divert:\n    eye_to_exit_mm: 800\n")
    [problem] = _problems(path)
    assert problem.startswith(f"{path}:9: actions.divert.distance_mm: ")


def test_a_misspelt_key_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "actions:\n  divert:\n    eye_to_exit_mm: 800\n    distance_mm: 1500\n"
                  "    distnce_mm: 1400\n")
    [problem] = _problems(path)
    assert problem.startswith(f"{path}:12: actions.divert.distnce_mm: ")


def test_an_unknown_fault_name_lists_the_known_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "actions:\n  belt_stop:\n    faults: [xray_tube, xray_leak]\n")
    [problem] = _problems(path)
    assert problem.startswith(f"{path}:10: actions.belt_stop.faults[1]: ")
    assert "'encoder_lost'" in problem and "'xray_hv'" in problem


def test_actions_without_a_firmware_link_are_refused(tmp_path: Path) -> None:
    text = BASE.replace("firmware:\n  port: /dev/ttyUSB0\n", "")
    path = _write(tmp_path, text + "actions:\n  beacon: {}\n")
    assert _problems(path) == [
        f"{path}:6: actions: set, but there is no firmware section, so no command could ever reach the scanner "
        "controller; add firmware: (port: ...) or remove actions:"]


def test_release_needs_a_diverter_and_names_the_verdict_key(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "actions:\n  beacon: {}\n  on_verdict:\n    cleared: release\n"
                  "    threat_confirmed: belt_stop\n")
    assert _problems(path) == [
        f"{path}:11: actions.on_verdict.cleared: release needs actions.divert (only a diverted parcel can be "
        "released); configure the diverter or choose another action"]


def test_an_unknown_operator_verdict_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "actions:\n  on_verdict: {confirmed: belt_stop}\n")
    [problem] = _problems(path)
    assert problem.startswith(f"{path}:9: actions.on_verdict.confirmed")


def test_build_actions_wires_the_store_beside_the_journal_and_the_audit_report(tmp_path: Path) -> None:
    from edge.actions import build_actions
    from edge.actions.report import AuditActionsFile
    from edge.sinks.audit import AuditStore
    from firmware_bridge.link import FirmwareLink
    from firmware_bridge.transport import serial_opener

    cfg = load_config(_write(tmp_path, BASE + "actions:\n  beacon: {}\n"))
    assert cfg.actions is not None
    audit = AuditStore(cfg.audit.model_copy(update={"directory": tmp_path / "audit"}), "hub")
    actions = build_actions(cfg, FirmwareLink(serial_opener(str(tmp_path / "no-port"))), audit, None,
                            tmp_path / "state" / "intake.sqlite3")
    try:
        assert (tmp_path / "state" / "actions.sqlite3").exists()
        assert [type(r) for r in actions._reporters] == [AuditActionsFile]
    finally:
        actions.close(0)
        audit.close(1)


def test_a_diverter_armed_before_the_photo_eye_is_refused(tmp_path: Path) -> None:
    """arm_mm >= eye_to_exit_mm + distance_mm puts every deadline before the parcel's own start: the config loaded
    and every ALARM was reported missed_divert."""
    path = _write(tmp_path, BASE + "actions:\n  divert:\n    eye_to_exit_mm: 0\n    distance_mm: 40\n"
                  "    arm_mm: 50\n")
    [problem] = _problems(path)
    assert problem.startswith(f"{path}:12: actions.divert.arm_mm: 50 mm is not less than"), problem


def test_an_actions_state_file_that_cannot_be_written_is_flagged_by_edge_check(tmp_path: Path) -> None:
    """``edge check`` checked every folder the service writes but the actions store: a state_file in a folder that
    cannot be made passed the check and the service failed at start."""
    from edge.config.preflight import check_folders

    (tmp_path / "a-file").write_text("")
    path = _write(tmp_path, BASE + f"actions:\n  state_file: {tmp_path}/a-file/sub/actions.sqlite3\n  divert:\n"
                  "    eye_to_exit_mm: 800\n    distance_mm: 1500\n")
    found = [f for f in check_folders(load_config(path)) if f.loc == ("actions", "state_file")]
    assert len(found) == 1 and "a-file is a file, not a folder" in found[0].message
