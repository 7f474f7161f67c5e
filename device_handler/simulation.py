"""File operations for simulated devices: no fsync, and power cuts on demand.

- `NoSyncFileOps`: real writes and renames without fsync, for large fleet
  simulations on a scratch (tmpfs) directory, where durability is not the point.
- `CrashingFileOps`: a `FileOps` that cuts the power before its N-th mutating
  operation (and loses what was written but never fsynced, as a real power
  cut may), for enumerating every crash point of a transaction and for the
  sandbox's fleets, whose devices lose power as a scenario says.

Never on a device: the agent's CLI uses `RealFileOps`.
"""

from __future__ import annotations

import os
from pathlib import Path

from device_handler.errors import PowerCut
from device_handler.fsops import FileOps, RealFileOps, StrPath

__all__ = ["CrashingFileOps", "NoSyncFileOps"]


class NoSyncFileOps(RealFileOps):
    """`RealFileOps` minus the fsyncs: for simulations only, never on a device."""

    def fsync(self, path: StrPath) -> None:
        del path

    def write_durable(self, path: StrPath, data: bytes) -> None:
        self.write(path, data)

    def fsync_dir(self, directory: StrPath) -> None:
        del directory


class CrashingFileOps:
    """Counts mutating file operations and raises `PowerCut` instead of the `crash_at`-th.

    With `crash_at=None` it only records `ops` (kind, file name), which is how
    a test enumerates every crash point. On a crash, files written since
    their last fsync are truncated, as unsynced data may be lost on power loss.
    Paths are told apart by their text (`os.fspath`), whether given as str or Path.
    """

    def __init__(self, crash_at: int | None = None, inner: FileOps | None = None) -> None:
        self.crash_at = crash_at
        self.inner: FileOps = inner if inner is not None else RealFileOps()
        self.ops: list[tuple[str, str]] = []
        self._unsynced: set[str] = set()

    def _tick(self, kind: str, path: StrPath) -> None:
        name = os.path.basename(path)  # noqa: PTH119 - str or Path alike
        if self.crash_at is not None and len(self.ops) == self.crash_at:
            for lost in self._unsynced:
                if os.path.exists(lost):  # noqa: PTH110 - a str
                    Path(lost).write_bytes(b"")
            self._unsynced.clear()
            raise PowerCut(f"power cut before {kind} {name}")
        self.ops.append((kind, name))

    def write(self, path: StrPath, data: bytes) -> None:
        self._tick("write", path)
        self.inner.write(path, data)
        self._unsynced.add(os.fspath(path))

    def fsync(self, path: StrPath) -> None:
        self._tick("fsync", path)
        self.inner.fsync(path)
        self._unsynced.discard(os.fspath(path))

    def write_durable(self, path: StrPath, data: bytes) -> None:
        # The same two crash points as `write` then `fsync`: the cut between them
        # leaves a written, unsynced file, which the cut then empties.
        self.write(path, data)
        self.fsync(path)

    def rename(self, src: StrPath, dst: StrPath) -> None:
        self._tick("rename", dst)
        self.inner.rename(src, dst)
        source = os.fspath(src)
        if source in self._unsynced:
            self._unsynced.discard(source)
            self._unsynced.add(os.fspath(dst))

    def fsync_dir(self, directory: StrPath) -> None:
        self._tick("fsync_dir", directory)
        self.inner.fsync_dir(directory)

    def remove(self, path: StrPath) -> None:
        self._tick("remove", path)
        self.inner.remove(path)
        self._unsynced.discard(os.fspath(path))
