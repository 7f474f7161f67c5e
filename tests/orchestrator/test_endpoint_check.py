"""The endpoint pre-flight against real TLS servers on 127.0.0.1 (certificates from the test PKI).

Each server is Python's own TLS stack in a thread: the check's handshake, SNI,
chain and host-name verification and ALPN are exercised for real; only the
address is local (`connect_to`, as the sandbox's listeners are reached).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from job_documents.testing import IssuedCert, make_leaf, make_root_ca
from orchestrator.endpoint_check import (
    ALPN_MQTT,
    CheckFailure,
    TrustedRoot,
    check_endpoint,
    parse_connect_to,
)
from orchestrator.errors import EndpointCheckError, UsageError

HOST = "a1example-ats.iot.us-east-1.amazonaws.com"


class TlsServer:
    """Accepts connections on 127.0.0.1 and completes (or fails) a server-side handshake."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.server_names: list[str | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _sni(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.server_names.append(name)

    def _serve(self) -> None:
        self._listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            if self._context is None:  # a listener that never answers the handshake
                self._stop.wait(5)
                return
            self._context.sni_callback = self._sni
            with (
                contextlib.suppress(OSError),
                self._context.wrap_socket(conn, server_side=True) as tls,
            ):
                tls.recv(1)  # until the client goes away

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)


