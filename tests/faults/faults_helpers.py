"""The fault suite's shared harness: the real service as a subprocess, a real spool folder, a real Mosquitto, a
persistent control-room subscriber, and a checker of the box's core promise.

Everything here is black box on purpose: the service is ``python -m edge run --config FILE`` (what systemd runs),
it is stopped with SIGTERM or killed with a real SIGKILL, items go in as files in its spool folder, and decisions
are read back only where a site reads them (the MQTT ``items`` topic and the audit store). Nothing imports the
pipeline, so a fault test proves what a site would see, whatever the code inside does.

The promise, checked by :func:`exactly_one_decision`: every item fed in has exactly one decision at the
subscriber (distinct ``record_id``; a redelivery of the same record counts once, two record ids for one fed item
are two decisions) and exactly one in the audit store, and no item without real X-ray data is CLEAR.

Bundles and calibrations come from ``tests.service.service_helpers`` (``build_bundle``, ``calibrate``,
``write_config``) so this harness inherits any change made there (e.g. bundle signing keys in the config).
Stable API for the other ``test_fault_*.py`` files: ``FaultAssets``, ``ItemPool``, ``FedItem``, ``Spool``,
``EdgeProcess``, ``write_fault_config``, ``Subscriber``, ``read_audit``, ``exactly_one_decision``,
``DecisionReport``, ``ItemTally``, ``FaultRig``, ``make_rig``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.sources.item_meta import safe_id
from tests.publish.publish_helpers import Broker, Collector, free_port
from tests.service.service_helpers import write_config

REPO = Path(__file__).resolve().parents[2]
SITE_ID = "test-site"
"""``write_config``'s site id (the harness reuses its config, so record ids are made from this)."""
SCANNER_ID = "lane1"
"""``write_config``'s scanner id: the spool source names an item ``<scanner>-<file stem>``."""


@dataclass(frozen=True)
class FaultAssets:
    """Real (untrained) bundles and a real calibration of the virtual scanner, made once per session."""

    detector: Path
    scorer: Path
    flat: Path
    energy: Path


# ----------------------------------------------------------------------------------------------- items


class ItemPool:
    """Items of the virtual scanner (seed ``seed``), rendered once and handed out round-robin.

    The models then see realistic data (the same scanner the calibration was made from). ``max_lines`` crops
    each item to at most that many belt lines (all 640 detector channels kept, so the flat-field still fits):
    small items keep a high feed rate sustainable on a loaded 2-core machine (the soak benchmark).
    """

    def __init__(self, seed: int = 0, count: int = 8, max_lines: int | None = None, threat_rate: float = 0.5) -> None:
        from sim.dataset import ItemStream  # sim renders; only the tests and benchmarks import it, never edge/

        stream = ItemStream(seed=seed, threat_rate=threat_rate)
        self._items: list[tuple[np.ndarray, np.ndarray]] = []
        for index in range(count):
            raw = stream.item(index).raw
            high, low = np.asarray(raw.high, np.uint16), np.asarray(raw.low, np.uint16)
            if max_lines is not None:
                high, low = high[:max_lines], low[:max_lines]
            self._items.append((np.ascontiguousarray(high), np.ascontiguousarray(low)))
        self.dark_level = int(np.asarray(stream.dark.high).mean())
        """Mean dark count of this scanner: a frame at this level is what the detector reads with X-ray off."""

    def __len__(self) -> int:
        return len(self._items)

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(high, low): (H, 640) uint16 raw counts of item ``index`` (modulo the pool size)."""
        return self._items[index % len(self._items)]


@dataclass(frozen=True)
class FedItem:
    """One item the test dropped into the spool.

    Attributes:
        name: the file stem (``<name>.npz``).
        item_id: the id the service gives it today (``<scanner>-<safe_id(name)>``); a service that
            disambiguates a repeated id keeps this as the prefix, which is how records are matched back.
        has_xray: False for frames with no real X-ray data (dark, zeros): such an item must never be CLEAR.
        fed_wall: when the file appeared in the spool (wall clock, seconds).
        batch: a label of the test's choosing (round, phase).
    """

    name: str
    item_id: str
    has_xray: bool
    fed_wall: float
    batch: int = 0


class Spool:
    """The service's spool folder, written the way vendor software must: ``.name.npz.tmp`` then rename."""

    def __init__(self, directory: Path, scanner_id: str = SCANNER_ID) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.scanner_id = scanner_id

    def drop(self, name: str, high: np.ndarray, low: np.ndarray, *, has_xray: bool = True,
             batch: int = 0) -> FedItem:
        """Write ``<name>.npz`` atomically (the service only ever opens completed names)."""
        tmp = self.directory / f".{name}.npz.tmp"
        with open(tmp, "wb") as handle:
            np.savez(handle, high=high, low=low)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.directory / f"{name}.npz")
        return FedItem(name, f"{self.scanner_id}-{safe_id(name)}", has_xray, time.time(), batch)

    def drop_pool(self, pool: ItemPool, names: Sequence[str], batch: int = 0, first: int = 0) -> list[FedItem]:
        """Drop one pool item per name (pool items ``first``, ``first + 1`` …)."""
        return [self.drop(name, *pool.arrays(first + k), batch=batch) for k, name in enumerate(names)]

    def pending(self) -> list[Path]:
        """Completed items still waiting in the spool (not yet taken, or taken and not yet acknowledged)."""
        return sorted(p for p in self.directory.iterdir() if p.suffix == ".npz" and not p.name.startswith("."))


