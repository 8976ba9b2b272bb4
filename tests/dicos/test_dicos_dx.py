"""DICOS DX pairs: written from uint16 arrays, matched, read back bit-exact; bad files give FrameError."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from edge.dicos.dx_source import (
    DicosDxSource,
    DxPair,
    DxPairError,
    Energy,
    match_dx_pairs,
    read_dx,
    read_dx_pair,
    write_dx_pair,
)
from edge.errors import FrameError, SourceError

# (group, element) -> VR for what the DX writer may put in a file. Sources: DUMP.md and the element
# listing of the real SimpleProcessingDX.dcs ("D"), DICOM PS3.6 for Pixel Spacing ("S").
DX_TAGS: dict[tuple[int, int], str] = {
    (0x0008, 0x0005): "CS",  # S  Specific Character Set
    (0x0008, 0x0008): "CS",  # D  Image Type
    (0x0008, 0x0016): "UI",  # D  SOP Class UID
    (0x0008, 0x0018): "UI",  # D  SOP Instance UID
    (0x0008, 0x0020): "DA",  # D  Study Date
    (0x0008, 0x0023): "DA",  # D  Content Date
    (0x0008, 0x0030): "TM",  # D  Study Time
    (0x0008, 0x0033): "TM",  # D  Content Time
    (0x0008, 0x0060): "CS",  # D  Modality
    (0x0008, 0x0068): "CS",  # D  Presentation Intent Type
    (0x0008, 0x0070): "LO",  # D  Manufacturer
    (0x0010, 0x0020): "LO",  # D  Patient ID (OOI ID)
    (0x0010, 0x0022): "CS",  # D  Type of Patient ID
    (0x0018, 0x0060): "DS",  # D  KVP
    (0x0020, 0x000D): "UI",  # D  Study Instance UID
    (0x0020, 0x000E): "UI",  # D  Series Instance UID
    (0x0020, 0x0013): "IS",  # D  Instance Number
    (0x0028, 0x0002): "US",  # D  Samples per Pixel
    (0x0028, 0x0004): "CS",  # D  Photometric Interpretation
    (0x0028, 0x0010): "US",  # D  Rows
    (0x0028, 0x0011): "US",  # D  Columns
    (0x0028, 0x0030): "DS",  # S  Pixel Spacing
    (0x0028, 0x0100): "US",  # D  Bits Allocated
    (0x0028, 0x0101): "US",  # D  Bits Stored
    (0x0028, 0x0102): "US",  # D  High Bit
    (0x0028, 0x0103): "US",  # D  Pixel Representation
    (0x0028, 0x1040): "CS",  # D  Pixel Intensity Relationship
    (0x0028, 0x1041): "SS",  # D  Pixel Intensity Relationship Sign
    (0x0028, 0x1052): "DS",  # D  Rescale Intercept
    (0x0028, 0x1053): "DS",  # D  Rescale Slope
    (0x0028, 0x2110): "CS",  # D  Lossy Image Compression
    (0x2050, 0x0020): "CS",  # D  Presentation LUT Shape
    (0x4010, 0x103A): "CS",  # D  DICOS Version
    (0x4010, 0x1042): "CS",  # D  OOI Type
    (0x4010, 0x1044): "CS",  # D  Acquisition Status
    (0x4010, 0x1048): "CS",  # D  Scan Type
    (0x7FE0, 0x0010): "OW",  # D  Pixel Data
}
SOP_CLASS_DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.501.2.2"


def _arrays(h: int = 48, w: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    high = rng.integers(0, 65536, size=(h, w), dtype=np.uint16)
    low = rng.integers(0, 65536, size=(h, w), dtype=np.uint16)
    high[0, 0], low[0, 0] = 65535, 0  # both ends of the range survive
    return high, low


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_the_dx_tag_table_agrees_with_the_real_file(real_dicos: Path) -> None:
    ds = pydicom.dcmread(real_dicos / "SimpleProcessingDX.dcs")
    seen = 0
    for el in ds.iterall():
        tag = (el.tag.group, el.tag.element)
        if tag in DX_TAGS:
            assert DX_TAGS[tag] == el.VR, tag
            seen += 1
    assert seen >= 33


def test_written_pair_reads_back_bit_exact(tmp_path: Path) -> None:
    high, low = _arrays()
    files = write_dx_pair(tmp_path, "bag-0042", high, low, pixel_spacing_mm=(0.8, 0.75), kvp_low=80, kvp_high=140)
    assert (files.low.name, files.high.name) == ("bag-0042_low.dcs", "bag-0042_high.dcs")
    pair = read_dx_pair(files.low, files.high)
    assert isinstance(pair, DxPair)
    assert pair.item_id == "bag-0042"
    np.testing.assert_array_equal(pair.high, high)
    np.testing.assert_array_equal(pair.low, low)
    assert pair.high.dtype == np.uint16 and not pair.high.flags.writeable
    assert (pair.height, pair.width) == high.shape
    assert pair.pixel_spacing_mm == (0.8, 0.75)
    h_img, l_img = read_dx(files.high), read_dx(files.low)
    assert (h_img.energy, l_img.energy) == (Energy.HIGH, Energy.LOW)
    assert (h_img.kvp, l_img.kvp) == (140.0, 80.0)
    assert pair.dx_uids == (h_img.sop_instance_uid, l_img.sop_instance_uid)
    assert h_img.study_instance_uid == l_img.study_instance_uid == pair.study_instance_uid
    assert h_img.sop_instance_uid != l_img.sop_instance_uid


def test_every_written_dx_tag_has_the_dicos_number_and_vr(tmp_path: Path) -> None:
    high, low = _arrays(8, 8)
    files = write_dx_pair(tmp_path, "b1", high, low, pixel_spacing_mm=(1.0, 1.0), kvp_low=80, kvp_high=140)
    for path in (files.low, files.high):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.file_meta.MediaStorageSOPClassUID == SOP_CLASS_DX_PROCESSING
        written = {(el.tag.group, el.tag.element): el.VR for el in ds.iterall()}
        assert {t: v for t, v in written.items() if t not in DX_TAGS} == {}
        assert {t: (v, DX_TAGS[t]) for t, v in written.items() if DX_TAGS[t] != v} == {}
        assert ds.Modality == "XRAY" and ds.PresentationIntentType == "FOR PROCESSING"


def test_pairs_match_by_image_type_and_study_even_when_renamed(tmp_path: Path) -> None:
    high, low = _arrays(4, 5)
    files = write_dx_pair(tmp_path / "", "item-a", high, low)
    files.low.rename(tmp_path / "first.dcs")
    files.high.rename(tmp_path / "second.dcs")
    scan = match_dx_pairs(tmp_path)
    assert scan.orphans == ()
    (matched,) = scan.pairs
    assert (matched.item_id, matched.low.name, matched.high.name) == ("item-a", "first.dcs", "second.dcs")


def test_name_rule_and_conflicts_and_missing_partners(tmp_path: Path) -> None:
    high, low = _arrays(4, 5)
    complete = write_dx_pair(tmp_path, "ok", high, low)
    lonely = write_dx_pair(tmp_path, "lonely", high, low)
    lonely.high.unlink()  # the partner has not arrived (yet)
    swapped = write_dx_pair(tmp_path, "swap", high, low)
    swapped.low.rename(tmp_path / "swap2_high.dcs")  # Image Type says LOW, the name says high
    (tmp_path / "notes.txt").write_text("ignored: not a DICOM extension")
    (tmp_path / ".partial.dcs.123.tmp").write_bytes(b"in flight")
    scan = match_dx_pairs(tmp_path)
    assert [p.item_id for p in scan.pairs] == ["ok"]
    assert scan.pairs[0].low == complete.low
    reasons = {o.path.name: o.reason for o in scan.orphans}
    assert set(reasons) == {"lonely_low.dcs", "swap2_high.dcs", "swap_high.dcs"}
    assert "1 low and 0 high" in reasons["lonely_low.dcs"]
    assert "LOW ENERGY" in reasons["swap2_high.dcs"] and "high" in reasons["swap2_high.dcs"]


def test_corrupt_and_truncated_files_raise_frame_error(tmp_path: Path) -> None:
    high, low = _arrays(32, 32)
    files = write_dx_pair(tmp_path, "t", high, low)
    good = files.high.read_bytes()
    cases = {
        "empty.dcs": b"",
        "garbage.dcs": b"\x00" * 128 + b"NOPE" + b"\xff" * 400,
        "header_only.dcs": good[:300],
        "half_pixels.dcs": good[: len(good) - 1000],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FrameError) as err:
            read_dx(tmp_path / name)
        assert name in str(err.value)
    with pytest.raises(FrameError, match="not found"):
        read_dx(tmp_path / "absent.dcs")


def test_truncated_jpeg_lossless_raises_frame_error(real_dicos: Path, tmp_path: Path) -> None:
    data = (real_dicos / "SimplePresentationDX.dcs").read_bytes()
    for cut in (0.3, 0.9, 0.99):
        path = tmp_path / f"cut{cut}.dcs"
        path.write_bytes(data[: int(len(data) * cut)])
        with pytest.raises(FrameError, match=r"truncated|cannot be decoded|unreadable"):
            read_dx(path)


def test_a_broken_pair_is_an_error_for_that_item_not_a_crash(tmp_path: Path) -> None:
    high, low = _arrays(16, 16)
    write_dx_pair(tmp_path, "a-good", high, low)
    bad = write_dx_pair(tmp_path, "b-bad", high, low)
    bad.high.write_bytes(bad.high.read_bytes()[:-200])
    results = list(DicosDxSource(tmp_path))
    assert len(results) == 2
    good, err = results
    assert isinstance(good, DxPair) and good.item_id == "a-good"
    assert isinstance(err, DxPairError) and isinstance(err, FrameError)
    assert err.item_id == "b-bad"
    assert "b-bad_high.dcs" in str(err)


def test_shape_mismatch_and_rescale_are_refused(tmp_path: Path) -> None:
    h1, l1 = _arrays(8, 8)
    h2, l2 = _arrays(8, 9)
    a = write_dx_pair(tmp_path, "a", h1, l1)
    b = write_dx_pair(tmp_path, "b", h2, l2)
    with pytest.raises(DxPairError, match="differ in size"):
        read_dx_pair(a.low, b.high, item_id="mix")
    ds = pydicom.dcmread(a.high)
    ds.RescaleSlope = "2"
    ds.save_as(a.high)
    with pytest.raises(DxPairError, match="rescale"):
        read_dx_pair(a.low, a.high)
    with pytest.raises(DxPairError, match="declared HIGH ENERGY but used as low"):
        read_dx_pair(b.high, b.low)


def test_writer_rejects_bad_arguments(tmp_path: Path) -> None:
    high, low = _arrays(4, 4)
    with pytest.raises(ValueError, match="file name"):
        write_dx_pair(tmp_path, "../escape", high, low)
    with pytest.raises(ValueError, match="uint16"):
        write_dx_pair(tmp_path, "f", high.astype(np.float32), low)
    with pytest.raises(ValueError, match="shape"):
        write_dx_pair(tmp_path, "s", high, low[:2])
    assert list(tmp_path.iterdir()) == []


def test_source_on_missing_directory_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        DicosDxSource(tmp_path / "nope").scan()


def test_real_files_in_a_spool_copy(real_dicos: Path, tmp_path: Path) -> None:
    """A DX from another toolkit paired with one of ours by name: both decode, sizes checked."""
    shutil.copy(real_dicos / "SimpleProcessingDX.dcs", tmp_path / "mixed_low.dcs")
    high, _ = _arrays(128, 256)
    ours = write_dx_pair(tmp_path / "", "tmp", high, high)
    shutil.move(ours.high, tmp_path / "mixed_high.dcs")
    ours.low.unlink()
    scan = match_dx_pairs(tmp_path)
    assert [p.item_id for p in scan.pairs] == ["mixed"]
    pair = DicosDxSource(tmp_path).load(scan.pairs[0])
    assert pair.low.max() == 32767 and pair.low[0, 1] == 1
    np.testing.assert_array_equal(pair.high, high)
