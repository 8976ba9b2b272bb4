"""Assemble a bundle folder: model files in sub-folders, ``bundle.yaml`` with hashes, parity and provenance.

Last step of ``edge-export``. Refuses to bundle models whose parity report failed, is missing, or does not
cover the exact files being bundled (matched by sha256), unless forced; a forced bundle says so in its
manifest (``forced: true``) and the runtime can see it. The folder is built under a temporary name and
renamed into place, then re-opened with the runtime's own loader as a final check.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from edge.bundles.loader import Bundle, load_bundle, sha256_file
from edge.bundles.manifest import (
    MANIFEST_FILE,
    BundleManifest,
    FileEntry,
    ModelEntry,
    ModelFormat,
    ParityReport,
    Precision,
    manifest_to_dict,
    seal,
)
from edge.errors import BundleError
from export.errors import ExportError, ParityFailed
from export.meta import ExportMeta
from export.parity import format_report
from export.versions import toolchain_versions

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BundleModel:
    """A model file to include, with its format and precision."""

    format: ModelFormat
    precision: Precision
    path: Path


def model_files(path: Path) -> list[Path]:
    """The file itself plus what it needs: an IR's ``.bin``, an ONNX file's external-data files."""
    if not path.is_file():
        raise ExportError(f"{path}: no such model file")
    if path.suffix == ".xml":
        bin_path = path.with_suffix(".bin")
        if not bin_path.is_file():
            raise ExportError(f"{path}: its weights {bin_path.name} are missing")
        return [path, bin_path]
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    extra: set[str] = set()
    for init in model.graph.initializer:
        for kv in init.external_data:
            if kv.key == "location":
                extra.add(kv.value)
    files = [path]
    for name in sorted(extra):
        f = path.parent / name
        if not f.is_file():
            raise ExportError(f"{path}: its external data file {name} is missing")
        files.append(f)
    return files


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
                toolchain_extra: dict[str, str] | None = None, overwrite: bool = False) -> Bundle:
    """Write the bundle and return it as the runtime loads it."""
    if not models:
        raise ExportError("a bundle needs at least one model file")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir}: exists and is not empty (pass --overwrite to replace it)")
    forced = _check_parity(parity, models, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}-", dir=out_dir.parent) as tmp:
        root = Path(tmp) / "bundle"
        root.mkdir()
        entries: list[ModelEntry] = []
        files: list[FileEntry] = []
        for m in models:
            sub = f"{m.format}_{m.precision}"
            (root / sub).mkdir(exist_ok=True)
            rels = []
            for f in model_files(m.path):
                shutil.copy2(f, root / sub / f.name)
                rel = f"{sub}/{f.name}"
                rels.append(rel)
                files.append(FileEntry(path=rel, sha256=sha256_file(root / rel), bytes=(root / rel).stat().st_size))
            entries.append(ModelEntry(format=m.format, precision=m.precision, path=rels[0], files=tuple(rels)))
        manifest = BundleManifest(
            name=name, version=version, role=meta.role,
            created_utc=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            input=meta.contract, outputs=meta.outputs, models=tuple(entries), files=tuple(files),
            thresholds=dict(meta.thresholds if thresholds is None else thresholds),
            normalisation=meta.normalisation,
            classes=meta.classes if classes is None else classes,
            training_data=training_data, notes=notes, toolchain=toolchain_versions(toolchain_extra),
            parity=parity, forced=forced,
        )
        manifest = seal(manifest)
        text = yaml.safe_dump(manifest_to_dict(manifest), sort_keys=False, allow_unicode=True, width=110)
        (root / MANIFEST_FILE).write_text(text, encoding="utf-8")
        try:
            load_bundle(root)
        except BundleError as exc:
            raise ExportError(f"the bundle just built does not load: {exc}") from exc
        if out_dir.exists():
            shutil.rmtree(out_dir)
        root.rename(out_dir)
    log.info("bundle written to %s", out_dir)
    return load_bundle(out_dir)


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
