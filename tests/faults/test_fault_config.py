"""Fault point 10: bad configs are refused by the real `edge check` (and `edge run`) with `file:line: key: ...`.

Each case is a config a site could really write: a second `models:` block pasted below the first (YAML keeps
the last one silently, which dropped the scorer and cleared everything), a wildcard topic prefix (passed
`edge check`, then `edge run` died with a traceback), missing or tampered bundles and calibrations, a serial port
or camera that is not there, state directories that cannot be written, and a config whose models can never raise
an alarm. Everything is real: the reference bundles of models/ signed with a key the config trusts, calibrations
made by `edge calibrate` from the virtual scanner, a real pty for the serial port, the `edge` CLI through typer's
CliRunner, and `edge run` as a subprocess. Paths that must not be writable are made so with a regular file where
a folder should be, which holds even for root (these tests run as root in CI).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calib.cli import calibrate_app
from edge.bundles.signing import generate_key, sign_bundle
from edge.cli import app

REPO = Path(__file__).resolve().parents[2]
DETECTOR = REPO / "models" / "detector-agnostic"
SCORER = REPO / "models" / "scorer-stfpm"


@dataclass(frozen=True)
class Site:
    """Real files a good config points at."""

    flat: Path
    energy: Path
    port: str
    detector: Path
    scorer: Path
    public_key: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("fault-config")
    flat, energy = work / "flatfield.npz", work / "energy.yaml"
    runner = CliRunner()
    for args in (["flatfield", "--from-sim", "--seed", "0", "-o", str(flat)],
                 ["energy", "--from-sim", "--seed", "0", "-o", str(energy)]):
        result = runner.invoke(calibrate_app, args)
        assert result.exit_code == 0, result.output
    private, public = generate_key(work / "site-signing.key")
    bundles = []
    for source in (DETECTOR, SCORER):
        bundles.append(shutil.copytree(source, work / source.name))
        sign_bundle(bundles[-1], private)
    master, slave = os.openpty()  # a real serial device node for firmware.port
    try:
        yield Site(flat, energy, os.ttyname(slave), bundles[0], bundles[1], public)
    finally:
        os.close(master)
        os.close(slave)


def good_config(tmp_path: Path, site: Site, *, scorer: Path | bool | None = True, mqtt: str = "  enabled: false\n",
                tail: str = "") -> str:
    """A config every check passes on this machine; tests break one thing in it."""
    scorer = site.scorer if scorer is True else scorer
    scorer_line = f"  scorer: {scorer}\n" if isinstance(scorer, Path) else ""
    state = tmp_path / "state"
    return (
        "site:\n"
        "  site_id: hub\n"
        "  scanner_id: lane-1\n"
        "source:\n"
        "  type: spool\n"
        f"  directory: {tmp_path / 'spool'}\n"
        f"  done_directory: {state / 'done'}\n"
        "firmware:\n"
        f"  port: {site.port}\n"
        "condition:\n"
        f"  flatfield_file: {site.flat}\n"
        f"  energy_file: {site.energy}\n"
        "models:\n"
        f"  detector: {site.detector}\n"
        f"{scorer_line}"
        "  backend: onnxruntime\n"
        f"  trusted_keys: [{site.public_key}]\n"
        "mqtt:\n"
        f"{mqtt}"
        "  outbox:\n"
        f"    path: {state / 'outbox.sqlite3'}\n"
        "audit:\n"
        f"  directory: {state / 'audit'}\n"
        "service:\n"
        f"  status_file: {state / 'run' / 'status.json'}\n"
        f"{tail}"
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, text: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th line of ``path`` that starts with ``text`` (after indentation)."""
    found = [n for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith(text)]
    return found[occurrence - 1]


