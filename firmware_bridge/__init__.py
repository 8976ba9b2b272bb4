"""firmware_bridge: the serial link to the scanner's controller, and a virtual controller to test it against.

Layers, bottom up: ``transport`` (bytes over serial/pty/loopback) -> ``framing`` (COBS frames with CRC-16,
resync) -> ``codec`` (payloads <-> ``messages`` dataclasses) -> ``link`` (handshake, heartbeats, acks, retries,
reconnects; ``history`` answers "was the link down between t0 and t1?"). ``virtual`` and ``scenarios`` are the
virtual firmware and its timelines; they are not imported here, so the runtime never loads them by accident.
The wire protocol is documented in ``docs/serial-protocol.md``.
"""

from firmware_bridge.errors import (
    CodecError,
    CommandError,
    CommandRejected,
    CommandTimeout,
    FirmwareError,
    FramingError,
    HandshakeError,
    TransportError,
)
from firmware_bridge.history import LinkHistory, LinkState, LinkStatus
from firmware_bridge.link import Direction, FirmwareLink, LinkSettings, LinkStats, ReceivedEvent, counts_to_mm
from firmware_bridge.transport import Opener, SerialTransport, Transport, loopback_pair, serial_opener

__all__ = [
    "CodecError",
    "CommandError",
    "CommandRejected",
    "CommandTimeout",
    "Direction",
    "FirmwareError",
    "FirmwareLink",
    "FramingError",
    "HandshakeError",
    "LinkHistory",
    "LinkSettings",
    "LinkState",
    "LinkStats",
    "LinkStatus",
    "Opener",
    "ReceivedEvent",
    "SerialTransport",
    "Transport",
    "TransportError",
    "counts_to_mm",
    "loopback_pair",
    "serial_opener",
]
