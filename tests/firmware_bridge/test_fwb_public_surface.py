"""The package's public names, and the import rules the runtime depends on."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import firmware_bridge

REPO = Path(__file__).resolve().parents[2]


def test_exported_members() -> None:
    public = {name for name in dir(firmware_bridge)
              if not name.startswith("_") and not isinstance(getattr(firmware_bridge, name), types.ModuleType)}
    assert public == set(firmware_bridge.__all__)
    for name in set(firmware_bridge.__all__) - {"Opener"}:  # Opener is a type alias of Callable
        assert getattr(firmware_bridge, name).__module__.startswith("firmware_bridge"), name


def test_errors_share_the_edge_root() -> None:
    from edge.errors import EdgeError

    for name in ("TransportError", "FramingError", "CodecError", "HandshakeError", "CommandTimeout",
                 "CommandRejected"):
        assert issubclass(getattr(firmware_bridge, name), firmware_bridge.FirmwareError)
    assert issubclass(firmware_bridge.FirmwareError, EdgeError)


def test_importing_the_runtime_pieces_loads_neither_serial_nor_torch_nor_the_simulator() -> None:
    code = ("import sys, firmware_bridge, firmware_bridge.framing, firmware_bridge.codec, firmware_bridge.link;"
            "bad = [m for m in ('serial', 'torch', 'export', 'firmware_bridge.virtual', 'sim') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_framing_source_never_imports_serial() -> None:
    source = (REPO / "firmware_bridge" / "framing.py").read_text()
    assert "import serial" not in source and "from serial" not in source
