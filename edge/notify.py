"""sd_notify written directly on ``$NOTIFY_SOCKET`` (no libsystemd, no ``systemd-notify`` subprocess).

The service says READY=1 only after its bundles are loaded and warmed, WATCHDOG=1 only while the pipeline
makes progress (so a wedged pipeline is restarted by systemd instead of pinging forever), STATUS= lines for
``systemctl status``, RELOADING=1/READY=1 around SIGHUP and STOPPING=1 on SIGTERM. Outside systemd
(``NOTIFY_SOCKET`` unset) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams; silently does nothing when not run under systemd."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        self._sock: socket.socket | None = None
        if address:
            # A leading '@' names an abstract socket (a leading NUL byte on the wire).
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens."""
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields as one datagram; False if not enabled or the send failed."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
            return True
        except OSError as exc:
            log.warning("sd_notify failed", extra={"error": str(exc)})
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> bool:
        monotonic_us = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_us}")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """Half of ``$WATCHDOG_USEC`` (systemd's advice), or None when the watchdog is off or not ours."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.05, int(usec) / 2_000_000)
    except ValueError:
        return None
