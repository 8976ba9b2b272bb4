"""Config errors name file, line and key path, and say what is valid."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edge.config import load_config
from edge.config.secrets import read_secret
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """\
site:
  site_id: hub
  scanner_id: lane-1
models:
  detector: /opt/edge/models/det
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_example_config_is_valid_and_documents_every_section() -> None:
    cfg = load_config(REPO / "systemd" / "edge.example.yaml")
    assert cfg.site.scanner_id == "lane-3"
    text = (REPO / "systemd" / "edge.example.yaml").read_text()
    for section in ("site", "source", "firmware", "condition", "models", "decide", "camera", "mqtt", "audit",
                    "logging"):
        assert f"{section}:" in text


def test_minimal_config_takes_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.mqtt.port == 1883
    assert cfg.source.type == "sim"
    assert cfg.firmware is None


def test_out_of_range_port_names_line_key_and_range(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "mqtt:\n  host: broker\n  port: 0\n")
    assert _problems(path) == [f"{path}:8: mqtt.port: must be 1..65535, got 0"]


def test_wrong_type_names_line_and_expected_type(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "  threads: many\n")
    assert _problems(path) == [f"{path}:6: models.threads: expected an integer, got 'many'"]


def test_unknown_key_is_rejected_with_suggestion(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "mqtt:\n  prot: 1883\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:7: mqtt.prot: unknown key 'prot' (did you mean 'port'?); valid keys: ")
    assert "host" in problem


def test_unknown_key_in_an_optional_section_lists_that_sections_keys(tmp_path: Path) -> None:
    """models.classifier is ``CropModelEntry | None``: a misspelt key there listed the keys of ``models``."""
    path = _write(tmp_path, MINIMAL + "  classifier:\n    bundle: /opt/edge/models/cls\n    treshold: 0.9\n")
    (problem,) = _problems(path)
    assert problem == (f"{path}:8: models.classifier.treshold: unknown key 'treshold' (did you mean 'threshold'?); "
                       "valid keys: backend, bundle, precision, threshold")


def test_unknown_key_in_a_source_kind_lists_that_kinds_keys(tmp_path: Path) -> None:
    """source is a union selected by ``type``: a misspelt key listed the top-level sections."""
    path = _write(tmp_path, MINIMAL + "source:\n  type: sim\n  sead: 3\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:8: source.sim.sead: unknown key 'sead' (did you mean 'seed'?); valid keys: ")
    valid = problem.split("valid keys: ")[1].split(", ")
    assert "seed" in valid and "threat_rate" in valid
    assert "models" not in valid and "directory" not in valid, "the sim source's keys, not the root's or spool's"


def test_a_source_without_its_type_names_the_key_once_quoted(tmp_path: Path) -> None:
    """It said "key ''type'' is missing" (pydantic's context already carries the quotes)."""
    path = _write(tmp_path, MINIMAL + "source:\n  directory: /var/spool/edge\n")
    (problem,) = _problems(path)
    assert problem == f"{path}:6: source.type: key 'type' is missing; it selects the kind of this section"


def test_missing_required_key_names_parent_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "site:\n  site_id: hub\nmodels:\n  detector: /x\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:1: site.scanner_id: required key is missing; expected ")


def test_missing_section_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, "site:\n  site_id: hub\n  scanner_id: l1\n")
    assert _problems(path) == [f"{path}:1: models: required key is missing; expected detector and scorer "
                               "bundles, backend"]


def test_enum_and_discriminator_suggest_the_close_value(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "  device: GPU0\nsource:\n  type: spol\n  directory: /s\n")
    problems = _problems(path)
    assert problems[0] == f"{path}:6: models.device: 'GPU0' is not valid; expected 'CPU', 'GPU' or 'NPU' " \
                          "(did you mean 'GPU'?)"
    assert problems[1].startswith(f"{path}:8: source.type: 'spol' is not valid;")
    assert problems[1].endswith("(did you mean 'spool'?)")


def test_all_problems_reported_at_once_sorted_by_line(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "logging:\n  level: loud\nmqtt:\n  port: 99999\n")
    problems = _problems(path)
    assert [p.split(":")[1] for p in problems] == ["7", "9"]


def test_inline_password_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "mqtt:\n  password: hunter2\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:7: mqtt.password: inline passwords are not allowed")
    assert "hunter2" not in problem.split("allowed", 1)[1]


def test_cross_section_rule_names_both_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "condition:\n  palette:\n    organic_max_z: 20\n    metal_min_z: 18\n")
    assert _problems(path) == [f"{path}:8: condition.palette.organic_max_z: 20.0 is not below "
                               "condition.palette.metal_min_z (18.0); expected organic_max_z < metal_min_z"]


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "mqtt: [\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:7: <yaml>:")