def check(path: Path) -> tuple[int, list[str]]:
    """Run the real `edge check`; return its exit code and every output line."""
    result = CliRunner().invoke(app, ["check", "--config", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output.splitlines()


def test_good_config_passes_check(tmp_path: Path, site: Site) -> None:
    path = write(tmp_path, good_config(tmp_path, site))
    code, lines = check(path)
    assert code == 0, "\n".join(lines)
    assert lines[-1].startswith(f"{path}: ok")


def test_duplicate_section_is_refused_with_both_lines(tmp_path: Path, site: Site) -> None:
    # the incident: a second models: block (no scorer) pasted at the end replaced the first
    path = write(tmp_path, good_config(tmp_path, site, tail=f"models:\n  detector: {site.detector}\n"))
    first, second = line_of(path, "models:"), line_of(path, "models:", 2)
    code, lines = check(path)
    assert code == 1
    assert any(line.startswith(f"{path}:{second}: models: duplicate key (first at line {first});")
               for line in lines), lines


def test_duplicate_nested_key_is_refused_with_both_lines(tmp_path: Path, site: Site) -> None:
    text = good_config(tmp_path, site).replace("  backend: onnxruntime\n",
                                               "  backend: onnxruntime\n  scorer: /elsewhere\n")
    path = write(tmp_path, text)
    first, second = line_of(path, "scorer:"), line_of(path, "scorer:", 2)
    code, lines = check(path)
    assert code == 1
    assert any(line.startswith(f"{path}:{second}: models.scorer: duplicate key (first at line {first});")
               for line in lines), lines


@pytest.mark.parametrize("prefix", ['"xray/#"', '"xray/+/lane"', '"xray/\\0/lane"', '"xray//lane"', '"$SYS/edge"',
                                    '"xray/lane/"', '""', '"' + "x" * 300 + '"'],
                         ids=["hash", "plus", "nul", "empty-level", "dollar", "trailing-slash", "empty", "long"])
def test_illegal_topic_prefix_is_refused_by_check(tmp_path: Path, site: Site, prefix: str) -> None:
    path = write(tmp_path, good_config(tmp_path, site, mqtt=f"  enabled: true\n  topic_prefix: {prefix}\n"))
    code, lines = check(path)
    assert code == 1, lines
    assert any(line.startswith(f"{path}:{line_of(path, 'topic_prefix:')}: mqtt.topic_prefix: ") for line in lines), \
        lines


def test_run_with_wildcard_topic_prefix_exits_cleanly(tmp_path: Path, site: Site) -> None:
    path = write(tmp_path, good_config(tmp_path, site, mqtt='  enabled: true\n  topic_prefix: "xray/#"\n'))
    (tmp_path / "spool").mkdir()
    result = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(path)], capture_output=True,
                            text=True, cwd=REPO, timeout=240)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"{path}:{line_of(path, 'topic_prefix:')}: mqtt.topic_prefix: " in result.stderr, result.stderr[-2000:]


def test_missing_files_and_devices_are_each_flagged(tmp_path: Path, site: Site) -> None:
    gone = tmp_path / "gone"
    text = (good_config(tmp_path, site)
            .replace(str(site.detector), str(gone / "detector"))
            .replace(str(site.scorer), str(gone / "scorer"))
            .replace(str(site.flat), str(gone / "flatfield.npz"))
            .replace(str(site.energy), str(gone / "energy.yaml"))
            .replace(site.port, "/dev/ttyNOPE0"))
    text += ("camera:\n"
             f"  device: {gone / 'belt.mp4'}\n"
             f"  calibration_file: {gone / 'camera.yaml'}\n")
    path = write(tmp_path, text)
    code, lines = check(path)
    assert code == 1
    for key, start in (("models.detector", "detector:"), ("models.scorer", "scorer:"),
                       ("condition.flatfield_file", "flatfield_file:"), ("condition.energy_file", "energy_file:"),
                       ("firmware.port", "port:"), ("camera.device", "device:"),
                       ("camera.calibration_file", "calibration_file:")):
        assert any(line.startswith(f"{path}:{line_of(path, start)}: {key}: ") for line in lines), (key, lines)


def test_tampered_bundle_and_unreadable_calibration_are_flagged(tmp_path: Path, site: Site) -> None:
    bundle = tmp_path / "scorer"
    shutil.copytree(site.scorer, bundle)
    weights = next(p for p in sorted((bundle / "onnx_fp32").iterdir()) if p.suffix == ".onnx")
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    weights.write_bytes(bytes(data))
    broken_energy = tmp_path / "energy.yaml"
    broken_energy.write_text("not: an energy calibration\n")
    text = good_config(tmp_path, site, scorer=bundle).replace(str(site.energy), str(broken_energy))
    path = write(tmp_path, text)
    code, lines = check(path)
    assert code == 1
    assert any(line.startswith(f"{path}:{line_of(path, 'scorer:')}: models.scorer: ") and "sha256" in line
               for line in lines), lines
    assert any(line.startswith(f"{path}:{line_of(path, 'energy_file:')}: condition.energy_file: ")
               for line in lines), lines


