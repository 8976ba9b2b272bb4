"""Codec: every message round-trips (payload and wire), and anything off-spec is refused with a clear error."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.codec import (
    KNOWN_TYPE_CODES,
    decode_frame,
    decode_payload,
    encode_message,
    encode_payload,
    type_code_of,
)
from firmware_bridge.errors import CodecError
from firmware_bridge.framing import Frame, FrameDecoder
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

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, 2**64 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)


def text(max_bytes: int) -> st.SearchStrategy[str]:
    return st.text(max_size=max_bytes).filter(lambda s: len(s.encode("utf-8")) <= max_bytes)


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, u8, u8, u64, text(32)),
    st.builds(Heartbeat, u32, u64),
    st.builds(Ack, u16, st.sampled_from(AckStatus)),
    st.builds(BeltStatus, u64, i32, st.booleans()),
    st.builds(ItemStart, u32, u64, u8),
    st.builds(ItemEnd, u32, u64, u8),
    st.builds(FrameReady, u32, u64, u16),
    st.builds(XrayState, st.booleans(), u64),
    st.builds(Interlock, u8, st.booleans(), u64),
    st.builds(Fault, u16, st.sampled_from(FaultSeverity), st.booleans(), u64, text(64)),
    st.builds(Divert, u32, u8),
    st.builds(BeltControl, st.booleans()),
    st.builds(LampCommand, st.sampled_from(Lamp), st.sampled_from(LampPattern), u16),
    st.builds(Diverted, u32, u8, u64),
    st.builds(ReleaseDivert, u32, u8),
)


@given(messages)
def test_payload_round_trip(message: Message) -> None:
    code, payload = encode_payload(message)
    assert code == type_code_of(message)
    assert decode_payload(code, payload) == message


@settings(max_examples=200)
@given(messages, u16)
def test_wire_round_trip(message: Message, seq: int) -> None:
    frames = FrameDecoder().feed(encode_message(message, seq))
    assert len(frames) == 1 and frames[0].seq == seq
    assert decode_frame(frames[0]) == message


def test_every_message_type_has_its_documented_code() -> None:
    # Codes from docs/serial-protocol.md; a renumbering breaks deployed firmware and must fail here.
    documented = {0x01: "HELLO", 0x02: "HEARTBEAT", 0x03: "ACK", 0x10: "BELT_STATUS", 0x11: "ITEM_START",
                  0x12: "ITEM_END", 0x13: "FRAME_READY", 0x14: "XRAY_STATE", 0x15: "INTERLOCK", 0x16: "FAULT",
                  0x17: "DIVERTED", 0x40: "DIVERT", 0x41: "BELT_CONTROL", 0x42: "LAMP", 0x43: "RELEASE_DIVERT"}
    assert {int(m): m.name for m in MsgType} == documented
    assert documented.keys() == KNOWN_TYPE_CODES


def test_item_start_payload_layout_is_little_endian_as_documented() -> None:
    code, payload = encode_payload(ItemStart(item_id=0x01020304, encoder_count=0x1122334455667788, eye=9))
    assert code == 0x11
    assert payload == bytes([4, 3, 2, 1, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 9])


def test_fault_with_unknown_code_is_still_delivered() -> None:
    fault = Fault(0xBEEF, FaultSeverity.CRITICAL, True, 5, "new firmware fault")
    assert decode_payload(*encode_payload(fault)) == fault


@given(st.integers(0, 0xFF).filter(lambda c: c not in KNOWN_TYPE_CODES), st.binary(max_size=40))
def test_unknown_type_codes_are_rejected(code: int, payload: bytes) -> None:
    with pytest.raises(CodecError, match=f"unknown message type 0x{code:02x}"):
        decode_payload(code, payload)


@pytest.mark.parametrize("message", [
    Heartbeat(1, 2), Ack(3, AckStatus.OK), BeltStatus(1, -5, True), ItemStart(1, 2, 0), FrameReady(1, 2, 3),
    XrayState(True, 4), Interlock(1, False, 2), Divert(1, 2), BeltControl(False),
    LampCommand(Lamp.BEACON, LampPattern.FLASH, 500),
])
def test_wrong_payload_length_is_rejected(message: Message) -> None:
    code, payload = encode_payload(message)
    with pytest.raises(CodecError, match="payload is"):
        decode_payload(code, payload + b"\x00")
    with pytest.raises(CodecError, match="payload is"):
        decode_payload(code, payload[:-1])


@pytest.mark.parametrize(("code", "payload", "match"), [
    (0x14, bytes([2]) + bytes(8), "boolean byte is 2"),                      # XrayState.on
    (0x10, bytes(8) + bytes(4) + b"\x07", "boolean byte is 7"),             # BeltStatus.running
    (0x03, b"\x01\x00\x09", "AckStatus"),                                   # unknown ack status
    (0x16, b"\x01\x00\x09\x01" + bytes(8) + b"\x00", "FaultSeverity"),      # unknown severity
    (0x42, b"\x07\x01\x00\x00", "Lamp"),                                    # unknown lamp
    (0x01, b"\x01\x00" + bytes(8) + b"\x05ab", "text of 5 bytes"),          # string length past the end
    (0x01, b"\x01\x00" + bytes(8) + b"\x21" + b"a" * 33, "at most 32"),     # string too long
    (0x16, b"\x01\x00\x01\x01" + bytes(8) + b"\x02\xff\xfe", "not UTF-8"),  # invalid UTF-8
    (0x16, b"\x01\x00\x01", "expected at least"),                           # truncated fixed part
])
def test_malformed_payloads_are_rejected(code: int, payload: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode_payload(code, payload)


@pytest.mark.parametrize(("message", "match"), [
    (ItemStart(2**32, 0, 0), "out of its wire range"),
    (ItemStart(-1, 0, 0), "out of its wire range"),
    (BeltStatus(0, 2**31, True), "out of its wire range"),
    (Hello(1, 0, 0, "x" * 33), "at most 32"),
    (Fault(1, FaultSeverity.ERROR, True, 0, "é" * 33), "66 bytes UTF-8"),
    (BeltControl(2), "boolean byte is 2"),  # type: ignore[arg-type]
    (LampCommand(9, LampPattern.ON, 0), "Lamp"),  # type: ignore[arg-type]
])
def test_out_of_range_fields_are_refused_on_encode(message: Message, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        encode_payload(message)


def test_non_message_is_refused() -> None:
    with pytest.raises(CodecError, match="not a protocol message"):
        encode_payload(Frame(0, 0, b""))  # type: ignore[arg-type]


def test_frame_with_valid_crc_but_unknown_type_passes_framing_and_fails_codec() -> None:
    frames = FrameDecoder().feed(encode_frame(Frame(3, 0x7F, b"\x01\x02")))
    assert frames == [Frame(3, 0x7F, b"\x01\x02")]
    with pytest.raises(CodecError, match="unknown message type 0x7f"):
        decode_frame(frames[0])


def test_struct_sizes_match_documented_payload_sizes() -> None:
    # Sizes computed from the documented layouts, independently of the codec's own tables.
    expected: dict[Message, int] = {
                Heartbeat(0, 0): struct.calcsize("<IQ"), Ack(0, AckStatus.OK): 3, BeltStatus(0, 0, False): 13,
                ItemStart(0, 0, 0): 13, FrameReady(0, 0, 0): 14, XrayState(False, 0): 9,
                Interlock(0, False, 0): 10, Divert(0, 0): 5, BeltControl(False): 1,
                LampCommand(Lamp.BEACON, LampPattern.OFF, 0): 4,
                Hello(1, 0, 0, "ab"): 1 + 1 + 8 + 1 + 2,
                Fault(0, FaultSeverity.INFO, False, 0, "abc"): 2 + 1 + 1 + 8 + 1 + 3}
    for message, size in expected.items():
        assert len(encode_payload(message)[1]) == size, message
