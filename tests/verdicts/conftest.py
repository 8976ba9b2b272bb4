"""Fixtures for tests/verdicts: real Mosquitto brokers (tests/publish/publish_helpers) and the verdict helpers."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "publish"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from publish_helpers import broker, broker_factory  # noqa: E402

__all__ = ["broker", "broker_factory"]
