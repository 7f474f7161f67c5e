"""A started device reports its trust state to its `ca-migration` shadow; indexing finds it.

Real `ca-migrate-device run --once` processes over MQTT (AWS IoT Device SDK v2,
mutual TLS, both SDK flavours) against the sandbox; the AWS CLI's
`search-index` finds them; a second start with nothing changed does not write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.machine import NEEDS_MOSQUITTO, NEEDS_NSS_WRAPPER

runtime = pytest.importorskip("infra.sandbox.runtime")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.mqtt,
    NEEDS_MOSQUITTO,
    NEEDS_NSS_WRAPPER,
]

REGION = "us-east-1"
SHADOW = "ca-migration"
INDEXING = {
    "thingIndexingMode": "REGISTRY_AND_SHADOW",
    "namedShadowIndexingMode": "ON",
    "filter": {"namedShadowNames": [SHADOW]},
}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sb = runtime.Sandbox(mqtt=True, work_dir=tmp_path_factory.mktemp("sandbox")).start()
    try:
        yield sb
    finally:
        sb.stop()


def _device(sandbox: Any, root: Path, thing: str, protocol: str) -> Path:
    """Files of a device on the legacy endpoint, trusting the legacy root."""
    sandbox.engine.create_things([thing])
    creds = sandbox.issue_credentials([thing])[thing]
    root.mkdir(parents=True)
    legacy, ats = sandbox.endpoints["legacy"], sandbox.endpoints["ats"]
    (root / "endpoint.json").write_text(json.dumps({"host": legacy.host, "port": 8883}))
    shutil.copy(sandbox.pki.legacy_root_pem, root / "trust.pem")
    config = root / "device.toml"
    lines = [
        f'thing_name = "{thing}"',
        f'region = "{REGION}"',
        f'client_cert = "{creds["cert_pem"]}"',
        f'client_key = "{creds["key_pem"]}"',
        'endpoint_file = "endpoint.json"',
        'trust_bundle = "trust.pem"',
        'state_dir = "state"',
        f'catalog = "{sandbox.pki.ats_catalog}"',
        "connect_timeout_seconds = 10",
        "poll_seconds = 1",
        f'protocol = "{protocol}"',
        "[connect_override]",
        f'"{legacy.host}:8883" = "127.0.0.1:{legacy.port}"',
        f'"{ats.host}:8883" = "127.0.0.1:{ats.port}"',
        "",
    ]
    config.write_text("\n".join(lines))
    return config


def _run_once(config: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "device_handler.cli", "run", "--once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def _aws(sandbox: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "AWS_ACCESS_KEY_ID": "sandbox",
        "AWS_SECRET_ACCESS_KEY": "sandbox",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "aws"), "iot", *args],
        capture_output=True,
        text=True,
        env={**env, "AWS_ENDPOINT_URL_IOT": sandbox.control_plane_url},
        timeout=60,
        check=False,
    )


def test_started_devices_are_found_by_search_index_and_rewrite_only_on_change(
    sandbox: Any, tmp_path: Path
) -> None:
    configs = {
        "report-v5": _device(sandbox, tmp_path / "v5", "report-v5", "mqtt5"),
        "report-v3": _device(sandbox, tmp_path / "v3", "report-v3", "mqtt311"),
    }
    sandbox.engine.create_things(["report-silent"])
    for config in configs.values():
        _run_once(config)
    on = _aws(
        sandbox,
        "update-indexing-configuration",
        "--thing-indexing-configuration",
        json.dumps(INDEXING),
    )
    assert on.returncode == 0, on.stderr
    found = _aws(
        sandbox,
        "search-index",
        "--index-name",
        "AWS_Things",
        "--query-string",
        f"shadow.name.{SHADOW}.reported.endpoint:* AND thingName:report-*",
    )
    assert found.returncode == 0, found.stderr
    things = json.loads(found.stdout)["things"]
    assert sorted(t["thingName"] for t in things) == ["report-v3", "report-v5"]
    reported = json.loads(things[0]["shadow"])["name"][SHADOW]["reported"]
    assert reported["endpoint"] == sandbox.endpoints["legacy"].host
    assert reported["phase"] == "idle"
    assert reported["agentVersion"]
    # The legacy root is in no catalog: it is named by its fingerprint.
    (legacy_sha,) = reported["rootSha256"]
    assert reported["roots"] == [f"sha256:{legacy_sha[:16]}"]
    versions = {name: sandbox.shadow(name, SHADOW)["version"] for name in configs}
    for config in configs.values():
        _run_once(config)
    assert {name: sandbox.shadow(name, SHADOW)["version"] for name in configs} == versions
