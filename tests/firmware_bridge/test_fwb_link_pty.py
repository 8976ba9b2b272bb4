"""The host link against the virtual firmware over real ptys: handshake, events, commands, silence, garbage."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_bridge.errors import CommandRejected, CommandTimeout, TransportError
from firmware_bridge.history import LinkHistory, LinkState, LinkStatus
from firmware_bridge.link import Direction, FirmwareLink, LinkSettings, ReceivedEvent
from firmware_bridge.messages import (
    PROTOCOL_MINOR,
    AckStatus,
    BeltControl,
    BeltStatus,
    Divert,
    Fault,
    FaultCode,
    FaultSeverity,
    Hello,
    ItemEnd,
    ItemStart,
    Lamp,
    LampCommand,
    LampPattern,
    Message,
    XrayState,
)
from firmware_bridge.transport import Transport, serial_opener
from firmware_bridge.virtual import Scheduled, VirtualFirmware

MakeFw = Callable[..., VirtualFirmware]
MakeLink = Callable[..., FirmwareLink]
Wait = Callable[..., None]


def drain(link: FirmwareLink) -> list[ReceivedEvent]:
    out = []
    while not link.events.empty():
        out.append(link.events.get_nowait())
    return out


def states(link: FirmwareLink) -> list[LinkState]:
    return link.history.records()


def test_handshake_then_events_arrive_in_order_with_belt_positions(firmware: MakeFw, link: MakeLink,
                                                                    wait: Wait) -> None:
    timeline = [Scheduled(0.15, XrayState(True, 0)), Scheduled(0.2, BeltStatus(1600, 1600, True)),
                Scheduled(0.25, ItemStart(7, 2000, 0)), Scheduled(0.3, ItemEnd(7, 5204, 0))]
    fw = firmware(timeline)
    lk = link(fw.port)
    got: list[ReceivedEvent] = []
    def four() -> bool:
        got.extend(drain(lk))
        return len(got) >= 4

    wait(four, what="four events")
    assert [e.event for e in got] == [s.message for s in timeline]
    # FAST uses 8 counts per mm.
    assert [e.position_mm for e in got] == [0.0, 200.0, 250.0, 650.5]
    assert all(a.received_at <= b.received_at for a, b in itertools.pairwise(got))
    first = states(lk)[0]
    assert first.status is LinkStatus.UP and first.gap_s is None and "virtual-firmware" in first.reason
    assert fw.host_hellos >= 1
    wait(lambda: fw.host_heartbeats >= 3, what="host heartbeats at the firmware")


def test_link_starts_before_the_port_exists(tmp_path: Path, link: MakeLink, firmware: MakeFw,
                                            wait: Wait) -> None:
    lk = link(tmp_path / "ttyVFW0")  # the firmware fixture will create this path
    time.sleep(0.2)
    assert not lk.is_up and lk.stats().open_failures >= 2
    firmware()
    assert lk.wait_until_up(2.0)


def test_command_is_acknowledged_and_carried_out(firmware: MakeFw, link: MakeLink) -> None:
    fw = firmware()
    lk = link(fw.port)
    assert lk.wait_until_up(2.0)
    ack = lk.send_command(Divert(item_id=42, gate=1))
    assert ack.status is AckStatus.OK
    lk.send_command(BeltControl(run=False))
    assert [c.command for c in fw.commands] == [Divert(42, 1), BeltControl(False)]
    assert fw.commands[0].seq == ack.acked_seq
    assert fw.belt_running is False


def test_unanswered_command_is_retried_until_acknowledged(firmware: MakeFw, link: MakeLink) -> None:
    fw = firmware()
    lk = link(fw.port)
    assert lk.wait_until_up(2.0)
    fw.ignore_commands = 2
    lk.send_command(LampCommand(Lamp.BEACON, LampPattern.FLASH, 3000))
    assert lk.stats().command_retries == 2
    assert [c.command for c in fw.commands] == [LampCommand(Lamp.BEACON, LampPattern.FLASH, 3000)]


def test_lost_ack_retry_is_not_carried_out_twice(firmware: MakeFw, link: MakeLink) -> None:
    fw = firmware()
    lk = link(fw.port)
    assert lk.wait_until_up(2.0)
    fw.drop_acks = 1
    lk.send_command(Divert(9, 2))
    assert fw.duplicates >= 1
    assert [c.command for c in fw.commands] == [Divert(9, 2)]


def test_command_times_out_after_retries(firmware: MakeFw, link: MakeLink, fast: LinkSettings) -> None:
    fw = firmware()
    lk = link(fw.port)
    assert lk.wait_until_up(2.0)
    fw.acks_enabled = False
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"not acknowledged within 0\.5 s"):
        lk.send_command(Divert(1, 1))
    took = time.monotonic() - t0
    assert fast.command_timeout_s <= took < fast.command_timeout_s + 0.5
    stats = lk.stats()
    assert stats.commands_timed_out == 1
    assert stats.command_retries >= int(fast.command_timeout_s / fast.command_retry_s) - 2


def test_rejected_command_raises_with_status(firmware: MakeFw, link: MakeLink) -> None:
    fw = firmware()
    lk = link(fw.port)
    assert lk.wait_until_up(2.0)
    fw.ack_status = AckStatus.UNKNOWN_ITEM
    with pytest.raises(CommandRejected, match="UNKNOWN_ITEM") as info:
        lk.send_command(Divert(404, 1))
    assert info.value.status == AckStatus.UNKNOWN_ITEM
    assert fw.commands == []


def test_command_while_port_is_missing_times_out_saying_so(tmp_path: Path, link: MakeLink) -> None:
    lk = link(tmp_path / "absent")
    with pytest.raises(CommandTimeout, match="0 attempts, link down"):
        lk.send_command(BeltControl(True), timeout_s=0.2)


def test_command_waits_through_a_cable_pull(firmware: MakeFw, link: MakeLink, wait: Wait) -> None:
    fw = firmware()
    lk = link(fw.port)
    assert lk.wait_until_up(2.0)
    fw.pull_cable()
    wait(lambda: not lk.is_up, what="link down")
    future = lk.command(Divert(5, 1), timeout_s=3.0)
    time.sleep(0.15)
    assert not future.done()
    fw.plug_cable()
    assert future.result(timeout=5.0).status is AckStatus.OK
    assert [c.command for c in fw.commands] == [Divert(5, 1)]


def test_silent_firmware_takes_the_link_down_backdated_then_up(firmware: MakeFw, link: MakeLink,
                                                              fast: LinkSettings, wait: Wait) -> None:
    fw = firmware()
    lk = link(fw.port)
    assert lk.wait_until_up(2.0)
    time.sleep(0.1)
    muted_at = time.monotonic()
    fw.set_muted(True)
    wait(lambda: not lk.is_up, what="link down after silence")
    noticed = time.monotonic()
    down = states(lk)[-1]
    assert down.status is LinkStatus.DOWN and "no valid frame for 0.3 s" in down.reason
    # Blind since the last frame (within a heartbeat of muting), not since the timeout fired.
    assert muted_at - fast.heartbeat_s - 0.05 <= down.since <= muted_at + 0.02
    assert noticed - down.since >= fast.link_timeout_s
    fw.set_muted(False)
    wait(lambda: lk.is_up, what="link up again")
    up = states(lk)[-1]
    assert up.status is LinkStatus.UP and up.gap_s is not None and up.gap_s >= fast.link_timeout_s


class _Witness(LinkHistory):
    """A link history that notes, at each transition it is handed, what the link's ``is_up`` said then."""

    def __init__(self) -> None:
        super().__init__()
        self.link: FirmwareLink | None = None
        self.up_when_recorded: list[tuple[LinkStatus, bool]] = []

    def record(self, state: LinkState) -> None:
        assert self.link is not None
        self.up_when_recorded.append((state.status, self.link.is_up))
        super().record(state)


