"""Every Transport implementation through the same cases: serial on a real pty, raw pty fds, in-memory loopback."""

from __future__ import annotations

import os
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware_bridge.errors import TransportError
from firmware_bridge.transport import FdTransport, SerialTransport, Transport, loopback_pair, serial_opener

Pair = tuple[Transport, Transport, Callable[[], None]]
"""(end under test, its peer, a function that makes the peer vanish as an unplug would)."""


def serial_on_pty(tmp_path: Path) -> Pair:
    master, slave = os.openpty()
    tty.setraw(master)
    link = tmp_path / "ttyS"
    link.symlink_to(os.ttyname(slave))
    host = SerialTransport(str(link))
    os.close(slave)  # the host's own open keeps the slave alive
    peer = FdTransport(master)
    return host, peer, peer.close


def fds_on_pty(tmp_path: Path) -> Pair:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    a, b = FdTransport(master), FdTransport(slave)
    return a, b, b.close


def loopback(tmp_path: Path) -> Pair:
    a, b = loopback_pair()
    return a, b, b.close


@pytest.fixture(params=[serial_on_pty, fds_on_pty, loopback], ids=["serial-pty", "fd-pty", "loopback"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    a, b, hangup = request.param(tmp_path)
    yield a, b, hangup
    a.close()
    b.close()


def read_exactly(t: Transport, n: int, timeout_s: float = 3.0) -> bytes:
    out = b""
    end = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < end:
        out += t.read(n - len(out), 0.05)
    return out


def test_bytes_cross_both_ways_unchanged(pair: Pair) -> None:
    a, b, _ = pair
    # Fits a pty buffer with no reader; includes 0x00, XON/XOFF, CR/LF, which raw mode must not touch.
    blob = bytes(range(256)) * 4
    a.write(blob)
    assert read_exactly(b, len(blob)) == blob
    b.write(b"\x00\x11\x13\r\n\x03")
    assert read_exactly(a, 6) == b"\x00\x11\x13\r\n\x03"


def test_read_respects_max_bytes_and_timeout(pair: Pair) -> None:
    a, b, _ = pair
    b.write(b"abcdef")
    first = read_exactly(a, 2)
    assert first == b"ab"
    assert read_exactly(a, 4) == b"cdef"
    t0 = time.monotonic()
    assert a.read(10, 0.05) == b""
    assert 0.03 <= time.monotonic() - t0 < 1.0


def test_peer_vanishing_is_a_transport_error(pair: Pair) -> None:
    a, _, hangup = pair
    hangup()
    with pytest.raises(TransportError):
        for _ in range(50):  # a read may return b"" once before the hang-up is visible
            a.read(10, 0.02)
            a.write(b"x")


def test_close_is_idempotent_and_final(pair: Pair) -> None:
    a, _, _ = pair
    a.close()
    a.close()
    with pytest.raises(TransportError):
        a.read(1, 0.01)


def test_opening_a_missing_port_is_a_transport_error(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="cannot open serial port"):
        serial_opener(str(tmp_path / "nope"))()
