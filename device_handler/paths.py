"""Where a device keeps its files: `DevicePaths`, and the strings the transaction uses.

Files on the device (see docs/device-handler.md):
- live: the endpoint file and the trust bundle, named by the configuration;
- optional, the third live file: AWS IoT Device Client's JSON configuration,
  whose `endpoint` must follow the endpoint file (a Device Client left on the
  old endpoint with a bundle that no longer trusts it can never connect again);
- staged: `<bundle>.staged`, `<endpoint>.staged` (and `<device client
  config>.staged`), beside the live files, so that the commit is a rename on
  one file system;
- `<state_dir>/journal.json`: the transaction journal;
- `<state_dir>/rollback.json`: endpoint + bundle (+ Device Client config, with
  its path) as they were before this transaction's commit (one file, so one
  atomic write holds them all);
- `<state_dir>/previous.json`: the configuration before the last successful
  migrate, which the `restore` operation goes back to (the contract's "backed up
  before the last migrate"); a restore or a prune leaves it as it is, so a
  second restore does not undo the first and a prune does not hide the original.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from device_handler.fsops import StrPath

__all__ = ["DeviceFiles", "DevicePaths", "staged_path"]


def staged_path(path: str) -> str:
    """Where `path`'s next version is staged: beside it, so the commit is one rename."""
    return path + ".staged"


class DeviceFiles(NamedTuple):
    """Every path a device's transaction uses, as strings, each one derived once.

    The transaction opens, renames and fsyncs these dozens of times per job; as
    strings they cost nothing to hand to the OS, where a `Path` is converted (and
    its derived paths built) again and again.
    """

    endpoint_file: str
    trust_bundle: str
    state_dir: str
    device_client_config: str | None
    staged_bundle: str
    staged_endpoint: str
    staged_device_client: str | None
    journal: str
    rollback: str
    previous: str

    @classmethod
    def of(
        cls,
        endpoint_file: str,
        trust_bundle: str,
        state_dir: str,
        device_client_config: str | None,
    ) -> DeviceFiles:
        return cls(
            endpoint_file,
            trust_bundle,
            state_dir,
            device_client_config,
            staged_path(trust_bundle),
            staged_path(endpoint_file),
            None if device_client_config is None else staged_path(device_client_config),
            os.path.join(state_dir, "journal.json"),  # noqa: PTH118 - strings, see above
            os.path.join(state_dir, "rollback.json"),  # noqa: PTH118
            os.path.join(state_dir, "previous.json"),  # noqa: PTH118
        )


class DevicePaths:
    """Where the device keeps its live configuration and the transaction's files.

    Paths are given as `Path`s or as strings (taken as they are: a normalised path,
    as `os.fspath(Path(...))` gives); they are kept as `files`, strings, which is
    what the transaction uses. The `Path` attributes are views for everyone else.
    Immutable, as the agent keeps `files` for its whole life.
    """

    __slots__ = ("files",)
    files: DeviceFiles

    def __init__(
        self,
        endpoint_file: StrPath,
        trust_bundle: StrPath,
        state_dir: StrPath,
        device_client_config: StrPath | None = None,  # Device Client's JSON config, if any
    ) -> None:
        files = DeviceFiles.of(
            os.fspath(endpoint_file),
            os.fspath(trust_bundle),
            os.fspath(state_dir),
            None if device_client_config is None else os.fspath(device_client_config),
        )
        object.__setattr__(self, "files", files)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"DevicePaths is immutable; make a new one to change {name!r}")

    def __reduce__(self) -> tuple[type[DevicePaths], tuple[str, str, str, str | None]]:
        files = self.files  # pickled as its four given paths (fleet workers send views)
        return DevicePaths, (
            files.endpoint_file,
            files.trust_bundle,
            files.state_dir,
            files.device_client_config,
        )

    def with_device_client_config(self, path: StrPath | None) -> DevicePaths:
        files = self.files
        return DevicePaths(files.endpoint_file, files.trust_bundle, files.state_dir, path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DevicePaths) and other.files == self.files

    def __hash__(self) -> int:
        return hash(self.files)

    def __repr__(self) -> str:
        files = self.files
        return (
            f"DevicePaths(endpoint_file={files.endpoint_file!r}, "
            f"trust_bundle={files.trust_bundle!r}, state_dir={files.state_dir!r}, "
            f"device_client_config={files.device_client_config!r})"
        )

    @property
    def endpoint_file(self) -> Path:
        return Path(self.files.endpoint_file)

    @property
    def trust_bundle(self) -> Path:
        return Path(self.files.trust_bundle)

    @property
    def state_dir(self) -> Path:
        return Path(self.files.state_dir)

    @property
    def device_client_config(self) -> Path | None:
        dc = self.files.device_client_config
        return None if dc is None else Path(dc)

    @property
    def staged_device_client(self) -> Path | None:
        staged = self.files.staged_device_client
        return None if staged is None else Path(staged)

    @property
    def staged_bundle(self) -> Path:
        return Path(self.files.staged_bundle)

    @property
    def staged_endpoint(self) -> Path:
        return Path(self.files.staged_endpoint)

    @property
    def journal(self) -> Path:
        return Path(self.files.journal)

    @property
    def rollback(self) -> Path:
        return Path(self.files.rollback)

    @property
    def previous(self) -> Path:
        return Path(self.files.previous)
