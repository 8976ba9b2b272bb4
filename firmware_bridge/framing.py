"""Framing: bytes on the wire <-> ``Frame`` (sequence, type code, payload), with CRC and resynchronisation.

Second layer of the bridge (transport -> **framing** -> codec -> link). Pure functions and one small stateful
``FrameDecoder``; no I/O. It must never import ``serial`` or know what a type code means (that is the codec).

Wire layout (all integers little-endian)::

    0x00 | COBS( seq:u16 | type:u8 | len:u8 | payload[len] | crc:u16 ) | 0x00
    ^^^^                                                              ^^^^
    delimiter                                                         delimiter

    +--------+--------+--------+--------------------+---------------+
    | seq    | type   | len    | payload            | crc16         |
    | 2 B    | 1 B    | 1 B    | 0..MAX_PAYLOAD B   | 2 B           |
    +--------+--------+--------+--------------------+---------------+
    crc16 = CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0) over seq..payload

COBS (Consistent Overhead Byte Stuffing) removes every 0x00 from the frame body, so 0x00 only ever appears as a
delimiter. Each frame is sent with a delimiter before and after it: the leading one cuts off whatever garbage
(a half-written frame from before a cable pull, line noise) precedes it.

Resynchronisation policy::

    bytes ... 0x00 [segment] 0x00 [segment] 0x00 ...
    each segment between two delimiters is judged on its own:
      empty                          -> ignored (back-to-back delimiters)
      longer than MAX_ENCODED        -> dropped  (reason OVERSIZE; also dropped while still arriving,
                                                 so a stream without delimiters never grows the buffer)
      bad COBS code bytes            -> dropped  (reason COBS)
      decoded shorter than header+crc-> dropped  (reason SHORT)
      len field != payload length    -> dropped  (reason LENGTH)
      CRC mismatch                   -> dropped  (reason CRC)
      otherwise                      -> Frame
    After any drop, decoding restarts at the byte after the next 0x00: garbage costs at most the frame it
    touches, and the next intact frame is always recovered.
"""

from __future__ import annotations

import binascii
import struct
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from firmware_bridge.errors import FramingError

DELIMITER = 0x00
MAX_PAYLOAD = 200
"""Largest payload in bytes; the ``len`` field is one byte and every message fits well below this."""
HEADER = struct.Struct("<HBB")
CRC = struct.Struct("<H")
OVERHEAD = HEADER.size + CRC.size
MAX_RAW = OVERHEAD + MAX_PAYLOAD
MAX_ENCODED = MAX_RAW + MAX_RAW // 254 + 1
"""Longest legal COBS segment between delimiters; anything longer is garbage by definition."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One checked frame.

    Attributes:
        seq: sender's sequence number, 0..65535 (wraps); acks refer to it.
        type_code: message type, 0..255; the codec decides whether it is known.
        payload: 0..MAX_PAYLOAD bytes.
    """

    seq: int
    type_code: int
    payload: bytes


