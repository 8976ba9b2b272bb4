"""Fixtures for the firmware bridge tests: a virtual firmware on a real pty, and host links to it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from firmware_bridge.link import FirmwareLink, LinkSettings
from firmware_bridge.transport import serial_opener
from firmware_bridge.virtual import Scheduled, VirtualFirmware

FAST = LinkSettings(heartbeat_s=0.05, link_timeout_s=0.3, reconnect_min_s=0.03, reconnect_max_s=0.1,
                    command_timeout_s=0.5, command_retry_s=0.08, encoder_counts_per_mm=8.0, poll_s=0.005)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 3.0, what: str = "condition") -> None:
    """Poll until ``predicate`` is true; fail the test with ``what`` if it never is."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def fast() -> LinkSettings:
    """Link timings that make reconnect and timeout tests take tenths of a second."""
    return FAST


@pytest.fixture
def wait() -> Callable[..., None]:
    """The ``wait_for`` helper, as a fixture (test modules cannot import from conftest)."""
    return wait_for


@pytest.fixture
def firmware(tmp_path: Path) -> Iterator[Callable[..., VirtualFirmware]]:
    """Start virtual firmwares on ptys under tmp_path; all are stopped at teardown."""
    started: list[VirtualFirmware] = []

    def make(timeline: Iterable[Scheduled] = (), **kwargs: object) -> VirtualFirmware:
        kwargs.setdefault("heartbeat_s", 0.05)
        fw = VirtualFirmware(tmp_path / f"ttyVFW{len(started)}", timeline, **kwargs)  # type: ignore[arg-type]
        started.append(fw.start())
        return fw

    yield make
    for fw in started:
        fw.stop()


@pytest.fixture
def link() -> Iterator[Callable[..., FirmwareLink]]:
    """Start host links to a port path with FAST settings; all are closed at teardown."""
    started: list[FirmwareLink] = []

    def make(port: Path, settings: LinkSettings = FAST, **kwargs: object) -> FirmwareLink:
        lk = FirmwareLink(serial_opener(str(port)), settings, **kwargs)  # type: ignore[arg-type]
        started.append(lk.start())
        return lk

    yield make
    for lk in started:
        lk.close()
