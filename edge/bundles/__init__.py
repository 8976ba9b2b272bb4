"""Model bundles: the manifest schema (``bundle.yaml``) and the verifying loader the runtime opens models with.

Public surface: :func:`load_bundle` → :class:`Bundle` (manifest, :class:`~edge.records.ModelRef`, model paths),
the manifest types, and the typed per-role output records. Never imports torch or ``export/``.
"""

from __future__ import annotations

from edge.bundles.loader import Bundle, load_bundle, sha256_file
from edge.bundles.manifest import (
    MANIFEST_FILE,
    SCHEMA_VERSION,
    BundleManifest,
    FileEntry,
    ModelEntry,
    ModelFormat,
    NormalisationKind,
    OutputSpec,
    ParityEntry,
    ParityReport,
    Precision,
    ScoreNormalisation,
)
from edge.bundles.outputs import (
    ClassifierOutputs,
    DetectorOutputs,
    Role,
    RoleOutputs,
    ScorerOutputs,
    SegmenterOutputs,
)

__all__ = [
    "MANIFEST_FILE",
    "SCHEMA_VERSION",
    "Bundle",
    "BundleManifest",
    "ClassifierOutputs",
    "DetectorOutputs",
    "FileEntry",
    "ModelEntry",
    "ModelFormat",
    "NormalisationKind",
    "OutputSpec",
    "ParityEntry",
    "ParityReport",
    "Precision",
    "Role",
    "RoleOutputs",
    "ScoreNormalisation",
    "ScorerOutputs",
    "SegmenterOutputs",
    "load_bundle",
    "sha256_file",
]
