"""An actions store that cannot write is a health problem of its own (the box says so, by component), and the
decision is refused with ``PublishError`` so the pipeline keeps it and asks again; a runtime without actions
does not check the component."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from edge.actions import Actions
from edge.actions.store import ActionStore
from edge.config.actions import ActionsConfig, DivertConfig
from edge.errors import PublishError
from edge.health import Component, assess
from edge.publish.health import StatusState
from edge.records import Decision, Verdict
from edge.runtime import Runtime
from firmware_bridge.link import FirmwareLink
from firmware_bridge.transport import serial_opener


def _runtime(actions: object | None) -> Runtime:
    fake = SimpleNamespace(pipeline=SimpleNamespace(problems=lambda: []), link=None,
                           models=SimpleNamespace(current=SimpleNamespace(degraded=None)), problems=[], mqtt=None,
                           audit=SimpleNamespace(problem=None), actions=actions)
    return cast(Runtime, fake)


def test_an_actions_store_that_cannot_write_degrades_the_box_and_refuses_the_decision(tmp_path: Path) -> None:
    store = ActionStore(tmp_path / "actions.sqlite3")
    actions = Actions(ActionsConfig(divert=DivertConfig(eye_to_exit_mm=800, distance_mm=1500)),
                      FirmwareLink(serial_opener(str(tmp_path / "no-port"))), store, "s", 10.0)
    try:
        assert assess(_runtime(actions)).state is StatusState.ONLINE
        assert Component.ACTIONS in assess(_runtime(actions)).checked
        store.close()  # the database is gone from under the sink (as a failing disk leaves it)
        now = time.time()
        decision = Decision("lane1-4", "lane1", Verdict.ALARM, None, "", (), None, now, now, now, 1.0, 100, 500,
                            item_uid=uuid.uuid4().hex)
        with pytest.raises(PublishError, match="actions not stored"):
            actions.publish(decision)
        health = assess(_runtime(actions))
        assert health.state is StatusState.DEGRADED
        assert [p.component for p in health.problems] == [Component.ACTIONS]
        assert "actions store" in health.text and "cannot write" in health.text
    finally:
        actions.close(0)
    assert Component.ACTIONS not in assess(_runtime(None)).checked
