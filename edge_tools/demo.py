"""``edge demo``: the whole product on one machine — virtual scanner, virtual firmware over a real pty, the
commissioning calibrations, the screening service with the reference bundles, a private MQTT broker and a
subscriber that prints every decision and saves the overlays.

The virtual scanner plugs in through the same ports a real one uses: frames through a ``FrameSource``, item
events through the serial protocol on a pty that the service's ``FirmwareLink`` opens like a USB adapter, and the
exit camera as a video stream the service's capture thread opens by URL, its frames placed by the belt's encoder
counts (``edge_tools.demo_camera``: the belt moves at the scanner's speed, so parcels come at most
``--per-minute`` a minute, and no faster than the belt carries them through the tunnel). The
broker is a private Mosquitto on a free loopback port (the README's setup command installs it when missing);
without one the demo still screens and prints decisions from inside the process, and says so.

Bundles: the box refuses bundles not signed by a key in ``models.trusted_keys``, and the reference bundles in
``models/`` are not signed (no private key is kept in the repository: one that every checkout shared could sign
anything for any box that trusted it). So the demo makes its own throw-away key pair in its working folder, signs
copies of the two reference bundles with it and trusts only that key, exactly as a site does with its own key
(docs/install.md): the demo runs the real verification path, and the key it trusts signs nothing else.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import load_config
from edge.config.source import SimSourceConfig
from edge.records import Decision, RawItem
from edge.runtime import build_runtime
from edge.service import Service
from edge_tools.watch import Watcher
from firmware_bridge.messages import ItemEnd, ItemStart, XrayState
from firmware_bridge.virtual import DiverterModel, VirtualFirmware
from sim import SimExtraMissing, require_sim_extra
from sim.source import SimFrameSource

if TYPE_CHECKING:
    from edge_tools.demo_camera import DemoCamera

log = logging.getLogger(__name__)

COUNTS_PER_MM = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes] | None, int | None]:
    """A private Mosquitto on a free loopback port, or (None, None) when the binary is missing."""
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        return None, None
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"log_dest file {workdir / 'mosquitto.log'}\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None, None


class DemoScanner:
    """The virtual scanner: delivers items from ``SimFrameSource`` and reports their photo-eye events through the
    virtual firmware, as a real scanner's controller would."""

    def __init__(self, source: SimFrameSource, firmware: VirtualFirmware) -> None:
        self._source = source
        self._firmware = firmware
        self._encoder = 0

    @property
    def exhausted(self) -> bool:
        return self._source.exhausted

    def next_item(self, timeout_s: float) -> RawItem | None:
        item = self._source.next_item(timeout_s)
        if item is None or item.high is None:
            return item
        start = self._encoder
        self._encoder += int(item.high.shape[0] * 0.8 * COUNTS_PER_MM)
        self._firmware.send(ItemStart(item.meta.seq, start, 0))
        self._firmware.send(ItemEnd(item.meta.seq, self._encoder, 0))
        self._encoder += 300 * COUNTS_PER_MM  # gap to the next parcel
        time.sleep(0.05)  # let the item events reach the service before the frames do, as on a real line
        return item

    def acknowledge(self, source_ref: str) -> None:
        """Passed through to the wrapped source."""
        self._source.acknowledge(source_ref)

    def close(self) -> None:
        self._source.close()


DEMO_BUNDLES = ("detector-agnostic", "classifier-threat", "scorer-stfpm")
"""The default combination (issue 32, docs/results.md): the class-agnostic detector's boxes, the supervised
classifier and the benign-only anomaly scorer; thresholds as in systemd/edge.example.yaml."""


def sign_demo_bundles(workdir: Path, models: Path) -> tuple[Path, Path]:
    """Copy the reference bundles into ``workdir/models`` and sign them with a key made for this run; returns
    (the signed bundles' folder, the public key the demo config trusts)."""
    from edge.bundles.signing import generate_key, signed_copy

    keys, signed = workdir / "keys", workdir / "models"
    for old in (keys, signed):
        if old.exists():
            shutil.rmtree(old)
    private, public = generate_key(keys / "demo-signing.key")
    for name in DEMO_BUNDLES:
        signed_copy(models / name, signed / name, private)
    private.unlink()  # it has signed what it was made for; nothing else can ever be signed with it
    return signed, public


