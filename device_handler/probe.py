"""The device's proof that new trust and endpoint work: TLS handshake, then MQTT CONNECT.

The probe connects to the endpoint (or to the address a connect-address
override names for it), performs a full handshake with the given CA bundle,
verifies the certificate chain and the host name (always the endpoint's
name, even through an override), presents the device's client certificate
when configured and offers ALPN `x-amzn-mqtt-ca` on port 443. Then it opens
an MQTT 3.1.1 session as the device (CONNECT with the thing name as client
id, clean session), waits for the CONNACK, and ends with DISCONNECT: no
subscription, no publication. A server that completes the handshake but
refuses the session (a CONNACK with a refusal code, a closed connection, a
TLS alert for the client certificate) fails the probe.

Each attempt has `timeout` seconds for all of it (TCP connect, handshake,
CONNECT/CONNACK). Attempts that failed for a reason that may pass (refused
or timed-out connections, a closed session, "server unavailable") are
retried after an exponential backoff with full jitter; the whole probe,
attempts and waits, stays within `attempts * timeout` seconds.

Failures are classified into short reason codes for statusDetails:
`tls-verify` (untrusted root, expired, wrong host name), `tls-handshake`,
`timeout`, `connect` (refused, unreachable, no such host), `alpn`,
`mqtt-refused` (a CONNACK with a non-zero return code), `mqtt-closed` (the
server ended the connection, or refused the client certificate, before a
CONNACK), `mqtt-protocol` (the answer is not a CONNACK).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from device_handler.errors import ConfigError, ProbeFailed
from device_handler.fsops import StrPath
from device_handler.trust import EndpointConfig

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "ClientIdentity",
    "ProbeResult",
    "backoff_delay",
    "connack_refusal",
    "connect_address",
    "mqtt_connect_packet",
    "probe",
    "tls_context",
]

log = structlog.get_logger(__name__)

#: The first wait between attempts is drawn from [0, BACKOFF_BASE) seconds, then doubles.
BACKOFF_BASE = 0.5
#: No single wait is longer than this.
BACKOFF_CAP = 8.0
#: The keep-alive announced in the CONNECT; the session ends long before it matters.
_KEEP_ALIVE = 30
_CONNACK = 0x20
_CONNACK_SIZE = 4  # fixed header (2 bytes), flags, return code
_MAX_CLIENT_ID = 0xFFFF  # a two-byte length
_DISCONNECT = b"\xe0\x00"
#: MQTT 3.1.1 CONNACK return codes (section 3.2.2.3).
_REFUSALS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
_SERVER_UNAVAILABLE = 3
#: Reasons another attempt may cure; a verification failure or a refusal never passes.
_TRANSIENT = frozenset({"timeout", "connect", "mqtt-closed"})


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The device's client certificate and key, for mutual TLS."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class ProbeResult:
    elapsed_ms: int
    tls_version: str
    alpn: str | None
    attempts: int


class _Retryable(ProbeFailed):
    """A `ProbeFailed` that another attempt may cure."""


def connect_address(endpoint: EndpointConfig, overrides: Mapping[str, str]) -> tuple[str, int]:
    """Where to open the TCP connection: the override for `host:port`, else the endpoint itself."""
    target = overrides.get(endpoint.label())
    if target is None:
        return endpoint.host, endpoint.port
    address, _, port = target.rpartition(":")
    if not address or not port.isdigit():
        raise ConfigError(
            f"connect override for {endpoint.label()} is {target!r}; write it as address:port"
        )
    return address, int(port)


def tls_context(
    ca_file: StrPath, identity: ClientIdentity | None, alpn: tuple[str, ...]
) -> ssl.SSLContext:
    """A client context that trusts exactly `ca_file` and verifies host names."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        name = os.path.basename(ca_file)  # noqa: PTH119 - str or Path alike
        raise ProbeFailed("bundle", f"cannot load the trust bundle {name}: {exc}") from exc
    if identity is not None:
        try:
            context.load_cert_chain(str(identity.cert), str(identity.key))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"client certificate {identity.cert} / key {identity.key} cannot be loaded: {exc}"
            ) from exc
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def mqtt_connect_packet(client_id: str, *, keep_alive: int = _KEEP_ALIVE) -> bytes:
    """An MQTT 3.1.1 CONNECT: clean session, no will, no user name, `client_id` as given."""
    ident = client_id.encode()
    if len(ident) > _MAX_CLIENT_ID:
        raise ConfigError(f"MQTT client id of {len(ident)} bytes is too long (at most 65535)")
    body = (
        b"\x00\x04MQTT\x04\x02"
        + keep_alive.to_bytes(2, "big")
        + len(ident).to_bytes(2, "big")
        + ident
    )
    return b"\x10" + _remaining_length(len(body)) + body


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connack_refusal(answer: bytes) -> tuple[str, str] | None:
    """None for an accepted CONNACK; else (reason code, what the server said)."""
    if len(answer) != _CONNACK_SIZE or answer[0] != _CONNACK or answer[1] != _CONNACK_SIZE - 2:
        return "mqtt-protocol", f"answered {len(answer)} bytes that are not a CONNACK"
    code = answer[3]
    if code == 0:
        return None
    meaning = _REFUSALS.get(code, "an unknown return code")
    return "mqtt-refused", f"refused the MQTT session: return code {code} ({meaning})"


