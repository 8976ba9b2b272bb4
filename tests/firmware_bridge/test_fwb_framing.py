"""Framing: CRC and COBS against independent references, round trips, and resynchronisation properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.errors import FramingError
from firmware_bridge.framing import (
    MAX_ENCODED,
    MAX_PAYLOAD,
    Frame,
    FrameDecoder,
    RejectReason,
    cobs_decode,
    cobs_encode,
    crc16,
    decode,
    encode,
)


def ref_crc16_ccitt_false(data: bytes) -> int:
    """Bit-by-bit CRC-16/CCITT-FALSE, written from the catalogue definition (poly 0x1021, init 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def ref_cobs_encode(data: bytes) -> bytes:
    """Textbook byte-at-a-time COBS encoder (as in Cheshire & Baker's paper), without the trailing delimiter."""
    out = bytearray([0])
    code_idx = 0
    code = 1
    for byte in data:
        if byte == 0:
            out[code_idx] = code
            code_idx = len(out)
            out.append(0)
            code = 1
        else:
            out.append(byte)
            code += 1
            if code == 0xFF:
                out[code_idx] = code
                code_idx = len(out)
                out.append(0)
                code = 1
    out[code_idx] = code
    # The paper's encoder leaves a final 0x01 group after a full 254-byte run; the canonical form drops it.
    if code == 1 and len(data) > 0 and data[-1] != 0 and len(out) >= 2 and out[code_idx - 255] == 0xFF:
        out.pop()
    return bytes(out)


frames = st.builds(Frame, seq=st.integers(0, 0xFFFF), type_code=st.integers(0, 0xFF),
                   payload=st.binary(max_size=MAX_PAYLOAD))


def test_crc_check_value_from_catalogue() -> None:
    # The CRC catalogue's check value for CRC-16/CCITT-FALSE over b"123456789".
    assert crc16(b"123456789") == 0x29B1


@given(st.binary(max_size=600))
def test_crc_matches_bitwise_reference(data: bytes) -> None:
    assert crc16(data) == ref_crc16_ccitt_false(data)


@pytest.mark.parametrize(("raw", "encoded"), [
    # Examples from the COBS article on Wikipedia.
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
])
def test_cobs_known_vectors(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


@given(st.binary(max_size=1200))
def test_cobs_round_trip_and_matches_reference(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(enc) == data
    assert cobs_decode(ref_cobs_encode(data)) == data


def test_cobs_decode_rejects_zero_and_overrun() -> None:
    with pytest.raises(ValueError, match="zero"):
        cobs_decode(b"\x03\x00\x01")
    with pytest.raises(ValueError, match="past the end"):
        cobs_decode(b"\x05\x11\x22")


@given(frames)
def test_frame_round_trip(frame: Frame) -> None:
    wire = encode(frame)
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    assert len(wire) - 2 <= MAX_ENCODED
    assert FrameDecoder().feed(wire) == [frame]
    consumed, got = decode(wire[1:])
    assert (consumed, got) == (len(wire) - 1, frame)


def test_encode_refuses_oversize_payload_and_out_of_range_header() -> None:
    with pytest.raises(FramingError, match="exceeds MAX_PAYLOAD"):
        encode(Frame(0, 1, bytes(MAX_PAYLOAD + 1)))
    with pytest.raises(FramingError, match="out of range"):
        encode(Frame(0x10000, 1, b""))
    with pytest.raises(FramingError, match="out of range"):
        encode(Frame(0, 256, b""))


def test_each_reject_reason_is_counted() -> None:
    good = encode(Frame(7, 0x10, b"abc"))
    bad_crc = bytearray(good)
    bad_crc[-2] ^= 0x01 if bad_crc[-2] != 0x01 else 0x03
    body = bytes([0x01, 0x00, 0x10, 0x05]) + b"abc"  # len field says 5, payload is 3
    bad_len = b"\x00" + cobs_encode(body + crc16(body).to_bytes(2, "little")) + b"\x00"
    short = b"\x00" + cobs_encode(b"\x01\x02") + b"\x00"
    bad_cobs = b"\x00\x09\x41\x42\x00"
    dec = FrameDecoder()
    out = dec.feed(bytes(bad_crc) + bad_len + short + bad_cobs + good)
    assert out == [Frame(7, 0x10, b"abc")]
    assert dec.rejected == {RejectReason.CRC: 1, RejectReason.LENGTH: 1, RejectReason.SHORT: 1,
                            RejectReason.COBS: 1}


def test_stream_without_delimiters_stays_bounded_then_recovers() -> None:
    dec = FrameDecoder()
    junk = bytes(range(1, 256)) * 400  # ~100 kB, no zero byte anywhere
    for i in range(0, len(junk), 1000):
        assert dec.feed(junk[i:i + 1000]) == []
        assert len(dec._buf) <= MAX_ENCODED
    frame = Frame(1, 2, b"after the storm")
    # The tail of the junk run plus this frame's leading delimiter end the oversize segment; the frame survives.
    assert dec.feed(encode(frame)) == [frame]
    assert dec.rejected[RejectReason.OVERSIZE] >= 1
    assert dec.bytes_dropped >= len(junk) - MAX_ENCODED


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=3000), chunk=st.integers(1, 300), frame=frames)
def test_random_bytes_never_crash_and_next_frame_is_recovered(garbage: bytes, chunk: int, frame: Frame) -> None:
    dec = FrameDecoder()
    stream = garbage + encode(frame)
    out: list[Frame] = []
    for i in range(0, len(stream), chunk):
        out += dec.feed(stream[i:i + chunk])
    assert out and out[-1] == frame
    assert len(dec._buf) <= MAX_ENCODED


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=3000), frame=frames)
def test_pure_decode_always_progresses_and_recovers(garbage: bytes, frame: Frame) -> None:
    buf = garbage + encode(frame)
    found: list[Frame] = []
    steps = 0
    while buf:
        consumed, got = decode(buf)
        steps += 1
        assert steps <= len(garbage) + 10, "decode did not make progress"
        if consumed == 0:
            break
        assert 0 < consumed <= len(buf)
        if got is not None:
            found.append(got)
        buf = buf[consumed:]
    assert found and found[-1] == frame


