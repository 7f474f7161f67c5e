"""The device policy's connect rule on the sandbox's MQTT listeners (real engine, real TLS).

A device connects when its certificate is registered, ACTIVE and attached to a
thing, and its MQTT client id is that thing's name; otherwise the TLS handshake
may succeed but the CONNECT is refused (MQTT 5: CONNACK 0x87; MQTT 3.1.1: the
connection is closed), and a certificate that leaves ACTIVE loses its live
connections. Raw TLS clients speak the bytes; the AWS IoT Device SDK v2 runs
a job with a certificate from `aws iot create-keys-and-certificate`.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from infra.sandbox.mqtt.sdkdevice import SdkDeviceError, SdkJobsDevice
from infra.sandbox.mqtt.testing import names_unresolved
from infra.sandbox.runtime import Sandbox
from job_documents.x509_issuer import issue_ca, new_key, subject_name

pytestmark = pytest.mark.mqtt

WAIT = 10.0
CONNACK = 0x20
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(work_dir=tmp_path_factory.mktemp("sandbox")) as running:
        yield running


@pytest.fixture(scope="module")
def iot(sandbox: Sandbox) -> Any:
    return sandbox.iot_client()


@pytest.fixture
def files(tmp_path: Path):
    """Write a certificate and key (PEM texts) to files; returns (cert path, key path)."""

    def write(cert_pem: str, key_pem: str) -> tuple[Path, Path]:
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        cert.write_text(cert_pem)
        key.write_text(key_pem)
        return cert, key

    return write


_THINGS = iter(range(1, 1000))


def new_thing(iot: Any) -> str:
    name = f"thing-{next(_THINGS):03d}"
    iot.create_thing(thingName=name)
    return name


def device_certificate(iot: Any, *, active: bool = True) -> dict[str, Any]:
    return iot.create_keys_and_certificate(setAsActive=active)


def _context(sandbox: Sandbox, kind: str, cert: Path, key: Path) -> ssl.SSLContext:
    pki = sandbox.pki
    assert pki is not None
    root = pki.legacy_root_pem if kind == "legacy" else pki.ats_root_pems["amazon-root-ca-1"]
    context = ssl.create_default_context(cafile=str(root))
    context.load_cert_chain(str(cert), str(key))
    return context


def connect_packet(client_id: str, *, level: int = 4) -> bytes:
    """An MQTT CONNECT (3.1.1 when level 4, 5 when level 5), clean session, keep-alive 60 s."""
    name = client_id.encode()
    header = b"\x00\x04MQTT" + bytes((level, 0x02)) + b"\x00\x3c"
    if level == 5:
        header += b"\x00"  # no properties
    body = header + len(name).to_bytes(2, "big") + name
    return bytes((0x10, len(body))) + body


def open_mqtt(
    sandbox: Sandbox, cert: Path, key: Path, client_id: str, *, kind: str = "ats", level: int = 4
) -> tuple[ssl.SSLSocket | None, bytes]:
    """TLS to the endpoint, then CONNECT; the socket and the first bytes back.

    (None, b"") when the TLS handshake failed; (socket, b"") when the server
    closed the connection (TLS 1.3 reports a refused client certificate only then).
    """
    endpoint = sandbox.endpoints[kind]
    raw = socket.create_connection(("127.0.0.1", endpoint.port), timeout=WAIT)
    try:
        tls = _context(sandbox, kind, cert, key).wrap_socket(raw, server_hostname=endpoint.host)
    except (ConnectionError, ssl.SSLError):
        raw.close()
        return None, b""
    try:
        tls.sendall(connect_packet(client_id, level=level))
        return tls, tls.recv(16)
    except (ConnectionError, ssl.SSLError):
        return tls, b""


def refused_or_accepted(sandbox: Sandbox, cert: Path, key: Path, client_id: str, **kw: Any) -> str:
    tls, answer = open_mqtt(sandbox, cert, key, client_id, **kw)
    if tls is not None:
        tls.close()
    if not answer:
        return "closed"
    assert answer[0] == CONNACK
    # CONNACK: type, length, flags, then the return code (3.1.1) or reason code (5).
    return "accepted" if answer[3] == 0 else f"refused {answer[3]:#x}"


# ------------------------------------------------------------------ the rule
@pytest.mark.parametrize("kind", ["ats", "legacy"])
def test_an_active_attached_certificate_connects_as_its_thing(sandbox, iot, files, kind):
    thing = new_thing(iot)
    created = device_certificate(iot)
    iot.attach_thing_principal(thingName=thing, principal=created["certificateArn"])
    cert, key = files(created["certificatePem"], created["keyPair"]["PrivateKey"])
    assert refused_or_accepted(sandbox, cert, key, thing, kind=kind) == "accepted"


@pytest.mark.parametrize(
    ("case", "level", "outcome"),
    [
        ("wrong client id", 4, "closed"),
        ("wrong client id", 5, "refused 0x87"),
        ("unattached", 4, "closed"),
        ("unattached", 5, "refused 0x87"),
        ("inactive", 5, "refused 0x87"),
        ("revoked", 4, "closed"),
        ("revoked", 5, "refused 0x87"),
        ("detached", 5, "refused 0x87"),
    ],
)
def test_a_connect_the_device_policy_refuses(sandbox, iot, files, case, level, outcome):
    thing = new_thing(iot)
    created = device_certificate(iot, active=case != "inactive")
    if case != "unattached":
        iot.attach_thing_principal(thingName=thing, principal=created["certificateArn"])
    if case == "revoked":
        iot.update_certificate(certificateId=created["certificateId"], newStatus="REVOKED")
    if case == "detached":
        iot.detach_thing_principal(thingName=thing, principal=created["certificateArn"])
    client_id = "not-" + thing if case == "wrong client id" else thing
    cert, key = files(created["certificatePem"], created["keyPair"]["PrivateKey"])
    assert refused_or_accepted(sandbox, cert, key, client_id, level=level) == outcome


def test_a_certificate_of_the_device_ca_that_was_never_registered_is_refused(sandbox, iot, files):
    thing = new_thing(iot)
    pki = sandbox.pki
    assert pki is not None
    # Issued by the device CA (TLS accepts it) but never registered with the engine.
    cert_pem, _, key_pem = pki.issue_keys_and_certificate(thing)
    cert, key = files(cert_pem, key_pem)
    assert refused_or_accepted(sandbox, cert, key, thing, level=5) == "refused 0x87"


def test_a_self_signed_certificate_registered_without_ca_connects(sandbox, iot, files):
    thing = new_thing(iot)
    key = new_key("ec-p256")
    now = datetime.now(UTC)
    cert = issue_ca(
        subject_name(thing),
        key,
        not_before=now - timedelta(hours=1),
        not_after=now + timedelta(days=1),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    cert_path, key_path = files(cert_pem, key_pem)
    # Unknown to the account: its TLS handshake fails (TLS 1.3 reports it on first read).
    assert refused_or_accepted(sandbox, cert_path, key_path, thing) == "closed"
    registered = iot.register_certificate_without_ca(certificatePem=cert_pem, status="ACTIVE")
    iot.attach_thing_principal(thingName=thing, principal=registered["certificateArn"])
    assert refused_or_accepted(sandbox, cert_path, key_path, thing) == "accepted"


@pytest.mark.parametrize("status", ["INACTIVE", "REVOKED"])
def test_a_certificate_that_leaves_active_loses_its_live_connection(sandbox, iot, files, status):
    thing = new_thing(iot)
    created = device_certificate(iot)
    iot.attach_thing_principal(thingName=thing, principal=created["certificateArn"])
    cert, key = files(created["certificatePem"], created["keyPair"]["PrivateKey"])
    tls, answer = open_mqtt(sandbox, cert, key, thing)
    assert tls is not None
    try:
        assert answer[:1] == bytes((CONNACK,))
        iot.update_certificate(certificateId=created["certificateId"], newStatus=status)
        deadline = time.monotonic() + WAIT
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                closed = tls.recv(16) == b""
            except (ConnectionError, ssl.SSLError):
                closed = True
        assert closed, "the connection outlived its certificate's ACTIVE status"
    finally:
        tls.close()
    assert refused_or_accepted(sandbox, cert, key, thing) == "closed"


def test_a_created_certificate_still_connects_after_a_restart_from_the_state_dir(
    tmp_path: Path, files
):
    state = tmp_path / "state"
    with Sandbox(state_dir=state) as first:
        iot = first.iot_client()
        thing = new_thing(iot)
        created = device_certificate(iot)
        iot.attach_thing_principal(thingName=thing, principal=created["certificateArn"])
        engine = first.engine
        assert len(engine._state.certificate_listeners) == 3  # legacy, ATS, ATS on 443
    # Stopped fronts no longer hear of certificates.
    assert engine._state.certificate_listeners == []
    cert, key = files(created["certificatePem"], created["keyPair"]["PrivateKey"])
    with Sandbox(state_dir=state) as second:
        assert refused_or_accepted(second, cert, key, thing) == "accepted"
        second.iot_client().update_certificate(
            certificateId=created["certificateId"], newStatus="REVOKED"
        )
    with Sandbox(state_dir=state) as third:
        assert refused_or_accepted(third, cert, key, thing, level=5) == "refused 0x87"


@pytest.mark.parametrize(
    "first",
    [
        b"\x30\x02\x00\x00",  # PUBLISH before CONNECT
        b"\x10\xff\xff\xff\xff",  # malformed remaining length
        b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02\xff\xfe",  # client id not UTF-8
        b"\x10\x7f\x00\x04MQTT",  # truncated, then the client hangs up
    ],
)
def test_a_hostile_first_packet_is_closed_and_the_listener_serves_on(sandbox, iot, files, first):
    thing = new_thing(iot)
    created = device_certificate(iot)
    iot.attach_thing_principal(thingName=thing, principal=created["certificateArn"])
    cert, key = files(created["certificatePem"], created["keyPair"]["PrivateKey"])
    endpoint = sandbox.endpoints["ats"]
    raw = socket.create_connection(("127.0.0.1", endpoint.port), timeout=WAIT)
    with _context(sandbox, "ats", cert, key).wrap_socket(raw, server_hostname=endpoint.host) as tls:
        tls.sendall(first)
        answer = b""
        if not first.startswith(b"\x10\x7f"):  # the truncated one hangs up without reading
            try:
                answer = tls.recv(16)
            except (ConnectionError, ssl.SSLError):
                answer = b""
    assert answer == b""
    assert refused_or_accepted(sandbox, cert, key, thing) == "accepted"


# ------------------------------------------------------------- SDK v2 devices
def _aws(sandbox: Sandbox, *args: str) -> dict[str, Any]:
    """Run `aws iot ...` against the sandbox; its JSON answer ({} when it prints none)."""
    env = os.environ | {
        "AWS_ACCESS_KEY_ID": "sandbox",
        "AWS_SECRET_ACCESS_KEY": "sandbox",
        "AWS_DEFAULT_REGION": sandbox.region,
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    done = subprocess.run(
        [str(VENV_BIN / "aws"), "iot", *args, "--endpoint-url", sandbox.control_plane_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else {}


def test_the_sdk_v2_runs_a_job_with_a_cli_created_certificate_and_is_refused_once_inactive(
    sandbox, iot, tmp_path
):
    if (reason := names_unresolved(sandbox._data_plane)) is not None:
        pytest.skip(reason)
    thing = f"cli-{next(_THINGS):03d}"
    cert, key = tmp_path / "device.pem.crt", tmp_path / "private.pem.key"
    _aws(sandbox, "create-thing", "--thing-name", thing)
    created = _aws(
        sandbox,
        "create-keys-and-certificate",
        "--set-as-active",
        "--certificate-pem-outfile",
        str(cert),
        "--private-key-outfile",
        str(key),
    )
    _aws(
        sandbox,
        "attach-thing-principal",
        "--thing-name",
        thing,
        "--principal",
        created["certificateArn"],
    )
    endpoint = sandbox.endpoints["ats"]
    pki = sandbox.pki
    assert pki is not None

    def device() -> SdkJobsDevice:
        return SdkJobsDevice(
            thing_name=thing,
            host=endpoint.host,
            port=endpoint.port,
            cert_pem=cert,
            key_pem=key,
            ca_pem=pki.ats_root_pems["amazon-root-ca-1"],
            timeout=10,
        )

    running = device().start()
    try:
        arn = iot.describe_thing(thingName=thing)["thingArn"]
        iot.create_job(jobId=f"{thing}-job", targets=[arn], document=json.dumps({"step": 1}))
        assert running.run_one("SUCCEEDED") == f"{thing}-job"
    finally:
        running.stop()
    _aws(
        sandbox,
        "update-certificate",
        "--certificate-id",
        created["certificateId"],
        "--new-status",
        "INACTIVE",
    )
    refused = device()
    try:
        with pytest.raises(SdkDeviceError):
            refused.start()
    finally:
        refused.stop()