class RejectReason(StrEnum):
    """Why a segment was dropped; counted by ``FrameDecoder.rejected``."""

    OVERSIZE = "oversize"
    COBS = "cobs"
    SHORT = "short"
    LENGTH = "length"
    CRC = "crc"


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE. ``binascii.crc_hqx`` is this CRC (in C) when seeded with 0xFFFF."""
    return binascii.crc_hqx(data, 0xFFFF)


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data``; the result contains no 0x00 and is at most ``len(data) // 254 + 1`` longer."""
    out = bytearray()
    blocks = data.split(b"\x00")
    last = len(blocks) - 1
    for i, block in enumerate(blocks):
        while len(block) >= 254:
            out.append(0xFF)
            out += block[:254]
            block = block[254:]
            # A final block of exactly k*254 bytes ends with a 0xFF group: no empty group after it.
            if not block and i == last:
                return bytes(out)
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(data: bytes | bytearray) -> bytes:
    """Undo ``cobs_encode``.

    Raises:
        ValueError: ``data`` holds a 0x00 or a code byte points past its end.
    """
    if b"\x00" in data:
        raise ValueError("COBS data contains a zero byte")
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        end = i + code
        if end > n:
            raise ValueError(f"COBS code {code} at offset {i} runs past the end ({n} bytes)")
        out += data[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode(frame: Frame) -> bytes:
    """Frame -> wire bytes, delimiters included.

    Raises:
        FramingError: payload longer than ``MAX_PAYLOAD`` or seq/type out of range.
    """
    if len(frame.payload) > MAX_PAYLOAD:
        raise FramingError(f"payload of {len(frame.payload)} bytes exceeds MAX_PAYLOAD ({MAX_PAYLOAD})")
    if not 0 <= frame.seq <= 0xFFFF or not 0 <= frame.type_code <= 0xFF:
        raise FramingError(f"seq {frame.seq} or type {frame.type_code} out of range; expected u16 and u8")
    body = HEADER.pack(frame.seq, frame.type_code, len(frame.payload)) + frame.payload
    return b"\x00" + cobs_encode(body + CRC.pack(crc16(body))) + b"\x00"


def parse_segment(segment: bytes | bytearray) -> Frame | RejectReason:
    """Judge one segment found between two delimiters (delimiters excluded)."""
    if len(segment) > MAX_ENCODED:
        return RejectReason.OVERSIZE
    try:
        raw = cobs_decode(segment)
    except ValueError:
        return RejectReason.COBS
    if len(raw) < OVERHEAD:
        return RejectReason.SHORT
    seq, type_code, length = HEADER.unpack_from(raw)
    if length != len(raw) - OVERHEAD:
        return RejectReason.LENGTH
    body = raw[:-2]
    if crc16(body) != CRC.unpack_from(raw, len(raw) - 2)[0]:
        return RejectReason.CRC
    return Frame(seq, type_code, body[HEADER.size :])


def decode(buf: bytes) -> tuple[int, Frame | None]:
    """Take at most one frame off the front of ``buf``.

    Returns:
        ``(consumed, frame)``. ``(0, None)`` means "need more bytes". ``(n > 0, None)`` means ``n`` bytes of
        delimiter or garbage were dropped; call again on ``buf[n:]``. A run longer than ``MAX_ENCODED`` with no
        delimiter is dropped whole, so the caller's buffer stays bounded.
    """
    idx = buf.find(b"\x00")
    if idx < 0:
        return (len(buf), None) if len(buf) > MAX_ENCODED else (0, None)
    if idx == 0:
        return 1, None
    result = parse_segment(bytes(buf[:idx]))
    return idx + 1, (result if isinstance(result, Frame) else None)


class FrameDecoder:
    """Streaming decoder: feed it whatever the transport read, get the complete frames back.

    Keeps at most ``MAX_ENCODED`` bytes of an unfinished segment. Counters say what was dropped and why, so a
    noisy cable shows up in health metrics instead of in silence.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False
        self.rejected: Counter[RejectReason] = Counter()
        self.bytes_dropped = 0
        self.frames = 0

    def feed(self, data: bytes) -> list[Frame]:
        """Append ``data`` and return every frame it completed, in order."""
        if DELIMITER not in data:
            self._buf += data
            if len(self._buf) > MAX_ENCODED:
                # No delimiter in sight: this segment is already too long, so drop it now and keep dropping
                # until the next delimiter instead of buffering without bound.
                if not self._discarding:
                    self.rejected[RejectReason.OVERSIZE] += 1
                self.bytes_dropped += len(self._buf)
                self._buf.clear()
                self._discarding = True
            return []
        self._buf += data
        parts = self._buf.split(b"\x00")
        self._buf = bytearray(parts[-1])
        frames: list[Frame] = []
        for i in range(len(parts) - 1):
            segment = parts[i]
            if self._discarding:
                self._discarding = False
                self.bytes_dropped += len(segment)
                continue
            if not segment:
                continue
            result = parse_segment(segment)
            if isinstance(result, Frame):
                frames.append(result)
            else:
                self.rejected[result] += 1
                self.bytes_dropped += len(segment)
        if len(self._buf) > MAX_ENCODED:
            self.rejected[RejectReason.OVERSIZE] += 1
            self.bytes_dropped += len(self._buf)
            self._buf.clear()
            self._discarding = True
        self.frames += len(frames)
        return frames

    def reset(self) -> None:
        """Forget a half-received segment (after reopening the port the old bytes mean nothing)."""
        self._buf.clear()
        self._discarding = False