mutation = st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 10_000), st.integers(1, 255))


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(frames, min_size=1, max_size=15), mutations=st.lists(mutation, max_size=8),
       chunk=st.integers(1, 64))
def test_mutated_stream_recovers_every_untouched_frame(batch: list[Frame],
                                                       mutations: list[tuple[str, int, int]],
                                                       chunk: int) -> None:
    # Each byte remembers which original byte it was (None once flipped or inserted).
    stream: list[tuple[int, int | None]] = []
    spans: list[tuple[int, int]] = []
    for f in batch:
        wire = encode(f)
        start = len(stream)
        stream += [(b, start + k) for k, b in enumerate(wire)]
        spans.append((start, len(stream)))
    for kind, pos, value in mutations:
        p = pos % (len(stream) + 1)
        if kind == "insert":
            stream.insert(p, (value, None))
        elif p < len(stream):
            if kind == "flip":
                stream[p] = (stream[p][0] ^ value, None)
            else:
                del stream[p]
    origins = [o for _, o in stream]
    intact = []
    for f, (a, b) in zip(batch, spans, strict=True):
        if a in origins:
            i = origins.index(a)
            if origins[i:i + (b - a)] == list(range(a, b)):
                intact.append(f)
    data = bytes(b for b, _ in stream)
    dec = FrameDecoder()
    out: list[Frame] = []
    for i in range(0, len(data), chunk):
        out += dec.feed(data[i:i + chunk])
    # Every untouched frame comes out, in order (a damaged frame may only be dropped, never reordered).
    it = iter(out)
    assert all(any(f == g for g in it) for f in intact), (intact, out)
    assert len(out) <= len(batch) + len(mutations)
