"""Open a model bundle folder: read ``bundle.yaml``, check its schema, its content hash and every file's sha256.

This is the runtime's only way in to a model: the pipeline calls :func:`load_bundle` at startup and passes the
resulting :class:`Bundle` to :func:`edge.backends.open_backend`. A bundle that does not match what it declares
is refused with a :class:`~edge.errors.BundleError` that says what is wrong; nothing is repaired or guessed.
Reads files only; never imports torch and never runs a model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

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


_NO_FILES: Mapping[str, bytes] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Bundle:
    """A verified bundle: its folder, manifest and the :class:`ModelRef` results cite.

    ``files`` maps each relative path (``bundle.yaml`` and every listed file) to the bytes that were verified,
    when the bundle was read into memory (``load_bundle(..., in_memory=True)``); backends then compile those
    bytes and never open the folder again, so a file changed on disk later changes nothing (issue 29, point 9).
    Empty for a bundle checked on disk only (the export toolchain's reading).
    """

    root: Path
    manifest: BundleManifest
    model_ref: ModelRef
    files: Mapping[str, bytes] = field(default_factory=lambda: _NO_FILES, compare=False, repr=False)

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


def _read_manifest(path: Path) -> tuple[bytes, object]:
    """The manifest's bytes (read once: these are the bytes a signature covers) and their parsed YAML."""
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except FileNotFoundError as exc:
        raise BundleError(f"{path}: no {MANIFEST_FILE} here; is this a bundle folder?") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot read: {exc}") from exc
    try:
        return raw, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BundleError(f"{path}: not valid YAML: {exc}") from exc


def _read_listed(file: Path, size: int) -> bytes:
    """A listed file's bytes, read once; at most ``size`` + 1 bytes so a file grown huge cannot fill memory."""
    with file.open("rb") as fh:
        return fh.read(size + 1)


def load_bundle(path: Path | str, verify_hashes: bool = True, in_memory: bool = False) -> Bundle:
    """Load and verify a bundle from its folder (or its ``bundle.yaml``).

    Args:
        path: the bundle folder or its manifest file.
        verify_hashes: check every file's sha256 (reads all weights once; keep True outside tests of speed).
        in_memory: read every file once into ``Bundle.files`` and check sizes and hashes on those bytes (the
            runtime's way: the verified bytes are the ones compiled); implies ``verify_hashes``.

    Raises:
        BundleError: missing or unreadable manifest, schema violation, an edited manifest, a missing file, or a
            file whose size or sha256 differs from the manifest (tampered or truncated weights).
    """
    path = Path(path)
    # Resolved once, so a symlink switched to another bundle while this one is read cannot mix the two.
    root = (path.parent if path.is_file() else path).resolve()
    manifest_path = root / MANIFEST_FILE
    raw_manifest, data = _read_manifest(manifest_path)
    manifest = manifest_from_dict(data, source=str(manifest_path))
    problems: list[str] = []
    files: dict[str, bytes] = {MANIFEST_FILE: raw_manifest}
    for entry in manifest.files:
        file = root / entry.path
        if not file.is_file():
            problems.append(f"{file}: listed in {MANIFEST_FILE} but missing")
            continue
        content: bytes | None = None
        try:
            if in_memory:
                content = _read_listed(file, entry.bytes)
            size = len(content) if content is not None else file.stat().st_size
        except OSError as exc:
            problems.append(f"{file}: cannot read: {exc}")
            continue
        if size != entry.bytes:
            problems.append(f"{file}: size {size}{'+' if size > entry.bytes else ''} bytes, manifest says "
                            f"{entry.bytes}: the file was changed")
            continue
        if content is not None or verify_hashes:
            actual = hashlib.sha256(content).hexdigest() if content is not None else sha256_file(file)
            if actual != entry.sha256:
                problems.append(f"{file}: sha256 {actual[:12]}… does not match the manifest's "
                                f"{entry.sha256[:12]}…: the file was changed after the bundle was built")
                continue
        if content is not None:
            files[entry.path] = content
    if problems:
        raise BundleError("refusing bundle " + str(root) + ":\n" + "\n".join(problems))
    ref = ModelRef(role=str(manifest.role), name=manifest.name, version=manifest.version,
                   sha256=manifest.content_sha256)
    return Bundle(root=root, manifest=manifest, model_ref=ref,
                  files=MappingProxyType(files) if in_memory else _NO_FILES)
