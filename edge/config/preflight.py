"""Preflight: what validation cannot see, checked on the box itself before it is handed over (``edge check``).

Validators are pure (``edge.config.base``), so a config can be valid and still name a bundle that is not there,
a calibration that does not load, a serial port that does not exist or a state folder the service cannot write.
Each of those used to pass ``edge check`` and surface later: a missing calibration as every item UNSCREENED, an
unwritable folder as a crash or a degraded service, a tampered or unsigned bundle only when ``edge run`` refused
it. :func:`preflight` looks at every one of them, all at once, and reports each in the loader's format
``file:line: key.path: what is wrong; what is valid``, with the line of the key that names the file (or of its
section when the key takes its default). It probes but changes nothing: no folder is created, a write test leaves
no file behind, no device is opened.

Run it as the user the service runs as (``sudo -u edge edge check``): whether a folder is writable depends on who
asks. The rule that needs no environment but is only the service's business (a config that can never ALARM,
:func:`edge.config.root.check_can_alarm`) is here too, through :func:`run_refusals`, which ``edge run`` applies at
start and on every reload (:func:`refuse_if_never_alarms`).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.bundles.loader import Bundle
from edge.bundles.outputs import DECISION_THRESHOLD_KEY, ITEM_THRESHOLD_KEY, Role
from edge.bundles.signing import TrustedKey, load_trusted_keys, verify_bundle
from edge.camera import calibration
from edge.camera.capture import parse_device
from edge.condition.flatfield import load_flatfield
from edge.condition.zeff import load_energy_calibration
from edge.config.camera import CameraConfig
from edge.config.condition import ConditionConfig
from edge.config.firmware import FirmwareConfig
from edge.config.loader import Loc, format_loc, key_lines, line_for
from edge.config.models import CropModelEntry, ModelEntry, ModelsConfig
from edge.config.root import RUN_CHECKS, EdgeConfig
from edge.errors import CalibrationError, ConfigError, EdgeError


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of the preflight; ``str()`` is the ``file:line: key.path: message`` line.

    ``warning`` marks what the config asked for explicitly and the service runs with, but which the engineer must
    know about (a bundle run unsigned because ``models.allow_unsigned`` is true); it does not fail ``edge check``.
    """

    file: str
    line: int
    key: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {'warning: ' if self.warning else ''}{self.message}"


@dataclass(frozen=True, slots=True)
class Finding:
    """What one check found, at a key path; :func:`preflight` turns it into a :class:`Problem` with its line."""

    loc: Loc
    message: str
    warning: bool = False


def _one_line(exc: BaseException) -> str:
    return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def _report(findings: Sequence[Finding], config_path: Path) -> list[Problem]:
    lines = key_lines(config_path)
    problems = [Problem(str(config_path), line_for(f.loc, lines), format_loc(f.loc), f.message, f.warning)
                for f in findings]
    return sorted(problems, key=lambda p: p.line)


# ------------------------------------------------------------------ bundles
def _verify(path: Path, trusted: tuple[TrustedKey, ...], allow_unsigned: bool) -> tuple[Bundle, str | None]:
    """The seam to the runtime's own bundle check: the bundle and why it is unsigned (None when signed).

    Calls :func:`edge.bundles.signing.verify_bundle`, the one entry point ``edge.screening`` loads models with, so
    ``edge check`` refuses exactly what ``edge run`` would: schema, content hash, every file's sha256 and size,
    and the Ed25519 signature by a key of ``models.trusted_keys`` (unless ``models.allow_unsigned``).
    """
    verified = verify_bundle(path, trusted, allow_unsigned)
    return verified.bundle, verified.unsigned


