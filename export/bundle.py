"""Assemble a bundle folder from exported model files, with the export toolchain's parity policy.

Last step of ``edge-export``. Refuses to bundle models whose parity report failed, is missing, or does not
cover the exact files being bundled (matched by sha256), unless forced; a forced bundle says so in its
manifest (``forced: true``) and the runtime can see it. Writing the folder (layout, hashes, temporary name,
re-opening with the runtime's loader) is :func:`edge.bundles.writer.write_bundle`, which ``edge fit`` on the
box uses too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from edge.bundles.loader import Bundle, sha256_file
from edge.bundles.manifest import ModelFormat, ParityReport, Precision
from edge.bundles.writer import BundleContent, BundleModel, write_bundle
from edge.bundles.writer import model_files as _model_files
from edge.errors import BundleError
from export.errors import ExportError, ParityFailed
from export.meta import ExportMeta
from export.parity import format_report
from export.versions import toolchain_versions

__all__ = ["BundleModel", "bundle_models_from_files", "make_bundle", "model_files"]

log = logging.getLogger(__name__)


def model_files(path: Path) -> list[Path]:
    """The file itself plus what it needs: an IR's ``.bin``, an ONNX file's external-data files."""
    try:
        return _model_files(path)
    except BundleError as exc:
        raise ExportError(str(exc)) from exc


def _check_parity(parity: ParityReport | None, models: list[BundleModel], force: bool) -> bool:
    """Returns whether the bundle must be marked forced; raises when not allowed to force."""
    problems: list[str] = []
    if parity is None:
        problems.append("no parity report given (run `edge-export verify` first)")
    else:
        if not parity.passed:
            problems.append("the parity report failed:\n" + format_report(parity))
        checked = {e.sha256 for e in parity.entries if e.passed}
        problems.extend(
            f"{m.path} ({m.format}/{m.precision}) was not checked (or failed) in the parity report"
            for m in models if sha256_file(m.path) not in checked)
    if problems and not force:
        raise ParityFailed("refusing to bundle: " + "\n".join(problems) + "\nUse --force to bundle anyway "
                           "(the manifest will say forced: true).")
    for p in problems:
        log.warning("forced bundle: %s", p)
    return bool(problems)


def make_bundle(out_dir: Path, name: str, version: str, meta: ExportMeta, models: list[BundleModel],
                parity: ParityReport | None, force: bool = False, training_data: str = "", notes: str = "",
                thresholds: Mapping[str, float] | None = None, classes: tuple[str, ...] | None = None,
                toolchain_extra: dict[str, str] | None = None, overwrite: bool = False,
                threat_classes: Mapping[str, float] | None = None) -> Bundle:
    """Write the bundle and return it as the runtime loads it."""
    if not models:
        raise ExportError("a bundle needs at least one model file")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir}: exists and is not empty (pass --overwrite to replace it)")
    forced = _check_parity(parity, models, force)
    content = BundleContent(name=name, version=version, role=meta.role, contract=meta.contract,
                            outputs=meta.outputs,
                            thresholds=dict(meta.thresholds if thresholds is None else thresholds),
                            normalisation=meta.normalisation, classes=meta.classes if classes is None else classes,
                            training_data=training_data, notes=notes, threat_classes=dict(threat_classes or {}))
    try:
        return write_bundle(out_dir, content, models, parity, toolchain_versions(toolchain_extra), forced=forced,
                            overwrite=True)
    except BundleError as exc:
        raise ExportError(str(exc)) from exc


def bundle_models_from_files(paths: list[Path]) -> tuple[ExportMeta, list[BundleModel]]:
    """Read each file's metadata; all must share role, contract and outputs."""
    from export.meta import read_meta

    metas = [read_meta(p) for p in paths]
    base = replace(metas[0], precision=Precision.FP32)
    for p, m in zip(paths, metas, strict=True):
        if replace(m, precision=Precision.FP32) != base:
            raise ExportError(f"{p}: its metadata (role, contract, outputs, thresholds) differs from {paths[0]}")
    models = [BundleModel(ModelFormat.ONNX if p.suffix == ".onnx" else ModelFormat.OPENVINO, m.precision, p)
              for p, m in zip(paths, metas, strict=True)]
    return base, models
