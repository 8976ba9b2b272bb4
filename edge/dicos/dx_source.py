"""DICOS DX frame source: a low- and a high-energy DX image of one item → raw uint16 high/low arrays.

Where it sits: the acquire stage's DICOS input (config ``source: {type: dicos, directory: …}``), and
``write_dx_pair`` for tests, demos and tools that need a pair on disk. It reads files; it does no
conditioning (flat-field, log, effective Z happen downstream on the raw arrays).
What it must not do: guess. A file that cannot be paired or decoded is reported with a reason
(``DxScan.orphans``, ``DxPairError``) so the pipeline can mark the item UNSCREENED; nothing crashes and
nothing is silently dropped.

How two single-image DX files are matched into one item's pair (also in ``docs/dicos.md``):

1. Energy: a file name ending ``_low`` or ``_high`` before the extension (``bag42_low.dcs``), and/or Image
   Type (0008,0008) containing ``LOW ENERGY`` or ``HIGH ENERGY`` (the convention the DICOS CT sample uses,
   and what ``write_dx_pair`` writes as well as the name). If both say something and disagree, the file is
   an orphan; if neither does, too.
2. Pairing key: files named ``<key>_low``/``<key>_high`` pair by ``<key>``; files without the suffix (energy
   from Image Type only) pair by Study Instance UID (0020,000D). Exactly one low and one high per key
   makes a pair; anything else is an orphan with the reason.
3. Item id: the OOI ID (Patient ID, 0010,0020) when present and not ``unknown``; otherwise the key.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from edge.dicos._io import encode, missing_jpeg_decoder, write_atomic
from edge.dicos.tags import DICOS_VERSION, DX_SOP_CLASSES, SOP_CLASS_DX_PROCESSING
from edge.errors import FrameError, SourceError
from edge.sources.bounds import InputLimits, OversizeError, check_file_size

DX_SUFFIXES: Final = (".dcs", ".dcm", ".dicom")
"""File extensions the source looks at (case-insensitive); hidden files (temporary writes) are skipped."""
_UNKNOWN_IDS: Final = frozenset({"", "UNKNOWN"})


class Energy(StrEnum):
    """Which tube energy an image was taken at."""

    LOW = "low"
    HIGH = "high"

    @property
    def image_type_value(self) -> str:
        return f"{self.name} ENERGY"


class DxPairError(FrameError):
    """One item's DX pair cannot be used; ``item_id`` says which item to report UNSCREENED."""

    def __init__(self, item_id: str, message: str) -> None:
        self.item_id = item_id
        super().__init__(f"item {item_id}: {message}")


@dataclass(frozen=True, slots=True)
class DxImage:
    """One decoded DX image. ``pixels`` is (rows, columns) uint16, read-only, stored values (no LUT)."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    ooi_id: str | None
    energy: Energy | None
    photometric_interpretation: str
    pixel_spacing_mm: tuple[float, float] | None
    kvp: float | None
    pixels: NDArray[np.uint16]

    def __post_init__(self) -> None:
        if self.pixels.dtype != np.uint16 or self.pixels.ndim != 2:
            raise ValueError(f"{self.path}: pixels must be (H, W) uint16, got {self.pixels.dtype} {self.pixels.shape}")
        self.pixels.flags.writeable = False

    @property
    def rows(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def columns(self) -> int:
        return int(self.pixels.shape[1])


@dataclass(frozen=True, slots=True)
class DxPair:
    """One item as the acquire stage hands it on: raw high/low counts, (H, W) uint16 each, read-only.

    Rows are belt lines, columns detector channels. ``pixel_spacing_mm`` is (row, column) spacing.
    """

    item_id: str
    high: NDArray[np.uint16]
    low: NDArray[np.uint16]
    pixel_spacing_mm: tuple[float, float] | None
    high_sop_instance_uid: str
    low_sop_instance_uid: str
    study_instance_uid: str | None

    def __post_init__(self) -> None:
        for name, arr in (("high", self.high), ("low", self.low)):
            if arr.dtype != np.uint16 or arr.ndim != 2:
                raise ValueError(f"{self.item_id}: {name} must be (H, W) uint16, got {arr.dtype} {arr.shape}")
        if self.high.shape != self.low.shape:
            raise ValueError(f"{self.item_id}: high {self.high.shape} and low {self.low.shape} differ in shape")
        self.high.flags.writeable = False
        self.low.flags.writeable = False

    @property
    def height(self) -> int:
        return int(self.high.shape[0])

    @property
    def width(self) -> int:
        return int(self.high.shape[1])

    @property
    def dx_uids(self) -> tuple[str, str]:
        """(high, low) SOP Instance UIDs, in the order ``write_tdr(dx_uids=…)`` takes them."""
        return self.high_sop_instance_uid, self.low_sop_instance_uid


@dataclass(frozen=True, slots=True)
class DxPairFiles:
    """Two files matched as one item's pair (not yet decoded)."""

    item_id: str
    low: Path
    high: Path


