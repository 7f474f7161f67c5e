"""mosquitto with the sandbox PKI and the bridge, driven by real TLS clients (Python ssl, paho)."""

import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infra.sandbox.mqtt import MqttDataPlane, MqttError, start_data_plane
from infra.sandbox.mqtt.testing import (
    WAIT,
    Device,
    FakeEngine,
    handshake,
    names_unresolved,
    tls_context,
)
from infra.sandbox.pki import SandboxPki

pytestmark = pytest.mark.mqtt


def skip_unless_names_resolve(plane):
    reason = names_unresolved(plane)
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SandboxPki:
    return SandboxPki.create_or_load(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture(scope="module")
def plane(
    pki: SandboxPki, engine: FakeEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MqttDataPlane]:
    plane = start_data_plane(engine, pki=pki, work_dir=tmp_path_factory.mktemp("mqtt"))
    yield plane
    plane.stop()


@pytest.fixture
def device(pki: SandboxPki, plane: MqttDataPlane) -> Iterator[object]:
    skip_unless_names_resolve(plane)
    made: list[Device] = []

    def connect(thing: str, kind: str = "ats") -> Device:
        made.append(Device(pki, plane, thing, kind))
        return made[-1]

    yield connect
    for one in made:
        one.close()


def root_of(pki: SandboxPki, name: str) -> Path:
    return pki.legacy_root_pem if name == "legacy" else pki.ats_root_pems[name]


def test_endpoints_carry_the_aws_shaped_names_and_real_ports(plane):
    assert plane.endpoints["legacy"].host == "a1sandbox2demo.iot.us-east-1.amazonaws.com"
    assert plane.endpoints["ats"].host == "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
    for endpoint in plane.endpoints.values():
        with socket.create_connection(("127.0.0.1", endpoint.port), timeout=WAIT):
            pass
    assert plane.endpoints["legacy"].port != plane.endpoints["ats"].port


@pytest.mark.parametrize(
    ("listener", "trusted", "completes"),
    [
        ("legacy", "legacy", True),
        ("ats", "legacy", False),
        ("ats", "amazon-root-ca-1", True),
        ("legacy", "amazon-root-ca-1", False),
        ("ats", "amazon-root-ca-3", False),
    ],
)
def test_tls_handshake_succeeds_only_with_the_listeners_root(
    pki, plane, listener, trusted, completes
):
    endpoint = plane.endpoints[listener]
    context = tls_context(pki, "handshaker", root_of(pki, trusted))
    if completes:
        with handshake(endpoint.host, endpoint.port, context) as tls:
            assert tls.version() in {"TLSv1.2", "TLSv1.3"}
    else:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            handshake(endpoint.host, endpoint.port, context).close()


def test_hostname_verification_stays_on(pki, plane):
    endpoint = plane.endpoints["ats"]
    context = tls_context(pki, "handshaker", root_of(pki, "amazon-root-ca-1"))
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake("a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com", endpoint.port, context)


def connect_packet(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session, keep-alive 60 s) with this client id."""
    name = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(name).to_bytes(2, "big") + name
    return bytes((0x10, len(body))) + body


def mqtt_connect(
    host: str, port: int, context: ssl.SSLContext, client_id: str = "raw-client"
) -> bytes:
    """Send an MQTT 3.1.1 CONNECT after the handshake; the broker's first bytes back."""
    with handshake(host, port, context) as tls:
        tls.sendall(connect_packet(client_id))
        answer = tls.recv(4)
    if not answer:
        raise ConnectionResetError("the broker closed the connection")
    return answer


def test_a_client_without_a_device_certificate_is_refused(pki, plane):
    endpoint = plane.endpoints["ats"]
    context = tls_context(pki, None, root_of(pki, "amazon-root-ca-1"))
    # TLS 1.3 reports the missing certificate after the handshake, on first read.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        mqtt_connect(endpoint.host, endpoint.port, context)


def test_a_client_with_a_device_certificate_gets_a_connack(pki, plane):
    endpoint = plane.endpoints["ats"]
    context = tls_context(pki, "raw-client", root_of(pki, "amazon-root-ca-1"))
    assert mqtt_connect(endpoint.host, endpoint.port, context)[:1] == b"\x20"  # CONNACK


@pytest.mark.parametrize("kind", ["legacy", "ats"])
def test_a_client_id_the_identity_refuses_is_closed_without_connack(pki, plane, kind):
    endpoint = plane.endpoints[kind]
    cafile = pki.legacy_root_pem if kind == "legacy" else root_of(pki, "amazon-root-ca-1")
    context = tls_context(pki, "raw-client", cafile)
    with pytest.raises(ConnectionResetError):
        mqtt_connect(endpoint.host, endpoint.port, context, client_id="someone-else")


def test_jobs_flow_over_ats_records_the_ats_connection(engine, device):
    dev = device("flow-ats", "ats")
    dev.subscribe("$aws/things/flow-ats/jobs/#")
    engine.queue("flow-ats", "job-1", {"operation": "migrate"})
    notify_next = dev.expect("$aws/things/flow-ats/jobs/notify-next")
    assert notify_next["execution"]["jobId"] == "job-1"
    dev.publish("$aws/things/flow-ats/jobs/start-next", {"clientToken": "t1"})
    started = dev.expect("$aws/things/flow-ats/jobs/start-next/accepted")
    assert started["clientToken"] == "t1"
    assert started["execution"]["status"] == "IN_PROGRESS"
    dev.publish(
        "$aws/things/flow-ats/jobs/job-1/update",
        {"status": "SUCCEEDED", "expectedVersion": 2, "clientToken": "t2"},
    )
    updated = dev.expect("$aws/things/flow-ats/jobs/job-1/update/accepted")
    assert updated["clientToken"] == "t2"
    assert "execution" not in dev.expect("$aws/things/flow-ats/jobs/notify-next")
    assert [v for v in engine.vias if v[0] == "flow-ats"] == [
        ("flow-ats", "job-1", "IN_PROGRESS", "ats"),
        ("flow-ats", "job-1", "SUCCEEDED", "ats"),
    ]


def test_requests_over_legacy_are_recorded_as_legacy(engine, device):
    dev = device("flow-legacy", "legacy")
    dev.subscribe("$aws/things/flow-legacy/jobs/#")
    engine.queue("flow-legacy", "job-1", {})
    dev.publish("$aws/things/flow-legacy/jobs/job-1/update", {"status": "FAILED"})
    dev.expect("$aws/things/flow-legacy/jobs/job-1/update/accepted")
    assert engine.vias[-1] == ("flow-legacy", "job-1", "FAILED", "legacy")


def test_events_reach_a_device_on_either_endpoint(engine, device):
    on_legacy = device("either", "legacy")
    on_legacy.subscribe("$aws/things/either/jobs/notify")
    engine.queue("either", "job-1", {})
    assert on_legacy.expect("$aws/things/either/jobs/notify")["jobs"]["QUEUED"][0]["jobId"] == (
        "job-1"
    )
    on_legacy.close()
    on_ats = device("either", "ats")
    on_ats.subscribe("$aws/things/either/jobs/notify")
    engine.queue("either", "job-2", {})
    assert len(on_ats.expect("$aws/things/either/jobs/notify")["jobs"]["QUEUED"]) == 2


def test_a_thing_cannot_read_or_drive_another_things_topics(engine, device):
    victim = device("victim", "ats")
    victim.subscribe("$aws/things/victim/jobs/#")
    snoop = device("snoop", "ats")
    snoop.subscribe("$aws/things/victim/jobs/#")
    snoop.subscribe("$aws/things/+/jobs/#")
    snoop.subscribe("$aws/things/victim/shadow/#")
    snoop.subscribe("$share/group/$aws/things/victim/jobs/#")
    snoop.subscribe("#")
    engine.queue("victim", "job-1", {"secret": "document"})
    victim.expect("$aws/things/victim/jobs/notify-next")
    snoop.publish("$aws/things/victim/jobs/start-next", {"clientToken": "stolen"})
    snoop.publish("$aws/things/victim/jobs/job-1/update", {"status": "SUCCEEDED"})
    victim.publish("$aws/things/victim/jobs/get", {"clientToken": "own"})
    assert victim.expect("$aws/things/victim/jobs/get/accepted")["clientToken"] == "own"
    assert snoop.nothing_on("$aws/things/victim", 0.5) == []
    assert engine.executions["victim", "job-1"].status == "QUEUED"
    assert [v for v in engine.vias if v[0] == "victim"] == []


def test_named_shadow_round_trip_and_read_back(plane, device):
    dev = device("shadowed", "ats")
    base = "$aws/things/shadowed/shadow/name/ca-migration"
    dev.subscribe(f"{base}/#")
    dev.publish(f"{base}/update", {"state": {"reported": {"endpoint": "ats"}}, "clientToken": "s"})
    assert dev.expect(f"{base}/update/accepted")["version"] == 1
    stored = plane.shadow("shadowed", "ca-migration")
    assert stored is not None
    assert stored["state"]["reported"] == {"endpoint": "ats"}
    assert plane.shadow("shadowed", "other") is None


def test_stop_ends_both_brokers(pki, tmp_path):
    plane = start_data_plane(FakeEngine(), pki=pki, work_dir=tmp_path / "mqtt")
    assert plane.running
    assert len(brokers(tmp_path / "mqtt")) == 2
    plane.stop()
    plane.stop()
    assert not plane.running
    leftover = subprocess.run(
        ["pgrep", "-f", str(tmp_path / "mqtt")], capture_output=True, check=False
    )
    assert leftover.stdout == b""


def brokers(work_dir: Path) -> list[bytes]:
    found = subprocess.run(
        ["pgrep", "-f", f"mosquitto -c {work_dir}"], capture_output=True, check=False
    )
    return found.stdout.split()


def anything_of(work_dir: Path) -> bytes:
    """Every process whose command line names `work_dir` (brokers and their watchers)."""
    found = subprocess.run(["pgrep", "-f", str(work_dir)], capture_output=True, check=False)
    return found.stdout


def test_a_killed_sandbox_process_leaves_no_broker_running(pki, tmp_path):
    work = tmp_path / "mqtt"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from infra.sandbox.mqtt import start_data_plane
        from infra.sandbox.mqtt.testing import FakeEngine
        from infra.sandbox.pki import SandboxPki
        pki = SandboxPki.create_or_load(Path({str(pki.directory)!r}))
        start_data_plane(FakeEngine(), pki=pki, work_dir=Path({str(work)!r}))
        print("ready", flush=True)
        time.sleep(300)
    """)
    sandbox = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert sandbox.stdout is not None
        for line in sandbox.stdout:  # an unconfigured structlog prints to stdout first
            if line.strip() == b"ready":
                break
        assert len(brokers(work)) == 2
        sandbox.kill()  # SIGKILL: no clean-up code of the sandbox runs
        sandbox.wait(10)
        deadline = time.monotonic() + 10
        while anything_of(work) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert anything_of(work) == b""
    finally:
        if sandbox.poll() is None:
            sandbox.kill()
        sandbox.wait(10)


def test_a_long_work_dir_still_gets_short_bridge_sockets(pki, tmp_path):
    deep = tmp_path.joinpath(*(["nested-directory-name"] * 6))
    with start_data_plane(FakeEngine(), pki=pki, work_dir=deep) as plane:
        assert plane.running
    assert not plane.running


def test_missing_mosquitto_is_reported_with_what_to_install(pki, tmp_path, monkeypatch):
    monkeypatch.setattr("infra.sandbox.mqtt._broker.shutil.which", lambda *_a, **_k: None)
    with pytest.raises(MqttError, match="bootstrap"):
        start_data_plane(FakeEngine(), pki=pki, work_dir=tmp_path / "mqtt")


def test_a_broker_that_cannot_start_is_reported_and_nothing_is_left_running(pki, tmp_path):
    broken = SandboxPki.create_or_load(tmp_path / "pki")
    broken.server_key_pem("ats").write_text("not a key\n")
    with pytest.raises(MqttError, match="ats endpoint did not start") as caught:
        start_data_plane(FakeEngine(), pki=broken, work_dir=tmp_path / "mqtt")
    assert "key" in str(caught.value).lower()
    leftover = subprocess.run(
        ["pgrep", "-f", str(tmp_path / "mqtt")], capture_output=True, check=False
    )
    assert leftover.stdout == b""


def test_a_certificate_from_another_ca_cannot_impersonate_a_thing(pki, plane, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "victim")])
    now = datetime.now(UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "forged.pem", tmp_path / "forged.key"
    cert_path.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    endpoint = plane.endpoints["ats"]
    context = tls_context(pki, None, root_of(pki, "amazon-root-ca-1"))
    context.load_cert_chain(str(cert_path), str(key_path))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        mqtt_connect(endpoint.host, endpoint.port, context)


def test_another_region_serves_that_regions_names_under_the_same_roots(pki, tmp_path):
    with start_data_plane(
        FakeEngine(), pki=pki, work_dir=tmp_path / "mqtt", region="eu-west-1"
    ) as plane:
        endpoint = plane.endpoints["ats"]
        assert endpoint.host == "a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com"
        context = tls_context(pki, "eu-thing", root_of(pki, "amazon-root-ca-1"))
        with handshake(endpoint.host, endpoint.port, context) as tls:
            assert tls.version() is not None