def write_demo_config(workdir: Path, port: int | None, items: int | None, per_minute: float, seed: int,
                      models: Path, fw_port: Path, trusted_key: Path) -> Path:
    mqtt = (f"host: 127.0.0.1\n  port: {port}\n  topic_prefix: xray/demo/lane1\n  health_interval_s: 10"
            if port else "enabled: false")
    max_items = f"\n  max_items: {items}" if items else ""
    path = workdir / "edge.yaml"
    path.write_text(f"""# Written by `edge demo`: a complete, valid service config (see systemd/edge.example.yaml).
site:
  site_id: demo
  scanner_id: lane1
source:
  type: sim
  seed: {seed}
  threat_rate: 0.3
  items_per_minute: {per_minute}{max_items}
firmware:
  port: {fw_port}
condition:
  flatfield_file: {workdir / "calibration" / "flatfield.npz"}
  energy_file: {workdir / "calibration" / "energy.yaml"}
{demo_models_yaml(models)}
  backend: openvino
  threads: 1
  trusted_keys: [{trusted_key}]   # made by this demo run; it signed the copies above and nothing else
decide:
  deadline_s: 20
audit:
  directory: {workdir / "audit"}
mqtt:
  {mqtt}
  outbox:
    path: {workdir / "outbox.sqlite3"}
service:
  status_file: {workdir / "status.json"}
  stop_timeout_s: 10
""", encoding="utf-8")
    return path


def calibrate(workdir: Path, seed: int, echo: Any) -> None:
    """Commission the virtual scanner: flat-field and effective-Z calibration, as an engineer would."""
    from calib.energy import calibrate_from_sim, save_energy_calibration
    from calib.flatfield import capture_from_sim, compute_flatfield, save_flatfield

    cal = workdir / "calibration"
    dark, air = capture_from_sim(seed, 256)
    save_flatfield(compute_flatfield(dark, air, source=f"demo sim seed={seed}"), cal / "flatfield.npz")
    energy, report = calibrate_from_sim(seed, ("pom", "water", "aluminium", "steel"), None)
    save_energy_calibration(energy, cal / "energy.yaml", report)
    echo(f"commissioned the virtual scanner: calibrations in {cal}")


def run_demo(workdir: Path, items: int | None, per_minute: float, seed: int, models: Path,
             echo: Any = print) -> int:
    """Run the demo until ``items`` are decided (or forever) or Ctrl-C; returns the exit code."""
    try:
        require_sim_extra()  # before anything starts: a base install lacks the virtual scanner's physics
    except SimExtraMissing as exc:
        echo(f"edge demo: {exc}")
        return 2
    for name in DEMO_BUNDLES:
        if not (models / name / "bundle.yaml").exists():
            echo(f"edge demo: reference bundle {models / name} is missing (see docs/models.md to train it)")
            return 2
    workdir.mkdir(parents=True, exist_ok=True)
    signed, demo_key = sign_demo_bundles(workdir, models)
    echo(f"signed copies of the reference bundles in {signed} with a key made for this demo ({demo_key})")
    calibrate(workdir, seed, echo)
    broker, port = start_broker(workdir)
    if broker is None:
        echo("edge demo: no mosquitto binary found; screening without MQTT (install mosquitto for the full demo)")
    console = start_console(workdir, port, echo) if port is not None else None
    overlays = workdir / "overlays"
    fw = VirtualFirmware(workdir / "ttyVFW0", diverter=demo_diverter()).start()
    fw.send(XrayState(True, 0))
    client = None
    camera = None
    service: Service | None = None
    try:
        camera = start_camera(workdir, fw, echo)
        cfg_path = write_demo_config(workdir, port, items, per_minute, seed, signed, fw.port, demo_key)
        add_camera(cfg_path, camera)
        add_actions(cfg_path)
        cfg = load_config(cfg_path)
        assert isinstance(cfg.source, SimSourceConfig)
        tally = TruthTally(echo)
        scanner = camera_scanner(camera, SimFrameSource(cfg.source, cfg.site.scanner_id, cfg.decide.deadline_s), fw)
        runtime = build_runtime(cfg, source=TruthRecordingSource(scanner, tally))
        service = Service(cfg_path, runtime)
        service.install_signal_handlers()
        if port is not None:
            client = _subscriber(port, overlays, echo)
            runtime.pipeline.on_decision = tally.decided
        else:
            runtime.pipeline.on_decision = lambda d: _print_local_with_truth(d, overlays, echo, tally)
        echo(f"edge demo: screening virtual parcels; config {cfg_path}; overlays in {overlays}; Ctrl-C stops")
        if items:
            threading.Thread(target=_stop_when_done, args=(service, fw, items), daemon=True).start()
        code = service.run()
        echo(f"edge demo: stopped; decisions {dict(runtime.pipeline.ledger.counts)}; overlays in {overlays}")
        return code
    finally:
        if service is not None:
            service.restore_signal_handlers()
        if client is not None:
            time.sleep(0.5)
            client.loop_stop()
            client.disconnect()
        if camera is not None:
            camera.stop()
        fw.stop()
        if console is not None:
            console.terminate()
            console.wait(timeout=20)
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=10)