@dataclass(frozen=True, slots=True)
class DxOrphan:
    """A file that is not (yet) part of a pair, and why. A partner may still be being written."""

    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class DxScan:
    """Result of matching a directory: complete pairs (sorted by item id) and files left over."""

    pairs: tuple[DxPairFiles, ...]
    orphans: tuple[DxOrphan, ...]


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _ooi_id(ds: Dataset) -> str | None:
    value = _text(ds, "PatientID")
    return None if value is None or value.upper() in _UNKNOWN_IDS else value


def _declared_energy(ds: Dataset) -> Energy | None:
    image_type = ds.get("ImageType")
    values = [image_type] if isinstance(image_type, str) else list(image_type or [])
    found = {e for e in Energy for v in values if str(v).strip().upper() == e.image_type_value}
    return found.pop() if len(found) == 1 else None


def _name_energy(path: Path) -> tuple[Energy | None, str]:
    """Energy from a ``_low``/``_high`` name suffix, and the name without it (the pairing key)."""
    stem = path.stem
    for energy in Energy:
        suffix = f"_{energy.value}"
        if stem.lower().endswith(suffix):
            return energy, stem[: -len(suffix)]
    return None, stem


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            return float(value[0]), float(value[1])
    return None


def _read_dataset(path: Path, header_only: bool) -> Dataset:
    # Vendor files (e.g. the Stratovan toolkit's) carry UIDs with leading-zero components: pydicom warns,
    # the files are still readable.
    try:
        return dcmread(path, stop_before_pixels=header_only)
    except FileNotFoundError as exc:
        raise FrameError(f"{path}: file not found") from exc
    except Exception as exc:  # pydicom raises many types on damaged input; all mean "unreadable"
        raise FrameError(f"{path}: unreadable DICOM/DICOS file ({type(exc).__name__}: {exc})") from exc


def _check_dx(path: Path, ds: Dataset) -> str:
    sop_class = _text(ds, "SOPClassUID") or ""
    if not sop_class:
        # pydicom returns an empty dataset when encapsulated pixel data is cut short.
        raise FrameError(f"{path}: no SOP Class UID (0008,0016); the file is truncated or damaged")
    if sop_class not in DX_SOP_CLASSES:
        raise FrameError(
            f"{path}: not a DX image (SOP Class UID {sop_class!r}; expected DICOS DX {SOP_CLASS_DX_PROCESSING})"
        )
    return sop_class


