"""Library versions recorded in every bundle manifest (``toolchain``), for reproducing an export."""

from __future__ import annotations

from edge.bundles.writer import package_versions

_PACKAGES = ("xray-edge", "torch", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf", "numpy")


def toolchain_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Installed versions of the export toolchain's packages (absent ones are left out)."""
    return package_versions(_PACKAGES, extra)
