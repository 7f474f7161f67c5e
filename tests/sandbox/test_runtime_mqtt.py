"""The runtime's composition with the PKI and the MQTT data plane."""

from __future__ import annotations

import http.client
import json
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from infra.sandbox.cli import _text
from infra.sandbox.errors import SandboxStartError
from infra.sandbox.runtime import Sandbox


def _admin(sandbox: Sandbox, method: str, path: str, body: dict | None = None):
    parsed = urlsplit(sandbox.control_plane_url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body))
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.mqtt
def test_the_sandbox_with_mqtt_describes_endpoints_pki_and_issues_credentials(tmp_path):
    with Sandbox(work_dir=tmp_path) as sandbox:
        description = sandbox.describe()
        endpoints = description["endpoints"]
        assert endpoints["legacy"]["host"] == "a1sandbox2demo.iot.us-east-1.amazonaws.com"
        assert endpoints["ats"]["host"] == "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
        ports = [endpoints[kind]["port"] for kind in ("legacy", "ats")]
        assert all(_accepts(port) for port in ports)
        files = description["ca_files"]
        assert Path(files["legacy_root_pem"]).read_text().startswith("-----BEGIN CERTIFICATE")
        assert "amazon-root-ca-1" in files["ats_root_pems"]
        assert Path(description["ca_dir"]).is_dir()
        provisioned = sandbox.provision(2, [("g", None)])
        assert set(provisioned.credentials) == {"device-00001", "device-00002"}
        assert Path(provisioned.credentials["device-00001"]["cert_pem"]).exists()
        status, body = _admin(
            sandbox, "POST", "/_sandbox/credentials", {"things": ["device-00002"]}
        )
        assert status == 200
        assert body["credentials"]["device-00002"] == provisioned.credentials["device-00002"]
        # Provisioning registers each certificate ACTIVE and attaches it to its thing, once.
        iot = sandbox.iot_client()
        for thing in ("device-00001", "device-00002"):
            (arn,) = iot.list_thing_principals(thingName=thing)["principals"]
            certificate = iot.describe_certificate(certificateId=arn.rsplit("/", 1)[1])
            description = certificate["certificateDescription"]
            assert description["status"] == "ACTIVE"
            cert_pem = Path(provisioned.credentials[thing]["cert_pem"]).read_text()
            assert description["certificatePem"] == cert_pem
        status, body = _admin(sandbox, "POST", "/_sandbox/credentials", {"things": ["ghost"]})
        assert status == 404
        assert "ghost" in body["message"]
        status, body = _admin(sandbox, "GET", "/_sandbox/shadows/device-00001/ca-migrate")
        assert status == 404
        assert "No shadow" in body["message"]
    assert not any(_accepts(port) for port in ports)


def test_without_the_mqtt_package_the_start_error_says_to_use_no_mqtt(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "infra.sandbox.mqtt", None)
    with pytest.raises(SandboxStartError, match="--no-mqtt"):
        Sandbox(work_dir=tmp_path).start()


def test_the_text_description_ends_with_export_lines():
    text = _text(
        {
            "control_plane_url": "http://127.0.0.1:1",
            "jobs_data_url": "http://127.0.0.1:2",
            "admin_url": "http://127.0.0.1:1/_sandbox",
            "region": "us-east-1",
            "account_id": "123456789012",
            "endpoints": {"ats": {"host": "h", "port": 3}},
            "ca_dir": "pki",
            "env": {"AWS_ENDPOINT_URL_IOT": "http://127.0.0.1:1"},
        }
    )
    assert "MQTT ats" in text
    assert "h:3" in text
    assert text.splitlines()[-1] == "export AWS_ENDPOINT_URL_IOT=http://127.0.0.1:1"