def start_camera(workdir: Path, fw: VirtualFirmware, echo: Any) -> DemoCamera:
    """The exit camera of the demo (``edge_tools.demo_camera``): commissioned by the rehearsal's code, filming a
    belt that moves at the virtual scanner's speed, served as MJPEG to the service's capture thread."""
    from edge_tools.demo_camera import start_demo_camera
    from sim.physics import ScannerSpec

    spec = ScannerSpec()
    return start_demo_camera(workdir, fw, spec.belt_speed_mm_s, spec.pitch_mm, COUNTS_PER_MM, echo)


def add_camera(cfg_path: Path, camera: DemoCamera) -> None:
    """The ``camera:`` section (the stream's URL, the calibration, the plane alarms are mapped on) in the config."""
    from edge_tools.demo_camera import add_camera_config

    add_camera_config(cfg_path, camera)


def camera_scanner(camera: DemoCamera, source: SimFrameSource, fw: VirtualFirmware) -> DemoScanner:
    """The virtual scanner on the camera's moving belt: item events carry the belt's encoder counts."""
    return camera.scanner(source, fw)


def _stop_when_done(service: Service, fw: VirtualFirmware | None = None, items: int = 0) -> None:
    while not service.runtime.pipeline.wait_idle(1.0):
        pass
    if fw is not None:
        wait_for_parcels(fw, items)
    time.sleep(1.0)  # let the subscriber print the last records
    service.request_stop()


def _subscriber(port: int, overlays: Path, echo: Any) -> paho.Client:
    overlays.mkdir(parents=True, exist_ok=True)
    watcher = Watcher(echo, save_dir=overlays)
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("xray/demo/lane1/#", qos=1)
    client.on_message = lambda c, u, m: _on_message(watcher, m.topic, bytes(m.payload), echo)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def demo_diverter() -> DiverterModel:
    """The virtual controller's diverter (``edge_tools.demo_actions``: where the demo's ``actions:`` puts it)."""
    from edge_tools.demo_actions import demo_diverter as diverter

    return diverter(COUNTS_PER_MM)


def add_actions(cfg_path: Path) -> None:
    """The ``actions:`` section (divert and beacon on ALARM and UNSCREENED) in the config."""
    from edge_tools.demo_actions import add_actions_config

    add_actions_config(cfg_path)


def wait_for_parcels(fw: VirtualFirmware, items: int) -> None:
    """Before stopping, let the belt carry the last parcels to the diverter (the demo's lines say what it did)."""
    from edge_tools.demo_actions import wait_for_diverter

    wait_for_diverter(fw, items, timeout_s=30.0)


def _on_message(watcher: Watcher, topic: str, payload: bytes, echo: Any) -> None:
    """Decisions and pictures through the watcher; what the lane did (``<prefix>/actions``) as a LANE line."""
    if topic.endswith("/actions"):
        from edge_tools.demo_actions import action_line

        line = action_line(payload)
        if line is not None:
            echo(line)
        return
    watcher.handle(topic, payload, {})


def _print_local(decision: Decision, overlays: Path, echo: Any) -> None:
    overlays.mkdir(parents=True, exist_ok=True)
    if decision.overlay_jpeg is not None:
        (overlays / f"{decision.item_id}.jpg").write_bytes(decision.overlay_jpeg)
    reason = f" ({decision.reason.value})" if decision.reason else ""
    echo(f"{time.strftime('%H:%M:%S')} {decision.item_id} {decision.verdict.value.upper()}{reason} "
         f"{json.dumps(decision.detail)}")


