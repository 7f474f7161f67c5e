"""The device side against the sandbox's real mosquitto listeners (mutual TLS).

- The probe opens an MQTT session on a real broker as the thing, and fails where the
  broker refuses the client certificate.
- The sandbox example of docs/device-handler.md, taken from the markdown as written
  (only the two listener ports filled in, as the doc says), migrates a device.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_handler.errors import ProbeFailed
from device_handler.probe import ClientIdentity, probe
from device_handler.testing import TestPki
from device_handler.trust import EndpointConfig
from job_documents import Endpoint, Operation, build_document, load_catalog
from tests.machine import NEEDS_MOSQUITTO, NEEDS_NSS_WRAPPER

runtime = pytest.importorskip("infra.sandbox.runtime")

pytestmark = [
    pytest.mark.mqtt,
    NEEDS_MOSQUITTO,
]


DOC = Path(__file__).parents[2] / "docs" / "device-handler.md"
#: The placeholders the doc asks to replace with the ports `sandbox up` prints.
DOC_PORTS = {"legacy": "41883", "ats": "41884"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quickstart")


@pytest.fixture(scope="module")
def sandbox(workspace: Path) -> Iterator[Any]:
    """The sandbox as `sandbox up --state-dir sbx` lays it out: its files under `sbx`."""
    sb = runtime.Sandbox(mqtt=True, work_dir=workspace / "sbx").start()
    try:
        yield sb
    finally:
        sb.stop()


def _listener(sandbox: Any, kind: str) -> tuple[EndpointConfig, dict[str, str]]:
    endpoint = sandbox.endpoints[kind]
    return (
        EndpointConfig(endpoint.host, 8883),
        {f"{endpoint.host}:8883": f"127.0.0.1:{endpoint.port}"},
    )


def test_the_probe_opens_an_mqtt_session_on_the_sandbox_broker(sandbox: Any):
    sandbox.engine.create_things(["probe-thing"])
    creds = sandbox.issue_credentials(["probe-thing"])["probe-thing"]
    endpoint, overrides = _listener(sandbox, "ats")
    result = probe(
        endpoint,
        sandbox.pki.ats_root_pems["amazon-root-ca-1"],
        client_id="probe-thing",
        identity=ClientIdentity(Path(creds["cert_pem"]), Path(creds["key_pem"])),
        overrides=overrides,
        timeout=5,
    )
    assert result.attempts == 1
    assert result.tls_version in {"TLSv1.2", "TLSv1.3"}


def test_the_probe_fails_where_the_broker_refuses_the_client_certificate(
    sandbox: Any, tmp_path: Path
):
    """A certificate from a CA the broker does not trust: the handshake itself verifies the
    server, so only the MQTT step (TLS 1.3 refuses the client after the handshake) can tell."""
    pki = TestPki(tmp_path)
    stranger = pki.leaf("probe-thing", pki.ca("Not the sandbox device CA"), client=True)
    endpoint, overrides = _listener(sandbox, "ats")
    with pytest.raises(ProbeFailed) as caught:
        probe(
            endpoint,
            sandbox.pki.ats_root_pems["amazon-root-ca-1"],
            client_id="probe-thing",
            identity=ClientIdentity(stranger.cert_path, stranger.key_path),
            overrides=overrides,
            timeout=5,
        )
    assert caught.value.reason in {"mqtt-closed", "tls-handshake"}


def _doc_block(heading: str, language: str) -> str:
    """The first ``` block of `language` after the markdown heading `heading`."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n") :]
    found = re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert found is not None, f"no {language} block after {heading!r} in {DOC}"
    return found.group(1)


def _with_ports(toml_text: str, sandbox: Any) -> str:
    """The doc's file with the listener ports `sandbox up` printed, as the doc tells."""
    for kind, placeholder in DOC_PORTS.items():
        host = sandbox.endpoints[kind].host
        line = f'"{host}:8883" = "127.0.0.1:{placeholder}"'
        assert line in toml_text, f"the doc's [connect_override] has no line for {kind}"
        toml_text = toml_text.replace(
            line, line.replace(placeholder, str(sandbox.endpoints[kind].port))
        )
    return toml_text


def _create_migrate_job(sandbox: Any, job_id: str, thing: str) -> None:
    catalog = load_catalog(sandbox.pki.ats_catalog)
    built = build_document(
        operation=Operation.MIGRATE,
        region=sandbox.region,
        campaign="ats-2026",
        wave="doc",
        endpoint=Endpoint(host=sandbox.endpoints["ats"].host, port=8883),
        roots=[catalog.get("amazon-root-ca-1")],
        catalog=catalog,
    )
    arn = f"arn:aws:iot:{sandbox.region}:{sandbox.account_id}:thing/{thing}"
    sandbox.iot_client().create_job(jobId=job_id, targets=[arn], document=built.text)


@NEEDS_NSS_WRAPPER
def test_the_documented_sandbox_device_migrates(sandbox: Any, workspace: Path):
    config_text = _with_ports(_doc_block("### On the sandbox", "toml"), sandbox)
    config = tomllib.loads(config_text)
    thing = config["thing_name"]
    sandbox.engine.create_things([thing])
    sandbox.issue_credentials([thing])  # what `sandbox provision` writes under sbx/pki/things
    device = workspace / "device"
    device.mkdir()
    (device / "device.toml").write_text(config_text)
    # The doc's shell lines, run as written from the directory that holds sbx and device.
    shell = _doc_block("The device starts on the legacy endpoint, trusting the legacy root:", "sh")
    setup = "\n".join(line for line in shell.splitlines() if "ca-migrate-device run" not in line)
    subprocess.run(["sh", "-ec", setup], cwd=workspace, check=True, timeout=30)
    _create_migrate_job(sandbox, "doc-example", thing)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "device_handler.cli",
            "run",
            "--once",
            "--config",
            "device/device.toml",
        ],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    (execution,) = sandbox.engine.execution_history(job_id="doc-example")
    assert execution["status"] == "SUCCEEDED", execution
    vias = [h["via"] for h in execution["history"] if h["via"] != "service"]
    assert vias[-1] == "ats"
    endpoint = json.loads((device / "endpoint.json").read_text())
    assert endpoint["host"] == sandbox.endpoints["ats"].host