def test_each_transition_is_in_the_history_before_is_up_shows_it(firmware: MakeFw, fast: LinkSettings,
                                                                 wait: Wait) -> None:
    """Whoever polls ``is_up`` and then reads the history (the service does, to mark items UNSCREENED) must
    find the transition there: the history is written first, then ``is_up`` flips (it once flipped first, and
    a reader saw the link down with an UP last in its history)."""
    fw = firmware()
    witness = _Witness()
    lk = FirmwareLink(serial_opener(str(fw.port)), fast, history=witness)
    witness.link = lk
    try:
        lk.start()
        assert lk.wait_until_up(2.0)
        fw.set_muted(True)
        wait(lambda: not lk.is_up, what="link down after silence")
        assert states(lk)[-1].status is LinkStatus.DOWN
        fw.set_muted(False)
        wait(lambda: lk.is_up, what="link up again")
        assert states(lk)[-1].status is LinkStatus.UP
    finally:
        lk.close()
    seen = witness.up_when_recorded
    assert [status for status, _ in seen[:3]] == [LinkStatus.UP, LinkStatus.DOWN, LinkStatus.UP]
    # recording an UP, the link still read down; recording a DOWN, it still read up
    assert all(up_then == (status is LinkStatus.DOWN) for status, up_then in seen)


