"""Library versions recorded in every bundle manifest (``toolchain``), for reproducing an export, and the range of
each inference library the bundle's parity is taken to hold for (``openvino.tested``, ``onnxruntime.tested``: the
release series verified on), which the runtime checks before it screens (``edge.bundles.runtimes``)."""

from __future__ import annotations

from edge.bundles.runtimes import tested_ranges
from edge.bundles.writer import package_versions

_PACKAGES = ("xray-edge", "torch", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf", "numpy")


def toolchain_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Installed versions of the export toolchain's packages (absent ones are left out), the tested range of each
    inference library among them, then ``extra``."""
    versions = package_versions(_PACKAGES)
    versions.update(tested_ranges(versions))
    versions.update(extra or {})
    return versions