def _bundle_findings(loc: Loc, entry: ModelEntry, roles: set[str], cfg: ModelsConfig,
                     trusted: tuple[TrustedKey, ...], signature_checked: bool) -> list[Finding]:
    path = entry.bundle
    if not path.exists():
        return [Finding(loc, f"{path} does not exist; expected a bundle folder holding bundle.yaml (copy the bundle "
                             f"there, or point {format_loc(loc)} at it)")]
    try:
        bundle, unsigned = _verify(path, trusted, cfg.allow_unsigned or not signature_checked)
    except EdgeError as exc:
        return [Finding(loc, f"{_one_line(exc)} (`edge run` would refuse it too)")]
    found: list[Finding] = []
    if str(bundle.role) not in roles:
        found.append(Finding(loc, f"{path} is a {bundle.role} bundle; expected {' or '.join(sorted(roles))}"))
    if unsigned and signature_checked:
        found.append(Finding(loc, f"{path} runs unsigned because models.allow_unsigned is true ({unsigned}); "
                                  "nothing proves who made it: sign it (`edge-export sign`) and list the key in "
                                  "models.trusted_keys", warning=True))
    precision = cfg.precision_of(entry)
    if all(str(m.precision) != precision for m in bundle.manifest.models):
        have = ", ".join(sorted({str(m.precision) for m in bundle.manifest.models}))
        where = (*loc, "precision") if entry.precision is not None else ("models", "precision")
        found.append(Finding(where,
                             f"{precision}, but {path} has no {precision} model (it has {have}): it would "
                             f"fall back and report degraded; expected one of: {have}"))
    if bundle.role is Role.DETECTOR:
        classes = bundle.manifest.classes
        found += [Finding(("models", "threat_classes", name),
                          f"{name!r} is not a class of detector {path} ({', '.join(classes) or 'no classes'}); "
                          "expected one of its classes")
                  for name in cfg.threat_classes if name not in classes]
    thresholds = bundle.manifest.thresholds
    own_threshold = isinstance(entry, CropModelEntry) and entry.threshold is not None
    if bundle.role is Role.SCORER and not own_threshold and DECISION_THRESHOLD_KEY not in thresholds and not (
            cfg.operating_point == "item" and ITEM_THRESHOLD_KEY in thresholds):
        found.append(Finding(loc, f"{path} has no '{DECISION_THRESHOLD_KEY}' threshold, so it cannot decide; "
                                  "expected a scorer bundle with thresholds.score (edge-export set-thresholds)"))
    return found


def check_bundles(cfg: ModelsConfig) -> list[Finding]:
    """Detector and scorer exist, load, verify (hashes, signature by a trusted key) and have the right role."""
    found: list[Finding] = []
    trusted: tuple[TrustedKey, ...] = ()
    signature_checked = True
    try:
        trusted = tuple(load_trusted_keys(cfg.trusted_keys))
    except EdgeError as exc:
        found.append(Finding(("models", "trusted_keys"), f"{_one_line(exc)}; expected Ed25519 public-key files"))
        signature_checked = False  # every bundle would be 'unsigned': check the rest of them only
    found += _bundle_findings(("models", "detector"), cfg.detector, {"detector"}, cfg, trusted, signature_checked)
    if cfg.classifier is not None:
        found += _bundle_findings(("models", "classifier"), cfg.classifier, {"classifier"}, cfg, trusted,
                                  signature_checked)
    if cfg.scorer is not None:
        found += _bundle_findings(("models", "scorer"), cfg.scorer, {"scorer", "classifier"}, cfg, trusted,
                                  signature_checked)
    return found


# ------------------------------------------------------------------ calibrations
def check_calibrations(condition: ConditionConfig, camera: CameraConfig | None) -> list[Finding]:
    """Flat-field, energy and (with a camera) camera calibration exist and load with the runtime's own readers.

    The service starts without them (items UNSCREENED, overlays on the X-ray image), so only this check says,
    before hand-over, that commissioning is not finished.
    """
    found: list[Finding] = []
    for loc, path, load, command in (
            (("condition", "flatfield_file"), condition.flatfield_file, load_flatfield, "edge calibrate flatfield"),
            (("condition", "energy_file"), condition.energy_file, load_energy_calibration, "edge calibrate energy"),
            *([(("camera", "calibration_file"), camera.calibration_file, calibration.load,
                "edge calibrate camera` and `edge calibrate homography")] if camera is not None else [])):
        try:
            load(path)
        except (CalibrationError, OSError, ValueError) as exc:
            found.append(Finding(loc, f"does not load: {_one_line(exc)}; expected a calibration written by "
                                      f"`{command}`"))
    return found


