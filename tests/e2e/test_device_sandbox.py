"""The device agent against the sandbox: MQTT over mutual TLS with the AWS IoT Device SDK v2.

A real `ca-migrate-device` process connects on the legacy listener, receives a
job built by job_documents and created with boto3, probes and switches to the
ATS listener, and acknowledges there; the sandbox's engine records which
listener each status update came through.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.sandbox import runtime
from job_documents import Endpoint, Operation, build_document, load_catalog
from tests.machine import NEEDS_MOSQUITTO, NEEDS_NSS_WRAPPER

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.mqtt,
    NEEDS_MOSQUITTO,
    NEEDS_NSS_WRAPPER,
]

REGION = "us-east-1"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sb = runtime.Sandbox(mqtt=True, work_dir=tmp_path_factory.mktemp("sandbox")).start()
    try:
        yield sb
    finally:
        sb.stop()


def _device(
    sandbox: Any,
    root: Path,
    thing: str,
    protocol: str = "mqtt5",
    *,
    ats_port: int | None = None,
    dead_man_seconds: int = 15,
) -> Path:
    """Files of a device still on the legacy endpoint, trusting only the legacy root."""
    sandbox.engine.create_things([thing])
    creds = sandbox.issue_credentials([thing])[thing]
    root.mkdir(parents=True)
    legacy, ats = sandbox.endpoints["legacy"], sandbox.endpoints["ats"]
    (root / "endpoint.json").write_text(json.dumps({"host": legacy.host, "port": 8883}))
    shutil.copy(sandbox.pki.legacy_root_pem, root / "trust.pem")
    config = root / "device.toml"
    config.write_text(
        "\n".join(
            [
                f'thing_name = "{thing}"',
                f'region = "{REGION}"',
                f'client_cert = "{creds["cert_pem"]}"',
                f'client_key = "{creds["key_pem"]}"',
                'endpoint_file = "endpoint.json"',
                'trust_bundle = "trust.pem"',
                'state_dir = "state"',
                f'catalog = "{sandbox.pki.ats_catalog}"',
                f"dead_man_seconds = {dead_man_seconds}",
                "connect_timeout_seconds = 10",
                "poll_seconds = 1",
                f'protocol = "{protocol}"',
                "[connect_override]",
                f'"{legacy.host}:8883" = "127.0.0.1:{legacy.port}"',
                f'"{ats.host}:8883" = "127.0.0.1:{ats_port or ats.port}"',
                f'"{ats.host}:443" = "127.0.0.1:{ats.alpn_port}"',
                "",
            ]
        )
    )
    return config


def _create_job(sandbox: Any, job_id: str, thing: str, roots: list[str], port: int = 8883) -> None:
    catalog = load_catalog(sandbox.pki.ats_catalog)
    built = build_document(
        operation=Operation.MIGRATE,
        region=REGION,
        campaign="ats-2026",
        wave="e2e",
        endpoint=Endpoint(host=sandbox.endpoints["ats"].host, port=port),
        roots=[catalog.get(name) for name in roots],
        catalog=catalog,
    )
    arn = f"arn:aws:iot:{REGION}:{sandbox.account_id}:thing/{thing}"
    sandbox.iot_client().create_job(jobId=job_id, targets=[arn], document=built.text)


def _agent_once(config: Path) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "device_handler.cli", "run", "--once", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _history(sandbox: Any, job_id: str) -> list[tuple[str, str]]:
    (execution,) = sandbox.engine.execution_history(job_id=job_id)
    return [(h["status"], h["via"]) for h in execution["history"] if h["via"] != "service"]


@pytest.mark.parametrize("protocol", ["mqtt5", "mqtt311"])
def test_agent_switches_to_ats_and_acknowledges_over_the_ats_listener(
    sandbox: Any, tmp_path: Path, protocol: str
):
    thing, job = f"dev-ok-{protocol}", f"migrate-ok-{protocol}"
    config = _device(sandbox, tmp_path / "device", thing, protocol)
    _create_job(sandbox, job, thing, ["amazon-root-ca-1"])
    result = _agent_once(config)
    assert result.returncode == 0, result.stderr[-3000:]
    history = _history(sandbox, job)
    assert history[0] == ("IN_PROGRESS", "legacy")
    assert history[-1] == ("SUCCEEDED", "ats")
    (execution,) = sandbox.engine.execution_history(job_id=job)
    assert execution["statusDetails"]["endpoint"] == f"{sandbox.endpoints['ats'].host}:8883"
    endpoint = json.loads((tmp_path / "device" / "endpoint.json").read_text())
    assert endpoint["host"] == sandbox.endpoints["ats"].host
    shadow = sandbox.shadow(thing, "ca-migration")
    assert shadow is not None
    assert shadow["state"]["reported"]["endpoint"] == sandbox.endpoints["ats"].host
    assert shadow["state"]["reported"]["lastJob"]["status"] == "SUCCEEDED"


@pytest.mark.parametrize("protocol", ["mqtt5", "mqtt311"])
def test_agent_moves_to_port_443_with_alpn_and_acknowledges_there(
    sandbox: Any, tmp_path: Path, protocol: str
):
    """The document says 443: the probe and MQTT offer ALPN x-amzn-mqtt-ca to the sandbox's
    ATS front (which refuses clients without it), and the endpoint file keeps port and ALPN."""
    thing, job = f"dev-443-{protocol}", f"migrate-443-{protocol}"
    config = _device(sandbox, tmp_path / "device", thing, protocol)
    _create_job(sandbox, job, thing, ["amazon-root-ca-1"], port=443)
    result = _agent_once(config)
    assert result.returncode == 0, result.stderr[-3000:]
    history = _history(sandbox, job)
    assert history[0] == ("IN_PROGRESS", "legacy")
    assert history[-1] == ("SUCCEEDED", "ats")
    endpoint = json.loads((tmp_path / "device" / "endpoint.json").read_text())
    assert endpoint == {
        "host": sandbox.endpoints["ats"].host,
        "port": 443,
        "alpn": ["x-amzn-mqtt-ca"],
    }


def test_the_443_listener_refuses_tls_without_the_mqtt_alpn(sandbox: Any, tmp_path: Path):
    import socket
    import ssl

    thing = "dev-no-alpn"
    sandbox.engine.create_things([thing])
    creds = sandbox.issue_credentials([thing])[thing]
    roots = "".join(path.read_text() for path in sandbox.pki.ats_root_pems.values())
    context = ssl.create_default_context(cadata=roots)
    context.load_cert_chain(creds["cert_pem"], creds["key_pem"])
    host, port = sandbox.endpoints["ats"].host, sandbox.endpoints["ats"].alpn_port
    connect = bytes([0x10, 12 + len(thing), 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30])
    connect += len(thing).to_bytes(2, "big") + thing.encode()
    for alpn, answered in ((None, False), (["x-amzn-mqtt-ca"], True)):
        if alpn:
            context.set_alpn_protocols(alpn)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(connect)
            try:
                reply = tls.recv(4)
            except (ConnectionError, ssl.SSLError):
                reply = b""
        assert (reply[:1] == b"\x20") is answered, (alpn, reply)  # CONNACK only with the ALPN


def test_agent_lacking_the_root_fails_and_keeps_working_on_legacy(sandbox: Any, tmp_path: Path):
    config = _device(sandbox, tmp_path / "device", "dev-no-root")
    before = (tmp_path / "device" / "endpoint.json").read_text()
    # The ATS listener chains to amazon-root-ca-1; the document only adds amazon-root-ca-3.
    _create_job(sandbox, "migrate-no-root", "dev-no-root", ["amazon-root-ca-3"])
    result = _agent_once(config)
    assert result.returncode == 0, result.stderr[-3000:]
    history = _history(sandbox, "migrate-no-root")
    assert history[-1] == ("FAILED", "legacy")
    (execution,) = sandbox.engine.execution_history(job_id="migrate-no-root")
    assert execution["statusDetails"]["reason"] == "tls-verify"
    assert (tmp_path / "device" / "endpoint.json").read_text() == before
    again = _agent_once(config)
    assert again.returncode == 0, again.stderr[-3000:]
    assert '"event": "connected"' in again.stderr
    assert sandbox.endpoints["legacy"].host in again.stderr


def test_running_agent_handles_a_job_created_while_it_waits_and_stops_on_sigterm(
    sandbox: Any, tmp_path: Path
):
    import signal
    import threading
    import time

    config = _device(sandbox, tmp_path / "device", "dev-run")
    process = subprocess.Popen(
        [sys.executable, "-m", "device_handler.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    connected = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if '"event": "connected"' in line:
                connected.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert connected.wait(30), "".join(lines)[-3000:]
        _create_job(sandbox, "migrate-running", "dev-run", ["amazon-root-ca-1"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            history = _history(sandbox, "migrate-running")
            if history and history[-1][0] == "SUCCEEDED":
                break
            time.sleep(0.2)
        assert _history(sandbox, "migrate-running")[-1] == ("SUCCEEDED", "ats")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        reader.join(timeout=10)
    assert any('"event": "stopping"' in line for line in lines)


def test_dead_man_switch_rolls_back_when_mqtt_does_not_come_up_on_the_new_endpoint(
    sandbox: Any, tmp_path: Path
):
    """The ATS name answers TLS with the right certificate (the probe passes) but speaks no
    MQTT: the reconnect fails, the window closes, the device restores its backup and
    reports FAILED over the legacy listener."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from device_handler.testing import PemFiles, TlsServer

    cert_path, key_path = sandbox.pki.server_cert_pem("ats"), sandbox.pki.server_key_pem("ats")
    server = PemFiles(
        x509.load_pem_x509_certificate(cert_path.read_bytes()),
        load_pem_private_key(key_path.read_bytes(), None),  # type: ignore[arg-type]
        cert_path,
        key_path,
    )
    with TlsServer(server, client_ca=sandbox.pki.device_ca_pem) as not_mqtt:
        config = _device(
            sandbox, tmp_path / "device", "dev-dead", ats_port=not_mqtt.port, dead_man_seconds=3
        )
        before = (tmp_path / "device" / "endpoint.json").read_text()
        _create_job(sandbox, "migrate-dead", "dev-dead", ["amazon-root-ca-1"])
        result = _agent_once(config)
        assert not_mqtt.handshakes >= 1
    assert result.returncode == 0, result.stderr[-3000:]
    history = _history(sandbox, "migrate-dead")
    assert history[-1] == ("FAILED", "legacy")
    (execution,) = sandbox.engine.execution_history(job_id="migrate-dead")
    assert execution["statusDetails"]["reason"] == "dead-man"
    assert (tmp_path / "device" / "endpoint.json").read_text() == before
