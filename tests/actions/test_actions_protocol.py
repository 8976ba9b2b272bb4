"""Protocol 1.1 (the diverter's messages): byte layouts as documented, framing and decoding of each, the new ack
status, and a firmware that never sends the new event to a 1.0 host (which would count it as a codec error)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from firmware_bridge.codec import decode_frame, decode_payload, encode_message, encode_payload
from firmware_bridge.errors import CodecError, CommandRejected
from firmware_bridge.framing import FrameDecoder
from firmware_bridge.link import FirmwareLink
from firmware_bridge.messages import (
    PROTOCOL_MINOR,
    Ack,
    AckStatus,
    BeltStatus,
    Divert,
    Diverted,
    Hello,
    ItemStart,
    ReleaseDivert,
)
from firmware_bridge.transport import serial_opener
from firmware_bridge.virtual import DiverterModel, Scheduled, VirtualFirmware
from tests.actions.conftest import LINK, wait_until


def test_the_new_messages_have_their_documented_layouts() -> None:
    assert PROTOCOL_MINOR == 1
    assert encode_payload(Diverted(0x01020304, 7, 0x1122334455667788)) == (
        0x17, bytes([4, 3, 2, 1, 7, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]))
    assert encode_payload(ReleaseDivert(0x0A0B0C0D, 2)) == (0x43, bytes([0x0D, 0x0C, 0x0B, 0x0A, 2]))
    assert encode_payload(Ack(0x0102, AckStatus.TOO_LATE)) == (0x03, bytes([2, 1, 5]))


@pytest.mark.parametrize("message", [Diverted(5, 1, 123456789), ReleaseDivert(5, 1), Ack(9, AckStatus.TOO_LATE)])
def test_each_new_message_survives_framing_byte_by_byte(message: object) -> None:
    wire = encode_message(message, 0x1234)  # type: ignore[arg-type]
    decoder = FrameDecoder()
    frames = [f for b in wire for f in decoder.feed(bytes([b]))]
    assert len(frames) == 1 and frames[0].seq == 0x1234
    assert decode_frame(frames[0]) == message


def test_wrong_lengths_and_statuses_of_the_new_messages_are_refused() -> None:
    with pytest.raises(CodecError, match="Diverted payload is 12 bytes; expected 13"):
        decode_payload(0x17, bytes(12))
    with pytest.raises(CodecError, match="ReleaseDivert payload is 6 bytes; expected 5"):
        decode_payload(0x43, bytes(6))
    with pytest.raises(CodecError, match=r"Ack\.status"):
        decode_payload(0x03, bytes([0, 0, 6]))


def _diverting_firmware(tmp_path: Path) -> VirtualFirmware:
    """A belt whose item 0 enters at t=0.3 s and reaches the diverter 0.4 s later (1000 counts/s, 400 counts)."""
    timeline = [Scheduled(0.3, ItemStart(0, 300, 0))]
    timeline += [Scheduled(k * 0.02, BeltStatus(k * 20, 1000, True)) for k in range(1, 60)]
    timeline.sort(key=lambda s: s.at_s)
    return VirtualFirmware(tmp_path / "ttyVFW", timeline, heartbeat_s=0.1,
                           diverter=DiverterModel(at_counts=400, arm_counts=50)).start()


def test_a_11_host_gets_diverted_and_too_late_over_a_pty(tmp_path: Path) -> None:
    fw = _diverting_firmware(tmp_path)
    events: list[object] = []
    link = FirmwareLink(serial_opener(str(fw.port)), LINK, on_event=lambda e: events.append(e.event)).start()
    try:
        assert link.wait_until_up(5)
        wait_until(lambda: any(isinstance(e, ItemStart) for e in events), 5, "the item start")
        assert link.send_command(Divert(0, 3)).status is AckStatus.OK
        wait_until(lambda: fw.diverted, 5, "the diverter")
        wait_until(lambda: any(isinstance(e, Diverted) for e in events), 5, "the Diverted event")
        [event] = [e for e in events if isinstance(e, Diverted)]
        assert (event.item_id, event.gate) == (0, 3) and event.encoder_count >= 700
        assert link.send_command(Divert(0, 3)).status is AckStatus.OK  # idempotent: still one divert
        with pytest.raises(CommandRejected) as info:
            link.send_command(Divert(7, 3))  # an item the firmware never saw
        assert info.value.status == AckStatus.UNKNOWN_ITEM
        assert link.send_command(ReleaseDivert(0, 3)).status is AckStatus.OK and fw.released == [0]
        assert len(fw.diverted) == 1
    finally:
        link.close()
        fw.stop()


def test_a_10_host_never_gets_the_new_event(tmp_path: Path) -> None:
    fw = _diverting_firmware(tmp_path)
    port = serial_opener(str(fw.port))()
    decoder = FrameDecoder()
    seen: list[object] = []
    try:
        port.write(encode_message(Hello(1, 0, 0, "host 1.0"), 0))
        sent = False
        end = time.monotonic() + 3.0
        while time.monotonic() < end and fw.elapsed_s() < 1.1:
            seen += [decode_frame(f) for f in decoder.feed(port.read(4096, 0.02))]
            if not sent and any(isinstance(m, ItemStart) for m in seen):
                port.write(encode_message(Divert(0, 1), 1))
                sent = True
        assert fw.host_minor == 0 and [d.item_id for d in fw.diverted] == [0]
        assert Ack(1, AckStatus.OK) in seen
        assert not [m for m in seen if isinstance(m, Diverted)]
    finally:
        port.close()
        fw.stop()