def test_unwritable_state_directories_are_flagged(tmp_path: Path, site: Site) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state folder should be\n")  # nothing can be created below it
    path = write(tmp_path, good_config(tmp_path, site, mqtt="  enabled: true\n"))
    code, lines = check(path)
    assert code == 1
    for key, start in (("audit.directory", "directory:"), ("mqtt.outbox.path", "path:"),
                       ("service.status_file", "status_file:"), ("source.done_directory", "done_directory:")):
        line = line_of(path, start, 2) if key == "audit.directory" else line_of(path, start)
        assert any(out.startswith(f"{path}:{line}: {key}: ") for out in lines), (key, lines)


def test_config_that_can_never_alarm_is_flagged_by_check(tmp_path: Path, site: Site) -> None:
    path = write(tmp_path, good_config(tmp_path, site, scorer=False))
    code, lines = check(path)
    assert code == 1
    problem = next((line for line in lines if line.startswith(f"{path}:{line_of(path, 'models:')}: models.scorer: ")),
                   None)
    assert problem is not None, lines
    assert "never" in problem and "ALARM" in problem and "scorer" in problem


def test_run_refuses_a_config_that_can_never_alarm(tmp_path: Path, site: Site) -> None:
    path = write(tmp_path, good_config(tmp_path, site, scorer=False))
    (tmp_path / "spool").mkdir()
    try:
        result = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(path)], capture_output=True,
                                text=True, cwd=REPO, timeout=90)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"edge run kept running (screening with no scorer: every item CLEAR): {exc.stderr!r}"[-2000:])
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f"{path}:{line_of(path, 'models:')}: models.scorer: " in result.stderr, result.stderr[-2000:]


def test_every_problem_is_listed_at_once(tmp_path: Path, site: Site) -> None:
    text = textwrap.dedent(good_config(tmp_path, site, scorer=tmp_path / "no-scorer")
                           .replace(site.port, "/dev/ttyNOPE0"))
    code, lines = check(write(tmp_path, text))
    assert code == 1
    assert len(lines) >= 2 and any("firmware.port" in x for x in lines) and any("models.scorer" in x for x in lines)


def test_unsigned_bundle_is_flagged_unless_explicitly_allowed(tmp_path: Path, site: Site) -> None:
    unsigned = shutil.copytree(DETECTOR, tmp_path / "detector")  # the reference bundle as shipped: no bundle.sig
    path = write(tmp_path, good_config(tmp_path, site).replace(str(site.detector), str(unsigned)))
    code, lines = check(path)
    assert code == 1
    assert any(line.startswith(f"{path}:{line_of(path, 'detector:')}: models.detector: ") and "sig" in line
               for line in lines), lines
    allowed = good_config(tmp_path, site).replace(str(site.detector), str(unsigned)).replace(
        "  backend: onnxruntime\n", "  backend: onnxruntime\n  allow_unsigned: true\n")
    code, lines = check(write(tmp_path, allowed))
    assert code == 0, lines
    assert any(": models.detector: warning: " in line and "unsigned" in line for line in lines), lines


def _status(path: Path) -> dict[str, object]:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _reason_has(words: str, status: dict[str, object]) -> bool:
    return words in str(status.get("reason", ""))


def _models(status: dict[str, object]) -> list[str]:
    models = status.get("models")
    return [str(m) for m in models] if isinstance(models, list) else []


