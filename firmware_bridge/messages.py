"""Message records of the serial protocol: what the firmware reports and what the host commands.

Shared by the codec (which turns them into payload bytes), the link (which routes them) and the virtual firmware.
Plain frozen dataclasses with no behaviour and no I/O; the byte layouts live in ``codec`` and
``docs/serial-protocol.md``.

Wire enums are ``IntEnum`` rather than ``StrEnum`` on purpose: their values are the bytes on the wire, not YAML.
Encoder counts are the firmware's 64-bit belt encoder (it extends the hardware counter, so it never wraps);
``position_mm`` converts them with the configured counts per millimetre.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

PROTOCOL_MAJOR = 1
"""Bumped on any incompatible change; the handshake refuses a different major."""
PROTOCOL_MINOR = 1
"""Bumped on compatible additions (new message types a peer may ignore). 1.1 added the diverter's report
``Diverted`` (0x17), the command ``ReleaseDivert`` (0x43) and the ack status ``TOO_LATE``; a 1.1 firmware sends
``Diverted`` only to a host whose Hello says minor >= 1, so a 1.0 host never sees a type it does not know."""


class MsgType(IntEnum):
    """Type codes. 0x01-0x0F link, 0x10-0x3F events (firmware -> host), 0x40-0x5F commands (host -> firmware)."""

    HELLO = 0x01
    HEARTBEAT = 0x02
    ACK = 0x03
    BELT_STATUS = 0x10
    ITEM_START = 0x11
    ITEM_END = 0x12
    FRAME_READY = 0x13
    XRAY_STATE = 0x14
    INTERLOCK = 0x15
    FAULT = 0x16
    DIVERTED = 0x17
    DIVERT = 0x40
    BELT_CONTROL = 0x41
    LAMP = 0x42
    RELEASE_DIVERT = 0x43


class AckStatus(IntEnum):
    """Result carried by an ``Ack``."""

    OK = 0
    REJECTED = 1
    UNKNOWN_ITEM = 2
    BUSY = 3
    UNSUPPORTED = 4
    TOO_LATE = 5
    """(1.1) A ``Divert`` that arrived after the item's leading edge passed the point where the diverter must be
    armed: the item goes on down the main line. Final: retrying cannot help."""


class FaultSeverity(IntEnum):
    """How bad a fault is; ``CRITICAL`` means the scanner stopped screening."""

    INFO = 0
    WARNING = 1
    ERROR = 2
    CRITICAL = 3


class FaultCode(IntEnum):
    """Fault codes this host knows by name. Other codes still arrive (as plain ints) and are still faults."""

    ENCODER_LOST = 0x0001
    BELT_JAM = 0x0002
    BELT_MOTOR = 0x0003
    XRAY_TUBE = 0x0010
    XRAY_HV = 0x0011
    DETECTOR = 0x0020
    INTERLOCK_OPEN = 0x0030
    EMERGENCY_STOP = 0x0031
    OVER_TEMPERATURE = 0x0040
    WATCHDOG_RESET = 0x00F0


class LampPattern(IntEnum):
    """What a lamp or beacon does."""

    OFF = 0
    ON = 1
    FLASH = 2


class Lamp(IntEnum):
    """Which lamp: the alarm beacon or the lamps of the stack light."""

    BEACON = 0
    STACK_RED = 1
    STACK_AMBER = 2
    STACK_GREEN = 3


# ---- link messages (both directions) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """Handshake. The host sends it on every (re)connect; the firmware answers with its own.

    Attributes:
        protocol_major: must equal ``PROTOCOL_MAJOR`` or the link stays down.
        protocol_minor: informational; a higher minor only adds message types.
        encoder_count: firmware's encoder count now (the host sends 0); lets the host measure belt travel
            during a link gap.
        software: firmware or host software version, at most 32 bytes UTF-8.
    """

    protocol_major: int
    protocol_minor: int
    encoder_count: int
    software: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent every heartbeat period by both sides; silence longer than the link timeout means link down.

    Attributes:
        uptime_ms: sender's uptime in milliseconds, u32 (wraps after 49 days).
        encoder_count: firmware's encoder count (the host sends 0).
    """

    uptime_ms: int
    encoder_count: int


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a command frame.

    Attributes:
        acked_seq: the ``seq`` of the command frame being answered.
        status: ``AckStatus.OK`` if carried out.
    """

    acked_seq: int
    status: AckStatus


# ---- events (firmware -> host) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BeltStatus:
    """Periodic belt report.

    Attributes:
        encoder_count: encoder counts now.
        speed_counts_s: signed belt speed in encoder counts per second (negative = reversing).
        running: motor enabled.
    """

    encoder_count: int
    speed_counts_s: int
    running: bool


@dataclass(frozen=True, slots=True)
class ItemStart:
    """A photo-eye saw an item's leading edge.

    Attributes:
        item_id: firmware's item counter, u32; item start and end share it.
        encoder_count: encoder count at the leading edge.
        eye: photo-eye index (0 = tunnel entrance).
    """

    item_id: int
    encoder_count: int
    eye: int


@dataclass(frozen=True, slots=True)
class ItemEnd:
    """A photo-eye saw an item's trailing edge (same fields as ``ItemStart``)."""

    item_id: int
    encoder_count: int
    eye: int