def check_dx_size(path: Path, limits: InputLimits) -> None:
    """Refuse a DX file whose declared image (Rows x Columns x frames x samples, read with
    ``stop_before_pixels``) or whose file size is over ``limits``, before its pixel data is read or decoded.

    A DX item is a pair, so one image's decoded bytes count twice against ``max_item_bytes``.

    Raises:
        FrameError: the file is over a limit (its cause is an ``OversizeError``: UNSCREENED ``oversize``) or
            its header is unreadable.
    """
    try:
        try:
            check_file_size(path, limits)
        except FileNotFoundError as exc:
            raise FrameError(f"{path}: file not found") from exc
        except OSError as exc:
            raise FrameError(f"{path}: unreadable ({exc})") from exc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = _read_dataset(path, header_only=True)
        try:
            rows, cols = int(ds.Rows), int(ds.Columns)
            per_pixel = int(ds.get("SamplesPerPixel") or 1) * max(1, int(ds.get("BitsAllocated") or 16) // 8)
            frames = int(ds.get("NumberOfFrames") or 1)
        except (AttributeError, TypeError, ValueError) as exc:
            raise FrameError(f"{path}: DX image attributes missing or invalid ({exc})") from exc
        limits.check(path.name, rows, cols, 2 * rows * cols * per_pixel * frames)
    except OversizeError as exc:
        raise FrameError(str(exc)) from exc


def read_dx(path: Path | str, limits: InputLimits | None = None) -> DxImage:
    """Read and decode one DX image (native, or JPEG Lossless via pylibjpeg: the ``dicos-jpeg`` extra).

    The declared size is checked against ``limits`` (:func:`check_dx_size`) before pixel data is read.

    Raises:
        FrameError: unreadable, truncated, over ``limits``, not DX, not single-frame 16-bit unsigned
            single-sample, pixel data that does not decode to rows x columns, or an element pydicom cannot
            decode when it is read (a value of the wrong length raises pydicom's own exceptions, which would
            otherwise escape the source: the item dropped instead of UNSCREENED).
    """
    try:
        return _read_dx(Path(path), limits)
    except FrameError:
        raise
    except Exception as exc:  # pydicom decodes elements lazily, on first access, with errors of its own
        raise FrameError(f"{path}: damaged DICOS element ({type(exc).__name__}: {exc})") from exc


def _read_dx(path: Path, limits: InputLimits | None) -> DxImage:
    check_dx_size(path, limits or InputLimits())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = _read_dataset(path, header_only=False)
        sop_class = _check_dx(path, ds)
        try:
            rows, cols = int(ds.Rows), int(ds.Columns)
            layout = (int(ds.SamplesPerPixel), int(ds.BitsAllocated), int(ds.PixelRepresentation))
            frames = int(ds.get("NumberOfFrames") or 1)
        except (AttributeError, TypeError, ValueError) as exc:
            raise FrameError(f"{path}: DX image attributes missing or invalid ({exc})") from exc
        if layout != (1, 16, 0) or frames != 1:
            raise FrameError(
                f"{path}: unsupported DX layout (samples per pixel, bits allocated, pixel representation) = "
                f"{layout}, frames = {frames}; expected (1, 16, 0) and 1 frame of raw uint16 counts"
            )
        if "PixelData" not in ds:
            raise FrameError(f"{path}: no Pixel Data (7FE0,0010); the file may be truncated")
        if (missing := missing_jpeg_decoder(ds)) is not None:
            raise FrameError(f"{path}: {missing}")
        try:
            arr = ds.pixel_array
        except Exception as exc:  # decoder errors: truncated native data, broken JPEG stream, no plugin
            raise FrameError(f"{path}: pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc
        if arr.shape != (rows, cols):
            raise FrameError(f"{path}: pixel data decodes to {arr.shape}, header says {(rows, cols)}")
        kvp = ds.get("KVP")
        return DxImage(
            path=path,
            sop_class_uid=sop_class,
            sop_instance_uid=_text(ds, "SOPInstanceUID") or "",
            study_instance_uid=_text(ds, "StudyInstanceUID"),
            series_instance_uid=_text(ds, "SeriesInstanceUID"),
            ooi_id=_ooi_id(ds),
            energy=_declared_energy(ds),
            photometric_interpretation=_text(ds, "PhotometricInterpretation") or "",
            pixel_spacing_mm=_pixel_spacing(ds),
            kvp=float(kvp) if kvp not in (None, "") else None,
            pixels=np.ascontiguousarray(arr, dtype=np.uint16),
        )


def read_dx_pair(low_path: Path | str, high_path: Path | str, item_id: str | None = None,
                 limits: InputLimits | None = None) -> DxPair:
    """Read one item's low- and high-energy DX images into a ``DxPair``.

    Raises:
        DxPairError: either file is unusable, the energies declared in the files contradict their roles,
            the images are not MONOCHROME2 raw counts with identity rescale, or shapes/spacings differ. Over
            ``limits``, its cause chain holds an ``OversizeError`` (``bounds.problem_reason``).
    """
    low_path, high_path = Path(low_path), Path(high_path)
    key = item_id or _name_energy(low_path)[1]
    limits = limits or InputLimits()
    try:
        check_dx_size(low_path, limits)  # both headers before either image is decoded
        check_dx_size(high_path, limits)
        low, high = read_dx(low_path, limits), read_dx(high_path, limits)
    except FrameError as exc:
        raise DxPairError(key, str(exc)) from exc
    key = item_id or low.ooi_id or high.ooi_id or key
    for role, image in ((Energy.LOW, low), (Energy.HIGH, high)):
        if image.energy is not None and image.energy is not role:
            raise DxPairError(key, f"{image.path} is declared {image.energy.image_type_value} but used as {role.value}")
        if image.photometric_interpretation != "MONOCHROME2":
            raise DxPairError(
                key,
                f"{image.path}: photometric interpretation {image.photometric_interpretation!r} is not raw "
                "intensity; expected MONOCHROME2",
            )
    if low.pixels.shape != high.pixels.shape:
        raise DxPairError(key, f"low {low.pixels.shape} and high {high.pixels.shape} images differ in size")
    if low.pixel_spacing_mm != high.pixel_spacing_mm:
        raise DxPairError(key, f"pixel spacing differs: low {low.pixel_spacing_mm}, high {high.pixel_spacing_mm}")
    _check_identity_rescale(key, low_path)
    _check_identity_rescale(key, high_path)
    return DxPair(
        item_id=key,
        high=high.pixels,
        low=low.pixels,
        pixel_spacing_mm=low.pixel_spacing_mm,
        high_sop_instance_uid=high.sop_instance_uid,
        low_sop_instance_uid=low.sop_instance_uid,
        study_instance_uid=low.study_instance_uid or high.study_instance_uid,
    )


def _check_identity_rescale(key: str, path: Path) -> None:
    """The pipeline's flat-field works on stored counts; a non-identity rescale would change their meaning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = _read_dataset(path, header_only=True)
        slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        if (slope is not None and float(slope) != 1.0) or (intercept is not None and float(intercept) != 0.0):
            raise DxPairError(key, f"{path}: rescale slope/intercept {slope}/{intercept}; expected 1/0 (raw counts)")


def match_dx_pairs(directory: Path | str) -> DxScan:
    """Match the DX files in ``directory`` into pairs (rules in the module docstring). Reads headers only."""
    directory = Path(directory)
    groups: dict[tuple[str, str], dict[Energy, list[tuple[Path, str | None]]]] = defaultdict(lambda: defaultdict(list))
    orphans: list[DxOrphan] = []
    files = sorted(
        p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in DX_SUFFIXES
    )
    for path in files:
        name_energy, name_key = _name_energy(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = _read_dataset(path, header_only=True)
                _check_dx(path, ds)
                declared = _declared_energy(ds)
                study = _text(ds, "StudyInstanceUID")
                ooi = _ooi_id(ds)
        except FrameError as exc:
            orphans.append(DxOrphan(path, str(exc)))
            continue
        if declared is not None and name_energy is not None and declared is not name_energy:
            orphans.append(
                DxOrphan(path, f"Image Type says {declared.image_type_value} but the name says {name_energy.value}")
            )
        elif name_energy is not None:
            groups[("name", name_key)][name_energy].append((path, ooi or name_key))
        elif declared is not None and study is not None:
            groups[("study", study)][declared].append((path, ooi or name_key))
        else:
            orphans.append(
                DxOrphan(path, "energy unknown: no HIGH/LOW ENERGY in Image Type and no _high/_low in the name")
            )
    pairs: list[DxPairFiles] = []
    for (kind, key), by_energy in groups.items():
        lows, highs = by_energy.get(Energy.LOW, []), by_energy.get(Energy.HIGH, [])
        if len(lows) == 1 and len(highs) == 1:
            pairs.append(DxPairFiles(item_id=lows[0][1] or highs[0][1] or key, low=lows[0][0], high=highs[0][0]))
            continue
        for path, _ in (*lows, *highs):
            orphans.append(
                DxOrphan(path, f"{len(lows)} low and {len(highs)} high energy image(s) share {kind} {key!r}")
            )
    return DxScan(
        pairs=tuple(sorted(pairs, key=lambda p: (p.item_id, str(p.low)))),
        orphans=tuple(sorted(orphans, key=lambda o: str(o.path))),
    )


class DicosDxSource:
    """Items from a directory of DICOS DX files, one low/high pair per item.

    ``scan`` is cheap (headers only); ``load`` decodes one pair. Orphans are left for the caller to judge:
    a partner file may still be arriving, so only the caller knows when an orphan becomes an UNSCREENED item.
    """

    def __init__(self, directory: Path | str, limits: InputLimits | None = None) -> None:
        self._directory = Path(directory)
        self._limits = limits or InputLimits()

    def scan(self) -> DxScan:
        """Match the directory now.

        Raises:
            SourceError: the directory is missing (unmounted share, wrong path).
        """
        if not self._directory.is_dir():
            raise SourceError(f"{self._directory}: DICOS DX directory does not exist")
        return match_dx_pairs(self._directory)

    def load(self, files: DxPairFiles) -> DxPair:
        """Decode one matched pair; raises ``DxPairError`` (carrying ``item_id``) when it cannot."""
        return read_dx_pair(files.low, files.high, item_id=files.item_id, limits=self._limits)

    def __iter__(self) -> Iterator[DxPair | DxPairError]:
        """Every matched pair in item order: the decoded pair, or the error that makes it UNSCREENED."""
        for files in self.scan().pairs:
            try:
                yield self.load(files)
            except DxPairError as exc:
                yield exc


def _dx_dataset(
    pixels: NDArray[np.uint16],
    energy: Energy,
    *,
    item_id: str,
    study_uid: str,
    series_uid: str,
    instance_number: int,
    acquired_wall: float,
    pixel_spacing_mm: tuple[float, float] | None,
    kvp: float | None,
    ooi_type: str,
) -> Dataset:
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SOP_CLASS_DX_PROCESSING)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    stamp = time.gmtime(acquired_wall)
    da, tm = time.strftime("%Y%m%d", stamp), time.strftime("%H%M%S", stamp)
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "INTENSITY", energy.image_type_value]
    ds.SOPClassUID = SOP_CLASS_DX_PROCESSING
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate, ds.StudyTime = da, tm
    ds.ContentDate, ds.ContentTime = da, tm
    ds.Modality = "XRAY"
    ds.PresentationIntentType = "FOR PROCESSING"
    ds.Manufacturer = "xray-edge"
    ds.PatientID = item_id
    ds.TypeOfPatientID = "TEXT"
    if kvp is not None:
        ds.KVP = f"{kvp:.6g}"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = instance_number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = [f"{pixel_spacing_mm[0]:.6g}", f"{pixel_spacing_mm[1]:.6g}"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.DICOSVersion = DICOS_VERSION
    ds.OOIType = ooi_type
    ds.AcquisitionStatus = "SUCCESSFUL"
    ds.ScanType = "OPERATIONAL"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def write_dx_pair(
    directory: Path | str,
    item_id: str,
    high: NDArray[np.uint16],
    low: NDArray[np.uint16],
    *,
    pixel_spacing_mm: tuple[float, float] | None = None,
    kvp_low: float | None = None,
    kvp_high: float | None = None,
    ooi_type: str = "BAGGAGE",
    acquired_wall: float | None = None,
) -> DxPairFiles:
    """Write ``<item_id>_low.dcs`` and ``<item_id>_high.dcs`` (DICOS DX For Processing), atomically.

    Both files share one study and series and carry their energy in Image Type and in the name, so either
    pairing rule finds them. The low file is written first: a watcher that sees the high file sees a pair.

    Raises:
        ValueError: arrays are not equal-shaped (H, W) uint16, or ``item_id`` is not a safe file name.
    """
    if not item_id or item_id != Path(item_id).name or item_id.startswith(".") or os.sep in item_id:
        raise ValueError(f"item_id {item_id!r} is not usable as a file name")
    for name, arr in (("high", high), ("low", low)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint16 or arr.ndim != 2:
            raise ValueError(f"{name} must be a (H, W) uint16 array")
    if high.shape != low.shape:
        raise ValueError(f"high {high.shape} and low {low.shape} differ in shape")
    directory = Path(directory)
    study_uid, series_uid = generate_uid(), generate_uid()
    wall = time.time() if acquired_wall is None else acquired_wall
    paths = {}
    for number, (energy, arr, kvp) in enumerate(((Energy.LOW, low, kvp_low), (Energy.HIGH, high, kvp_high)), 1):
        ds = _dx_dataset(
            arr,
            energy,
            item_id=item_id,
            study_uid=study_uid,
            series_uid=series_uid,
            instance_number=number,
            acquired_wall=wall,
            pixel_spacing_mm=pixel_spacing_mm,
            kvp=kvp,
            ooi_type=ooi_type,
        )
        path = directory / f"{item_id}_{energy.value}.dcs"
        write_atomic(path, encode(ds))
        paths[energy] = path
    return DxPairFiles(item_id=item_id, low=paths[Energy.LOW], high=paths[Energy.HIGH])
