"""The file operations the transaction is built on, on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from device_handler import fsops
from device_handler.errors import PowerCut
from device_handler.fsops import (
    RealFileOps,
    atomic_write,
    ensure_dir,
    read_bytes,
    read_optional,
)
from device_handler.testing import CrashingFileOps, NoSyncFileOps


@pytest.mark.parametrize(
    "size",
    [0, 1, fsops._READ_CHUNK - 1, fsops._READ_CHUNK, fsops._READ_CHUNK + 1, 3 * fsops._READ_CHUNK],
)
def test_read_bytes_returns_the_whole_file_whatever_its_size(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert read_bytes(path) == data
    assert read_bytes(str(path)) == data


def test_read_optional_is_none_only_for_a_missing_file(tmp_path: Path) -> None:
    assert read_optional(tmp_path / "missing") is None
    (tmp_path / "empty").write_bytes(b"")
    assert read_optional(tmp_path / "empty") == b""


@pytest.mark.parametrize("fs", [RealFileOps(), NoSyncFileOps()], ids=["real", "nosync"])
def test_write_durable_replaces_the_content(tmp_path: Path, fs: RealFileOps) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a much longer old content")
    fs.write_durable(path, b"new")
    assert path.read_bytes() == b"new"
    created = tmp_path / "created"
    fs.write_durable(created, b"x")
    assert created.stat().st_mode & 0o777 == 0o600  # the device's files are its own


def test_crash_points_of_a_durable_write_are_the_write_and_the_fsync(tmp_path: Path) -> None:
    recorder = CrashingFileOps()
    atomic_write(recorder, tmp_path / "journal.json", b"{}")
    assert [kind for kind, _ in recorder.ops] == ["write", "fsync", "rename", "fsync_dir"]


def test_a_cut_between_write_and_fsync_loses_the_unsynced_content(tmp_path: Path) -> None:
    target = tmp_path / "journal.json"
    target.write_bytes(b"old")
    with pytest.raises(PowerCut):
        atomic_write(CrashingFileOps(crash_at=1), target, b"new")
    assert target.read_bytes() == b"old"  # the live file is untouched
    assert (tmp_path / "journal.json.tmp").read_bytes() == b""  # written, never synced: lost


def test_ensure_dir_says_whether_it_made_the_directory(tmp_path: Path) -> None:
    assert ensure_dir(tmp_path / "a") is True
    assert ensure_dir(tmp_path / "a") is False  # already there: nothing made
    assert ensure_dir(tmp_path / "b" / "c" / "d") is True  # missing parents made too
    assert (tmp_path / "b" / "c" / "d").is_dir()


def test_a_cut_tracks_unsynced_files_whether_named_by_str_or_path(tmp_path: Path) -> None:
    # The transaction names files by str, tests and callers by Path: one file either way.
    crashing = CrashingFileOps(crash_at=2)
    target = tmp_path / "bundle.pem.staged"
    crashing.write(str(target), b"written, never synced")
    crashing.rename(target, tmp_path / "bundle.pem")  # a Path for the same file
    with pytest.raises(PowerCut, match="before fsync_dir"):
        crashing.fsync_dir(tmp_path)
    assert (tmp_path / "bundle.pem").read_bytes() == b""  # the renamed, unsynced file is lost
    assert [name for _, name in crashing.ops] == ["bundle.pem.staged", "bundle.pem"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/a/b/c.json", "/a/b"), ("/c.json", "/"), ("c.json", "."), ("a/c.json", "a")],
)
def test_parent_dir_is_the_paths_parent(path: str, expected: str) -> None:
    assert fsops.parent_dir(path) == expected == str(Path(path).parent)


def test_remove_takes_a_str_and_leaves_a_missing_file_alone(tmp_path: Path) -> None:
    target = tmp_path / "rollback.json"
    target.write_bytes(b"{}")
    RealFileOps().remove(str(target))
    assert not target.exists()
    RealFileOps().remove(str(target))  # already gone: nothing to do, no error


def test_a_new_file_is_private_to_the_agent(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    atomic_write(RealFileOps(), path, b"{}")
    assert path.stat().st_mode & 0o7777 == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o444, 0o600])
def test_replacing_a_file_keeps_its_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "trust.pem"
    path.write_bytes(b"old")
    path.chmod(mode)
    atomic_write(RealFileOps(), path, b"new")
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o7777 == mode


def test_a_leftover_temporary_file_does_not_lend_its_mode(tmp_path: Path) -> None:
    """O_CREAT's mode applies to new files only: a .tmp left by a power cut keeps its own."""
    path = tmp_path / "endpoint.json"
    path.write_bytes(b"old")
    path.chmod(0o640)
    leftover = tmp_path / "endpoint.json.tmp"
    leftover.write_bytes(b"half")
    leftover.chmod(0o666)
    atomic_write(RealFileOps(), path, b"new")
    assert path.stat().st_mode & 0o7777 == 0o640


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="giving a file to another user needs root (chown)",
)
def test_replacing_a_file_keeps_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "trust.pem"
    path.write_bytes(b"old")
    os.chown(path, 4321, 4322)
    path.chmod(0o640)
    atomic_write(RealFileOps(), path, b"new")
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (4321, 4322, 0o640)
    os.chown(path, 0, 0)  # and back: the owner follows whichever file is replaced
    atomic_write(RealFileOps(), path, b"newer")
    assert (path.stat().st_uid, path.stat().st_gid) == (0, 0)
