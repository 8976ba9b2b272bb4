"""Tag registration, the public surface, truncated reports, and the ``edge dicos`` CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edge.dicos
from edge.dicos import read_tdr, write_tdr
from edge.dicos.dx_source import write_dx_pair
from edge.errors import FrameError
from edge.records import UnscreenedReason, Verdict
from edge_tools.dicos_cli import dicos_app
from tests.dicos.dicos_helpers import decision

REPO_ROOT = Path(__file__).resolve().parents[2]
UNKNOWN_TO_PYDICOM = (0x40101080, 0x40101081, 0x40101082, 0x43000902)


def test_importing_changes_nothing_and_registration_is_explicit() -> None:
    """Run in a fresh interpreter: this test process may already have registered the tags."""
    code = (
        "import pydicom.datadict as d, edge.dicos, edge_tools.dicos_cli\n"
        f"tags = {UNKNOWN_TO_PYDICOM!r}\n"
        "assert not any(t in d.DicomDictionary for t in tags), 'registered at import'\n"
        "added = edge.dicos.register_dicos_tags()\n"
        "assert added == tuple(sorted(tags)), added\n"
        "assert edge.dicos.register_dicos_tags() == ()\n"
        "assert d.dictionary_VR(0x40101080) == 'DT' and d.dictionary_VR(0x40101082) == 'FL'\n"
        "assert d.dictionary_VR(0x43000902) == 'FL'\n"
        "assert d.keyword_for_tag(0x40101081) == 'PTOProcessingEndTime'\n"
        "import sys; assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_public_surface() -> None:
    assert sorted(edge.dicos.__all__) == [
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
    for name in edge.dicos.__all__:
        assert getattr(edge.dicos, name) is not None


def test_truncated_reports_raise_frame_error(tmp_path: Path) -> None:
    data = write_tdr(decision(Verdict.ALARM), tmp_path / "a.dcs")
    for cut in (0, 100, len(data) // 2, data.index(b"\x10\x40\x33\x10")):  # up to Number of Total Objects
        with pytest.raises(FrameError, match="TDR"):
            read_tdr(data[:cut])
    # A cut that loses only the trailing optional elements is not detectable; those fields read as None.
    tail_cut = read_tdr(data[: data.index(b"\x10\x40\x69\x10")])
    assert tail_cut.total_processing_time_ms is None and tail_cut.alarm_decision == "ALARM"
    with pytest.raises(FrameError, match="unreadable"):
        read_tdr(tmp_path / "absent.dcs")


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_truncated_real_report_raises_frame_error(real_dicos: Path) -> None:
    data = (real_dicos / "MultiplePTOsTDR.dcs").read_bytes()
    with pytest.raises(FrameError, match=r"lacks .*Alarm Decision"):
        read_tdr(data[: int(len(data) * 0.9)])


def test_cli_show_tdr_dx_and_errors(tmp_path: Path) -> None:
    import numpy as np

    runner = CliRunner()
    write_tdr(decision(Verdict.UNSCREENED, objects=(), reason=UnscreenedReason.CORRUPT_FRAME), tmp_path / "u.dcs")
    result = runner.invoke(dicos_app, ["show", str(tmp_path / "u.dcs")])
    assert result.exit_code == 0, result.output
    assert "UNSCREENED" in result.output and "CORRUPT_FRAME" in result.output and "ABORT" in result.output

    files = write_dx_pair(tmp_path, "bag1", np.full((4, 6), 900, np.uint16), np.full((4, 6), 300, np.uint16))
    result = runner.invoke(dicos_app, ["show", str(files.high)])
    assert result.exit_code == 0, result.output
    assert "4 x 6 uint16" in result.output and "energy: high" in result.output and "max 900" in result.output

    (tmp_path / "junk.dcs").write_bytes(b"not dicom")
    result = runner.invoke(dicos_app, ["show", str(tmp_path / "junk.dcs")])
    assert result.exit_code == 1 and "unreadable" in result.output

    result = runner.invoke(dicos_app, ["pairs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "pair bag1: low bag1_low.dcs, high bag1_high.dcs" in result.output
    assert "unpaired junk.dcs" in result.output and "unpaired u.dcs" in result.output


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_cli_show_real_quirky_report(real_dicos: Path) -> None:
    result = CliRunner().invoke(dicos_app, ["show", str(real_dicos / "SimpleBaggageTDR.dcs")])
    assert result.exit_code == 0, result.output
    assert "alarm decision:  CLEAR (as written)" in result.output
    assert "verdict:         ALARM (fail-safe reading)" in result.output
    assert "outline 75481 px" in result.output


@pytest.mark.parametrize("command", ["show", "pairs"])
def test_cli_help_has_an_example(command: str) -> None:
    result = CliRunner().invoke(dicos_app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example: edge dicos" in result.output
