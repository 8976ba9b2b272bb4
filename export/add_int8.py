"""Give an existing bundle an OpenVINO INT8 model, judged at the operating points the bundle has now.

Why a separate step: a scorer's item threshold (``thresholds.item``) is measured after the export, through the
whole pipeline (``edge eval --write-item-threshold``), so an INT8 model quantised at export time was only
checked at the object threshold, and a bundle whose INT8 was refused then never gets another chance without
its training checkpoint. This quantises the bundle's own FP32 IR with NNCF, accepts it only when decisions
agree at every threshold of the bundle and the flagged objects do not move (:func:`export.quantize.quantize`),
checks its parity against the bundle's FP32 model, and writes a new version of the bundle: the FP32 files,
thresholds, normalisation, notes and the earlier parity entries are carried over unchanged.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from edge.bundles.loader import Bundle, load_bundle
from edge.bundles.manifest import ModelFormat, ParityReport, Precision
from edge.bundles.outputs import without_item_threshold_note
from edge.bundles.writer import BundleContent, BundleModel, refuse_taken, write_bundle
from edge.errors import BundleError
from export.calibration import InputSet
from export.errors import ExportError, ParityFailed
from export.meta import read_meta
from export.parity import Candidate, Tolerance, run_candidate, verify
from export.quantize import BiasCorrection, Metric, QuantizeResult, quantize
from export.versions import toolchain_versions


def _fp32_model(bundle: Bundle, fmt: ModelFormat) -> Path | None:
    entry = next((m for m in bundle.manifest.models if m.format is fmt and m.precision is Precision.FP32), None)
    return None if entry is None else bundle.root / entry.path


def int8_note(result: QuantizeResult, validation: int) -> str:
    """The notes prefix that says how the INT8 model was accepted (figures a reviewer can check)."""
    flags = "; ".join(s.describe() for s in result.flags)
    return (f"[int8 added: decision agreement {result.int8_value:.4f} on {validation} validation inputs"
            + (f"; {flags}" if flags else "") + "] ")


_INT8_NOTE = re.compile(r"\[int8 added: [^\]]*\] ")


def _notes(notes: str, int8: str) -> str:
    """``int8`` after the item-threshold prefix, which must stay first (the service reads the detector it was
    measured through from there), in place of the note of an INT8 model it replaces."""
    rest = without_item_threshold_note(notes)
    return notes[:len(notes) - len(rest)] + int8 + _INT8_NOTE.sub("", rest, count=1)


def _is_openvino_int8(backend_or_format: str, precision: Precision) -> bool:
    return str(backend_or_format) == str(ModelFormat.OPENVINO) and precision is Precision.INT8


_ADDED = re.compile(r"; openvino/int8 \(added in .*$")


def _reference(old: ParityReport | None, version: str, samples: int) -> str:
    """The merged report's ``reference``: the original one (without the part an earlier add-int8 appended) and
    what the new INT8 entry was compared with."""
    base = "none (0 samples)" if old is None else _ADDED.sub("", old.reference)
    if old is not None and not base.endswith(" samples)"):
        base = f"{base} ({old.samples} samples)"
    return f"{base}; openvino/int8 (added in {version}): the bundle's openvino/fp32 model ({samples} samples)"


def add_int8(source: Path, data: InputSet, out: Path, version: str, *, validation: InputSet | None = None,
             max_drop: float = 0.01, max_flag_change: float = 0.1,
             bias_correction: BiasCorrection = BiasCorrection.FULL, subset_size: int = 300, threads: int = 2,
             overwrite: bool = False, progress: Callable[[str], None] = print) -> Bundle:
    """A copy of the bundle at ``source`` with an OpenVINO INT8 model, written to ``out`` as ``version``.

    ``data``: composed model inputs; calibration uses three of every four and validation the rest unless
    ``validation`` is given. An OpenVINO INT8 model the bundle already has is replaced (an ONNX Runtime INT8
    model is kept). ``out`` may be ``source`` itself; another folder that is not empty is replaced only with
    ``overwrite``.

    Raises:
        QuantizationRefused: decisions or flagged objects moved too much (nothing is written).
        ExportError: the bundle has no FP32 OpenVINO IR, ``out`` is taken, or the new bundle fails parity or
            does not load.
    """
    try:
        refuse_taken(out, source, overwrite)
        bundle = load_bundle(source)
    except BundleError as exc:
        raise ExportError(str(exc)) from exc
    m = bundle.manifest
    xml = _fp32_model(bundle, ModelFormat.OPENVINO)
    if xml is None:
        raise ExportError(f"{source}: the bundle has no OpenVINO FP32 model to quantise")
    calib, val = (data, validation) if validation is not None else data.split(4)
    if len(val.inputs) == 0:
        raise ExportError("no validation inputs (give more data or --validation)")
    with tempfile.TemporaryDirectory(prefix=".edge-export-add-int8-") as tmp:
        int8_xml = Path(tmp) / f"{m.name}_int8.xml"
        # The bundle's thresholds and normalisation, not the model file's: an item threshold and a later
        # renormalisation (edge-export renormalise) live only in bundle.yaml.
        result = quantize(xml, calib, val, int8_xml, Metric.AGREEMENT, max_drop, subset_size, threads, progress,
                          bias_correction=bias_correction, max_flag_change=max_flag_change,
                          thresholds=m.thresholds, normalisation=m.normalisation)
        progress(f"{m.name}: INT8 agreement {result.int8_value:.4f}; checking parity against the bundle's FP32 IR")
        meta = replace(read_meta(xml), thresholds=dict(m.thresholds), normalisation=m.normalisation)
        reference = run_candidate(Candidate("openvino", Precision.FP32, xml), val.inputs, threads)
        tolerances = {Precision.INT8: Tolerance(None, 1.0 - max_drop)}
        fresh = verify(meta, val.inputs, reference, "", [Candidate("openvino", Precision.INT8, int8_xml)],
                       tolerances, threads)
        if not fresh.passed:
            raise ParityFailed(f"{m.name}: the INT8 model failed parity against the bundle's FP32 IR")
        old = m.parity
        kept = tuple(e for e in (old.entries if old else ()) if not _is_openvino_int8(e.backend, e.precision))
        parity = ParityReport(passed=(old.passed if old else True) and fresh.passed,
                              reference=_reference(old, version, fresh.samples),
                              samples=old.samples if old else fresh.samples, entries=kept + fresh.entries)
        models = [BundleModel(e.format, e.precision, bundle.root / e.path) for e in m.models
                  if not _is_openvino_int8(e.format, e.precision)]
        models.append(BundleModel(ModelFormat.OPENVINO, Precision.INT8, int8_xml))
        notes = _notes(m.notes, int8_note(result, len(val.inputs)))
        content = BundleContent(name=m.name, version=version, role=m.role, contract=m.input, outputs=m.outputs,
                                thresholds=dict(m.thresholds), normalisation=m.normalisation, classes=m.classes,
                                training_data=m.training_data, notes=notes, layout=m.layout,
                                threat_classes=m.threat_classes)
        try:
            return write_bundle(out, content, models, parity, toolchain_versions(), forced=m.forced,
                                overwrite=True)
        except BundleError as exc:
            raise ExportError(str(exc)) from exc
