"""Library versions recorded in every bundle manifest (``toolchain``), for reproducing an export."""

from __future__ import annotations

import platform
from importlib import metadata

_PACKAGES = ("xray-edge", "torch", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf", "numpy")


def toolchain_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Installed versions of the export toolchain's packages (absent ones are left out)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out.update(extra or {})
    return out
