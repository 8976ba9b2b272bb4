"""Fixtures for tests/publish: brokers and certificates (see publish_helpers)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from publish_helpers import broker, broker_factory, certs

__all__ = ["broker", "broker_factory", "certs"]