def test_garbage_on_the_wire_is_skipped_without_dropping_the_link(firmware: MakeFw, link: MakeLink,
                                                                   wait: Wait,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="firmware_bridge.link")
    fw = firmware()
    lk = link(fw.port)
    assert lk.wait_until_up(2.0)
    fw.write_raw(b"\x00\x05garbage\x00\xff\xfe\x13\x11" + bytes(range(1, 250)) + b"\x00half a fr")
    fault = fw.raise_fault(FaultCode.BELT_JAM, FaultSeverity.CRITICAL, "jam at tunnel exit")
    got: list[ReceivedEvent] = []
    def fault_arrived() -> bool:
        got.extend(drain(lk))
        return any(isinstance(e.event, Fault) for e in got)

    wait(fault_arrived, what="the fault")
    assert [e.event for e in got if isinstance(e.event, Fault)] == [fault]
    stats = lk.stats()
    assert stats.frames_rejected >= 2 and stats.bytes_dropped > 250
    assert [s.status for s in states(lk)] == [LinkStatus.UP]
    warned = [r.getMessage() for r in caplog.records if "garbled segment" in r.getMessage()]
    assert len(warned) == 1 and "bytes dropped this session" in warned[0]  # logged once, not per segment


def test_incompatible_protocol_keeps_the_link_down(firmware: MakeFw, link: MakeLink, wait: Wait) -> None:
    fw = firmware(protocol_major=2, software="future-fw 9")
    lk = link(fw.port)
    wait(lambda: lk.stats().last_error is not None and "protocol" in str(lk.stats().last_error),
         what="handshake refusal")
    assert f"'future-fw 9' speaks protocol 2.{PROTOCOL_MINOR}; expected 1.x" in str(lk.stats().last_error)
    assert not lk.is_up and states(lk) == []
    t = time.monotonic()
    assert lk.history.down_between(t - 1.0, t)


def test_trace_hooks_see_bytes_and_messages_both_ways(firmware: MakeFw, link: MakeLink, wait: Wait) -> None:
    fw = firmware()
    seen_bytes: list[tuple[Direction, bytes]] = []
    seen_msgs: list[tuple[Direction, int, Message]] = []
    lk = link(fw.port, on_bytes=lambda d, b: seen_bytes.append((d, b)),
              on_message=lambda d, s, m: seen_msgs.append((d, s, m)))
    assert lk.wait_until_up(2.0)
    lk.send_command(Divert(3, 0))
    tx_hello = [m for d, _, m in seen_msgs if d is Direction.TX and isinstance(m, Hello)]
    rx_hello = [m for d, _, m in seen_msgs if d is Direction.RX and isinstance(m, Hello)]
    assert tx_hello and tx_hello[0].software == "xray-edge"
    assert rx_hello and rx_hello[0].software == "virtual-firmware 1.0"
    assert any(d is Direction.TX and m == Divert(3, 0) for d, _, m in seen_msgs)
    assert {d for d, _ in seen_bytes} == {Direction.RX, Direction.TX}
    assert all(isinstance(b, bytes) and b for _, b in seen_bytes)


