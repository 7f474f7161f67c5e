"""The one door through which the device handler changes files.

Every write the transaction makes goes through a `FileOps`, so that
crash-injection layers (`device_handler.testing.CrashingFileOps`) can cut the
power before any single write, fsync, rename or removal and the recovery can
be checked from that exact point.

Invariants:
- `atomic_write` leaves either the old or the new content at `path`, never a
  partial file: write a temporary file beside it, fsync it, rename it over the
  target, fsync the directory.
- A rename over an existing file keeps that file's permission bits and owner
  (`RealFileOps.rename`): replacing `trust.pem` never takes read access away
  from the TLS client that loads it.
- Reads go straight to the file system: they have no side effect to crash.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
from pathlib import Path
from typing import Protocol, TypeAlias, runtime_checkable

__all__ = [
    "FileOps",
    "RealFileOps",
    "StrPath",
    "atomic_write",
    "ensure_dir",
    "parent_dir",
    "read_bytes",
    "read_optional",
]

#: A file's path: the transaction passes strings (see `agent.DeviceFiles`), callers may
#: pass `Path`s.
StrPath: TypeAlias = str | os.PathLike[str]

_READ_CHUNK = 1 << 16
#: The mode of every file the device handler creates; a replaced file keeps its own.
_CREATED_MODE = 0o600


@runtime_checkable
class FileOps(Protocol):
    """The mutating file operations; each one is a possible power-cut point."""

    def write(self, path: StrPath, data: bytes) -> None:
        """Create or truncate `path` and write `data` (not yet durable)."""
        ...

    def fsync(self, path: StrPath) -> None:
        """Make the content of `path` durable."""
        ...

    def write_durable(self, path: StrPath, data: bytes) -> None:
        """`write` then `fsync`: two power-cut points, one open file where the OS allows."""
        ...

    def rename(self, src: StrPath, dst: StrPath) -> None:
        """Atomically replace `dst` with `src` (same file system)."""
        ...

    def fsync_dir(self, directory: StrPath) -> None:
        """Make renames and removals in `directory` durable."""
        ...

    def remove(self, path: StrPath) -> None:
        """Remove `path` if it exists."""
        ...


class RealFileOps:
    """`FileOps` on the real file system, with real fsync."""

    def write(self, path: StrPath, data: bytes) -> None:
        self._write(path, data, sync=False)

    def write_durable(self, path: StrPath, data: bytes) -> None:
        # fsync on the descriptor that wrote: the same durability as `write` + `fsync`
        # (fsync covers the file, whichever descriptor asks) with one open instead of two.
        self._write(path, data, sync=True)

    def _write(self, path: StrPath, data: bytes, *, sync: bool) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _CREATED_MODE)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def fsync(self, path: StrPath) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: StrPath, dst: StrPath) -> None:
        _take_attributes(src, dst)
        os.replace(src, dst)  # noqa: PTH105 - paths may be strings

    def fsync_dir(self, directory: StrPath) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self, path: StrPath) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # noqa: PTH108 - paths may be strings


def _take_attributes(src: StrPath, dst: StrPath) -> None:
    """Give `src` the permission bits and owner of the `dst` it is about to replace.

    A new file is created 0600 and owned by the agent; the files a transaction replaces
    (`trust.pem`, `endpoint.json`, Device Client's configuration) are read by other
    programs, often as other users, and keep what they had. The owner can be changed only
    by root (the group, to one of the agent's groups): where that is refused, the mode is
    still kept. Nothing to keep when `dst` does not exist yet.
    """
    try:
        st = os.stat(dst)  # noqa: PTH116 - paths may be strings
    except FileNotFoundError:
        return
    if st.st_uid != os.geteuid() or st.st_gid != os.getegid():
        with contextlib.suppress(PermissionError):
            os.chown(src, st.st_uid, st.st_gid)
    # After chown, which clears set-id bits; always, as `src` may be a leftover file that
    # an earlier run created with another mode (O_CREAT's mode applies to new files only).
    os.chmod(src, stat.S_IMODE(st.st_mode))  # noqa: PTH101 - paths may be strings


def parent_dir(path: str) -> str:
    """The directory holding `path` (`Path.parent`, for a normalised path as a string)."""
    return os.path.dirname(path) or "."  # noqa: PTH120 - strings on the hot path


@functools.lru_cache(maxsize=1024)
def _beside(path: str) -> tuple[str, str]:
    # A transaction writes the same few files several times: derive their temporary
    # name and directory once.
    return path + ".tmp", parent_dir(path)


def atomic_write(fs: FileOps, path: StrPath, data: bytes) -> None:
    """Replace `path` with `data` so that a power cut leaves the old or the new content."""
    tmp, directory = _beside(os.fspath(path))
    fs.write_durable(tmp, data)
    fs.rename(tmp, path)
    fs.fsync_dir(directory)


def ensure_dir(path: StrPath) -> bool:
    """`path.mkdir(parents=True, exist_ok=True)`, one system call when the parent exists.

    True when this call made the directory. `Path.mkdir` follows a refused mkdir with a
    stat; here an existing entry is taken as the directory (one that is not fails the
    first write below it).
    """
    try:
        os.mkdir(path)  # noqa: PTH102 - see above
    except FileExistsError:
        return False
    except FileNotFoundError:
        Path(path).mkdir(parents=True, exist_ok=True)
    return True


def read_bytes(path: StrPath) -> bytes:
    """The content of `path` (`Path.read_bytes` without a buffered file object per read).

    The device's files are small regular files: one read of up to `_READ_CHUNK` bytes
    that comes back short has reached the end (Linux returns less than asked from a
    regular file only there), so most reads take one call instead of two. A read that
    fills the chunk goes on until a read returns nothing.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, _READ_CHUNK)
        if len(data) < _READ_CHUNK:
            return data
        chunks = [data]
        while chunk := os.read(fd, _READ_CHUNK):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_optional(path: StrPath) -> bytes | None:
    """The content of `path`, or None when it does not exist."""
    try:
        return read_bytes(path)
    except FileNotFoundError:
        return None
