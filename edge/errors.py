"""The runtime's exception tree: one root, one subclass per concern.

Adapters translate third-party exceptions (OpenVINO, ONNX Runtime, pyserial, paho) into these at their
boundary, so the pipeline decides fail-safe behaviour on our types only::

    EdgeError
    ├── ConfigError          config file unreadable or invalid (carries every problem found, with lines)
    ├── CalibrationError     calibration file missing, stale or inconsistent
    ├── BundleError          model bundle missing, tampered (hash mismatch) or incompatible
    ├── BackendError         inference backend failed to load or to run
    ├── FrameError           a frame or item is corrupt, truncated or of the wrong shape
    ├── SourceError          a frame source stalled or vanished
    ├── PublishError         the outbox or broker connection failed in a way the caller must see
    ├── ItemFailed           a stage's verdict on one item: UNSCREENED with this reason (image quality, ...)
    └── FirmwareError        (``firmware_bridge.errors``) transport, codec, link and command errors of the serial link
"""

from __future__ import annotations

from edge.records import UnscreenedReason


class EdgeError(Exception):
    """Root of every error the runtime raises on purpose."""


class ConfigError(EdgeError):
    """The configuration is invalid; ``problems`` holds one ``file:line: key: message`` line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class CalibrationError(EdgeError):
    """A calibration needed by the pipeline is missing or unusable."""


class BundleError(EdgeError):
    """A model bundle cannot be used (bad schema, hash mismatch, missing file, unmet input contract)."""


class BackendError(EdgeError):
    """An inference backend failed to load a model or to run it."""


class FrameError(EdgeError):
    """A frame or item is corrupt or does not match what the source promised."""


class SourceError(EdgeError):
    """A frame source stalled, vanished or was closed."""


class PublishError(EdgeError):
    """Publishing failed in a way the caller must handle (the outbox itself, not a broker outage)."""


class ItemFailed(EdgeError):
    """Raised by a stage to make the item UNSCREENED with a specific reason (any stage may raise it; it lives here
    rather than in the decide stage so that no stage imports another)."""

    def __init__(self, reason: UnscreenedReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