# ------------------------------------------------------------------ devices
def check_devices(firmware: FirmwareConfig | None, camera: CameraConfig | None) -> list[Finding]:
    """The serial port and the camera's device or file exist (neither is opened: the service may hold them)."""
    found: list[Finding] = []
    if firmware is not None:
        port = Path(firmware.port)
        if not port.exists():
            found.append(Finding(("firmware", "port"),
                                 f"{port} does not exist; expected the scanner's serial device, e.g. a name listed "
                                 "by `ls /dev/serial/by-id/` (is the cable plugged in?)"))
        elif not stat.S_ISCHR(port.stat().st_mode):
            found.append(Finding(("firmware", "port"), f"{port} is not a character device; expected a serial port"))
        elif not os.access(port, os.R_OK | os.W_OK):
            found.append(Finding(("firmware", "port"), f"{port} cannot be read and written by this user; add the "
                                                       "service user to the port's group (usually dialout)"))
    if camera is not None:
        device = parse_device(camera.device)
        if isinstance(device, int):
            node = Path(f"/dev/video{device}")
            if not node.exists():
                found.append(Finding(("camera", "device"), f"camera index {device}, but {node} does not exist; "
                                                           "expected a connected V4L2 camera (`ls /dev/video*`)"))
        elif "://" not in device and not Path(device).exists():
            found.append(Finding(("camera", "device"), f"{device} does not exist; expected a camera index, an "
                                                       "RTSP/HTTP URL or an existing video file or device"))
    return found


# ------------------------------------------------------------------ broker files
def check_broker_files(cfg: EdgeConfig) -> list[Finding]:
    """The TLS files and the password file the MQTT client reads at connect time exist and can be read.

    Their contents are not read here (a secret never reaches the output). Credentials named by ``*_credential``
    live in systemd's credentials directory, which exists only inside the unit, so they are not checked.
    """
    if not cfg.mqtt.enabled:
        return []
    files: list[tuple[Loc, Path | None]] = [(("mqtt", "password_file"), cfg.mqtt.password_file)]
    tls = cfg.mqtt.tls
    if tls is not None:
        files += [(("mqtt", "tls", "ca_file"), tls.ca_file), (("mqtt", "tls", "cert_file"), tls.cert_file),
                  (("mqtt", "tls", "key_file"), tls.key_file),
                  (("mqtt", "tls", "key_passphrase_file"), tls.key_passphrase_file)]
    return [Finding(loc, f"{path} is not a file this user can read; expected the file the broker connection needs")
            for loc, path in files if path is not None and not (path.is_file() and os.access(path, os.R_OK))]


# ------------------------------------------------------------------ folders
def _nearest_existing(path: Path) -> Path:
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def folder_problem(folder: Path) -> str | None:
    """Why the service could not write files in ``folder`` (creating it if needed), or None.

    An existing folder gets a real write test (a temporary file, removed at once), which also catches read-only
    and full file systems that permissions do not show; a missing one must be creatable from its nearest
    existing ancestor.
    """
    if folder.exists():
        if not folder.is_dir():
            return f"{folder} is a file, not a folder"
        try:
            fd, name = tempfile.mkstemp(dir=folder, prefix=".edge-check-")
            try:
                os.write(fd, b"x")
            finally:
                os.close(fd)
                os.unlink(name)
        except OSError as exc:
            return f"{folder} cannot be written ({exc.strerror})"
        return None
    ancestor = _nearest_existing(folder)
    if not ancestor.is_dir():
        return f"{folder} cannot be created: {ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{folder} cannot be created: {ancestor} is not writable by this user"
    return None


def _file_problem(file: Path) -> str | None:
    """Why the service could not create or rewrite ``file`` (its folder must be writable too: atomic writes and
    SQLite's journal put new files beside it), or None."""
    if file.exists() and (file.is_dir() or not os.access(file, os.W_OK)):
        return f"{file} is a folder" if file.is_dir() else f"{file} is not writable by this user"
    return folder_problem(file.parent)


