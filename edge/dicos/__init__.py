"""DICOS (NEMA IIC 1) interoperability: Threat Detection Reports out, DX image pairs in.

``write_tdr`` turns a ``Decision`` into a standard report; ``read_tdr`` reads ours and other toolkits';
``DicosDxSource``/``read_dx_pair`` load a low/high-energy DX pair for the pipeline and ``write_dx_pair``
makes one. Importing this package changes nothing in pydicom: call ``register_dicos_tags`` for that.
See ``docs/dicos.md``.
"""

from edge.dicos._io import encode
from edge.dicos.dx_source import (
    DicosDxSource,
    DxImage,
    DxOrphan,
    DxPair,
    DxPairError,
    DxPairFiles,
    DxScan,
    Energy,
    match_dx_pairs,
    read_dx,
    read_dx_pair,
    write_dx_pair,
)
from edge.dicos.reader import TdrAlgorithm, TdrAssessment, TdrModel, TdrObject, TdrReport, TdrRoi, read_tdr
from edge.dicos.tags import register_dicos_tags
from edge.dicos.tdr import OperatorReview, build_operator_tdr, build_tdr, object_reasons, write_tdr

__all__ = [
    "DicosDxSource",
    "DxImage",
    "DxOrphan",
    "DxPair",
    "DxPairError",
    "DxPairFiles",
    "DxScan",
    "Energy",
    "OperatorReview",
    "TdrAlgorithm",
    "TdrAssessment",
    "TdrModel",
    "TdrObject",
    "TdrReport",
    "TdrRoi",
    "build_operator_tdr",
    "build_tdr",
    "encode",
    "match_dx_pairs",
    "object_reasons",
    "read_dx",
    "read_dx_pair",
    "read_tdr",
    "register_dicos_tags",
    "write_dx_pair",
    "write_tdr",
]
