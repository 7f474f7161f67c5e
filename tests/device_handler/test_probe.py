"""The probe (TLS handshake, then MQTT CONNECT) against real local TLS servers with generated CAs.

The servers are `device_handler.testing.TlsServer`s, which answer the CONNECT as told; the
probe against real mosquitto is in test_probe_sandbox.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_handler.errors import ConfigError, ProbeFailed
from device_handler.probe import (
    BACKOFF_BASE,
    backoff_delay,
    connack_refusal,
    connect_address,
    mqtt_connect_packet,
    probe,
)
from device_handler.testing import TlsServer
from device_handler.trust import EndpointConfig

from .conftest import ATS_HOST, THING, World


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
        client_id=THING,
        identity=world.identity,
        overrides=world.overrides,
        timeout=3,
    )
    assert result.tls_version.startswith("TLSv1.")
    assert result.elapsed_ms >= 0


def test_the_probe_opens_an_mqtt_session_as_the_thing(world: World):
    before = len(world.ats.client_ids)
    probe(
        world.ats_endpoint(),
        world.ats_root.cert_path,
        client_id=THING,
        identity=world.identity,
        overrides=world.overrides,
        timeout=3,
    )
    assert world.ats.client_ids[before:] == [THING]


def test_wrong_root_fails_verification(world: World):
    with pytest.raises(ProbeFailed) as caught:
        probe(
            world.ats_endpoint(),
            world.legacy_root.cert_path,
            client_id=THING,
            identity=world.identity,
            overrides=world.overrides,
            timeout=3,
            attempts=3,
        )
    assert caught.value.reason == "tls-verify"
    assert "unable to get local issuer certificate" in caught.value.message


def test_expired_server_certificate_fails_verification(world: World, expired_server: TlsServer):
    with pytest.raises(ProbeFailed) as caught:
        probe(
            world.ats_endpoint(),
            world.ats_root.cert_path,
            client_id=THING,
            overrides=_over(expired_server),
        )
    assert caught.value.reason == "tls-verify"
    assert "expired" in caught.value.message


def test_hostname_mismatch_fails_even_through_a_connect_override(
    world: World, wrong_name_server: TlsServer
):
    with pytest.raises(ProbeFailed) as caught:
        probe(
            world.ats_endpoint(),
            world.ats_root.cert_path,
            client_id=THING,
            overrides=_over(wrong_name_server),
        )
    assert caught.value.reason == "tls-verify"
    assert "mismatch" in caught.value.message.lower()


def test_closed_port_is_a_connect_failure_after_every_attempt(world: World):
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    overrides = {f"{ATS_HOST}:8883": f"127.0.0.1:{port}"}
    with pytest.raises(ProbeFailed) as caught:
        probe(
            world.ats_endpoint(),
            world.ats_root.cert_path,
            client_id=THING,
            overrides=overrides,
            attempts=2,
            sleep=lambda _: None,
        )
    assert caught.value.reason == "connect"


def test_handshake_that_hangs_times_out(world: World):
    with TlsServer(None, mode="hang") as server:
        started = time.monotonic()
        with pytest.raises(ProbeFailed) as caught:
            probe(
                world.ats_endpoint(),
                world.ats_root.cert_path,
                client_id=THING,
                overrides=_over(server),
                timeout=0.3,
            )
        assert time.monotonic() - started < 5
    assert caught.value.reason == "timeout"


def test_port_443_negotiates_the_aws_alpn_protocol(world: World, alpn_server: TlsServer):
    endpoint = EndpointConfig(ATS_HOST, 443, ("x-amzn-mqtt-ca",))
    overrides = {f"{ATS_HOST}:443": f"127.0.0.1:{alpn_server.port}"}
    result = probe(endpoint, world.ats_root.cert_path, client_id=THING, overrides=overrides)
    assert result.alpn == "x-amzn-mqtt-ca"


def test_server_without_the_required_alpn_fails(world: World):
    endpoint = EndpointConfig(ATS_HOST, 443, ("x-amzn-mqtt-ca",))
    overrides = {f"{ATS_HOST}:443": f"127.0.0.1:{world.ats.port}"}
    with pytest.raises(ProbeFailed) as caught:
        probe(
            endpoint,
            world.ats_root.cert_path,
            client_id=THING,
            identity=world.identity,
            overrides=overrides,
        )
    assert caught.value.reason == "alpn"


def test_unreadable_bundle_is_a_bundle_failure(world: World, tmp_path: Path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ProbeFailed) as caught:
        probe(world.ats_endpoint(), bad, client_id=THING, overrides=world.overrides)
    assert caught.value.reason == "bundle"


@pytest.mark.parametrize("target", ["127.0.0.1", "127.0.0.1:port", ":80"])
def test_malformed_connect_override_is_a_config_error(target: str):
    endpoint = EndpointConfig(ATS_HOST, 8883)
    with pytest.raises(ConfigError, match=r"address:port"):
        connect_address(endpoint, {f"{ATS_HOST}:8883": target})


def _probe_through(world: World, server: TlsServer, **options: object) -> None:
    probe(
        world.ats_endpoint(),
        world.ats_root.cert_path,
        client_id=THING,
        identity=world.identity,
        overrides=_over(server),
        timeout=2,
        **options,  # type: ignore[arg-type]
    )


def _ats_server(world: World, **options: object) -> TlsServer:
    leaf = world.pki.leaf("ats-mqtt", world.ats_root, hosts=(ATS_HOST,))
    return TlsServer(leaf, **options)  # type: ignore[arg-type]


def test_a_refused_mqtt_session_fails_the_probe_at_once(world: World):
    with _ats_server(world, connack_code=5) as server:
        with pytest.raises(ProbeFailed) as caught:
            _probe_through(world, server, attempts=3, sleep=lambda _: None)
        assert server.client_ids == [THING]  # not retried: policy does not change
    assert caught.value.reason == "mqtt-refused"
    assert "not authorized" in caught.value.message


def test_a_server_that_hangs_up_after_the_handshake_fails_the_probe(world: World):
    waits: list[float] = []
    with _ats_server(world, mode="close") as server:
        with pytest.raises(ProbeFailed) as caught:
            _probe_through(world, server, attempts=3, sleep=waits.append)
        assert server.handshakes == 3
    assert caught.value.reason == "mqtt-closed"
    assert len(waits) == 2


def test_a_server_that_never_answers_the_connect_times_out_within_the_timeout(world: World):
    with _ats_server(world, mode="silent") as server:
        started = time.monotonic()
        with pytest.raises(ProbeFailed) as caught:
            probe(
                world.ats_endpoint(),
                world.ats_root.cert_path,
                client_id=THING,
                identity=world.identity,
                overrides=_over(server),
                timeout=0.5,
            )
        elapsed = time.monotonic() - started
        assert server.handshakes == 1
    assert caught.value.reason == "timeout"
    assert elapsed < 1.5


def test_a_server_that_refuses_the_client_certificate_fails_the_probe(world: World):
    stranger = world.pki.ca("Some Other Device CA")
    with (
        _ats_server(world, client_ca=stranger.cert_path) as server,
        pytest.raises(ProbeFailed) as caught,
    ):
        _probe_through(world, server, attempts=1)
    # TLS 1.2 refuses in the handshake; TLS 1.3 after it, on the CONNACK's read.
    assert caught.value.reason in {"tls-handshake", "mqtt-closed"}
    assert server.client_ids == []


def test_attempts_wait_with_jittered_exponential_backoff(world: World):
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    overrides = {f"{ATS_HOST}:8883": f"127.0.0.1:{port}"}
    waits: list[float] = []
    with pytest.raises(ProbeFailed):
        probe(
            world.ats_endpoint(),
            world.ats_root.cert_path,
            client_id=THING,
            overrides=overrides,
            attempts=4,
            timeout=10,
            sleep=waits.append,
            draw=lambda: 1.0,
        )
    assert waits == pytest.approx([BACKOFF_BASE, 2 * BACKOFF_BASE, 4 * BACKOFF_BASE])


def test_backoff_waits_are_drawn_below_the_exponential_bound():
    draws = iter([0.0, 0.5, 0.999])
    assert [backoff_delay(n, lambda: next(draws)) for n in (1, 2, 3)] == pytest.approx(
        [0.0, 0.5 * 2 * BACKOFF_BASE, 0.999 * 4 * BACKOFF_BASE]
    )
    assert backoff_delay(40, lambda: 1.0) <= 8.0


def test_attempts_and_waits_stay_within_the_probes_budget(world: World):
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    overrides = {f"{ATS_HOST}:8883": f"127.0.0.1:{port}"}
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    started = time.monotonic()
    with pytest.raises(ProbeFailed) as caught:
        probe(
            world.ats_endpoint(),
            world.ats_root.cert_path,
            client_id=THING,
            overrides=overrides,
            attempts=3,
            timeout=0.2,  # a budget of 0.6 s for three attempts and their waits
            sleep=sleep,
            draw=lambda: 1.0,
        )
    assert caught.value.reason == "connect"
    assert time.monotonic() - started < 0.6 + 0.3
    assert waits[0] == pytest.approx(BACKOFF_BASE)
    assert sum(waits) <= 0.6


def test_the_connect_packet_is_mqtt_311_with_the_client_id():
    packet = mqtt_connect_packet("thing-0001")
    assert packet[0] == 0x10
    assert packet[1] == len(packet) - 2
    assert packet[2:10] == b"\x00\x04MQTT\x04\x02"  # protocol, level 4, clean session
    assert packet[12:14] == (10).to_bytes(2, "big")
    assert packet[14:] == b"thing-0001"
    long = mqtt_connect_packet("t" * 200)
    assert long[1:3] == bytes([(len(long) - 3) % 128 | 0x80, (len(long) - 3) // 128])


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"\x20\x02\x00\x00", None),
        (b"\x20\x02\x01\x00", None),
        (b"\x20\x02\x00\x05", "mqtt-refused"),
        (b"\x20\x02\x00\x03", "mqtt-refused"),
        (b"\x30\x02\x00\x00", "mqtt-protocol"),
        (b"\x20\x02", "mqtt-protocol"),
    ],
)
def test_connack_codes(answer: bytes, reason: str | None):
    refusal = connack_refusal(answer)
    assert (refusal[0] if refusal else None) == reason