# ----------------------------------------------------------------------------------------------- config


def _spool_section(spool: Path, done: Path, poll_s: float) -> str:
    return f"source:\n  type: spool\n  directory: {spool}\n  done_directory: {done}\n  poll_s: {poll_s}\n"


def write_fault_config(path: Path, assets: FaultAssets, state: Path, spool: Path, *, broker_port: int | None,
                       topic_prefix: str, firmware_port: Path | None = None, link_timeout_s: float = 2.0,
                       poll_s: float = 0.05, extra: str = "") -> Path:
    """The service's config for a fault test: spool source, MQTT to the test's broker, audit store and state
    under ``state``; optionally a firmware link on a (virtual firmware's) pty.

    Built on ``service_helpers.write_config`` (whatever it adds, e.g. trusted keys, stays) with its ``source:``
    section swapped for the spool: a second ``source:`` block would be a duplicate YAML key.
    """
    if broker_port is None:
        mqtt = "enabled: false"
    else:
        mqtt = (f"host: 127.0.0.1\n  port: {broker_port}\n  topic_prefix: {topic_prefix}\n"
                f"  reconnect_min_s: 0.2\n  reconnect_max_s: 1.0\n  keepalive_s: 5")
    more = ""
    if firmware_port is not None:
        more += (f"firmware:\n  port: {firmware_port}\n  heartbeat_s: 0.2\n  link_timeout_s: {link_timeout_s}\n"
                 f"  reconnect_min_s: 0.1\n  reconnect_max_s: 0.5\n")
    state.mkdir(parents=True, exist_ok=True)
    write_config(path, detector=assets.detector, scorer=assets.scorer, flat=assets.flat, energy=assets.energy,
                 state=state, mqtt=mqtt, extra=more + extra)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index("source:\n")
    end = start + 1
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    lines[start:end] = [_spool_section(spool, state / "done", poll_s)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------- the service


@dataclass
class EdgeProcess:
    """``edge run --config FILE`` as a child process, its output appended to ``log_path``.

    ``start`` waits until the service has written its status file (models loaded, intake running); ``kill``
    is a real SIGKILL (no handler runs: what a crash, the OOM killer or a power cut leaves behind).
    """

    config: Path
    status_file: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    pids: list[int] = field(default_factory=list)

    def start(self, ready_timeout_s: float = 120.0) -> EdgeProcess:
        assert not self.alive, "service already running"
        launched = time.time()
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {self.starts + 1} at {launched:.3f} ====\n".encode())
            log.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.starts += 1
        self.pids.append(self.proc.pid)
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edge run exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            status = self.status()
            written = None if status is None else status.get("written_wall")
            if status is not None and status.get("pid") == self.proc.pid and isinstance(written, (int, float)) \
                    and written >= launched:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"edge run did not write its status in {ready_timeout_s} s:\n{self.log_tail()}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.kills += 1

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (a clean systemd stop) and wait; SIGKILL if it does not end in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def status(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# ----------------------------------------------------------------------------------------------- subscriber


class Subscriber:
    """The control room: a persistent session (MQTT 5, clean_start False, session expiry 600 s), QoS 1 on
    ``<prefix>/items``. It keeps every message, redeliveries included; the checker de-duplicates by record id.
    The broker keeps the session while the service (or the subscriber) is away, so what it sees is what a real
    control room would see."""

    def __init__(self, port: int, topic_prefix: str, client_id: str | None = None) -> None:
        self.topic_prefix = topic_prefix
        self._collector = Collector(port, f"{topic_prefix}/items",
                                    client_id=client_id or f"control-room-{uuid.uuid4().hex[:8]}")

    def start(self) -> Subscriber:
        self._collector.start()
        return self

    def stop(self) -> None:
        self._collector.stop()

    @property
    def connected(self) -> bool:
        return self._collector.connected.is_set()

    def records(self) -> list[dict[str, object]]:
        """Every item record received so far (JSON bodies), redeliveries included, in arrival order."""
        out = []
        for message in self._collector.snapshot():
            try:
                body = json.loads(message.payload)
            except ValueError:
                continue
            if isinstance(body, dict):
                out.append(body)
        return out


def read_audit(audit_dir: Path) -> list[dict[str, object]]:
    """Every item record in the audit store (any layout under ``audit_dir``: ``*.json`` bodies that carry a
    ``record_id`` and an ``item_id``); half-written temporaries (dot names) are skipped."""
    out: list[dict[str, object]] = []
    if not audit_dir.exists():
        return out
    for path in sorted(audit_dir.rglob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(body, dict) and "record_id" in body and "item_id" in body:
            out.append(body)
    return out


# ----------------------------------------------------------------------------------------------- the checker


@dataclass(frozen=True)
class ItemTally:
    """Decisions found for one fed item id.

    ``fed`` is how many items the test fed under this id (2 when it reused a name on purpose); the promise holds
    for the id when ``subscriber == audit == fed``. ``subscriber``/``audit`` count distinct record ids.
    """

    item_id: str
    fed: int
    subscriber: int
    audit: int
    verdicts: tuple[str, ...]
    """Verdicts of the distinct records (subscriber and audit together), sorted."""
    blind_clear: bool
    """A CLEAR for an item fed without real X-ray data."""

    @property
    def ok(self) -> bool:
        return self.subscriber == self.fed and self.audit == self.fed and not self.blind_clear


@dataclass(frozen=True)
class DecisionReport:
    """What :func:`exactly_one_decision` found, per fed item id, plus records that match no fed item."""

    tallies: tuple[ItemTally, ...]
    stray_subscriber: tuple[str, ...]
    stray_audit: tuple[str, ...]

    @property
    def fed(self) -> int:
        return sum(t.fed for t in self.tallies)

    def _count(self, pick: Callable[[ItemTally], int], want: Callable[[int, int], bool]) -> int:
        return sum(abs(pick(t) - t.fed) if want(pick(t), t.fed) else 0 for t in self.tallies)

    @property
    def missing_subscriber(self) -> int:
        """Fed items without a decision at the subscriber."""
        return self._count(lambda t: t.subscriber, lambda got, fed: got < fed)

    @property
    def extra_subscriber(self) -> int:
        """Decisions at the subscriber beyond one per fed item (an item decided twice, with two record ids)."""
        return self._count(lambda t: t.subscriber, lambda got, fed: got > fed)

    @property
    def missing_audit(self) -> int:
        return self._count(lambda t: t.audit, lambda got, fed: got < fed)

    @property
    def extra_audit(self) -> int:
        return self._count(lambda t: t.audit, lambda got, fed: got > fed)

    @property
    def blind_clears(self) -> tuple[str, ...]:
        return tuple(t.item_id for t in self.tallies if t.blind_clear)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tallies)

    def bad(self) -> list[ItemTally]:
        return [t for t in self.tallies if not t.ok]

    def summary(self) -> str:
        """One paragraph for an assertion message: the counts, then the first offending ids."""
        text = (f"{self.fed} items fed: subscriber missing {self.missing_subscriber} / extra {self.extra_subscriber}, "
                f"audit missing {self.missing_audit} / extra {self.extra_audit}, "
                f"blind CLEARs {len(self.blind_clears)}")
        bad = self.bad()
        if bad:
            text += "; e.g. " + ", ".join(f"{t.item_id} (fed {t.fed}, mqtt {t.subscriber}, audit {t.audit}"
                                          f"{', CLEAR without X-ray' if t.blind_clear else ''})" for t in bad[:8])
        if self.stray_subscriber or self.stray_audit:
            text += (f"; records for no fed item: mqtt {list(self.stray_subscriber)[:5]}"
                     f" audit {list(self.stray_audit)[:5]}")
        return text

    def as_dict(self) -> dict[str, object]:
        return {"fed": self.fed, "missing_subscriber": self.missing_subscriber,
                "extra_subscriber": self.extra_subscriber, "missing_audit": self.missing_audit,
                "extra_audit": self.extra_audit, "blind_clears": len(self.blind_clears)}


def _owner(item_id: str, fed_ids: Sequence[str]) -> str | None:
    """The fed id a record's ``item_id`` belongs to: equal, or the longest fed id it extends with a separator
    (a service may disambiguate a repeated id as ``<id>~2``, ``<id>-2``, ``<id>.2`` …)."""
    if item_id in fed_ids:
        return item_id
    best: str | None = None
    for fid in fed_ids:
        if item_id.startswith(fid) and not item_id[len(fid)].isalnum() and (best is None or len(fid) > len(best)):
            best = fid
    return best


def exactly_one_decision(items_fed: Iterable[FedItem], subscriber_records: Iterable[dict[str, object]],
                         audit_dir: Path) -> DecisionReport:
    """Check the promise for every fed item: one decision at the subscriber, one in the audit store, no blind
    CLEAR. Records are matched to fed items by ``item_id`` (see :func:`_owner`) and counted by distinct
    ``record_id``; fed items that share an id (a name reused on purpose) form one tally with ``fed`` > 1.

    Fed names must not be prefixes of one another followed by a separator (``a`` and ``a-2``), or a
    disambiguated record of ``a`` cannot be told from ``a-2``'s; the tests use fixed-width names.
    """
    fed = list(items_fed)
    counts: dict[str, int] = {}
    xray: dict[str, bool] = {}
    for item in fed:
        counts[item.item_id] = counts.get(item.item_id, 0) + 1
        xray[item.item_id] = xray.get(item.item_id, True) and item.has_xray
    ids = sorted(counts)
    index = set(ids)  # exact ids first: the prefix search is only for disambiguated ids

    def owner(item_id: str) -> str | None:
        if item_id in index:
            return item_id
        return _owner(item_id, ids)

    mqtt_ids: dict[str, set[str]] = {i: set() for i in ids}
    audit_ids: dict[str, set[str]] = {i: set() for i in ids}
    verdicts: dict[str, dict[str, str]] = {i: {} for i in ids}
    stray_mqtt: set[str] = set()
    stray_audit: set[str] = set()
    for records, into, stray in ((subscriber_records, mqtt_ids, stray_mqtt), (read_audit(audit_dir), audit_ids,
                                                                               stray_audit)):
        for body in records:
            rid, iid = str(body.get("record_id")), str(body.get("item_id"))
            who = owner(iid)
            if who is None:
                stray.add(iid)
                continue
            into[who].add(rid)
            verdicts[who][rid] = str(body.get("verdict"))
    tallies = tuple(
        ItemTally(i, counts[i], len(mqtt_ids[i]), len(audit_ids[i]), tuple(sorted(verdicts[i].values())),
                  blind_clear=not xray[i] and "clear" in verdicts[i].values())
        for i in ids
    )
    return DecisionReport(tallies, tuple(sorted(stray_mqtt)), tuple(sorted(stray_audit)))


# ----------------------------------------------------------------------------------------------- the rig


@dataclass
class FaultRig:
    """One service under test with everything around it: state dir, spool, broker, subscriber, config."""

    root: Path
    state: Path
    spool: Spool
    broker: Broker | None
    subscriber: Subscriber | None
    config: Path
    service: EdgeProcess
    topic_prefix: str

    @property
    def audit_dir(self) -> Path:
        return self.state / "audit"

    def records(self) -> list[dict[str, object]]:
        return [] if self.subscriber is None else self.subscriber.records()

    def report(self, fed: Iterable[FedItem]) -> DecisionReport:
        return exactly_one_decision(fed, self.records(), self.audit_dir)

    def wait_for_decisions(self, fed: Sequence[FedItem], timeout_s: float = 120.0,
                           quiet_s: float = 1.5, stall_s: float = 20.0) -> DecisionReport:
        """Wait until every fed item has at least its decisions at both ends, then ``quiet_s`` more so that late
        duplicates show up too; return the final report.

        Gives up early (a lost item never comes) when the spool is empty and no new record has appeared for
        ``stall_s``, or the service died; at the latest after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        last: tuple[int, int] | None = None
        changed = time.monotonic()
        while time.monotonic() < deadline:
            report = self.report(fed)
            if report.missing_subscriber == 0 and report.missing_audit == 0:
                break
            if not self.service.alive:
                break
            seen = (len(self.records()), len(read_audit(self.audit_dir)))
            if seen != last:
                last, changed = seen, time.monotonic()
            elif time.monotonic() - changed > stall_s and not self.spool.pending():
                break
            time.sleep(0.25)
        time.sleep(quiet_s)
        return self.report(fed)

    def close(self) -> None:
        self.service.kill()
        if self.subscriber is not None:
            self.subscriber.stop()


def make_rig(root: Path, assets: FaultAssets, broker: Broker | None, *, firmware_port: Path | None = None,
             link_timeout_s: float = 2.0, extra: str = "") -> FaultRig:
    """Lay out ``root`` (``state/``, ``spool/``, ``edge.yaml``, ``edge.log``), start a persistent subscriber on
    ``broker`` (before the service, so its session holds everything published), and return the rig with the
    service not yet started."""
    state = root / "state"
    spool = Spool(root / "spool")
    prefix = f"faults/{uuid.uuid4().hex[:8]}"
    config = write_fault_config(root / "edge.yaml", assets, state, spool.directory,
                                broker_port=None if broker is None else broker.port, topic_prefix=prefix,
                                firmware_port=firmware_port, link_timeout_s=link_timeout_s, extra=extra)
    subscriber = None if broker is None else Subscriber(broker.port, prefix).start()
    service = EdgeProcess(config, state / "status.json", root / "edge.log")
    return FaultRig(root, state, spool, broker, subscriber, config, service, prefix)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; AssertionError naming ``what`` on timeout (generous: the box is loaded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


__all__ = [
    "SCANNER_ID", "SITE_ID", "Broker", "DecisionReport", "EdgeProcess", "FaultAssets", "FaultRig", "FedItem",
    "ItemPool", "ItemTally", "Spool", "Subscriber", "exactly_one_decision", "free_port", "make_rig", "read_audit",
    "wait_until", "write_fault_config",
]