def test_secret_from_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret("mqtt.password_credential", None, "mqtt-password") == "s3cret"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match=r"mqtt.password_credential: .*CREDENTIALS_DIRECTORY is not set"):
        read_secret("mqtt.password_credential", None, "mqtt-password")
    with pytest.raises(ConfigError, match=r"mqtt.password_file: cannot read secret file"):
        read_secret("mqtt.password_file", tmp_path / "absent", None)


def test_firmware_retry_must_be_below_timeout(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "firmware:\n  port: /dev/ttyUSB0\n  command_retry_s: 2\n  command_timeout_s: 1\n")
    assert _problems(path) == [f"{path}:8: firmware.command_retry_s: 2.0 is not below firmware.command_timeout_s "
                               "(1.0); expected command_retry_s < command_timeout_s"]


def test_qos_0_is_refused_because_the_outbox_needs_acknowledgements(tmp_path: Path) -> None:
    # at QoS 0 paho reports a message "published" once written to the socket, so the outbox would forget an
    # alarm the broker never received
    path = _write(tmp_path, MINIMAL + "mqtt:\n  host: broker\n  qos: 0\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:8: mqtt.qos: ") and "1" in problem and "2" in problem
    assert load_config(_write(tmp_path, MINIMAL + "mqtt:\n  host: broker\n  qos: 2\n")).mqtt.qos == 2


def test_duplicate_keys_are_refused_with_both_lines_at_any_depth(tmp_path: Path) -> None:
    # YAML itself keeps the last value silently: a second models: block once dropped the scorer
    path = _write(tmp_path, MINIMAL + "  scorer: /opt/edge/models/sc\nmqtt:\n  host: a\n  host: b\n"
                  "models:\n  detector: /opt/edge/models/det\n")
    problems = _problems(path)
    assert [p.split(";")[0] for p in problems] == [f"{path}:9: mqtt.host: duplicate key (first at line 8)",
                                                   f"{path}:10: models: duplicate key (first at line 4)"]
    assert "merge the two" in problems[0]


def test_duplicate_key_inside_a_list_item_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "  trusted_keys:\n    - {a: 1, a: 2}\n")
    assert any(p.startswith(f"{path}:7: models.trusted_keys[0].a: duplicate key (first at line 7)")
               for p in _problems(path))


def test_yaml_merge_keys_and_aliases_are_not_duplicates(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "mqtt: &broker\n  host: broker\n  port: 1884\n"
                  "audit:\n  directory: /var/lib/edge/audit\n")
    assert load_config(path).mqtt.port == 1884
    text = ("site: &s\n  site_id: hub\n  scanner_id: lane-1\nmodels:\n  detector: /d\n"
            "mqtt:\n  <<: {host: a}\n  port: 1884\n")
    assert load_config(_write(tmp_path, text)).mqtt.host == "a"


@pytest.mark.parametrize(("prefix", "words"), [
    ("xray/#", "wildcard '#'"), ("xray/+/l1", "wildcard '+'"), ("a\\0b", "NUL"), ("xray//l1", "empty level"),
    ("/xray", "empty level"), ("$SYS/edge", "starts with '$'"), ("xray/l1/", "ends with '/'"), ("", "empty"),
    ("x" * 185, "at most 184 bytes")])
def test_topic_prefix_must_be_a_legal_topic_name(tmp_path: Path, prefix: str, words: str) -> None:
    path = _write(tmp_path, MINIMAL + f'mqtt:\n  topic_prefix: "{prefix}"\n')
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:7: mqtt.topic_prefix: ") and words in problem


def test_legal_topic_prefixes_load(tmp_path: Path) -> None:
    for prefix in ("xray/hub/lane-1", "site a/ø/lane", "x" * 184):
        path = _write(tmp_path, MINIMAL + f'mqtt:\n  topic_prefix: "{prefix}"\n')
        assert load_config(path).mqtt.topic_prefix == prefix


def test_config_without_scorer_loads_but_is_refused_for_the_service(tmp_path: Path) -> None:
    # tools that need only the detector still read it; edge run and edge check refuse it (tests/faults)
    from edge.config.preflight import refuse_if_never_alarms

    path = _write(tmp_path, MINIMAL)
    cfg = load_config(path)
    with pytest.raises(ConfigError) as info:
        refuse_if_never_alarms(cfg, path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:4: models.scorer: absent, so no item can ever ALARM")
    refuse_if_never_alarms(load_config(_write(tmp_path, MINIMAL + "  scorer: /s\n")), path)


def test_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_bytes(MINIMAL.encode() + b"mqtt:\n  host: caf\xe9\n")
    assert _problems(path) == [f"{path}:7: <file>: byte 0xe9 is not UTF-8 text; expected a YAML file in UTF-8"]
