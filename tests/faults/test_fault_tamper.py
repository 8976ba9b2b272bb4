"""Fault suite, issue 29 points 8 and 9: a tampered bundle and a bundle changed on disk under a running service.

Point 8: ``bundle.yaml`` edited (a threshold that never alarms) with its content hash recomputed must be refused at
start and on SIGHUP, the old models staying in service: a hash the bundle carries about itself is not a signature.
Point 9: a loaded bundle overwritten on disk (``cp`` of another bundle's files over it, as the old install guide
advised) or truncated must change no score and must not crash the process; a reload verifies again.
The trust rule at the process level: an unsigned bundle stops ``edge run`` unless ``models.allow_unsigned``, which
then starts the service degraded ("bundles unsigned").

Real parts: bundles exported through the toolchain and signed with a test key (``service_helpers``), real files,
``cp``, ``truncate``, and ``edge run`` subprocesses reloaded with a real SIGHUP and watched through a real
``NOTIFY_SOCKET``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edge.bundles import Role
from edge.bundles.manifest import content_digest
from edge.config import load_config
from edge.errors import BundleError
from edge.screening import ModelSet, load_models
from tests.service.service_helpers import REPO, build_bundle, calibrate, write_config
from tests.service.test_systemd import NotifyListener


@dataclass(frozen=True)
class TamperAssets:
    detector: Path
    scorer: Path
    other_scorer: Path
    flat: Path
    energy: Path


@pytest.fixture(scope="module")
def tamper_assets(tmp_path_factory: pytest.TempPathFactory) -> TamperAssets:
    work = tmp_path_factory.mktemp("tamper-assets")
    flat, energy = calibrate(work)
    return TamperAssets(detector=build_bundle(Role.DETECTOR, work, "det"),
                        scorer=build_bundle(Role.SCORER, work, "scorer"),
                        other_scorer=build_bundle(Role.SCORER, work, "scorer-b", seed=1),
                        flat=flat, energy=energy)


def rehash_thresholds(bundle: Path, score: float, version: str | None = None) -> None:
    """What an attacker (or a well-meaning hand) does: edit bundle.yaml and recompute its own content hash."""
    path = bundle / "bundle.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["thresholds"]["score"] = score
    if version is not None:
        data["version"] = version
    data["content_sha256"] = content_digest(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=110), encoding="utf-8")


def _config(tmp: Path, assets: TamperAssets, scorer: Path, backend: str = "openvino", items: int = 4,
            per_minute: float = 240.0) -> Path:
    cfg = write_config(tmp / "edge.yaml", detector=assets.detector, scorer=scorer, flat=assets.flat,
                       energy=assets.energy, state=tmp, items=items, per_minute=per_minute)
    if backend != "openvino":
        cfg.write_text(cfg.read_text().replace("  backend: openvino\n", f"  backend: {backend}\n"))
    return cfg


def test_a_rehashed_bundle_is_refused_at_start(tmp_path: Path, tamper_assets: TamperAssets) -> None:
    scorer = tmp_path / "scorer"
    shutil.copytree(tamper_assets.scorer, scorer)
    rehash_thresholds(scorer, 1e9)  # no object can reach it: every threat item would be CLEAR
    cfg = load_config(_config(tmp_path, tamper_assets, scorer))
    try:
        models = load_models(cfg.models)
    except BundleError as exc:
        message = str(exc)
    else:
        threshold = models.scorer.threshold if models.scorer is not None else None
        models.close()
        pytest.fail(f"the rehashed bundle was accepted; the scorer in service decides at {threshold}")
    assert str(scorer) in message and "bundle.yaml" in message and "changed after signing" in message, message


def _batch(models: ModelSet, seed: int = 7) -> np.ndarray:
    assert models.scorer is not None
    c = models.scorer.bundle.contract
    return np.random.default_rng(seed).random((2, c.tensor_channels, c.height, c.width), dtype=np.float32)


def _scores(models: ModelSet, batch: np.ndarray) -> dict[str, np.ndarray]:
    assert models.scorer is not None
    return {k: np.array(v) for k, v in models.scorer.session.run(batch).items()}


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_overwriting_a_loaded_bundle_changes_no_score(tmp_path: Path, tamper_assets: TamperAssets,
                                                      backend: str) -> None:
    live = tmp_path / "live"
    shutil.copytree(tamper_assets.scorer, live)
    models = load_models(load_config(_config(tmp_path, tamper_assets, live, backend)).models)
    try:
        batch = _batch(models)
        before = _scores(models, batch)
        # The old install guide's way to update a bundle: copy the new one's files over the loaded one.
        for src in sorted(tamper_assets.other_scorer.rglob("*")):
            if src.is_file():
                dst = live / src.relative_to(tamper_assets.other_scorer).parent / src.name.replace("scorer-b",
                                                                                                  "scorer")
                subprocess.run(["cp", str(src), str(dst)], check=True)
        after = _scores(models, batch)
        for name, value in before.items():
            assert np.array_equal(value, after[name]), (
                f"{backend}: output {name!r} changed after the files on disk were overwritten: max |diff| "
                f"{float(np.max(np.abs(value - after[name]))):.4g}")
    finally:
        models.close()


@dataclass
class Running:
    proc: subprocess.Popen[str]
    listener: NotifyListener
    status_file: Path

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.status_file.read_text())
        return result

    def reload(self, timeout_s: float = 120.0) -> dict[str, str]:
        before = time.monotonic()
        self.proc.send_signal(signal.SIGHUP)
        self.listener.wait_for("RELOADING", "1", after=before, timeout_s=timeout_s)
        return self.listener.wait_for("READY", "1", after=before, timeout_s=timeout_s)

    def decided(self) -> int:
        return int(sum(self.status()["decisions"].values()))

    def wait_decisions(self, more_than: int, timeout_s: float = 60.0) -> int:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"the service died: exit {self.proc.returncode}; {self.stderr()}"
            try:
                n = self.decided()
            except (OSError, ValueError):
                n = -1
            if n > more_than:
                return n
            time.sleep(0.2)
        raise AssertionError(f"no decision beyond {more_than} within {timeout_s} s")

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()[-3000:]


@pytest.fixture
def service(tmp_path: Path, tamper_assets: TamperAssets) -> Iterator[Running]:
    scorer = tmp_path / "scorer"
    shutil.copytree(tamper_assets.scorer, scorer)
    cfg = _config(tmp_path, tamper_assets, scorer, items=100000, per_minute=120)
    listener = NotifyListener(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(listener.path)}
    env.pop("WATCHDOG_USEC", None)
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    running = Running(proc, listener, tmp_path / "status.json")
    try:
        ready = listener.wait_for("READY", "1", timeout_s=120)
        assert ready["STATUS"].startswith("online"), ready
        running.wait_decisions(0, timeout_s=120)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        listener.close()


def test_a_rehashed_bundle_is_refused_on_reload_and_the_old_models_stay(tmp_path: Path, service: Running) -> None:
    models_before = service.status()["models"]
    rehash_thresholds(tmp_path / "scorer", 1e9, version="0.1-tampered")
    ready = service.reload()
    deadline = time.monotonic() + 30
    status = service.status()
    while "reload failed" not in status["reason"] and time.monotonic() < deadline:
        time.sleep(0.2)
        status = service.status()
    assert status["models"] == models_before, f"the tampered bundle went into service: {status['models']}"
    assert ready["STATUS"].startswith("degraded") and "reload failed" in ready["STATUS"], ready
    assert "changed after signing" in ready["STATUS"], ready
    # Still screening with the old models.
    service.wait_decisions(service.decided())


def test_a_truncated_bundle_and_sighup_keep_the_service_screening(tmp_path: Path, service: Running) -> None:
    for f in sorted((tmp_path / "scorer").rglob("*")):
        if f.is_file() and f.suffix in (".bin", ".onnx"):
            os.truncate(f, f.stat().st_size // 2)
    seen = service.decided()
    ready = service.reload()
    assert ready["STATUS"].startswith("degraded") and "reload failed" in ready["STATUS"], ready
    # Items keep being screened by the models loaded before the truncation, and the process is alive.
    seen = service.wait_decisions(seen)
    service.wait_decisions(seen)
    assert service.proc.poll() is None
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(timeout=60) == 0, service.stderr()


def test_an_unsigned_bundle_stops_the_start_unless_allowed_and_then_the_service_is_degraded(
        tmp_path: Path, tamper_assets: TamperAssets) -> None:
    scorer = tmp_path / "scorer"
    shutil.copytree(tamper_assets.scorer, scorer, ignore=shutil.ignore_patterns("bundle.sig"))
    cfg = write_config(tmp_path / "edge.yaml", detector=tamper_assets.detector, scorer=scorer,
                       flat=tamper_assets.flat, energy=tamper_assets.energy, state=tmp_path, items=100000,
                       per_minute=60, allow_unsigned=False)
    refused = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(cfg)], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and f"refusing bundle {scorer}: no signature" in refused.stderr, refused.stderr
    cfg.write_text(cfg.read_text().replace("  trusted_keys:", "  allow_unsigned: true\n  trusted_keys:"))
    listener = NotifyListener(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(listener.path)}
    env.pop("WATCHDOG_USEC", None)
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready = listener.wait_for("READY", "1", timeout_s=120)
        assert ready["STATUS"].startswith("degraded") and "bundles unsigned" in ready["STATUS"], ready
        assert "scorer (no signature" in ready["STATUS"], ready
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        listener.close()
    assert "RUNNING AN UNVERIFIED BUNDLE" in err
