"""Open a model bundle folder: read ``bundle.yaml``, check its schema, its content hash and every file's sha256.

This is the runtime's only way in to a model: the pipeline calls :func:`load_bundle` at startup and passes the
resulting :class:`Bundle` to :func:`edge.backends.open_backend`. A bundle that does not match what it declares
is refused with a :class:`~edge.errors.BundleError` that says what is wrong; nothing is repaired or guessed.
Reads files only; never imports torch and never runs a model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from edge.bundles.manifest import MANIFEST_FILE, BundleManifest, ModelEntry, ModelFormat, Precision, manifest_from_dict
from edge.bundles.outputs import Role
from edge.contracts import InputContract
from edge.errors import BundleError
from edge.records import ModelRef

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks so large weights do not fill memory."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Bundle:
    """A verified bundle: its folder, manifest and the :class:`ModelRef` results cite."""

    root: Path
    manifest: BundleManifest
    model_ref: ModelRef

    @property
    def role(self) -> Role:
        return self.manifest.role

    @property
    def contract(self) -> InputContract:
        return self.manifest.input

    @property
    def forced(self) -> bool:
        """True when the bundle was built despite a failing parity check (log it; the operator should know)."""
        return self.manifest.forced

    def model(self, fmt: ModelFormat | str, precision: Precision | str) -> ModelEntry:
        """The model entry for a format and precision, or a BundleError listing what the bundle has."""
        fmt, precision = ModelFormat(fmt), Precision(precision)
        for entry in self.manifest.models:
            if entry.format is fmt and entry.precision is precision:
                return entry
        have = ", ".join(f"{e.format}/{e.precision}" for e in self.manifest.models)
        raise BundleError(f"{self.root}: no {fmt}/{precision} model in this bundle; it has {have}")

    def model_path(self, fmt: ModelFormat | str, precision: Precision | str) -> Path:
        """Absolute path of the file a backend opens for this format and precision."""
        return self.root / self.model(fmt, precision).path


def _read_manifest(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BundleError(f"{path}: no {MANIFEST_FILE} here; is this a bundle folder?") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot read: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BundleError(f"{path}: not valid YAML: {exc}") from exc


def load_bundle(path: Path | str, verify_hashes: bool = True) -> Bundle:
    """Load and verify a bundle from its folder (or its ``bundle.yaml``).

    Args:
        path: the bundle folder or its manifest file.
        verify_hashes: check every file's sha256 (reads all weights once; keep True outside tests of speed).

    Raises:
        BundleError: missing or unreadable manifest, schema violation, an edited manifest, a missing file, or a
            file whose size or sha256 differs from the manifest (tampered or truncated weights).
    """
    path = Path(path)
    root = path.parent if path.is_file() else path
    manifest_path = root / MANIFEST_FILE
    manifest = manifest_from_dict(_read_manifest(manifest_path), source=str(manifest_path))
    problems: list[str] = []
    for entry in manifest.files:
        file = root / entry.path
        if not file.is_file():
            problems.append(f"{file}: listed in {MANIFEST_FILE} but missing")
            continue
        size = file.stat().st_size
        if size != entry.bytes:
            problems.append(f"{file}: size {size} bytes, manifest says {entry.bytes}: the file was changed")
            continue
        if verify_hashes:
            actual = sha256_file(file)
            if actual != entry.sha256:
                problems.append(f"{file}: sha256 {actual[:12]}… does not match the manifest's "
                                f"{entry.sha256[:12]}…: the file was changed after the bundle was built")
    if problems:
        raise BundleError("refusing bundle " + str(root) + ":\n" + "\n".join(problems))
    ref = ModelRef(role=str(manifest.role), name=manifest.name, version=manifest.version,
                   sha256=manifest.content_sha256)
    return Bundle(root=root.resolve(), manifest=manifest, model_ref=ref)