def server_context(
    leaf: IssuedCert,
    tmp_path: Path,
    *,
    alpn: list[str] | None = None,
    client_ca: IssuedCert | None = None,
    maximum: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_text(leaf.pem)
    key.write_text(leaf.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if alpn:
        context.set_alpn_protocols(alpn)
    if client_ca is not None:  # mutual TLS, as AWS IoT and the sandbox's listeners ask
        context.load_verify_locations(cadata=client_ca.pem)
        context.verify_mode = ssl.CERT_REQUIRED
    if maximum is not None:
        context.maximum_version = maximum
    return context


@pytest.fixture(scope="module")
def root() -> IssuedCert:
    return make_root_ca("Stand-in ATS root")


@pytest.fixture(scope="module")
def other_root() -> IssuedCert:
    return make_root_ca("Some other root")


@pytest.fixture(scope="module")
def leaf(root: IssuedCert) -> IssuedCert:
    return make_leaf(root, HOST)


@contextlib.contextmanager
def serving(context: ssl.SSLContext | None) -> Iterator[TlsServer]:
    server = TlsServer(context)
    try:
        yield server
    finally:
        server.close()


def trusted(*certs: IssuedCert) -> list[TrustedRoot]:
    return [TrustedRoot(f"root-{i}", c.pem) for i, c in enumerate(certs)]


def via(server: TlsServer, host: str = HOST, port: int = 8883) -> dict[str, tuple[str, int]]:
    return {f"{host}:{port}": ("127.0.0.1", server.port)}


def failure(call) -> EndpointCheckError:
    with pytest.raises(EndpointCheckError) as caught:
        call()
    return caught.value


def test_an_endpoint_whose_certificate_chains_to_a_pushed_root_passes_with_sni(
    root, other_root, leaf, tmp_path
) -> None:
    with serving(server_context(leaf, tmp_path)) as server:
        proof = check_endpoint(
            HOST, 8883, trusted(other_root, root), connect_to=via(server), timeout=5
        )
    assert server.server_names == [HOST]
    assert proof.address == f"127.0.0.1:{server.port}"
    assert proof.roots == ("root-0", "root-1")
    assert f"CN={HOST}" in proof.subject
    assert "CN=Stand-in ATS root" in proof.issuer
    assert proof.tls_version in ("TLSv1.2", "TLSv1.3")
    assert proof.alpn is None
    assert proof.not_after is not None
    assert proof.not_after > datetime.now(UTC) + timedelta(days=80)
    assert proof.as_dict()["host"] == HOST


def test_roots_that_do_not_sign_the_server_certificate_are_a_wrong_chain(
    other_root, leaf, tmp_path
) -> None:
    with serving(server_context(leaf, tmp_path)) as server:
        error = failure(
            lambda: check_endpoint(HOST, 8883, trusted(other_root), connect_to=via(server))
        )
    assert error.reason == CheckFailure.WRONG_CHAIN
    assert "does not chain to the roots the campaign adds (root-0)" in str(error)
    assert "BEGIN CERTIFICATE" not in str(error)


def test_an_expired_server_certificate_is_a_wrong_chain(root, tmp_path) -> None:
    past = datetime.now(UTC) - timedelta(days=2)
    old = make_leaf(root, HOST, not_before=past - timedelta(days=90), not_after=past)
    with serving(server_context(old, tmp_path)) as server:
        error = failure(lambda: check_endpoint(HOST, 8883, trusted(root), connect_to=via(server)))
    assert error.reason == CheckFailure.WRONG_CHAIN
    assert "expired" in str(error)


def test_a_certificate_for_another_name_is_a_hostname_mismatch(root, leaf, tmp_path) -> None:
    other = "a1other-ats.iot.us-east-1.amazonaws.com"
    with serving(server_context(leaf, tmp_path)) as server:
        error = failure(
            lambda: check_endpoint(other, 8883, trusted(root), connect_to=via(server, other))
        )
    assert error.reason == CheckFailure.HOSTNAME_MISMATCH
    assert other in str(error)


def test_a_closed_port_is_unreachable_and_says_how_to_skip(root) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    error = failure(
        lambda: check_endpoint(
            HOST, 8883, trusted(root), connect_to={f"{HOST}:8883": ("127.0.0.1", closed)}
        )
    )
    assert error.reason == CheckFailure.UNREACHABLE
    assert f"127.0.0.1:{closed}" in str(error)
    assert "--skip-endpoint-check" in str(error)


def test_a_server_that_never_answers_the_handshake_times_out_within_the_bound(root) -> None:
    with serving(None) as server:
        started = time.monotonic()
        error = failure(
            lambda: check_endpoint(HOST, 8883, trusted(root), connect_to=via(server), timeout=0.3)
        )
        elapsed = time.monotonic() - started
    assert error.reason == CheckFailure.UNREACHABLE
    assert "timed out" in str(error)
    assert elapsed < 2


def test_a_server_that_trickles_its_handshake_is_cut_off_at_the_bound(root) -> None:
    """A byte every 50 ms would keep a per-read timeout alive; the handshake's bound holds.

    (Python's TLS handshake takes its socket's timeout as the bound of the whole call.)
    """
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"\x16\x03\x03\x40\x00")  # a 16 KiB handshake record, never sent
            while not stop.wait(0.05):
                try:
                    conn.sendall(b"\x00")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        error = failure(
            lambda: check_endpoint(
                HOST,
                8883,
                trusted(root),
                connect_to={f"{HOST}:8883": ("127.0.0.1", port)},
                timeout=0.5,
            )
        )
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
    assert time.monotonic() - started < 2
    assert error.reason == CheckFailure.UNREACHABLE
    assert "timed out" in str(error)


def test_port_443_offers_alpn_x_amzn_mqtt_ca_and_needs_it_selected(root, leaf, tmp_path) -> None:
    with serving(server_context(leaf, tmp_path, alpn=[ALPN_MQTT])) as server:
        proof = check_endpoint(HOST, 443, trusted(root), connect_to=via(server, port=443))
    assert proof.alpn == ALPN_MQTT
    with serving(server_context(leaf, tmp_path, alpn=["h2"])) as server:
        error = failure(
            lambda: check_endpoint(HOST, 443, trusted(root), connect_to=via(server, port=443))
        )
    assert error.reason == CheckFailure.ALPN
    assert "endpoint_port: 8883" in str(error)


def test_a_server_that_requires_a_client_certificate_still_proves_its_identity_over_tls13(
    root, leaf, tmp_path
) -> None:
    """AWS IoT and the sandbox ask for the device's certificate; the check has none to give."""
    device_ca = make_root_ca("Device CA")
    with serving(server_context(leaf, tmp_path, client_ca=device_ca)) as server:
        proof = check_endpoint(HOST, 8883, trusted(root), connect_to=via(server))
    assert proof.tls_version == "TLSv1.3"


def test_a_tls12_server_that_requires_a_client_certificate_passes_once_it_verified(
    root, leaf, tmp_path
) -> None:
    """Over TLS 1.2 the server ends the handshake itself, after the check verified it."""
    device_ca = make_root_ca("Device CA")
    context = server_context(leaf, tmp_path, client_ca=device_ca, maximum=ssl.TLSVersion.TLSv1_2)
    with serving(context) as server:
        proof = check_endpoint(HOST, 8883, trusted(root), connect_to=via(server))
    assert proof.client_certificate_required is True
    assert proof.tls_version == "TLSv1.2"
    assert "presented a certificate that verified" in proof.describe()


@pytest.mark.parametrize(
    ("trust", "name", "reason"),
    [
        ("other", HOST, CheckFailure.WRONG_CHAIN),
        ("root", "a1other-ats.iot.us-east-1.amazonaws.com", CheckFailure.HOSTNAME_MISMATCH),
    ],
)
def test_a_tls12_server_that_requires_a_client_certificate_still_fails_verification(
    root, other_root, leaf, tmp_path, trust: str, name: str, reason: CheckFailure
) -> None:
    """Its refusal is no pass unless the client verified the server first."""
    device_ca = make_root_ca("Device CA")
    context = server_context(leaf, tmp_path, client_ca=device_ca, maximum=ssl.TLSVersion.TLSv1_2)
    roots = trusted(root if trust == "root" else other_root)
    with serving(context) as server:
        error = failure(lambda: check_endpoint(name, 8883, roots, connect_to=via(server, name)))
    assert error.reason == reason


def test_a_tls12_server_on_443_that_requires_a_client_certificate_still_needs_the_alpn(
    root, leaf, tmp_path
) -> None:
    device_ca = make_root_ca("Device CA")
    for alpn, passes in (([ALPN_MQTT], True), (["h2"], False)):
        context = server_context(
            leaf, tmp_path, alpn=alpn, client_ca=device_ca, maximum=ssl.TLSVersion.TLSv1_2
        )
        with serving(context) as server:
            check = lambda: check_endpoint(  # noqa: E731
                HOST, 443, trusted(root), connect_to=via(server, port=443)
            )
            if passes:
                assert check().alpn == ALPN_MQTT
            else:
                assert failure(check).reason == CheckFailure.ALPN


def test_a_server_that_speaks_no_tls_is_a_handshake_failure(root) -> None:
    """An HTTP port (the control plane's, say) answers bytes that are no TLS record."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        for _ in range(2):  # the check, then its TLS 1.2 retry
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        error = failure(
            lambda: check_endpoint(
                HOST, 8883, trusted(root), connect_to={f"{HOST}:8883": ("127.0.0.1", port)}
            )
        )
    finally:
        thread.join(timeout=5)
        listener.close()
    assert error.reason == CheckFailure.HANDSHAKE
    assert "iot:Data-ATS endpoint and port" in str(error)


def test_the_host_name_of_connect_to_is_matched_without_case(root, leaf, tmp_path) -> None:
    with serving(server_context(leaf, tmp_path)) as server:
        mapping = parse_connect_to([f"{HOST.upper()}:8883=127.0.0.1:{server.port}"])
        proof = check_endpoint(HOST, 8883, trusted(root), connect_to=mapping)
    assert proof.address == f"127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    "value",
    [
        "host:8883",
        "host=127.0.0.1:1",
        "host:8883=127.0.0.1",
        "host:0=127.0.0.1:1",
        "host:8883=127.0.0.1:65536",
        ":8883=127.0.0.1:1",
        "host:88a3=127.0.0.1:1",
        "",
    ],
)
def test_a_malformed_connect_to_is_a_usage_error_saying_the_form(value: str) -> None:
    with pytest.raises(UsageError, match="HOST:PORT"):
        parse_connect_to([value])


def test_connect_to_maps_endpoint_host_and_port_to_an_address() -> None:
    assert parse_connect_to(["H.example:443=127.0.0.1:9443", "h.example:8883=[::1]:8"]) == {
        "h.example:443": ("127.0.0.1", 9443),
        "h.example:8883": ("::1", 8),
    }
