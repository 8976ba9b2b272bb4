"""Write a bundle folder: model files in sub-folders, ``bundle.yaml`` with hashes, parity and provenance.

The one bundle writer, shared by the export toolchain (``edge-export bundle``, the training recipes) and by
``edge fit`` on the box, so both produce byte-for-byte the same layout that :func:`load_bundle` verifies.
Policy (whether a failed parity report may be bundled at all) belongs to the callers; this module records
what it is given (``forced``) and refuses only what would make an unloadable bundle. The folder is built under
a temporary name next to ``out_dir``, re-opened with the runtime's own loader, then renamed into place, so a
crash never leaves a half bundle. Never imports torch or ``export/``; ``onnx`` is imported only to list an
ONNX file's external-data files.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import yaml

from edge.bundles.loader import Bundle, load_bundle, sha256_file
from edge.bundles.manifest import (
    MANIFEST_FILE,
    BundleManifest,
    DetectorLayout,
    DetectorRef,
    FileEntry,
    ModelEntry,
    ModelFormat,
    OutputSpec,
    ParityReport,
    Precision,
    ScoreNormalisation,
    manifest_to_dict,
    seal,
)
from edge.bundles.outputs import Role
from edge.contracts import InputContract
from edge.errors import BundleError

log = logging.getLogger(__name__)

RUNTIME_PACKAGES = ("xray-edge", "onnx", "onnxruntime", "openvino", "numpy")
"""Packages whose versions a bundle written on the box records (the export toolchain adds torch, nncf …)."""


@dataclass(frozen=True, slots=True)
class BundleModel:
    """A model file to include, with its format and precision."""

    format: ModelFormat
    precision: Precision
    path: Path


@dataclass(frozen=True, slots=True)
class BundleContent:
    """What a bundle's manifest states besides its files: role, contract, outputs and provenance."""

    name: str
    version: str
    role: Role
    contract: InputContract
    outputs: tuple[OutputSpec, ...]
    thresholds: Mapping[str, float]
    normalisation: ScoreNormalisation
    classes: tuple[str, ...] = ()
    training_data: str = ""
    notes: str = ""
    threat_classes: Mapping[str, float] = field(default_factory=dict)
    """Detector classes that alarm by themselves and their score thresholds (bundle.yaml ``threat_classes``)."""
    item_detector: DetectorRef | None = None
    """The detector ``thresholds["item"]`` was measured through (bundle.yaml ``item_detector``)."""
    layout: DetectorLayout | None = None
    """An imported detector's output layout (bundle.yaml ``layout``); None for native outputs."""


def package_versions(packages: tuple[str, ...] = RUNTIME_PACKAGES,
                     extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Python and the installed versions of ``packages`` (absent ones are left out), for ``toolchain``."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out.update(extra or {})
    return out


def model_files(path: Path) -> list[Path]:
    """The file itself plus what it needs: an IR's ``.bin``, an ONNX file's external-data files.

    Raises:
        BundleError: the file or one of the files it needs is missing.
    """
    if not path.is_file():
        raise BundleError(f"{path}: no such model file")
    if path.suffix == ".xml":
        bin_path = path.with_suffix(".bin")
        if not bin_path.is_file():
            raise BundleError(f"{path}: its weights {bin_path.name} are missing")
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
            raise BundleError(f"{path}: its external data file {name} is missing")
        files.append(f)
    return files


def _now_utc() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write_bundle(out_dir: Path, content: BundleContent, models: list[BundleModel], parity: ParityReport | None,
                 toolchain: Mapping[str, str], forced: bool = False, overwrite: bool = False) -> Bundle:
    """Write the bundle to ``out_dir`` and return it as the runtime loads it.

    Raises:
        BundleError: no models, ``out_dir`` exists and is not empty (unless ``overwrite``), a model file is
            missing, or the bundle just built does not load (the message says why).
    """
    if not models:
        raise BundleError("a bundle needs at least one model file")
    if out_dir.exists() and not out_dir.is_dir():
        raise BundleError(f"{out_dir}: exists and is not a folder")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise BundleError(f"{out_dir}: exists and is not empty (pass --overwrite/--force to replace it)")
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
            name=content.name, version=content.version, role=content.role, created_utc=_now_utc(),
            input=content.contract, outputs=content.outputs, models=tuple(entries), files=tuple(files),
            thresholds=dict(content.thresholds), normalisation=content.normalisation, classes=content.classes,
            threat_classes=dict(content.threat_classes),
            training_data=content.training_data, notes=content.notes, toolchain=dict(toolchain),
            parity=parity, forced=forced, item_detector=content.item_detector,
            layout=content.layout,
        )
        _install(root, seal(manifest), out_dir, "the bundle just built")
    log.info("bundle written to %s", out_dir)
    return load_bundle(out_dir)