def backoff_delay(retry: int, draw: Callable[[], float] = random.random) -> float:
    """The wait before retry number `retry` (1, 2, ...): full jitter, capped exponential."""
    bound: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (retry - 1))
    return draw() * bound


def probe(
    endpoint: EndpointConfig,
    ca_file: StrPath,
    *,
    client_id: str,
    identity: ClientIdentity | None = None,
    overrides: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    attempts: int = 1,
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] = random.random,
) -> ProbeResult:
    """Open an MQTT session at `endpoint` trusting only `ca_file`; raise `ProbeFailed`.

    `client_id` is the device's MQTT client id (the thing name on AWS IoT).
    Failures another attempt may cure are retried, up to `attempts` tries, after
    `backoff_delay` (drawn with `draw`, waited with `sleep`); a verification failure
    or a refused session is final at once: retrying cannot fix trust or policy.
    """
    context = tls_context(ca_file, identity, endpoint.alpn)
    address = connect_address(endpoint, overrides or {})
    connect = mqtt_connect_packet(client_id)
    tries = max(1, attempts)
    deadline = time.monotonic() + timeout * tries
    last: ProbeFailed | None = None
    for attempt in range(1, tries + 1):
        started = time.monotonic()
        budget = min(timeout, deadline - started)
        if budget <= 0:
            break
        try:
            version, alpn = _session(context, endpoint, address, connect, started + budget)
        except ProbeFailed as exc:
            last = exc
            log.info("probe_failed", endpoint=endpoint.label(), attempt=attempt, reason=exc.reason)
            if not isinstance(exc, _Retryable) or attempt == tries:
                raise ProbeFailed(exc.reason, exc.message) from exc
            wait = min(backoff_delay(attempt, draw), max(0.0, deadline - time.monotonic()))
            sleep(wait)
            continue
        elapsed = int((time.monotonic() - started) * 1000)
        return ProbeResult(elapsed_ms=elapsed, tls_version=version, alpn=alpn, attempts=attempt)
    assert last is not None  # noqa: S101 - the first attempt always runs
    raise ProbeFailed(last.reason, last.message) from last


def _fail(reason: str, message: str) -> ProbeFailed:
    return (_Retryable if reason in _TRANSIENT else ProbeFailed)(reason, message)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _session(
    context: ssl.SSLContext,
    endpoint: EndpointConfig,
    address: tuple[str, int],
    connect: bytes,
    deadline: float,
) -> tuple[str, str | None]:
    label = endpoint.label()
    try:
        raw = socket.create_connection(address, timeout=_remaining(deadline))
    except TimeoutError as exc:
        raise _fail("timeout", f"TCP connect to {label} timed out") from exc
    except OSError as exc:
        raise _fail("connect", f"cannot connect to {label}: {exc}") from exc
    try:
        raw.settimeout(_remaining(deadline))
        # Small writes answered by small writes: without this, Nagle's algorithm and the
        # peer's delayed ACK add ~40 ms to the CONNECT's round trip.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw, server_hostname=endpoint.host) as tls:
            version = tls.version() or "unknown"
            negotiated = tls.selected_alpn_protocol()
            if endpoint.alpn and negotiated not in endpoint.alpn:
                raise _fail("alpn", f"{label} did not agree to ALPN {', '.join(endpoint.alpn)}")
            _mqtt_connect(tls, label, connect, deadline)
    except ssl.SSLCertVerificationError as exc:
        message = exc.verify_message or str(exc)
        raise _fail("tls-verify", f"{label}: certificate verify failed: {message}") from exc
    except ssl.SSLError as exc:
        raise _fail("tls-handshake", f"{label}: {exc}") from exc
    except TimeoutError as exc:
        raise _fail("timeout", f"TLS handshake with {label} timed out") from exc
    except OSError as exc:
        raise _fail("connect", f"{label}: connection lost: {exc}") from exc
    finally:
        raw.close()
    return version, negotiated


def _mqtt_connect(tls: ssl.SSLSocket, label: str, connect: bytes, deadline: float) -> None:
    """CONNECT, read the CONNACK, DISCONNECT; every failure after the handshake is classified."""
    try:
        tls.settimeout(_remaining(deadline))
        tls.sendall(connect)
        answer = b""
        while len(answer) < _CONNACK_SIZE:
            tls.settimeout(_remaining(deadline))
            chunk = tls.recv(_CONNACK_SIZE - len(answer))
            if not chunk:
                break
            answer += chunk
    except TimeoutError as exc:
        raise _fail("timeout", f"{label} sent no CONNACK in time") from exc
    except (ssl.SSLError, OSError) as exc:
        # TLS 1.3 sends the refusal of a client certificate after the handshake: it
        # surfaces here, on the first read, as an alert.
        raise _fail("mqtt-closed", f"{label} ended the connection before a CONNACK: {exc}") from exc
    if not answer:
        raise _fail("mqtt-closed", f"{label} closed the connection before a CONNACK")
    refusal = connack_refusal(answer)
    if refusal is not None:
        reason, message = refusal
        if answer[3:4] == bytes([_SERVER_UNAVAILABLE]):
            raise _Retryable(reason, f"{label} {message}")
        raise _fail(reason, f"{label} {message}")
    # The session was accepted, which is what the probe proves; a lost DISCONNECT is harmless.
    with contextlib.suppress(ssl.SSLError, OSError):
        tls.sendall(_DISCONNECT)
