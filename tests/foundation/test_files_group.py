"""``edge.files.atomic_write_group``: the audit store's one-flush write of a record's files (real files)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge.files import atomic_write_bytes, atomic_write_group, current_umask


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writes_every_file_whole_with_the_umask_mode(tmp_path: Path) -> None:
    big = os.urandom(3 * 1024 * 1024)  # larger than one write() may take
    files = [(tmp_path / "r.jpg", big), (tmp_path / "r.tdr.dcs", b"DICM"), (tmp_path / "r.json", b"{}")]
    atomic_write_group(files)
    for path, data in files:
        assert path.read_bytes() == data
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~current_umask()
    assert _leftovers(tmp_path) == []


def test_replaces_existing_files(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "r.json", b"old")
    atomic_write_group([(tmp_path / "r.json", b"new")])
    assert (tmp_path / "r.json").read_bytes() == b"new"


def test_a_failed_rename_keeps_the_earlier_files_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    blocker = tmp_path / "r.json"
    blocker.mkdir()  # a directory where the record's JSON should go: its rename fails
    (blocker / "inside").write_bytes(b"x")
    with pytest.raises(OSError):
        atomic_write_group([(tmp_path / "r.jpg", b"picture"), (blocker, b"{}")])
    assert (tmp_path / "r.jpg").read_bytes() == b"picture"  # renamed before the failure, in order
    assert blocker.is_dir()
    assert _leftovers(tmp_path) == []


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    too_long = tmp_path / ("r" * 300 + ".json")  # its temporary file cannot be created (ENAMETOOLONG)
    with pytest.raises(OSError):
        atomic_write_group([(tmp_path / "r.jpg", b"p"), (too_long, b"{}")])
    assert list(tmp_path.iterdir()) == []  # the first file's temporary is gone and nothing was renamed


def test_refuses_files_of_several_directories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="one directory"):
        atomic_write_group([(tmp_path / "a" / "x", b"1"), (tmp_path / "b" / "y", b"2")])
    assert list((tmp_path / "a").iterdir()) == [] and list((tmp_path / "b").iterdir()) == []


def test_nothing_to_write_is_a_no_op(tmp_path: Path) -> None:
    atomic_write_group([])
    assert list(tmp_path.iterdir()) == []
