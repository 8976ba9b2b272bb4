"""Issue 29 point 4: input bombs. A small file that declares (and decodes to) a huge array must not take the
service down: it is refused from its declared size, before anything of that size is allocated, made UNSCREENED
``oversize`` and moved to ``rejected/``; the service keeps screening.

The bomb is the issue's: a 3.5 MB ``.npz`` of two 30000x30000 uint16 arrays of zeros (3.6 GB decoded). The tests
put an address-space cap on the process that reads it (``RLIMIT_AS``, the nearest a test can get to the unit's
``MemoryMax=2G`` without owning a cgroup): the old code's decode then fails at the 1.8 GB allocation instead of
being OOM-killed, which keeps the shared test machine safe and still shows whether the size was checked first.
Smaller cases cover each declared-size reader: zip member sizes, ``.npy`` headers, PNG/TIFF headers, VOTI file
sizes and DICOS Rows/Columns.
"""

from __future__ import annotations

import contextlib
import io
import resource
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.lib import format as npy_format
from pydicom import dcmread

from edge.dicos.dx_source import DxPairError, read_dx_pair, write_dx_pair
from edge.pipeline import Pipeline, Stage
from edge.records import RawItem, UnscreenedReason, Verdict
from edge.sinks.memory import MemorySink
from edge.sources.bounds import InputLimits, OversizeError, check_npz, image_header, problem_reason
from edge.sources.spool import SpoolSource, read_spool_item
from edge.sources.voti import VotiSource, write_voti
from edge.stages.decide import decide
from tests.faults.bombs import npz_bomb
from tests.faults.faults_helpers import FaultRig, FedItem, ItemPool, wait_until

GB = 1024**3


