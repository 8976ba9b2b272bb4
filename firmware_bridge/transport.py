"""Transport: move bytes over a serial port, a pty master or an in-memory loopback.

First layer of the bridge (**transport** -> framing -> codec -> link). A transport only moves bytes; it does not
frame, decode or retry. Every failure of the port (missing device, unplug, I/O error) is translated here into
``TransportError``, the only exception the link has to know. Reconnecting is the link's job: a transport that
failed stays failed, and the link opens a new one through an ``Opener``.

Implementations do not inherit from ``Transport``; ``tests/firmware_bridge/test_transport_conformance.py`` runs
each of them through the same cases.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Protocol

from firmware_bridge.errors import TransportError


class Transport(Protocol):
    """A byte pipe to the firmware (or, for the virtual firmware, to the host)."""

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        """Return 1..max_bytes bytes, or b"" if none arrived within ``timeout_s``.

        Raises:
            TransportError: the port vanished or failed.
        """
        ...

    def write(self, data: bytes) -> None:
        """Send all of ``data``. Raises ``TransportError`` if the port vanished or failed."""
        ...

    def close(self) -> None:
        """Release the port; idempotent, never raises."""
        ...


Opener = Callable[[], Transport]
"""Opens a fresh transport or raises ``TransportError``; the link calls it again after every failure."""


class SerialTransport:
    """pyserial port (a real UART, a USB serial adapter or a pty slave path).

    pyserial is imported when the port is opened, not at module import, so that the rest of the bridge (and
    the virtual firmware) works without it.
    """

    def __init__(self, port: str, baudrate: int = 115200) -> None:
        try:
            import serial
        except ImportError as exc:  # pragma: no cover - pyserial is a runtime dependency
            raise TransportError("pyserial is not installed; `pip install pyserial`") from exc
        self._serial_error: type[Exception] = serial.SerialException
        self.port = port
        try:
            self._ser = serial.Serial(port, baudrate=baudrate, timeout=0.0, write_timeout=2.0)
            # Bytes queued before we opened are from an earlier session (or another reader): drop them.
            self._ser.reset_input_buffer()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(f"cannot open serial port {port}: {exc}") from exc
        self._timeout_s = 0.0

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        try:
            if timeout_s != self._timeout_s:
                self._ser.timeout = timeout_s
                self._timeout_s = timeout_s
            data: bytes = self._ser.read(1)
            if data and max_bytes > 1:
                waiting = self._ser.in_waiting
                if waiting:
                    self._ser.timeout = 0.0
                    self._timeout_s = 0.0
                    data += self._ser.read(min(waiting, max_bytes - 1))
            return data
        except (self._serial_error, OSError, TypeError, AttributeError) as exc:
            # TypeError/AttributeError: pyserial's internals after the fd was closed under it.
            raise TransportError(f"read from {self.port} failed: {exc}") from exc

    def write(self, data: bytes) -> None:
        try:
            self._ser.write(data)
        except (self._serial_error, OSError, TypeError, AttributeError) as exc:
            raise TransportError(f"write to {self.port} failed: {exc}") from exc

    def close(self) -> None:
        # Closing a dead port may fail in many ways; it is closed either way.
        with contextlib.suppress(Exception):
            self._ser.close()


def serial_opener(port: str, baudrate: int = 115200) -> Opener:
    """An ``Opener`` for a serial device path (e.g. ``/dev/serial/by-id/...`` or a pty symlink)."""

    def open_port() -> Transport:
        return SerialTransport(port, baudrate)

    return open_port


class FdTransport:
    """A raw file descriptor, e.g. a pty master. Used by the virtual firmware.

    Writes are non-blocking: if the other side stops reading and the kernel buffer fills, the rest of the data
    is dropped and counted in ``dropped_bytes`` (a real UART just loses bytes too; the framing resynchronises).
    """

    def __init__(self, fd: int, *, owns_fd: bool = True) -> None:
        self._fd = fd
        self._owns_fd = owns_fd
        self._closed = False
        self.dropped_bytes = 0
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self._fd

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        if self._closed:
            raise TransportError("transport is closed")
        try:
            ready, _, _ = select.select([self._fd], [], [], timeout_s)
            if not ready:
                return b""
            data = os.read(self._fd, max_bytes)
        except BlockingIOError:
            return b""
        except (OSError, ValueError) as exc:
            raise TransportError(f"read from fd {self._fd} failed: {exc}") from exc
        if not data:
            raise TransportError(f"fd {self._fd} reached end of file (peer hung up)")
        return data

    def write(self, data: bytes) -> None:
        if self._closed:
            raise TransportError("transport is closed")
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                self.dropped_bytes += len(view)
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise TransportError(f"write to fd {self._fd} failed: {exc}") from exc
            view = view[n:]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_fd:
            with contextlib.suppress(OSError):
                os.close(self._fd)


class LoopbackTransport:
    """One end of an in-memory byte pipe (like pyserial's ``loop://``, but unbounded and two-ended).

    Closing either end makes reads and writes on both ends raise ``TransportError``, as a pulled cable would.
    """

    def __init__(self, inbox: bytearray, outbox: bytearray, cond: threading.Condition,
                 closed: list[bool]) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._cond = cond
        self._closed = closed

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._inbox:
                if self._closed[0]:
                    raise TransportError("loopback closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    return b""
                self._cond.wait(left)
            if self._closed[0]:
                raise TransportError("loopback closed")
            data = bytes(self._inbox[:max_bytes])
            del self._inbox[:max_bytes]
            return data

    def write(self, data: bytes) -> None:
        with self._cond:
            if self._closed[0]:
                raise TransportError("loopback closed")
            self._outbox += data
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed[0] = True
            self._cond.notify_all()


def loopback_pair() -> tuple[LoopbackTransport, LoopbackTransport]:
    """Two connected in-memory transports: what one writes, the other reads."""
    a_to_b = bytearray()
    b_to_a = bytearray()
    cond = threading.Condition()
    closed = [False]
    return (LoopbackTransport(b_to_a, a_to_b, cond, closed), LoopbackTransport(a_to_b, b_to_a, cond, closed))