def check_folders(cfg: EdgeConfig) -> list[Finding]:
    """Every folder the service writes to: source (spool, DICOS, done), outbox, audit store, status file, model
    cache, actions store; a VOTI source folder, which is only read, must exist and be readable."""
    valid = "; expected a folder the service user can write (systemd's StateDirectory= creates /var/lib/edge)"
    writes: list[tuple[Loc, str | None]] = []
    found: list[Finding] = []
    source = cfg.source
    if source.type in ("spool", "dicos"):  # items are moved out (done/, rejected/) once decided
        writes.append((("source", "directory"), folder_problem(source.directory)))
    elif source.type == "voti" and not (source.directory.is_dir()
                                        and os.access(source.directory, os.R_OK | os.X_OK)):
        found.append(Finding(("source", "directory"), f"{source.directory} is not a folder this user can read; "
                                                      "expected the folder the scanner writes its .raw files to"))
    done = getattr(source, "done_directory", None)
    if isinstance(done, Path):
        writes.append((("source", "done_directory"), folder_problem(done)))
    if cfg.mqtt.enabled:
        writes.append((("mqtt", "outbox", "path"), _file_problem(cfg.mqtt.outbox.path)))
    writes.append((("audit", "directory"), folder_problem(cfg.audit.directory)))
    writes.append((("service", "status_file"), _file_problem(cfg.service.status_file)))
    if cfg.models.cache_dir is not None:
        writes.append((("models", "cache_dir"), folder_problem(cfg.models.cache_dir)))
    if cfg.actions is not None and cfg.actions.state_file is not None:  # the default sits beside the intake journal
        writes.append((("actions", "state_file"), _file_problem(cfg.actions.state_file)))
    return found + [Finding(loc, problem + valid) for loc, problem in writes if problem]


# ------------------------------------------------------------------ entry points
def run_refusals(cfg: EdgeConfig, config_path: Path) -> list[Problem]:
    """Rules ``edge run`` refuses to start on (and ``edge check`` flags): a config that can never ALARM."""
    return _report([Finding(loc, message) for check in RUN_CHECKS for loc, message in check(cfg)], config_path)


def refuse_if_never_alarms(cfg: EdgeConfig, config_path: Path) -> None:
    """Raise :class:`ConfigError` with :func:`run_refusals`' lines, if any: ``edge run`` at start and on reload.

    A reload is refused too, so a SIGHUP after the scorer was dropped from the file keeps the running models.
    """
    refusals = run_refusals(cfg, config_path)
    if refusals:
        raise ConfigError([str(p) for p in refusals])


def preflight(cfg: EdgeConfig, config_path: Path) -> list[Problem]:
    """Every environment problem of a validated config, sorted by line (empty when the box is ready).

    Bundles exist, load, verify and are signed by a trusted key; calibrations exist and load; the serial port
    and the camera exist; the source folder exists or can be created; state folders are writable; the broker's
    TLS and password files can be read; and the service's own rules (:func:`run_refusals`). ``config_path`` is
    the file ``cfg`` was loaded from (for lines).
    """
    findings = [Finding(loc, message) for check in RUN_CHECKS for loc, message in check(cfg)]
    groups: tuple[tuple[Loc, Callable[[], list[Finding]]], ...] = (
        (("models",), lambda: check_bundles(cfg.models)),
        (("condition",), lambda: check_calibrations(cfg.condition, cfg.camera)),
        (("firmware",) if cfg.firmware is not None else ("camera",), lambda: check_devices(cfg.firmware, cfg.camera)),
        (("audit", "directory"), lambda: check_folders(cfg)),
        (("mqtt",), lambda: check_broker_files(cfg)),
    )
    for section, run in groups:
        try:
            findings += run()
        except (OSError, ValueError) as exc:  # e.g. a path with a NUL byte: say so rather than a traceback
            findings.append(Finding(section, f"could not be checked: {type(exc).__name__}: {exc}; expected paths "
                                             "that exist or can be created"))
    return _report(findings, config_path)
