"""Exceptions of the firmware bridge, all under one ``FirmwareError`` root.

Sits beside every layer of ``firmware_bridge``: the transport translates pyserial and ``OSError`` failures into
``TransportError`` at its boundary, so the link and the pipeline only ever see these types::

    EdgeError
    └── FirmwareError          anything from the serial bridge
        ├── TransportError     port missing, unplugged, or an I/O call failed
        ├── FramingError       a frame cannot be built (payload too long, sequence out of range)
        ├── CodecError         a payload does not match its message layout, or the type is unknown
        ├── HandshakeError     the firmware speaks an incompatible protocol version
        └── CommandError       a command was not carried out
            ├── CommandTimeout   no acknowledgement before the deadline (after retries)
            └── CommandRejected  the firmware acknowledged with a non-OK status

Decoding garbage never raises: the framing layer drops it and counts it (see ``framing``).
"""

from __future__ import annotations

from edge.errors import EdgeError


class FirmwareError(EdgeError):
    """Root of every error the firmware bridge raises on purpose."""


class TransportError(FirmwareError):
    """The port could not be opened, vanished, or a read/write failed; the link reconnects."""


class FramingError(FirmwareError):
    """A frame could not be encoded because it breaks the wire limits."""


class CodecError(FirmwareError):
    """A payload could not be converted to or from a message (unknown type, bad length, out of range)."""


class HandshakeError(FirmwareError):
    """The peer's protocol major version differs from ours; no traffic is trusted until it matches."""


class CommandError(FirmwareError):
    """A command to the firmware was not carried out."""


class CommandTimeout(CommandError):
    """No acknowledgement arrived before the command's deadline, retries included."""


class CommandRejected(CommandError):
    """The firmware acknowledged the command with a failure status.

    Attributes:
        status: the ``AckStatus`` the firmware returned.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