def start_console(workdir: Path, port: int, echo: Any) -> subprocess.Popen[bytes] | None:
    """The control-room console on the demo's broker (``edge console run``, HTTPS on a free loopback port, SQLite
    in ``workdir/console``), with a user ``demo`` whose password is printed; None (and why) when the install
    lacks the ``console`` extra or the console does not come up."""
    import importlib.util
    import secrets
    import ssl
    import sys
    import urllib.request

    if importlib.util.find_spec("starlette") is None:
        echo("edge demo: no control-room console (install it with pip install 'xray-edge[console]')")
        return None
    from console.auth import hash_password
    from console.config import load_console_config
    from console.service import open_store

    folder = workdir / "console"
    folder.mkdir(parents=True, exist_ok=True)
    web_port = free_port()
    config = folder / "console.yaml"
    config.write_text(f"console_id: demo\ndata_dir: {folder}\nlisten: {{host: 127.0.0.1, port: {web_port}}}\n"
                      f"database: {{url: 'sqlite:///{folder}/console.sqlite3'}}\n"
                      f"brokers:\n  - name: demo\n    port: {port}\n    topics: ['xray/demo/+/#']\n")
    password = secrets.token_urlsafe(9)
    store = open_store(load_console_config(config))
    if store.user("demo") is None:
        store.add_user("demo", hash_password(password), "supervisor", by="edge demo")
    else:
        store.set_password("demo", hash_password(password), by="edge demo")
    store.engine.dispose()
    log = (folder / "console.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "edge", "console", "run", "--config", str(config)],
                            stdout=log, stderr=log)
    url = f"https://127.0.0.1:{web_port}/"
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url + "healthz", timeout=1, context=insecure).close()
            echo(f"edge demo: control-room console at {url} (self-signed certificate), user demo, password "
                 f"{password}")
            return proc
        except OSError:
            time.sleep(0.2)
    echo(f"edge demo: the console did not start; see {folder / 'console.log'}")
    proc.kill()
    return None


# ---------------------------------------------------------------- the default combination and what was really there
DEMO_THRESHOLDS = {"classifier-threat": 0.9694, "scorer-stfpm": 0.6376}
"""The combination's operating point (``python -m edge_tools.fit.combined choose``, benign items of validation
scanners; the same as systemd/edge.example.yaml)."""


def demo_models_yaml(models: Path) -> str:
    """The ``models:`` lines of the demo: the detector, the classifier and the scorer."""
    return f"""models:
  detector: {models / "detector-agnostic"}
  classifier:
    bundle: {models / "classifier-threat"}
    threshold: {DEMO_THRESHOLDS["classifier-threat"]}
  scorer:
    bundle: {models / "scorer-stfpm"}
    threshold: {DEMO_THRESHOLDS["scorer-stfpm"]}"""


def _print_local_with_truth(decision: Decision, overlays: Path, echo: Any, tally: TruthTally) -> None:
    _print_local(decision, overlays, echo)
    tally.decided(decision)


def parcel_contents(truth: object) -> tuple[str, ...]:
    """The threat kinds the virtual scanner put in the parcel (empty: benign), from ``RawItem.truth``."""
    objects = getattr(truth, "objects", ()) or ()
    return tuple(sorted({str(o.kind) for o in objects if getattr(o, "threat", False)}))


class TruthTally:
    """Prints, beside each decision, what was really in the parcel and a running recall / false-alarm line, so a
    newcomer sees hits and misses. UNSCREENED counts as an alarm (the parcel goes to a person)."""

    def __init__(self, echo: Any) -> None:
        self._echo = echo
        self._lock = threading.Lock()
        self._truth: dict[str, tuple[str, ...]] = {}
        self.hits = self.threats = self.false_alarms = self.benign = 0

    def note(self, item: RawItem) -> None:
        with self._lock:
            self._truth[item.meta.item_id] = parcel_contents(item.truth)

    def decided(self, decision: Decision) -> None:
        with self._lock:
            kinds = self._truth.pop(decision.item_id, None)
            if kinds is None:
                return
            alarmed = decision.verdict.needs_operator
            if kinds:
                self.threats += 1
                self.hits += alarmed
                outcome = "caught" if alarmed else "MISSED"
            else:
                self.benign += 1
                self.false_alarms += alarmed
                outcome = "false alarm" if alarmed else "cleared"
            why = f" [{', '.join(decision.reason_codes)}]" if decision.reason_codes else ""
            self._echo(f"   truth {decision.item_id}: {', '.join(kinds) or 'benign'} -> "
                       f"{decision.verdict.value.upper()}{why} ({outcome}) | {self.summary()}")

    def summary(self) -> str:
        recall = f"{self.hits}/{self.threats}" + (f" ({self.hits / self.threats:.0%})" if self.threats else "")
        fa = f"{self.false_alarms}/{self.benign}" + (f" ({self.false_alarms / self.benign:.0%})" if self.benign
                                                    else "")
        return f"recall {recall}, false alarms {fa}"


class TruthRecordingSource:
    """The demo's frame source, noting each parcel's real contents for :class:`TruthTally` as it is handed over."""

    def __init__(self, source: DemoScanner, tally: TruthTally) -> None:
        self._source = source
        self._tally = tally

    @property
    def exhausted(self) -> bool:
        return self._source.exhausted

    def next_item(self, timeout_s: float) -> RawItem | None:
        item = self._source.next_item(timeout_s)
        if item is not None:
            self._tally.note(item)
        return item

    def acknowledge(self, source_ref: str) -> None:
        self._source.acknowledge(source_ref)

    def close(self) -> None:
        self._source.close()