def test_consumer_callback_failure_does_not_kill_the_link(firmware: MakeFw, link: MakeLink,
                                                          wait: Wait) -> None:
    fw = firmware()
    received: list[ReceivedEvent] = []

    def flaky(event: ReceivedEvent) -> None:
        received.append(event)
        if len(received) == 1:
            raise RuntimeError("consumer bug")

    lk = link(fw.port, on_event=flaky)
    assert lk.wait_until_up(2.0)
    fw.send(XrayState(True, 1))
    fw.send(XrayState(False, 2))
    wait(lambda: len(received) == 2, what="both events despite the failing callback")
    assert lk.is_up


def test_reopen_backoff_doubles_up_to_the_maximum() -> None:
    attempts: list[float] = []

    def missing_port() -> Transport:
        attempts.append(time.monotonic())
        raise TransportError("cannot open serial port /dev/ttyUSB9: No such file or directory")

    settings = LinkSettings(reconnect_min_s=0.02, reconnect_max_s=0.16, poll_s=0.002)
    lk = FirmwareLink(missing_port, settings).start()
    time.sleep(0.75)
    lk.close()
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    expected = [0.02, 0.04, 0.08, 0.16, 0.16]
    assert len(gaps) >= len(expected)
    for gap, want in zip(gaps, expected, strict=False):
        assert want * 0.9 <= gap <= want + 0.1, (gaps, expected)
    assert max(gaps) <= 0.16 + 0.1
    assert lk.stats().open_failures == len(attempts)
    assert "No such file" in str(lk.stats().last_error)


def test_failing_trace_hooks_are_logged_not_taken_for_a_link_failure(firmware: MakeFw, link: MakeLink,
                                                                     wait: Wait) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("trace bug")

    fw = firmware()
    received: list[ReceivedEvent] = []
    lk = link(fw.port, on_bytes=broken, on_message=broken, on_event=received.append)
    assert lk.wait_until_up(2.0)
    fw.send(XrayState(True, 1))
    wait(lambda: len(received) == 1, what="the event despite the failing hooks")
    lk.send_command(Divert(4, 0))  # the command path calls the message hook too
    assert lk.is_up and [s.status for s in states(lk)] == [LinkStatus.UP]


def test_an_unexpected_error_takes_the_link_down_then_it_reconnects(firmware: MakeFw, link: MakeLink,
                                                                     wait: Wait) -> None:
    """A bug inside the session (any exception) must end the session like a dead port: the link goes DOWN in
    the history, so items scanned meanwhile are UNSCREENED, and it comes back; it once ended the link's thread
    with ``is_up`` still True and no DOWN recorded."""
    fw = firmware()
    lk = link(fw.port)
    assert lk.wait_until_up(2.0)
    handle = lk._handle
    calls: list[int] = []

    def bug_once(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("bug in a message handler")
        handle(*args, **kwargs)  # type: ignore[arg-type]

    lk._handle = bug_once  # type: ignore[method-assign]
    fw.send(XrayState(True, 1))
    wait(lambda: any(s.status is LinkStatus.DOWN for s in states(lk)), what="the link down after the bug")
    down = next(s for s in states(lk) if s.status is LinkStatus.DOWN)
    assert "link error: KeyError" in down.reason
    wait(lambda: lk.is_up, what="the link up again")
    assert lk.history.down_between(down.since, down.since + 0.001)


def test_hello_software_name_is_cut_to_32_bytes_of_utf8(firmware: MakeFw, link: MakeLink) -> None:
    fw = firmware()
    seen: list[Message] = []
    lk = link(fw.port, software="é" * 40, on_message=lambda d, s, m: seen.append(m))
    assert lk.wait_until_up(2.0)  # 80 bytes cut by characters would not encode, and the link never came up
    hello = next(m for m in seen if isinstance(m, Hello) and m.software.startswith("é"))
    assert hello.software == "é" * 16
