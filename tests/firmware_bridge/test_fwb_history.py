"""LinkHistory: the interval question the pipeline asks, including its fail-safe edges."""

from __future__ import annotations

import pytest

from firmware_bridge.history import LinkHistory, LinkState, LinkStatus


def state(status: LinkStatus, t: float) -> LinkState:
    return LinkState(status, t, 1e9 + t, "test")


def history(*transitions: tuple[LinkStatus, float], max_records: int = 100) -> LinkHistory:
    h = LinkHistory(max_records=max_records)
    for status, t in transitions:
        h.record(state(status, t))
    return h


UP, DOWN = LinkStatus.UP, LinkStatus.DOWN


def test_never_up_counts_as_down() -> None:
    assert LinkHistory().down_between(0.0, 1.0)
    assert LinkHistory().current() is None


def test_before_first_up_counts_as_down() -> None:
    h = history((UP, 10.0))
    assert h.down_between(9.0, 11.0)
    assert h.down_between(9.0, 9.5)
    assert not h.down_between(10.0, 20.0)


@pytest.mark.parametrize(("t0", "t1", "down"), [
    (11.0, 14.0, False),   # wholly inside the first up period
    (11.0, 15.0, True),    # ends exactly when it went down
    (14.0, 16.0, True),    # straddles the drop
    (15.5, 16.5, True),    # inside the gap
    (16.5, 18.0, True),    # straddles the recovery
    (17.0, 30.0, False),   # wholly after the recovery (starts at the UP instant)
    (12.0, 25.0, True),    # spans the whole gap
])
def test_intervals_around_one_gap(t0: float, t1: float, down: bool) -> None:
    h = history((UP, 10.0), (DOWN, 15.0), (UP, 17.0))
    assert h.down_between(t0, t1) is down


def test_currently_down_covers_the_future() -> None:
    h = history((UP, 10.0), (DOWN, 15.0))
    assert h.down_between(16.0, 100.0)
    assert not h.down_between(11.0, 14.9)


def test_forgotten_past_counts_as_down() -> None:
    h = history((UP, 1.0), (DOWN, 2.0), (UP, 3.0), (DOWN, 4.0), (UP, 5.0), max_records=2)
    assert [r.since for r in h.records()] == [4.0, 5.0]
    assert h.down_between(3.1, 3.2)  # truly up then, but no longer known: fail-safe
    assert not h.down_between(5.5, 6.0)


def test_reversed_interval_is_an_error() -> None:
    with pytest.raises(ValueError, match="before t0"):
        LinkHistory().down_between(2.0, 1.0)


def test_backdated_down_never_precedes_the_up_it_ends() -> None:
    h = history((UP, 10.0), (DOWN, 9.0))
    assert [r.since for r in h.records()] == [10.0, 10.0]
    assert h.down_between(10.5, 11.0)
