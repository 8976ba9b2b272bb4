"""The ``edge-export`` command: PyTorch → ONNX → OpenVINO (FP32/FP16) → INT8 → parity → bundle.

Thin typer wiring over :mod:`export.torch_to_onnx`, :mod:`export.onnx_to_openvino`, :mod:`export.quantize`,
:mod:`export.parity`, :mod:`export.bundle` and :mod:`export.anomalib_import`. Progress goes to stderr; an
:class:`~export.errors.ExportError` prints its message and exits 1 (no traceback for a user mistake).
A whole run::

    edge-export onnx --factory export.tiny_models:tiny_scorer --role scorer --channels hlz --size 64x64 -o m.onnx
    edge-export openvino m.onnx -o m.xml
    edge-export quantize m.xml --data calib/ -o m_int8.xml
    edge-export verify --model m.onnx --model m.xml --model m_int8.xml \
        --factory export.tiny_models:tiny_scorer -o parity.json
    edge-export bundle --model m.onnx --model m.xml --model m_int8.xml --parity parity.json \
        --name scorer --version 1 -o bundles/scorer
    edge-export keygen ~/keys/site-models.key          # once; keep the private key off the box
    edge-export sign bundles/scorer --key ~/keys/site-models.key
    edge-export verify-signature bundles/scorer --trusted-key ~/keys/site-models.key.pub
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from edge.bundles.manifest import NormalisationKind, ParityReport, Precision, ScoreNormalisation, parity_from_dict
from edge.bundles.manifest import parity_to_dict as _parity_to_dict
from edge.bundles.outputs import DECISION_THRESHOLD_KEY, ITEM_THRESHOLD_KEY, Role
from edge.contracts import Channel, InputContract, ResizePolicy
from export.errors import ExportError

app = typer.Typer(
    name="edge-export",
    help="Export PyTorch models to ONNX/OpenVINO, quantise to INT8, prove parity and pack xray-edge bundles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _say(msg: str) -> None:
    typer.echo(f"edge-export: {msg}", err=True)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"edge-export: error: {exc}", err=True)
    return typer.Exit(1)


def _floats(text: str | None, what: str) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise ExportError(f"{what}: expected comma-separated numbers, got {text!r}") from exc


def _size(text: str) -> tuple[int, int]:
    h, sep, w = text.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit():
        raise ExportError(f"--size: expected HEIGHTxWIDTH such as 256x256, got {text!r}")
    return int(h), int(w)


def _kwargs(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ExportError(f"--arg {item!r}: expected key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _torch_model(factory: str | None, weights: Path | None, program: Path | None, args: list[str]) -> Any:
    from export.torch_to_onnx import load_module, load_program

    if program is not None:
        return load_program(program)
    if factory is None:
        return None
    return load_module(factory, weights, _kwargs(args))


@app.command()
def onnx(
    out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write"),
    role: Role = typer.Option(..., help="what the model does: detector, scorer, classifier or segmenter"),
    factory: str | None = typer.Option(None, help="pkg.module:callable returning the nn.Module"),
    weights: Path | None = typer.Option(None, help="state dict for the factory's module (torch.load weights_only)"),
    program: Path | None = typer.Option(None, help="a torch.export.save()d program instead of --factory"),
    arg: list[str] = typer.Option([], help="factory keyword argument key=value (JSON value), repeatable"),
    channels: str = typer.Option("hlz", help="input channel groups in order, comma-separated: pc,h,l,z,hlz"),
    size: str = typer.Option(..., help="model input HEIGHTxWIDTH, e.g. 256x256"),
    resize: ResizePolicy = typer.Option(ResizePolicy.STRETCH, help="how crops reach the input size"),
    mean: str | None = typer.Option(None, help="per tensor channel mean, comma-separated (default: none)"),
    std: str | None = typer.Option(None, help="per tensor channel std, comma-separated (default: none)"),
    input_name: str = typer.Option("input", help="graph input name"),
    optional: list[str] = typer.Option([], help="optional role output to include, e.g. labels (detector)"),
    threshold: float | None = typer.Option(None, help="decision threshold on the (normalised) score"),
    norm: NormalisationKind = typer.Option(NormalisationKind.NONE, help="score normalisation"),
    norm_low: float = typer.Option(0.0, help="normalisation low (raw score that maps to 0)"),
    norm_high: float = typer.Option(1.0, help="normalisation high"),
    norm_centre: float = typer.Option(0.0, help="raw threshold mapped to 0.5 by 'centred' normalisation"),
    classes: str | None = typer.Option(None, help="class names, comma-separated (classifier/segmenter/detector)"),
    exporter: str = typer.Option("dynamo", help="dynamo (default) or legacy"),
    max_batch: int = typer.Option(64, help="largest batch the dynamic axis allows"),
    opset: int | None = typer.Option(None, help="ONNX opset (dynamo default 20)"),
) -> None:
    """Export a PyTorch module to ONNX with named outputs, a dynamic batch axis and xray-edge metadata.

    Example: edge-export onnx --factory export.tiny_models:tiny_scorer --arg in_channels=3 --role scorer
    --channels hlz --size 64x64 --threshold 0.5 -o build/scorer.onnx
    """
    from export.meta import ExportMeta, default_outputs
    from export.torch_to_onnx import Exporter, export_onnx

    try:
        h, w = _size(size)
        contract = InputContract(channels=tuple(Channel(c) for c in channels.split(",")), height=h, width=w,
                                 resize=resize, mean=_floats(mean, "--mean"), std=_floats(std, "--std"),
                                 input_name=input_name)
        model = _torch_model(factory, weights, program, arg)
        if model is None:
            raise ExportError("give --factory (with optional --weights) or --program")
        meta = ExportMeta(role=role, contract=contract, outputs=default_outputs(role, with_optional=tuple(optional)),
                          thresholds={} if threshold is None else {DECISION_THRESHOLD_KEY: threshold},
                          normalisation=ScoreNormalisation(norm, norm_low, norm_high, norm_centre),
                          classes=tuple(classes.split(",")) if classes else ())
        _say(f"exporting {factory or program} to {out} ({exporter}) …")
        meta = export_onnx(model, meta, out, Exporter(exporter), max_batch, opset)
    except (ExportError, ValueError) as exc:
        raise _fail(exc) from exc
    _say(f"wrote {out}: input {input_name} (N, {contract.tensor_channels}, {h}, {w}); outputs "
         + ", ".join(f"{o.name}{list(o.shape)}" for o in meta.outputs))


@app.command()
def openvino(
    model: Path = typer.Argument(..., help="ONNX file written by `edge-export onnx`"),
    out: Path = typer.Option(..., "--out", "-o", help="IR .xml to write (.bin next to it)"),
    precision: Precision = typer.Option(Precision.FP32, help="fp32 (weights kept FP32) or fp16"),
) -> None:
    """Convert ONNX to OpenVINO IR, FP32 (compress_to_fp16=False, explicitly) or FP16.

    Example: edge-export openvino build/scorer.onnx --precision fp32 -o build/scorer_fp32.xml
    """
    from export.onnx_to_openvino import convert_to_openvino

    try:
        _say(f"converting {model} to OpenVINO {precision} …")
        convert_to_openvino(model, out, precision)
    except ExportError as exc:
        raise _fail(exc) from exc
    _say(f"wrote {out} and {out.with_suffix('.bin').name}")


@app.command()
def quantize(
    model: Path = typer.Argument(..., help="FP32 OpenVINO .xml (or .onnx for an ONNX Runtime INT8 model)"),
    data: Path = typer.Option(..., help="folder of conditioned .npz items or composed .npy tensors, a labelled "
                                        "dataset (COCO, VOC, YOLO, GDXray csv) or the audit store"),
    out: Path = typer.Option(..., "--out", "-o", help="INT8 model to write (same suffix as MODEL)"),
    validation: Path | None = typer.Option(None, help="validation folder (default: every 4th item of --data)"),
    metric: str = typer.Option("agreement", help="agreement (decisions vs FP32), accuracy or auroc (need labels)"),
    max_drop: float = typer.Option(0.01, help="largest allowed metric drop INT8 vs FP32"),
    subset_size: int = typer.Option(300, help="calibration items NNCF uses at most"),
    threads: int = typer.Option(2, help="inference threads for validation"),
    bias_correction: str = typer.Option("fast", help="NNCF bias correction: fast or full (slower, often closer)"),
    max_flag_change: float = typer.Option(0.1, help="scorers/classifiers: largest change of the objects flagged "
                                          "at a threshold, as a share of FP32's flags"),
    config: Path | None = typer.Option(None, help="service config whose calibrations condition raw counts (a "
                                         "dataset of raw items or the audit store as --data)"),
) -> None:
    """NNCF post-training INT8, refused when the validation metric drops more than --max-drop against FP32
    (or a scorer's flagged objects move by more than --max-flag-change).

    Example: edge-export quantize build/scorer_fp32.xml --data calib/ --metric auroc --max-drop 0.01
    -o build/scorer_int8.xml
    """
    from export.calibration import conditioner_from, crops_for, load_inputs
    from export.meta import read_meta
    from export.quantize import BiasCorrection, Metric
    from export.quantize import quantize as run_quantize

    try:
        meta = read_meta(model)
        _say(f"composing calibration data from {data} …")
        source = {"crops": crops_for(meta.role), "conditioner": conditioner_from(config)}
        items = load_inputs(data, meta.contract, progress=_progress("composing"), **source)
        if validation is None:
            calib, val = items.split(4)
        else:
            calib, val = items, load_inputs(validation, meta.contract, progress=_progress("validation"), **source)
        result = run_quantize(model, calib, val, out, Metric(metric), max_drop, subset_size, threads, _say,
                              bias_correction=BiasCorrection(bias_correction), max_flag_change=max_flag_change)
    except (ExportError, ValueError) as exc:
        raise _fail(exc) from exc
    _say(f"wrote {result.path}: {result.metric} {result.fp32_value:.4f} (FP32) → {result.int8_value:.4f} (INT8) "
         f"in {result.seconds:.1f} s")


def _progress(what: str) -> Any:
    def report(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            _say(f"{what} {done}/{total}")
    return report


@app.command()
def verify(
    model: list[Path] = typer.Option(..., help="model to check (.onnx: onnxruntime, .xml: openvino); repeat"),
    out: Path = typer.Option(..., "--out", "-o", help="parity report JSON to write"),
    factory: str | None = typer.Option(None, help="PyTorch reference: pkg.module:callable"),
    weights: Path | None = typer.Option(None, help="state dict for --factory"),
    program: Path | None = typer.Option(None, help="PyTorch reference: a torch.export program"),
    arg: list[str] = typer.Option([], help="factory keyword argument key=value, repeatable"),
    data: Path | None = typer.Option(None, help="input folder (.npz conditioned / .npy composed), a labelled "
                                                "dataset or the audit store"),
    samples: int = typer.Option(16, help="synthetic inputs when no --data"),
    rtol_fp32: float = typer.Option(1e-4, help="max relative error for FP32 models"),
    rtol_fp16: float = typer.Option(1e-2, help="max relative error for FP16 models"),
    min_agreement: float = typer.Option(0.99, help="min decision agreement (all precisions)"),
    threads: int = typer.Option(2, help="inference threads"),
    config: Path | None = typer.Option(None, help="service config whose calibrations condition raw counts (a "
                                         "dataset of raw items or the audit store as --data)"),
) -> None:
    """Run the same inputs through PyTorch (or the first FP32 model), ONNX Runtime and OpenVINO; report parity.

    Exits 1 when parity fails (the report is written either way).
    Example: edge-export verify --model build/m.onnx --model build/m.xml --model build/m_int8.xml
    --factory export.tiny_models:tiny_scorer --data val/ -o build/parity.json
    """
    from export.calibration import conditioner_from, crops_for, load_inputs, synthetic_inputs
    from export.meta import read_meta
    from export.parity import Candidate, Tolerance, format_report, run_batched, run_candidate
    from export.parity import verify as run_verify
    from export.torch_to_onnx import run_torch

    try:
        metas = [read_meta(m) for m in model]
        meta = metas[0]
        inputs = (load_inputs(data, meta.contract, progress=_progress("composing"), crops=crops_for(meta.role),
                              conditioner=conditioner_from(config)) if data is not None
                  else synthetic_inputs(meta.contract, samples)).inputs
        candidates = [Candidate("onnxruntime" if p.suffix == ".onnx" else "openvino", m.precision, p)
                      for p, m in zip(model, metas, strict=True)]
        torch_model = _torch_model(factory, weights, program, arg)
        if torch_model is not None:
            _say(f"reference: PyTorch on {len(inputs)} inputs")
            ref_name = f"pytorch ({factory or program})"
            reference = run_batched(lambda b: run_torch(torch_model, b, meta.output_names), inputs)
        else:
            first = next((c for c in candidates if c.precision is Precision.FP32), None)
            if first is None:
                raise ExportError("no PyTorch reference (--factory/--program) and no FP32 model to compare with")
            _say(f"reference: {first.label} (no PyTorch module given)")
            ref_name = f"{first.label} ({first.path.name})"
            reference = run_candidate(first, inputs, threads)
        tolerances = {Precision.FP32: Tolerance(rtol_fp32, min_agreement),
                      Precision.FP16: Tolerance(rtol_fp16, min_agreement),
                      Precision.INT8: Tolerance(None, min_agreement)}
        report = run_verify(meta, inputs, reference, ref_name, candidates, tolerances, threads, _say)
    except (ExportError, ValueError) as exc:
        raise _fail(exc) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_parity_to_dict(report), indent=2))
    typer.echo(format_report(report))
    if not report.passed:
        raise typer.Exit(1)


def _read_parity(path: Path | None) -> ParityReport | None:
    if path is None:
        return None
    try:
        return parity_from_dict(json.loads(path.read_text()))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ExportError(f"{path}: not a parity report from `edge-export verify`: {exc}") from exc


@app.command()
def bundle(
    model: list[Path] = typer.Option(..., help="model file to include (.onnx/.xml from this toolchain); repeat"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle folder to create"),
    name: str = typer.Option(..., help="bundle name (letters, digits, . _ -)"),
    version: str = typer.Option(..., help="bundle version, e.g. 2026.11.1"),
    parity: Path | None = typer.Option(None, help="parity report JSON from `edge-export verify`"),
    training_data: str = typer.Option("", help="a note on what the model was trained on"),
    notes: str = typer.Option("", help="free-text notes"),
    threshold: float | None = typer.Option(None, help="override the decision threshold stored at export"),
    force: bool = typer.Option(False, help="bundle despite failing/missing parity (recorded as forced: true)"),
    overwrite: bool = typer.Option(False, help="replace an existing bundle folder"),
) -> None:
    """Pack models, input contract, thresholds, provenance and the parity report into a verified bundle.

    Example: edge-export bundle --model build/m.onnx --model build/m.xml --model build/m_int8.xml
    --parity build/parity.json --name scorer-stfpm --version 1.0 -o models/scorer
    """
    from export.bundle import bundle_models_from_files, make_bundle

    try:
        meta, models = bundle_models_from_files(model)
        thresholds = None if threshold is None else {**meta.thresholds, DECISION_THRESHOLD_KEY: threshold}
        _say(f"bundling {len(models)} model(s) into {out} …")
        result = make_bundle(out, name, version, meta, models, _read_parity(parity), force=force,
                             training_data=training_data, notes=notes, thresholds=thresholds, overwrite=overwrite)
    except ExportError as exc:
        raise _fail(exc) from exc
    forced = " (FORCED: parity not proven)" if result.forced else ""
    _say(f"wrote {out}/bundle.yaml{forced}; sha256 {result.model_ref.sha256}")


@app.command()
def renormalise(
    source: Path = typer.Argument(..., help="scorer bundle whose normalisation is 'centred'"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle folder to write (may be SOURCE itself)"),
    version: str = typer.Option(..., help="the new bundle's version"),
) -> None:
    """Switch a scorer bundle from 'centred' (clipped at 0 and 1) to 'logistic' normalisation.

    Same centre and span, so every decision at the bundle's threshold (0.5) stays the same, but scores above it
    keep their order instead of tying at 1.0, which is what lets an item operating point be placed above the
    object threshold. Model files are copied untouched; only bundle.yaml changes.

    Example: edge-export renormalise models/scorer-padim -o models/scorer-padim --version 1.1
    """
    from dataclasses import replace

    from edge.bundles.loader import load_bundle
    from edge.bundles.manifest import NormalisationKind
    from edge.bundles.writer import rewrite_manifest
    from edge.errors import BundleError

    try:
        src = load_bundle(source)
        m = src.manifest
        if m.normalisation.kind is not NormalisationKind.CENTRED:
            raise ExportError(f"{source}: normalisation is {m.normalisation.kind!s}, not centred: nothing to do "
                              "(only centred -> logistic keeps every decision at the threshold)")
        if ITEM_THRESHOLD_KEY in m.thresholds:
            raise ExportError(f"{source}: has an item threshold ({m.thresholds[ITEM_THRESHOLD_KEY]}) measured on the "
                              "centred scale, which does not hold on the logistic one: renormalise the bundle "
                              "without it, then measure it (edge eval --write-item-threshold)")
        note = f"[normalisation logistic since {version} (was centred, clipped)] "
        result = rewrite_manifest(src, out, thresholds=m.thresholds, version=version, notes=note + m.notes,
                                  normalisation=replace(m.normalisation, kind=NormalisationKind.LOGISTIC),
                                  overwrite=True)
    except (ExportError, BundleError) as exc:
        raise _fail(exc) from exc
    _say(f"wrote {result.root}/bundle.yaml ({m.name}@{version}, logistic normalisation)")


@app.command("set-thresholds")
def set_thresholds(
    source: Path = typer.Argument(..., help="bundle folder"),
    assignments: list[str] = typer.Option(..., "--set", help="KEY=VALUE (repeatable); VALUE 'none' removes KEY"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle folder to write (may be SOURCE itself)"),
    version: str = typer.Option(..., help="the new bundle's version"),
    note: str = typer.Option("", help="why (prefixed to the bundle's notes with the version)"),
    overwrite: bool = typer.Option(False, help="replace a non-empty OUT folder that is not SOURCE"),
) -> None:
    """Change a bundle's thresholds (only the keys the runtime reads for its role, each in [0, 1]) as a new
    version; model files, hashes and parity report stay the bundle's own.

    For a post-processing choice measured after the export, e.g. box voting on a detector. A scorer's item
    threshold is measured, not set: `edge eval --write-item-threshold`.
    Example: edge-export set-thresholds models/detector-classes --set vote_iou=0.6 -o models/detector-classes
    --version 1.2 --note "box voting: sim-test mAP 0.494 -> 0.506"
    """
    from edge.bundles.loader import load_bundle
    from edge.bundles.outputs import (
        NMS_IOU_KEY,
        THRESHOLD_KEYS,
        VOTE_IOU_KEY,
        after_item_threshold_note,
    )
    from edge.bundles.writer import rewrite_manifest
    from edge.errors import BundleError

    try:
        src = load_bundle(source)
        m = src.manifest
        role = Role(m.role)
        if version == m.version:
            raise ExportError(f"--version {version}: the bundle is already {version}; a change needs a new one")
        thresholds = dict(m.thresholds)
        for text in assignments:
            key, sep, value = text.partition("=")
            key = key.strip()
            if not sep:
                raise ExportError(f"--set {text!r}: expected KEY=VALUE")
            if key == ITEM_THRESHOLD_KEY:
                raise ExportError(f"--set {text!r}: the item threshold is measured through the pipeline: "
                                  "edge eval --write-item-threshold")
            if key not in THRESHOLD_KEYS[role]:
                raise ExportError(f"--set {text!r}: a {role} bundle has no threshold {key!r} (the runtime reads: "
                                  f"{', '.join(THRESHOLD_KEYS[role]) or 'none'})")
            if value.strip().lower() == "none":
                if key not in (NMS_IOU_KEY, VOTE_IOU_KEY):
                    raise ExportError(f"--set {text!r}: {key!r} cannot be removed (the runtime needs it)")
                thresholds.pop(key, None)
                continue
            try:
                number = float(value)
            except ValueError:
                raise ExportError(f"--set {text!r}: {value!r} is not a number") from None
            if not 0.0 <= number <= 1.0:
                raise ExportError(f"--set {text!r}: thresholds lie in [0, 1]")
            thresholds[key] = number
        vote, nms = thresholds.get(VOTE_IOU_KEY, 0.0), thresholds.get(NMS_IOU_KEY, 0.5)
        if 0.0 < vote <= nms:
            raise ExportError(f"vote_iou {vote} <= nms_iou {nms}: boxes NMS kept apart would vote into each other "
                              "(neighbouring objects merge); use a vote IoU above the NMS IoU")
        changed = ", ".join(f"{k} {m.thresholds.get(k)} -> {thresholds.get(k)}"
                            for k in sorted(set(m.thresholds) | set(thresholds))
                            if m.thresholds.get(k) != thresholds.get(k))
        prefix = f"[{version}: {changed}{': ' + note if note else ''}] "
        result = rewrite_manifest(src, out, thresholds=thresholds, version=version,
                                  notes=after_item_threshold_note(m.notes, prefix), overwrite=overwrite)
    except (ExportError, BundleError) as exc:
        raise _fail(exc) from exc
    _say(f"wrote {result.root}/bundle.yaml ({m.name}@{version}; {changed or 'thresholds unchanged'})")


@app.command("add-int8")
def add_int8_command(
    source: Path = typer.Argument(..., help="bundle folder with an OpenVINO FP32 model"),
    data: Path = typer.Option(..., help="folder of composed .npy tensors (N, C, H, W) or conditioned .npz items, "
                                        "a labelled dataset (COCO, VOC, YOLO, GDXray csv) or the audit store"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle folder to write (may be SOURCE itself)"),
    version: str = typer.Option(..., help="the new bundle's version"),
    validation: Path | None = typer.Option(None, help="validation folder (default: every 4th input of --data)"),
    max_drop: float = typer.Option(0.01, help="largest share of decisions INT8 may change, at every threshold"),
    max_flag_change: float = typer.Option(0.1, help="largest change of the objects flagged at a threshold, as a "
                                          "share of FP32's flags"),
    bias_correction: str = typer.Option("full", help="NNCF bias correction: full or fast"),
    threads: int = typer.Option(2, help="inference threads for validation"),
    overwrite: bool = typer.Option(False, help="replace a non-empty OUT folder that is not SOURCE"),
    config: Path | None = typer.Option(None, help="service config whose calibrations condition raw counts (a "
                                         "dataset of raw items or the audit store as --data)"),
) -> None:
    """Quantise a bundle's FP32 IR to INT8 and write it as a new version of the bundle, judged at every
    threshold the bundle has now (a scorer's item threshold too), FP32 files and parity entries kept.

    Example: edge-export add-int8 models/classifier-threat --data crops/ -o models/classifier-threat --version 2.2
    """
    from export.add_int8 import add_int8
    from export.calibration import conditioner_from, crops_for, load_inputs
    from export.quantize import BiasCorrection

    try:
        from edge.bundles.loader import load_bundle
        from edge.errors import BundleError

        try:
            loaded = load_bundle(source)
        except BundleError as exc:
            raise ExportError(str(exc)) from exc
        contract = loaded.contract
        kw = {"crops": crops_for(loaded.manifest.role), "conditioner": conditioner_from(config)}
        items = load_inputs(data, contract, progress=_progress("reading"), **kw)
        val = None if validation is None else load_inputs(validation, contract, progress=_progress("validation"),
                                                          **kw)
        result = add_int8(source, items, out, version, validation=val, max_drop=max_drop,
                          max_flag_change=max_flag_change, bias_correction=BiasCorrection(bias_correction),
                          threads=threads, overwrite=overwrite, progress=_say)
    except (ExportError, ValueError) as exc:
        raise _fail(exc) from exc
    _say(f"wrote {result.root} ({result.manifest.name}@{version}, openvino/int8 added)")


@app.command("import-anomalib")
def import_anomalib(
    model_dir: Path = typer.Argument(..., help="anomalib export root (holds weights/onnx, weights/openvino)"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle folder to create"),
    name: str = typer.Option(..., help="bundle name"),
    version: str = typer.Option("1", help="bundle version"),
    size: str = typer.Option(..., help="image HEIGHTxWIDTH fed to the graph (anomalib resizes inside)"),
    images: Path | None = typer.Option(None, help="parity images: *.input.npy tensors or RGB *.png"),
    training_data: str = typer.Option("", help="a note on what the model was trained on"),
    force: bool = typer.Option(False, help="bundle despite failing parity (recorded as forced: true)"),
    overwrite: bool = typer.Option(False, help="replace an existing bundle folder"),
) -> None:
    """Turn an anomalib ONNX/OpenVINO export into a scorer bundle that reproduces anomalib's scores.

    Example: edge-export import-anomalib ../shared/realdata/anomalib/padim --size 128x128
    --images ../shared/realdata/anomalib/images --name padim -o models/padim
    """
    from export.anomalib_import import import_anomalib as run_import

    try:
        h, w = _size(size)
        result = run_import(model_dir, out, name, version, h, w, images, force, overwrite, training_data, _say)
    except ExportError as exc:
        raise _fail(exc) from exc
    _say(f"wrote {out}/bundle.yaml; sha256 {result.model_ref.sha256}")
    if result.manifest.parity is not None:
        from export.parity import format_report

        typer.echo(format_report(result.manifest.parity))


@app.command("import-detector")
def import_detector(
    model: Path = typer.Argument(..., help="the detector as exported: MODEL.onnx, or an OpenVINO MODEL.xml"),
    layout: str = typer.Option(..., help="output layout: yolov8 ([1,4+nc,N]: YOLOv8/11), yolov5 ([1,N,5+nc]), "
                               "end2end ([1,N,6]: YOLOv10/26, RT-DETR style), dets-labels (mmdeploy), "
                               "torchvision (boxes/scores/labels, already suppressed)"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle folder to create"),
    name: str = typer.Option(..., help="bundle name (letters, digits, . _ -)"),
    version: str = typer.Option("1", help="bundle version"),
    classes: str | None = typer.Option(None, help="class names in class-index order, comma-separated (default: "
                                       "the model's metadata, e.g. Ultralytics names)"),
    size: str | None = typer.Option(None, help="model input HEIGHTxWIDTH (default: metadata imgsz, else the "
                                    "graph's static input shape)"),
    resize: ResizePolicy = typer.Option(ResizePolicy.LETTERBOX, help="letterbox (centred: Ultralytics), "
                                        "letterbox-topleft (MMDetection Resize keep_ratio + Pad), or stretch"),
    channels: str | None = typer.Option(None, help="input channel groups, comma-separated: pc (pseudo-colour), "
                                        "h (grey), e.g. h,h,h for a grey 3-channel model (default: pc for 3 "
                                        "channels, h for 1)"),
    bgr: bool = typer.Option(False, "--bgr", help="the model takes BGR (OpenCV order), not RGB"),
    scale: float = typer.Option(1.0, help="model pixel value = image value in [0,1] x SCALE, before mean/std "
                                "(1: Ultralytics, torchvision; 255: MMDetection)"),
    mean: str | None = typer.Option(None, help="per-channel mean in the scaled units, model channel order"),
    std: str | None = typer.Option(None, help="per-channel std in the scaled units, model channel order"),
    pad_value: float = typer.Option(114.0, help="letterbox fill in 8-bit units (Ultralytics, RTMDet: 114)"),
    boxes: str = typer.Option("pixels", help="box units: pixels of the model input, or normalised ([0,1])"),
    output: list[str] = typer.Option([], help="FIELD=GRAPH_OUTPUT when outputs are not matched by name/order, "
                                     "repeatable (fields: predictions, detections, dets, boxes, scores, labels)"),
    threat_class: list[str] = typer.Option([], help="NAME[=THRESHOLD]: a class that is a threat by itself at "
                                           "that detector score (default: --score-threshold); repeatable"),
    score_threshold: float = typer.Option(0.25, help="candidates below this score are dropped"),
    nms_iou: float = typer.Option(0.7, help="class-aware NMS IoU (0.7 as Ultralytics predicts)"),
    images: Path | None = typer.Option(None, help="parity inputs: a folder of images (else generated parcels)"),
    samples: int = typer.Option(8, min=1, help="generated parity inputs when no --images"),
    calibration: Path | None = typer.Option(None, help="images for INT8 (NNCF; 3 in 4 calibrate, 1 in 4 "
                                            "validate); no INT8 without it"),
    training_data: str = typer.Option("", help="a note on what the model was trained on"),
    force: bool = typer.Option(False, help="bundle despite failing parity (recorded as forced: true)"),
    overwrite: bool = typer.Option(False, help="replace an existing bundle folder"),
    threads: int = typer.Option(2, help="inference threads"),
) -> None:
    """Make a verified detector bundle from a model exported by another tool (docs/bring-your-own.md).

    Example: edge-export import-detector yolov8n.onnx --layout yolov8 --threat-class knife=0.4
    --images site-images/ --calibration site-images/ --name site-yolo --version 1 -o bundles/site-yolo
    """
    from edge.bundles.manifest import BoxUnits, LayoutKind
    from export.import_detector import ImportRequest, InputSpec
    from export.import_detector import import_detector as run_import
    from export.parity import format_report

    try:
        try:
            kind, units = LayoutKind(layout), BoxUnits(boxes)
        except ValueError as exc:
            raise ExportError(f"{exc}; --layout is one of {', '.join(LayoutKind)}, --boxes one of "
                              f"{', '.join(BoxUnits)}") from None
        mapping = {}
        for item in output:
            key, sep, value = item.partition("=")
            if not sep:
                raise ExportError(f"--output {item!r}: expected FIELD=GRAPH_OUTPUT")
            mapping[key.strip()] = value.strip()
        try:
            groups = None if channels is None else tuple(Channel(c.strip()) for c in channels.split(","))
        except ValueError as exc:
            raise ExportError(f"--channels {channels!r}: {exc}; groups: {', '.join(Channel)}") from None
        spec = InputSpec(size=None if size is None else _size(size), resize=resize, channels=groups, bgr=bgr,
                         scale=scale, mean=_floats(mean, "--mean"), std=_floats(std, "--std"), pad=pad_value)
        req = ImportRequest(model=model, layout=kind, out=out, name=name, version=version, boxes=units, input=spec,
                            classes=tuple(c.strip() for c in classes.split(",")) if classes else None,
                            threat_classes=tuple(threat_class), outputs=mapping, score_threshold=score_threshold,
                            nms_iou=nms_iou, images=images, samples=samples, calibration=calibration,
                            training_data=training_data, force=force, overwrite=overwrite, threads=threads)
        result = run_import(req, _say)
    except ExportError as exc:
        raise _fail(exc) from exc
    m = result.manifest
    threats = ", ".join(f"{k}>={v:g}" for k, v in m.threat_classes.items()) or "none"
    _say(f"wrote {out}/bundle.yaml ({m.name}@{m.version}: {m.layout.kind if m.layout else '?'}, "
         f"{len(m.classes)} classes, threat classes {threats}; models "
         + ", ".join(f"{e.format}/{e.precision}" for e in m.models) + ")")
    if m.parity is not None:
        typer.echo(format_report(m.parity))


@app.command()
def keygen(
    out: Path = typer.Argument(..., help="private key file to create (mode 0600); the public key goes to OUT.pub"),
) -> None:
    """Make an Ed25519 signing key pair for bundles.

    The private key signs (`edge-export sign`) and stays with whoever releases bundles, never on a box; the
    public key OUT.pub goes into the box's models.trusted_keys. Refuses to overwrite an existing key.

    Example: edge-export keygen ~/keys/site-models.key
    """
    from edge.bundles.signing import generate_key, key_id_of, load_private_key
    from edge.errors import BundleError

    try:
        private, public = generate_key(out)
        kid = key_id_of(load_private_key(private).public_key())
    except BundleError as exc:
        raise _fail(exc) from exc
    _say(f"wrote private key {private} (keep it secret, off the box) and public key {public} (key id {kid}); "
         "list the public key in models.trusted_keys")


@app.command()
def sign(
    bundle_dir: Path = typer.Argument(..., metavar="BUNDLE", help="bundle folder to sign"),
    key: Path = typer.Option(..., "--key", help="Ed25519 private key file (from `edge-export keygen`)"),
) -> None:
    """Sign a bundle: write BUNDLE/bundle.sig over bundle.yaml and every model file (sha256 and size of each).

    The bundle is checked first (schema, content hash, every file's hash). Any later change to any of its files,
    bundle.yaml included, makes a box refuse it until it is signed again. Format: docs/bundles.md.

    Example: edge-export sign models/scorer-stfpm --key ~/keys/site-models.key
    """
    from edge.bundles.signing import sign_bundle
    from edge.errors import BundleError

    try:
        sig = sign_bundle(bundle_dir, key)
        body = json.loads(sig.read_text())
    except BundleError as exc:
        raise _fail(exc) from exc
    _say(f"signed {bundle_dir} with key {body['key_id']}: {len(body['files'])} files covered; wrote {sig}")


@app.command("verify-signature")
def verify_signature(
    bundle_dir: Path = typer.Argument(..., metavar="BUNDLE", help="bundle folder to check"),
    trusted_key: list[Path] = typer.Option(..., "--trusted-key",
                                           help="public key file (PEM or raw base64) to accept; repeat"),
) -> None:
    """Check a bundle as a box does: hashes, and a signature by one of the given public keys over its exact bytes.

    Exits 1, saying why (no signature, unknown key id, bad signature, a file changed after signing), when a box
    trusting these keys would refuse it.

    Example: edge-export verify-signature /opt/edge/models/scorer-2026.12 --trusted-key /etc/edge/keys/site.pub
    """
    from edge.bundles.signing import verify_bundle
    from edge.errors import BundleError

    try:
        verified = verify_bundle(bundle_dir, trusted_key, allow_unsigned=False)
    except BundleError as exc:
        raise _fail(exc) from exc
    m = verified.bundle.manifest
    _say(f"{bundle_dir}: {m.name}@{m.version} verified, signed by key {verified.key_id}")


def _mount_training() -> None:
    from export.recipes.cli import app as train_app

    app.add_typer(train_app, name="train", help="Train the reference models on the virtual scanner (docs/models.md).")


_mount_training()


def main() -> None:
    """Console-script entry point ``edge-export``."""
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="edge-export: %(levelname)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
