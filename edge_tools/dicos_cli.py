"""``edge dicos …``: look inside DICOS files from the command line (integrators, commissioning, support).

Where it sits: a typer sub-app mounted by ``edge.cli``; it calls the readers in ``edge.dicos`` and prints.
What it must not do: write or change any file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from pydicom import dcmread

from edge.dicos.dx_source import DicosDxSource, read_dx
from edge.dicos.reader import TdrObject, TdrReport, read_tdr
from edge.dicos.tags import DX_SOP_CLASSES, SOP_CLASS_TDR
from edge.errors import FrameError, SourceError

dicos_app = typer.Typer(
    name="dicos",
    help="Inspect DICOS files: threat detection reports (TDR) and DX image pairs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _tdr_lines(report: TdrReport) -> list[str]:
    """The report for a person at a terminal: what kind, what it decided, whether it aborted and why, who or
    what decided, then one block per object with every assessment (category, flag, score) on its own line."""
    aborted = report.abort_flag == "ABORT"
    abort = f"{report.abort_flag or 'missing'}" + (
        f" (reason: {', '.join(report.abort_reasons) or 'not given'})" if aborted else "")
    when = report.alarm_decision_time.isoformat() if report.alarm_decision_time is not None else "no time"
    lines = [
        f"TDR {report.sop_instance_uid}",
        f"  type:            {report.tdr_type or 'missing'}",
        f"  item (OOI ID):   {report.item_id}",
        f"  alarm decision:  {report.alarm_decision or 'missing'} (as written) at {when}",
        f"  verdict:         {report.verdict.value.upper()} (fail-safe reading)",
        f"  abort flag:      {abort}",
    ]
    if report.operators:
        lines.append(f"  operator:        {', '.join(report.operators)}")
    if report.referenced_uids:
        lines.append(f"  reviews report:  {', '.join(report.referenced_uids)}")
    if report.algorithm.name is not None:
        lines.append(f"  algorithm:       {report.algorithm.name} {report.algorithm.version or ''}".rstrip())
        lines.extend(f"    model          {m.role}: {m.name} {m.version} (sha256 {m.sha256_prefix}...)"
                     for m in report.algorithm.models)
        models = {f"{m.role}={m.name}@{m.version}#{m.sha256_prefix}" for m in report.algorithm.models}
        lines.extend(f"    parameter      {p}" for p in report.algorithm.parameters if p not in models)
    time_ms = report.total_processing_time_ms
    lines.append(f"  processing time: {'not given' if time_ms is None else f'{time_ms:.1f} ms'}")
    lines.append(f"  objects:         {report.number_of_total_objects} total, {report.number_of_alarm_objects} alarm, "
                 f"{len(report.objects)} in the Threat Sequence")
    for obj in report.objects:
        where = _where(obj)
        bitmap = next((r.bitmap for r in obj.rois if r.bitmap is not None), None)
        mask = f", outline {int(bitmap.sum())} px" if bitmap is not None else ""
        lines.append(f"  object {obj.pto_id}: {'THREAT' if obj.is_threat else 'no threat'}, {where}{mask}")
        for a in obj.assessments:
            score = f"score {a.probability:.3f}" if a.probability is not None else "no score"
            lines.append(f"    {a.flag or '?':<9} {a.category or '?':<16} {score}"
                         + (f"  {a.description}" if a.description else ""))
    lines.extend(f"  ! {problem}" for problem in report.inconsistencies)
    return lines


def _where(obj: TdrObject) -> str:
    """The object's box, or what its ROI holds when that is no box (NaN or negative extents: a damaged file or
    another toolkit's quirk), so the rest of the report is still shown."""
    try:
        box = obj.box
    except ValueError:
        roi = obj.rois[0]
        base, extents = (", ".join(f"{v:g}" for v in values) for values in (roi.base, roi.extents))
        return f"ROI unusable (base {base}, extents {extents})"
    return f"box x {box.x1:g}..{box.x2:g}, y {box.y1:g}..{box.y2:g}" if box else "no ROI"


@dicos_app.command()
def show(path: Path = typer.Argument(..., help="a DICOS TDR or DX file (.dcs)")) -> None:
    """Print what a TDR or DX file says; exit 1 with the reason if it cannot be read.

    Example: edge dicos show /var/lib/edge/audit/2026-11-22/bag-0042.tdr.dcs
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sop_class = str(dcmread(path, stop_before_pixels=True).get("SOPClassUID", ""))
    except Exception as exc:  # any pydicom failure: say so and stop
        typer.echo(f"{path}: unreadable DICOM/DICOS file ({type(exc).__name__}: {exc})", err=True)
        raise typer.Exit(code=1) from None
    try:
        if sop_class == SOP_CLASS_TDR:
            lines = _tdr_lines(read_tdr(path))
        elif sop_class in DX_SOP_CLASSES:
            image = read_dx(path)
            px = image.pixels
            lines = [
                f"DX {image.sop_instance_uid}",
                f"  item (OOI ID): {image.ooi_id}   energy: {image.energy.value if image.energy else 'not declared'}",
                f"  {image.rows} x {image.columns} uint16, {image.photometric_interpretation}, "
                f"pixel spacing {image.pixel_spacing_mm} mm",
                f"  values: min {int(px.min())}, max {int(px.max())}, mean {float(px.mean()):.1f}",
            ]
        else:
            typer.echo(f"{path}: SOP Class {sop_class!r} is neither a DICOS TDR nor a DX image", err=True)
            raise typer.Exit(code=1)
    except FrameError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:  # a damaged file the reader missed
        typer.echo(f"{path}: cannot be shown, the file is damaged or not as DICOS writes it "
                   f"({type(exc).__name__}: {exc})", err=True)
        raise typer.Exit(code=1) from None
    typer.echo("\n".join(lines))


@dicos_app.command()
def pairs(directory: Path = typer.Argument(..., help="directory of DICOS DX files")) -> None:
    """List the low/high-energy DX pairs a directory holds, and every file that is not part of one (and why).

    Example: edge dicos pairs /srv/scanner/dx
    """
    try:
        scan = DicosDxSource(directory).scan()
    except SourceError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    for pair in scan.pairs:
        typer.echo(f"pair {pair.item_id}: low {pair.low.name}, high {pair.high.name}")
    for orphan in scan.orphans:
        typer.echo(f"unpaired {orphan.path.name}: {orphan.reason}")
    typer.echo(f"{len(scan.pairs)} pair(s), {len(scan.orphans)} unpaired file(s)")
