"""The virtual scanner's timeline, translated and replayed by the virtual firmware over a pty to a real link."""

from __future__ import annotations

from collections.abc import Callable

from firmware_bridge.link import FirmwareLink, ReceivedEvent
from firmware_bridge.messages import Fault, FaultCode, FaultSeverity, FrameReady, Interlock, ItemEnd, ItemStart
from firmware_bridge.sim_adapter import from_sim_events
from firmware_bridge.virtual import VirtualFirmware
from sim import events


def sim_timeline() -> list[events.Event]:
    items = [events.ItemSpan("parcel-a", 120, 100.0), events.ItemSpan("bag-b", 200, 150.0)]
    return events.timeline(items, speed_mm_s=400.0, pitch_mm=0.8, frame_lines=64, counts_per_mm=8.0,
                           tick_period_s=0.05, lead_s=0.2, tail_s=0.1,
                           faults=[events.InjectedFault(0.3, events.FaultCode.INTERLOCK_OPEN, 0.1, "door 2")])


def test_translation_keeps_counts_items_and_frames() -> None:
    sim = sim_timeline()
    adapted = from_sim_events(sim)
    assert adapted.item_ids == {0: "parcel-a", 1: "bag-b"}
    msgs = [s.message for s in adapted.scheduled]
    assert [s.at_s for s in adapted.scheduled] == sorted(s.at_s for s in adapted.scheduled)
    sim_starts = [e for e in sim if isinstance(e, events.ItemStart)]
    assert [(m.item_id, m.encoder_count) for m in msgs if isinstance(m, ItemStart)] == [
        (0, sim_starts[0].encoder), (1, sim_starts[1].encoder)]
    sim_frames = [e for e in sim if isinstance(e, events.FrameReady)]
    frames = [m for m in msgs if isinstance(m, FrameReady)]
    assert [f.lines for f in frames] == [e.end_line - e.first_line for e in sim_frames]
    assert sum(f.lines for f in frames) == 120 + 200
    assert [f.frame_id for f in frames] == list(range(len(frames)))
    faults = [m for m in msgs if isinstance(m, Fault)]
    assert [(f.code, f.severity, f.active, f.detail) for f in faults] == [
        (FaultCode.INTERLOCK_OPEN, FaultSeverity.CRITICAL, True, "door 2"),
        (FaultCode.INTERLOCK_OPEN, FaultSeverity.CRITICAL, False, "door 2")]
    assert [m.closed for m in msgs if isinstance(m, Interlock)] == [False, True]


def test_long_fault_text_is_cut_on_a_character_boundary() -> None:
    sim = [events.fault_event(0.0, 0, events.FaultCode.BELT_JAM, True, "é" * 40)]
    (fault,) = [s.message for s in from_sim_events(sim).scheduled]
    assert isinstance(fault, Fault) and fault.detail == "é" * 32


def test_sim_timeline_replayed_over_a_pty_reaches_the_link(firmware: Callable[..., VirtualFirmware],
                                                            link: Callable[..., FirmwareLink],
                                                            wait: Callable[..., None]) -> None:
    adapted = from_sim_events(sim_timeline(), start_s=0.2)
    fw = firmware(adapted.scheduled)
    lk = link(fw.port)
    got: list[ReceivedEvent] = []

    def done() -> bool:
        while not lk.events.empty():
            got.append(lk.events.get_nowait())
        return any(isinstance(e.event, ItemEnd) and e.event.item_id == 1 for e in got)

    wait(done, timeout_s=5.0, what="the second item's end")
    expected = [s.message for s in adapted.scheduled if s.at_s <= fw.elapsed_s()]
    delivered = [e.event for e in got]
    assert [m for m in delivered if isinstance(m, ItemStart | ItemEnd)] == [
        m for m in expected if isinstance(m, ItemStart | ItemEnd)]
    sim_end = next(e for e in sim_timeline() if isinstance(e, events.ItemEnd) and e.item_id == "bag-b")
    last = next(e for e in got if isinstance(e.event, ItemEnd) and e.event.item_id == 1)
    assert last.position_mm == sim_end.encoder / 8.0
