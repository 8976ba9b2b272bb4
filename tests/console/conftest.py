"""Fixtures for the console tests: a private Mosquitto per module, the console's database (SQLite or
PostgreSQL, a unique table prefix per run, dropped afterwards), the console as a real process, one headless
Chromium per module."""

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "publish"))

pytest.importorskip("starlette", reason="the console extra is not installed: pip install 'xray-edge[console]'")

from console_helpers import Database, free_port, make_database
from publish_helpers import Broker


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Mosquitto of this module's own (persistence on, so a restart keeps sessions and queued messages)."""
    b = Broker(tmp_path_factory.mktemp("broker"), free_port())
    b.start()
    yield b
    b.stop(signal.SIGKILL)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = make_database("sqlite", tmp_path)
    yield db


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    db = make_database(request.param, tmp_path_factory.mktemp("db"))
    yield db
    db.drop()