def _install(root: Path, manifest: BundleManifest, out_dir: Path, what: str) -> None:
    """Write the sealed manifest into the staged folder ``root``, load it as the runtime would, then move it
    to ``out_dir`` (replacing it), so that only a bundle that loads ever appears there."""
    text = yaml.safe_dump(manifest_to_dict(manifest), sort_keys=False, allow_unicode=True, width=110)
    (root / MANIFEST_FILE).write_text(text, encoding="utf-8")
    try:
        load_bundle(root)
    except BundleError as exc:
        raise BundleError(f"{what} does not load: {exc}") from exc
    if out_dir.exists():
        shutil.rmtree(out_dir)
    root.rename(out_dir)


def refuse_taken(out_dir: Path, own_root: Path, overwrite: bool) -> None:
    """BundleError when writing a new version of the bundle at ``own_root`` to ``out_dir`` would replace
    something else: a file, or a non-empty folder that is not the bundle itself (unless ``overwrite``)."""
    same = out_dir.resolve() == own_root.resolve()
    if out_dir.exists() and not same and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise BundleError(f"{out_dir}: exists and is not empty (pass --overwrite to replace it)")


def rewrite_manifest(bundle: Bundle, out_dir: Path, *, thresholds: Mapping[str, float], version: str, notes: str,
                     normalisation: ScoreNormalisation | None = None, training_data: str | None = None,
                     overwrite: bool = False, item_detector: DetectorRef | None = None,
                     threat_classes: Mapping[str, float] | None = None) -> Bundle:
    """A copy of ``bundle`` whose manifest states new ``thresholds``, ``version``, ``notes`` (and normalisation,
    training data, a detector's threat classes).

    For what is decided after the export (an operating point measured by ``edge eval --write-item-threshold``,
    a normalisation that stops saturating): the model files, their hashes and the parity report are the
    bundle's own, untouched; only ``bundle.yaml`` is rewritten and re-sealed. ``out_dir`` may be the bundle's
    own folder (replaced atomically, as :func:`write_bundle` does).

    Raises:
        BundleError: ``out_dir`` exists, is not the bundle's folder and is not empty (unless ``overwrite``), or
            the rewritten bundle does not load.
    """
    refuse_taken(out_dir, bundle.root, overwrite)
    # A new item threshold names the detector it was measured through; otherwise the bundle's record stays.
    manifest = seal(replace(bundle.manifest, thresholds=dict(thresholds), version=version, notes=notes,
                            item_detector=item_detector or bundle.manifest.item_detector,
                            normalisation=normalisation or bundle.manifest.normalisation,
                            training_data=bundle.manifest.training_data if training_data is None else training_data,
                            threat_classes=bundle.manifest.threat_classes if threat_classes is None
                            else dict(threat_classes),
                            created_utc=_now_utc(), content_sha256=""))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}-", dir=out_dir.parent) as tmp:
        root = Path(tmp) / "bundle"
        root.mkdir()
        for f in manifest.files:
            (root / f.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(bundle.root / f.path, root / f.path)
        _install(root, manifest, out_dir, "the rewritten bundle")
    log.info("bundle manifest rewritten to %s", out_dir)
    return load_bundle(out_dir)