def test_reload_keeps_the_scorer_when_the_file_would_drop_it(tmp_path: Path, site: Site) -> None:
    # the incident on a running box: SIGHUP after a second models: block (or no scorer at all) was saved
    import signal
    import time

    good = good_config(tmp_path, site)
    path = write(tmp_path, good)
    status = tmp_path / "state" / "run" / "status.json"
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(path)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_for(predicate: Callable[[dict[str, object]], bool], what: str, timeout_s: float = 90.0
                 ) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            data = _status(status)
            if data and predicate(data):
                return data
            assert proc.poll() is None, f"edge run ended: {proc.stderr.read() if proc.stderr else ''}"[-2000:]
            time.sleep(0.2)
        now = _status(status)
        raise AssertionError(f"timed out waiting for {what}; models in service {_models(now)}, reason "
                             f"{now.get('reason')!r}")

    try:
        started = wait_for(lambda d: len(_models(d)) == 2, "detector and scorer in service")
        pasted = f"models:\n  detector: {site.detector}\n  trusted_keys: [{site.public_key}]\n"
        for text, words in ((good + pasted, "duplicate key"),
                            (good_config(tmp_path, site, scorer=False), "models.scorer: absent")):
            path.write_text(text)
            proc.send_signal(signal.SIGHUP)
            data = wait_for(functools.partial(_reason_has, words), f"the reload refused ({words})")
            assert _models(data) == _models(started), data  # the scorer stays in service
            path.write_text(good)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda d: "reload failed" not in str(d.get("reason", "")), "a good reload")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_voti_folder_must_exist_but_may_be_read_only(tmp_path: Path, site: Site) -> None:
    raw = tmp_path / "raw"
    text = good_config(tmp_path, site).replace(f"  type: spool\n  directory: {tmp_path / 'spool'}\n"
                                               f"  done_directory: {tmp_path / 'state' / 'done'}\n",
                                               f"  type: voti\n  directory: {raw}\n")
    path = write(tmp_path, text)
    code, lines = check(path)
    assert code == 1
    assert any(line.startswith(f"{path}:6: source.directory: ") for line in lines), lines
    raw.mkdir()
    raw.chmod(0o555)  # the scanner's folder, read only to the service: fine, VOTI files are never moved
    code, lines = check(path)
    assert code == 0, lines


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs filled to the last byte (root only; skipped where mount is not allowed)."""
    mount = tmp_path / "full"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); the full-disk case needs root")
    try:
        (mount / "audit").mkdir()
        with (mount / "filler").open("wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_under_the_audit_store_is_flagged(tmp_path: Path, site: Site, full_disk: Path) -> None:
    text = good_config(tmp_path, site).replace(f"  directory: {tmp_path / 'state' / 'audit'}\n",
                                               f"  directory: {full_disk / 'audit'}\n")
    path = write(tmp_path, text)
    code, lines = check(path)
    assert code == 1
    assert any(line.startswith(f"{path}:{line_of(path, 'directory:', 2)}: audit.directory: ")
               and "No space left on device" in line for line in lines), lines


@pytest.mark.parametrize("case", ["latin-1", "a-folder", "duplicate", "plus-prefix"])
def test_run_with_a_bad_config_file_never_prints_a_traceback(tmp_path: Path, site: Site, case: str) -> None:
    path = tmp_path / "edge.yaml"
    good = good_config(tmp_path, site)
    if case == "latin-1":
        path.write_bytes(good.encode() + b"# r\xe9vision 2\n")
    elif case == "a-folder":
        path.mkdir()
    elif case == "duplicate":
        path.write_text(good + "audit:\n  directory: /tmp\n")
    else:
        path.write_text(good.replace("  enabled: false\n", '  enabled: true\n  topic_prefix: "xray/+/lane"\n'))
    result = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(path)], capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith(f"{path}:"), result.stderr[-2000:]


def test_wrong_role_and_missing_precision_are_flagged(tmp_path: Path, site: Site) -> None:
    # the scorer named as detector (swapped keys), and int8 with a scorer that ships fp32 only
    text = good_config(tmp_path, site).replace(f"  detector: {site.detector}\n", f"  detector: {site.scorer}\n")
    path = write(tmp_path, text.replace("  backend: onnxruntime\n", "  backend: onnxruntime\n  precision: int8\n"))
    code, lines = check(path)
    assert code == 1
    assert any(line.startswith(f"{path}:{line_of(path, 'detector:')}: models.detector: ") and "expected detector"
               in line for line in lines), lines
    assert any(line.startswith(f"{path}:{line_of(path, 'precision:')}: models.precision: int8") for line in lines), \
        lines


def test_missing_tls_and_password_files_are_flagged(tmp_path: Path, site: Site) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    mqtt = (f"  enabled: true\n  password_file: {tmp_path / 'secrets' / 'mqtt-password'}\n"
            f"  tls:\n    ca_file: {ca}\n    cert_file: {tmp_path / 'client.pem'}\n")
    path = write(tmp_path, good_config(tmp_path, site, mqtt=mqtt))
    code, lines = check(path)
    assert code == 1
    for key, start in (("mqtt.password_file", "password_file:"), ("mqtt.tls.cert_file", "cert_file:")):
        assert any(line.startswith(f"{path}:{line_of(path, start)}: {key}: ") for line in lines), (key, lines)
    assert not any("ca_file" in line for line in lines), lines
