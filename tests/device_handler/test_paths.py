"""Where a device keeps its files: `DevicePaths` and the strings the transaction uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_handler.agent import DeviceFiles, DevicePaths


def test_derived_files_sit_beside_the_live_ones_and_in_the_state_dir() -> None:
    paths = DevicePaths(
        endpoint_file=Path("/etc/dev/endpoint.json"),
        trust_bundle=Path("/etc/ssl/trust.pem"),
        state_dir=Path("/var/lib/dev/state"),
        device_client_config=Path("/etc/dc/client.conf"),
    )
    assert paths.files == DeviceFiles(
        endpoint_file="/etc/dev/endpoint.json",
        trust_bundle="/etc/ssl/trust.pem",
        state_dir="/var/lib/dev/state",
        device_client_config="/etc/dc/client.conf",
        staged_bundle="/etc/ssl/trust.pem.staged",
        staged_endpoint="/etc/dev/endpoint.json.staged",
        staged_device_client="/etc/dc/client.conf.staged",
        journal="/var/lib/dev/state/journal.json",
        rollback="/var/lib/dev/state/rollback.json",
        previous="/var/lib/dev/state/previous.json",
    )
    # The Path views name the same files.
    assert paths.staged_bundle == Path("/etc/ssl/trust.pem.staged")
    assert paths.journal == Path("/var/lib/dev/state/journal.json")
    assert paths.staged_device_client == Path("/etc/dc/client.conf.staged")
    assert paths.device_client_config == Path("/etc/dc/client.conf")


def test_str_and_path_arguments_give_the_same_paths() -> None:
    as_paths = DevicePaths(Path("d/endpoint.json"), Path("d/bundle.pem"), Path("d/state"))
    as_text = DevicePaths("d/endpoint.json", "d/bundle.pem", "d/state")
    assert as_paths == as_text
    assert hash(as_paths) == hash(as_text)
    assert as_text.device_client_config is None
    assert as_text.staged_device_client is None
    assert "d/bundle.pem" in repr(as_text)


def test_with_device_client_config_adds_only_that_file() -> None:
    paths = DevicePaths("d/endpoint.json", "d/bundle.pem", "d/state")
    with_dc = paths.with_device_client_config(Path("/etc/dc.json"))
    assert with_dc != paths
    assert with_dc.files.staged_device_client == "/etc/dc.json.staged"
    assert with_dc.files._replace(device_client_config=None, staged_device_client=None) == (
        paths.files
    )
    assert with_dc.with_device_client_config(None) == paths


def test_device_paths_cannot_be_changed_in_place() -> None:
    paths = DevicePaths("d/endpoint.json", "d/bundle.pem", "d/state")
    with pytest.raises(AttributeError, match="immutable"):
        paths.files = paths.files._replace(journal="elsewhere.json")  # type: ignore[misc]
    assert paths.files.journal == "d/state/journal.json"


def test_device_paths_survive_pickling_and_copying() -> None:
    import copy
    import pickle

    paths = DevicePaths("d/endpoint.json", "d/bundle.pem", "d/state", "/etc/dc.json")
    assert pickle.loads(pickle.dumps(paths)) == paths  # noqa: S301 - our own bytes
    assert copy.copy(paths) == paths
    assert copy.deepcopy(paths).files == paths.files