def _vm_size() -> int:
    """This process's virtual size in bytes (what ``RLIMIT_AS`` counts)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize in /proc/self/status")


@contextlib.contextmanager
def _address_space_cap(headroom: int) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``headroom`` bytes, then restore the cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + headroom, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = npz_bomb(tmp_path_factory.mktemp("bomb") / "bomb.npz")
    assert path.stat().st_size < 4_000_000  # the 3.5 MB file
    return path


def _clear(item: RawItem) -> Any:
    return decide(item.meta, [], time.time(), time.monotonic())


def _good(rng: np.random.Generator, lines: int = 64, channels: int = 64) -> tuple[np.ndarray, np.ndarray]:
    return (rng.integers(1000, 60000, size=(lines, channels), dtype=np.uint16),
            rng.integers(1000, 60000, size=(lines, channels), dtype=np.uint16))


def test_npz_bomb_in_process_is_unscreened_oversize_and_the_source_keeps_working(tmp_path: Path,
                                                                                 bomb: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "bomb.npz").write_bytes(bomb.read_bytes())
    high, low = _good(np.random.default_rng(1))
    np.savez(spool / "zgood.npz", high=high, low=low)
    source = SpoolSource(spool, "lane1", deadline_s=30, poll_s=0.02)
    sink = MemorySink()
    pipeline = Pipeline(source, [Stage("decide", _clear)], [sink])
    with _address_space_cap(1 * GB):  # a decode of the bomb needs 3.6 GB
        pipeline.start()
        try:
            assert sink.wait_for(2, timeout_s=60), f"decisions: {[(d.item_id, d.reason) for d in sink.decisions]}"
        finally:
            pipeline.stop(timeout_s=10)
    by_id = {d.item_id: d for d in sink.decisions}
    assert by_id["lane1-bomb"].verdict is Verdict.UNSCREENED
    assert by_id["lane1-bomb"].reason is UnscreenedReason.OVERSIZE, by_id["lane1-bomb"].detail
    assert "30000" in by_id["lane1-bomb"].detail
    assert by_id["lane1-zgood"].verdict is Verdict.CLEAR
    wait_until(lambda: (spool / "rejected" / "bomb.npz").exists(), 10, "the bomb moved to rejected/")
    assert not (spool / "bomb.npz").exists()
    assert pipeline.problems() == []


def test_npz_bomb_through_edge_run_keeps_the_service_alive(rig: Callable[..., FaultRig], bomb: Path,
                                                           item_pool: ItemPool) -> None:
    """The real service (``edge run`` subprocess) under an address-space cap of 2 GB above its resident size
    once started (as ``MemoryMax=2G`` would leave it): the bomb is UNSCREENED ``oversize`` and goes to
    ``rejected/``, the service stays up and screens the next item."""
    r = rig()
    r.service.start()
    pid = r.service.pid
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in status if line.startswith(("Vm", "Rss"))}
    cap = fields["VmSize"] + max(0, 2 * GB - fields["VmRSS"])
    resource.prlimit(pid, resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
    (r.spool.directory / ".bomb.npz.tmp").write_bytes(bomb.read_bytes())
    (r.spool.directory / ".bomb.npz.tmp").rename(r.spool.directory / "bomb.npz")
    fed = [FedItem("bomb", "lane1-bomb", has_xray=False, fed_wall=time.time())]
    fed.append(r.spool.drop("good1", *item_pool.arrays(0)))
    report = r.wait_for_decisions(fed, timeout_s=180)
    assert r.service.alive, f"the service died:\n{r.service.log_tail()}"
    assert report.ok, report.summary()
    records = {str(b["item_id"]): b for b in r.records()}
    assert records["lane1-bomb"]["verdict"] == "unscreened"
    assert records["lane1-bomb"]["reason"] == "oversize", records["lane1-bomb"]
    assert records["lane1-good1"]["verdict"] in ("clear", "alarm")
    wait_until(lambda: (r.spool.directory / "rejected" / "bomb.npz").exists(), 30, "the bomb moved to rejected/")
    peak = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:"))
    assert peak < fields["VmRSS"] + 1 * GB, f"peak RSS {peak / GB:.2f} GB"


# ------------------------------------------------------------------------------------ each declared-size reader


def test_npy_headers_of_both_arrays_count_together(tmp_path: Path) -> None:
    path = npz_bomb(tmp_path / "mid.npz", lines=2000, channels=2000)  # 8 MB per array decoded
    with pytest.raises(OversizeError, match=r"high\.npy \(2000, 2000\): declares 8000000 bytes"):
        check_npz(path, ("high", "low"), InputLimits(max_item_bytes=4_000_000))
    with pytest.raises(OversizeError, match=r"low\.npy \(2000, 2000\): declares 16000000 bytes"):
        check_npz(path, ("high", "low"), InputLimits(max_item_bytes=12_000_000))
    assert check_npz(path, ("high", "low"), InputLimits(max_item_bytes=16_000_000))["low"][0] == (2000, 2000)


def test_the_largest_legal_item_is_read_and_one_line_more_is_oversize(tmp_path: Path) -> None:
    """At the default limits (``source.max_lines`` 20,000; ``max_item_bytes`` 20,000 x 640 x 2 x 2): the file's
    zip and ``.npy`` overheads must not push a legal item over."""
    limits = InputLimits()
    legal = np.zeros((limits.max_lines, 640), np.uint16)
    np.savez(tmp_path / "legal.npz", high=legal, low=legal)
    assert read_spool_item(tmp_path / "legal.npz")[0].shape == (limits.max_lines, 640)
    longer = np.zeros((limits.max_lines + 1, 640), np.uint16)
    np.savez(tmp_path / "longer.npz", high=longer, low=longer)
    with pytest.raises(OversizeError, match="20001 lines"):
        read_spool_item(tmp_path / "longer.npz")


def test_zip_member_declared_size_is_checked_too(tmp_path: Path) -> None:
    """A small array with megabytes of padding behind it: its zip member declares more than the limit."""
    path = tmp_path / "padded.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("high", "low"):
            buf = io.BytesIO()
            np.save(buf, np.ones((4, 4), np.uint16))
            archive.writestr(f"{name}.npy", buf.getvalue() + bytes(8_000_000))
    with pytest.raises(OversizeError, match=r"high\.npy \(zip member\): declares 8000032 bytes"):
        read_spool_item(path, InputLimits(max_item_bytes=4_000_000))


def test_npy_header_declaring_more_than_the_member_holds_is_oversize(tmp_path: Path) -> None:
    """A truncated member whose header declares 30000x30000: refused from the header (the old code allocated
    the declared array and then failed on EOF, or, with data behind it, decoded it all)."""
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("high", "low"):
            buf = io.BytesIO()
            npy_format.write_array_header_1_0(buf, {"descr": "<u2", "fortran_order": False, "shape": (30000, 30000)})
            archive.writestr(f"{name}.npy", buf.getvalue() + bytes(64))
    with pytest.raises(OversizeError, match=r"\(30000, 30000\): declares 30000 lines"):
        read_spool_item(path)


def _png_header(width: int, height: int, bits: int = 16, colour: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_png_item_declaring_a_huge_image_is_oversize_before_decoding(tmp_path: Path) -> None:
    item = tmp_path / "item"
    item.mkdir()
    for name in ("high", "low"):
        (item / f"{name}.png").write_bytes(_png_header(60_000, 60_000) + b"\x00" * 100)
    with pytest.raises(OversizeError, match="declares 60000 lines") as caught:
        read_spool_item(item)
    assert problem_reason(caught.value) is UnscreenedReason.OVERSIZE
    header = image_header(item / "high.png")
    assert (header.height, header.width, header.bits, header.samples) == (60_000, 60_000, 16, 1)


def test_tiff_header_is_read_without_decoding(tmp_path: Path) -> None:
    import cv2

    image = np.zeros((37, 53), dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / "a.tif"), image)
    header = image_header(tmp_path / "a.tif")
    assert (header.height, header.width, header.bits, header.samples) == (37, 53, 16, 1)
    item = tmp_path / "item"
    item.mkdir()
    for name in ("high", "low"):
        assert cv2.imwrite(str(item / f"{name}.tif"), np.full((40, 30), 1000, np.uint16))
    high, low = read_spool_item(item)
    assert high.shape == (40, 30) and low.dtype == np.uint16
    with pytest.raises(OversizeError, match="declares 40 lines"):
        read_spool_item(item, InputLimits(max_lines=39))


def test_voti_file_over_the_limits_is_unscreened_oversize_from_its_size(tmp_path: Path) -> None:
    high, low = _good(np.random.default_rng(2), lines=50, channels=64)
    write_voti(tmp_path / "a_ok.raw", high, low, header_lines=30)
    with open(tmp_path / "b_huge.raw", "wb") as handle:  # sparse: 6 GB declared by its size, nothing on disk
        handle.truncate(6 * GB)
    source = VotiSource(tmp_path, "lane1", deadline_s=10, channels=64, limits=InputLimits(max_lines=10_000))
    items = [source.next_item(1.0), source.next_item(1.0)]
    assert items[0] is not None and items[0].problem is None and items[0].high is not None
    assert items[1] is not None and items[1].problem_reason is UnscreenedReason.OVERSIZE, items[1]
    assert "b_huge.raw" in (items[1].problem or "")


def test_dicos_pair_declaring_huge_rows_is_oversize_before_pixel_data(tmp_path: Path) -> None:
    high, low = _good(np.random.default_rng(3), lines=32, channels=48)
    files = write_dx_pair(tmp_path, "bag1", high, low)
    ds = dcmread(files.high)
    ds.Rows = 60_000  # the pixel data still holds 32 rows: only the declaration is huge
    ds.save_as(files.high)
    with pytest.raises(DxPairError) as caught:
        read_dx_pair(files.low, files.high, limits=InputLimits(max_lines=40_000))
    assert problem_reason(caught.value) is UnscreenedReason.OVERSIZE, caught.value
    assert "60000 lines" in str(caught.value)
    (tmp_path / "ok").mkdir()
    ok_files = write_dx_pair(tmp_path / "ok", "bag2", high, low)
    assert read_dx_pair(ok_files.low, ok_files.high, limits=InputLimits(max_lines=40_000)).high.shape == (32, 48)


def test_dicos_source_delivers_an_oversize_pair_as_oversize_and_rejects_it(tmp_path: Path) -> None:
    from edge.sources.dicos import DicosFrameSource

    high, low = _good(np.random.default_rng(4), lines=32, channels=48)
    files = write_dx_pair(tmp_path, "bag1", high, low)
    ds = dcmread(files.low)
    ds.Rows, ds.Columns = 50_000, 50_000
    ds.save_as(files.low)
    source = DicosFrameSource(tmp_path, "lane1", deadline_s=10, limits=InputLimits())
    item = source.next_item(1.0)
    assert item is not None and item.problem_reason is UnscreenedReason.OVERSIZE, item
    assert item.source_ref is not None
    source.acknowledge(item.source_ref)
    assert sorted(p.name for p in (tmp_path / "rejected").iterdir()) == ["bag1_high.dcs", "bag1_low.dcs"]
