"""Codec: message dataclasses <-> (type code, payload bytes), strictly.

Third layer of the bridge (transport -> framing -> **codec** -> link). Knows the payload layout of every type
code (the table below is the one in ``docs/serial-protocol.md``) and nothing about sequence numbers, CRCs or
ports. It must not accept anything it does not understand: an unknown type code, a payload of the wrong length,
a boolean byte other than 0/1, an enum value we do not know, a string that is too long or not UTF-8 are all
``CodecError``. Unknown *fault codes* are the one exception: they are data, and a fault is never dropped.

Payload layouts (little-endian; ``str<N>`` = ``u8`` byte count then at most N bytes of UTF-8)::

    0x01 Hello         u8 major, u8 minor, u64 encoder_count, str<32> software
    0x02 Heartbeat     u32 uptime_ms, u64 encoder_count
    0x03 Ack           u16 acked_seq, u8 status
    0x10 BeltStatus    u64 encoder_count, i32 speed_counts_s, u8 running
    0x11 ItemStart     u32 item_id, u64 encoder_count, u8 eye
    0x12 ItemEnd       u32 item_id, u64 encoder_count, u8 eye
    0x13 FrameReady    u32 frame_id, u64 encoder_count, u16 lines
    0x14 XrayState     u8 on, u64 encoder_count
    0x15 Interlock     u8 interlock_id, u8 closed, u64 encoder_count
    0x16 Fault         u16 code, u8 severity, u8 active, u64 encoder_count, str<64> detail
    0x17 Diverted      u32 item_id, u8 gate, u64 encoder_count          (protocol 1.1)
    0x40 Divert        u32 item_id, u8 gate
    0x41 BeltControl   u8 run
    0x42 LampCommand   u8 lamp, u8 pattern, u16 duration_ms
    0x43 ReleaseDivert u32 item_id, u8 gate                             (protocol 1.1)
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware_bridge.errors import CodecError, FramingError
from firmware_bridge.framing import Frame
from firmware_bridge.framing import encode as encode_frame
from firmware_bridge.messages import (
    Ack,
    AckStatus,
    BeltControl,
    BeltStatus,
    Divert,
    Diverted,
    Fault,
    FaultSeverity,
    FrameReady,
    Heartbeat,
    Hello,
    Interlock,
    ItemEnd,
    ItemStart,
    Lamp,
    LampCommand,
    LampPattern,
    Message,
    MsgType,
    ReleaseDivert,
    XrayState,
)

Converter = Callable[[int], Any] | None


def _bool(value: int) -> bool:
    if value not in (0, 1):
        raise ValueError(f"boolean byte is {value}; expected 0 or 1")
    return bool(value)


@dataclass(frozen=True, slots=True)
class _Spec:
    """How one message type sits in a payload: a fixed struct, then optionally one length-prefixed string."""

    msg_type: MsgType
    cls: type[Any]
    fixed: struct.Struct
    converters: tuple[Converter, ...]
    text_max: int | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.cls))


_SPECS: tuple[_Spec, ...] = (
    _Spec(MsgType.HELLO, Hello, struct.Struct("<BBQ"), (None, None, None), text_max=32),
    _Spec(MsgType.HEARTBEAT, Heartbeat, struct.Struct("<IQ"), (None, None)),
    _Spec(MsgType.ACK, Ack, struct.Struct("<HB"), (None, AckStatus)),
    _Spec(MsgType.BELT_STATUS, BeltStatus, struct.Struct("<QiB"), (None, None, _bool)),
    _Spec(MsgType.ITEM_START, ItemStart, struct.Struct("<IQB"), (None, None, None)),
    _Spec(MsgType.ITEM_END, ItemEnd, struct.Struct("<IQB"), (None, None, None)),
    _Spec(MsgType.FRAME_READY, FrameReady, struct.Struct("<IQH"), (None, None, None)),
    _Spec(MsgType.XRAY_STATE, XrayState, struct.Struct("<BQ"), (_bool, None)),
    _Spec(MsgType.INTERLOCK, Interlock, struct.Struct("<BBQ"), (None, _bool, None)),
    _Spec(MsgType.FAULT, Fault, struct.Struct("<HBBQ"), (None, FaultSeverity, _bool, None), text_max=64),
    _Spec(MsgType.DIVERTED, Diverted, struct.Struct("<IBQ"), (None, None, None)),
    _Spec(MsgType.DIVERT, Divert, struct.Struct("<IB"), (None, None)),
    _Spec(MsgType.BELT_CONTROL, BeltControl, struct.Struct("<B"), (_bool,)),
    _Spec(MsgType.LAMP, LampCommand, struct.Struct("<BBH"), (Lamp, LampPattern, None)),
    _Spec(MsgType.RELEASE_DIVERT, ReleaseDivert, struct.Struct("<IB"), (None, None)),
)
_BY_CODE: dict[int, _Spec] = {int(s.msg_type): s for s in _SPECS}
_BY_CLASS: dict[type[Any], _Spec] = {s.cls: s for s in _SPECS}
_FIELDS: dict[type[Any], tuple[str, ...]] = {s.cls: s.fields for s in _SPECS}


def type_code_of(message: Message) -> MsgType:
    """The wire type code for a message instance."""
    spec = _BY_CLASS.get(type(message))
    if spec is None:
        raise CodecError(f"{type(message).__name__} is not a protocol message")
    return spec.msg_type


def encode_payload(message: Message) -> tuple[int, bytes]:
    """Message -> (type code, payload).

    Raises:
        CodecError: a field is out of its wire range (e.g. a u32 above 2**32-1, an invalid enum value, a
            string longer than its limit).
    """
    spec = _BY_CLASS.get(type(message))
    if spec is None:
        raise CodecError(f"{type(message).__name__} is not a protocol message")
    names = _FIELDS[spec.cls]
    values = [getattr(message, n) for n in names]
    text: bytes | None = None
    if spec.text_max is not None:
        text = str(values.pop()).encode("utf-8")
        if len(text) > spec.text_max:
            raise CodecError(f"{spec.cls.__name__}.{names[-1]} is {len(text)} bytes UTF-8; "
                             f"expected at most {spec.text_max}")
    for i, conv in enumerate(spec.converters):
        if conv is not None:
            try:
                values[i] = int(conv(int(values[i])))
            except (ValueError, TypeError) as exc:
                raise CodecError(f"{spec.cls.__name__}.{names[i]}: {exc}") from exc
    try:
        payload = spec.fixed.pack(*values)
    except struct.error as exc:
        raise CodecError(f"{spec.cls.__name__}: a field is out of its wire range ({exc}); "
                         f"fields {dict(zip(names, values, strict=False))}") from exc
    if text is not None:
        payload += bytes((len(text),)) + text
    return int(spec.msg_type), payload


def decode_payload(type_code: int, payload: bytes) -> Message:
    """(type code, payload) -> message.

    Raises:
        CodecError: unknown type code, wrong payload length, invalid boolean/enum byte, bad string.
    """
    spec = _BY_CODE.get(type_code)
    if spec is None:
        raise CodecError(f"unknown message type 0x{type_code:02x}; expected one of "
                         + ", ".join(f"0x{c:02x}" for c in sorted(_BY_CODE)))
    size = spec.fixed.size
    if spec.text_max is None:
        if len(payload) != size:
            raise CodecError(f"{spec.cls.__name__} payload is {len(payload)} bytes; expected {size}")
        values: list[Any] = list(spec.fixed.unpack(payload))
    else:
        if len(payload) < size + 1:
            raise CodecError(f"{spec.cls.__name__} payload is {len(payload)} bytes; expected at least {size + 1}")
        n = payload[size]
        if n > spec.text_max or len(payload) != size + 1 + n:
            raise CodecError(f"{spec.cls.__name__} text of {n} bytes in a {len(payload)}-byte payload; "
                             f"expected at most {spec.text_max} bytes filling the payload")
        try:
            text = payload[size + 1 :].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(f"{spec.cls.__name__} text is not UTF-8: {exc}") from exc
        values = [*spec.fixed.unpack_from(payload), text]
    for i, conv in enumerate(spec.converters):
        if conv is not None:
            try:
                values[i] = conv(values[i])
            except ValueError as exc:
                raise CodecError(f"{spec.cls.__name__}.{_FIELDS[spec.cls][i]}: {exc}") from exc
    return spec.cls(*values)


def encode_message(message: Message, seq: int) -> bytes:
    """Message -> wire bytes (framed, delimited), with sequence number ``seq``.

    Raises:
        CodecError: see ``encode_payload``; a framing limit broken is reported as a ``CodecError`` too.
    """
    type_code, payload = encode_payload(message)
    try:
        return encode_frame(Frame(seq, type_code, payload))
    except FramingError as exc:
        raise CodecError(str(exc)) from exc


def decode_frame(frame: Frame) -> Message:
    """Frame -> message; see ``decode_payload``."""
    return decode_payload(frame.type_code, frame.payload)


KNOWN_TYPE_CODES: frozenset[int] = frozenset(_BY_CODE)
