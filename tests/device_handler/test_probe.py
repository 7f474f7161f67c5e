"""The TLS probe against real local TLS servers with generated CAs."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_handler.errors import ConfigError, ProbeFailed
from device_handler.probe import connect_address, probe
from device_handler.testing import TlsServer
from device_handler.trust import EndpointConfig

from .conftest import ATS_HOST, World


def _over(server: TlsServer) -> dict[str, str]:
    return {f"{ATS_HOST}:8883": f"127.0.0.1:{server.port}"}


@pytest.fixture(scope="module")
def expired_server(world: World) -> Iterator[TlsServer]:
    leaf = world.pki.leaf("expired", world.ats_root, hosts=(ATS_HOST,), expired=True)
    with TlsServer(leaf) as server:
        yield server


@pytest.fixture(scope="module")
def wrong_name_server(world: World) -> Iterator[TlsServer]:
    leaf = world.pki.leaf("wrong-name", world.ats_root, hosts=("elsewhere.example.com",))
    with TlsServer(leaf) as server:
        yield server


@pytest.fixture(scope="module")
def alpn_server(world: World) -> Iterator[TlsServer]:
    leaf = world.pki.leaf("alpn", world.ats_root, hosts=(ATS_HOST,))
    with TlsServer(leaf, alpn=("x-amzn-mqtt-ca",), client_ca=None) as server:
        yield server


def test_right_root_completes_a_mutual_tls_handshake(world: World):
    result = probe(
        world.ats_endpoint(),
        world.ats_root.cert_path,
        identity=world.identity,
        overrides=world.overrides,
        timeout=3,
    )
    assert result.tls_version.startswith("TLSv1.")
    assert result.elapsed_ms >= 0


def test_wrong_root_fails_verification(world: World):
    with pytest.raises(ProbeFailed) as caught:
        probe(
            world.ats_endpoint(),
            world.legacy_root.cert_path,
            identity=world.identity,
            overrides=world.overrides,
            timeout=3,
            attempts=3,
        )
    assert caught.value.reason == "tls-verify"
    assert "unable to get local issuer certificate" in caught.value.message


def test_expired_server_certificate_fails_verification(world: World, expired_server: TlsServer):
    with pytest.raises(ProbeFailed) as caught:
        probe(world.ats_endpoint(), world.ats_root.cert_path, overrides=_over(expired_server))
    assert caught.value.reason == "tls-verify"
    assert "expired" in caught.value.message


def test_hostname_mismatch_fails_even_through_a_connect_override(
    world: World, wrong_name_server: TlsServer
):
    with pytest.raises(ProbeFailed) as caught:
        probe(world.ats_endpoint(), world.ats_root.cert_path, overrides=_over(wrong_name_server))
    assert caught.value.reason == "tls-verify"
    assert "mismatch" in caught.value.message.lower()


def test_closed_port_is_a_connect_failure_after_every_attempt(world: World):
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    overrides = {f"{ATS_HOST}:8883": f"127.0.0.1:{port}"}
    with pytest.raises(ProbeFailed) as caught:
        probe(world.ats_endpoint(), world.ats_root.cert_path, overrides=overrides, attempts=2)
    assert caught.value.reason == "connect"


def test_handshake_that_hangs_times_out(world: World):
    with TlsServer(None, mode="hang") as server:
        started = time.monotonic()
        with pytest.raises(ProbeFailed) as caught:
            probe(
                world.ats_endpoint(), world.ats_root.cert_path, overrides=_over(server), timeout=0.3
            )
        assert time.monotonic() - started < 5
    assert caught.value.reason == "timeout"


def test_port_443_negotiates_the_aws_alpn_protocol(world: World, alpn_server: TlsServer):
    endpoint = EndpointConfig(ATS_HOST, 443, ("x-amzn-mqtt-ca",))
    overrides = {f"{ATS_HOST}:443": f"127.0.0.1:{alpn_server.port}"}
    result = probe(endpoint, world.ats_root.cert_path, overrides=overrides)
    assert result.alpn == "x-amzn-mqtt-ca"


def test_server_without_the_required_alpn_fails(world: World):
    endpoint = EndpointConfig(ATS_HOST, 443, ("x-amzn-mqtt-ca",))
    overrides = {f"{ATS_HOST}:443": f"127.0.0.1:{world.ats.port}"}
    with pytest.raises(ProbeFailed) as caught:
        probe(endpoint, world.ats_root.cert_path, identity=world.identity, overrides=overrides)
    assert caught.value.reason == "alpn"


def test_unreadable_bundle_is_a_bundle_failure(world: World, tmp_path: Path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ProbeFailed) as caught:
        probe(world.ats_endpoint(), bad, overrides=world.overrides)
    assert caught.value.reason == "bundle"


@pytest.mark.parametrize("target", ["127.0.0.1", "127.0.0.1:port", ":80"])
def test_malformed_connect_override_is_a_config_error(target: str):
    endpoint = EndpointConfig(ATS_HOST, 8883)
    with pytest.raises(ConfigError, match=r"address:port"):
        connect_address(endpoint, {f"{ATS_HOST}:8883": target})