@dataclass(frozen=True, slots=True)
class FrameReady:
    """The detector finished a block of lines.

    Attributes:
        frame_id: detector frame counter, u32.
        encoder_count: encoder count when the block completed (after its last line).
        lines: number of detector lines in the block.
    """

    frame_id: int
    encoder_count: int
    lines: int


@dataclass(frozen=True, slots=True)
class XrayState:
    """X-ray generator switched on or off (``on`` False also when the interlock chain cut it)."""

    on: bool
    encoder_count: int


@dataclass(frozen=True, slots=True)
class Interlock:
    """An interlock changed state.

    Attributes:
        interlock_id: which interlock (curtain, door, e-stop loop...), u8.
        closed: True = closed, safe to radiate.
        encoder_count: encoder count at the change.
    """

    interlock_id: int
    closed: bool
    encoder_count: int


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault raised or cleared.

    Attributes:
        code: fault code, u16; see ``FaultCode`` for the known ones (unknown codes are still delivered).
        severity: how bad.
        active: True = raised, False = cleared.
        encoder_count: encoder count when it happened.
        detail: free text, at most 64 bytes UTF-8.
    """

    code: int
    severity: FaultSeverity
    active: bool
    encoder_count: int
    detail: str


@dataclass(frozen=True, slots=True)
class Diverted:
    """(1.1) The diverter acted on an item: it left the main line at ``gate``.

    Sent when the diverter fires, so the host knows what physically happened, not only what it asked for.

    Attributes:
        item_id: the firmware's item counter, as in ``ItemStart``.
        gate: the gate it went to.
        encoder_count: encoder count when the diverter fired.
    """

    item_id: int
    gate: int
    encoder_count: int


# ---- commands (host -> firmware), each answered by an Ack ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Divert:
    """Divert an item to a gate. Idempotent: diverting the same item twice is one divert."""

    item_id: int
    gate: int


@dataclass(frozen=True, slots=True)
class BeltControl:
    """Start (``run`` True) or stop the belt. Idempotent."""

    run: bool


@dataclass(frozen=True, slots=True)
class LampCommand:
    """Set a lamp or beacon.

    Attributes:
        lamp: which lamp.
        pattern: off, on or flashing.
        duration_ms: back to off after this many ms; 0 = until the next command.
    """

    lamp: Lamp
    pattern: LampPattern
    duration_ms: int


@dataclass(frozen=True, slots=True)
class ReleaseDivert:
    """(1.1) Release an item held at a divert gate back to the main line (an operator cleared it). Idempotent.

    Answered ``UNKNOWN_ITEM`` when the firmware holds no such item at that gate (never diverted, already released).
    """

    item_id: int
    gate: int


FAULT_DETAIL_MAX_BYTES = 64
"""Longest ``Fault.detail`` in UTF-8 bytes (the codec refuses longer text)."""


def fit_text(text: str, limit: int = FAULT_DETAIL_MAX_BYTES) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes without splitting a character (for ``Fault.detail``)."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


Event = BeltStatus | ItemStart | ItemEnd | FrameReady | XrayState | Interlock | Fault | Diverted
"""Everything the firmware reports to the pipeline; each carries ``encoder_count``."""
Command = Divert | BeltControl | LampCommand | ReleaseDivert
"""Everything the host asks of the firmware; each is answered by an ``Ack``."""
Message = Hello | Heartbeat | Ack | Event | Command

EVENT_TYPES: tuple[type[Event], ...] = (BeltStatus, ItemStart, ItemEnd, FrameReady, XrayState, Interlock, Fault,
                                        Diverted)
COMMAND_TYPES: tuple[type[Command], ...] = (Divert, BeltControl, LampCommand, ReleaseDivert)
