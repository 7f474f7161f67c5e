"""A real TLS handshake, the device's proof that new trust and endpoint work.

The probe connects to the endpoint (or to the address a connect-address
override names for it), performs a full handshake with the given CA bundle,
verifies the certificate chain and the host name (always the endpoint's
name, even through an override), presents the device's client certificate
when configured and offers ALPN `x-amzn-mqtt-ca` on port 443.

Failures are classified into short reason codes for statusDetails:
`tls-verify` (untrusted root, expired, wrong host name), `tls-handshake`,
`timeout`, `connect` (refused, unreachable, no such host), `alpn`.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from device_handler.errors import ConfigError, ProbeFailed
from device_handler.fsops import StrPath
from device_handler.trust import EndpointConfig

__all__ = ["ClientIdentity", "ProbeResult", "connect_address", "probe", "tls_context"]

log = structlog.get_logger(__name__)


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


def probe(
    endpoint: EndpointConfig,
    ca_file: StrPath,
    *,
    identity: ClientIdentity | None = None,
    overrides: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    attempts: int = 1,
) -> ProbeResult:
    """Handshake with `endpoint` trusting only `ca_file`; raise `ProbeFailed` with a reason.

    Connection-level failures (refused, timeout) are retried up to `attempts`
    times; a verification failure is final at once: retrying cannot fix trust.
    """
    context = tls_context(ca_file, identity, endpoint.alpn)
    address = connect_address(endpoint, overrides or {})
    last: ProbeFailed | None = None
    for attempt in range(1, max(1, attempts) + 1):
        started = time.monotonic()
        try:
            version, alpn = _handshake(context, endpoint, address, timeout)
        except ProbeFailed as exc:
            last = exc
            log.info("probe_failed", endpoint=endpoint.label(), attempt=attempt, reason=exc.reason)
            if exc.reason not in {"timeout", "connect"}:
                raise
            continue
        elapsed = int((time.monotonic() - started) * 1000)
        return ProbeResult(elapsed_ms=elapsed, tls_version=version, alpn=alpn, attempts=attempt)
    assert last is not None  # noqa: S101 - the loop ran at least once
    raise last


def _handshake(
    context: ssl.SSLContext, endpoint: EndpointConfig, address: tuple[str, int], timeout: float
) -> tuple[str, str | None]:
    try:
        raw = socket.create_connection(address, timeout=timeout)
    except TimeoutError as exc:
        raise ProbeFailed("timeout", f"TCP connect to {endpoint.label()} timed out") from exc
    except OSError as exc:
        raise ProbeFailed("connect", f"cannot connect to {endpoint.label()}: {exc}") from exc
    try:
        raw.settimeout(timeout)
        with context.wrap_socket(raw, server_hostname=endpoint.host) as tls:
            version = tls.version() or "unknown"
            negotiated = tls.selected_alpn_protocol()
    except ssl.SSLCertVerificationError as exc:
        message = exc.verify_message or str(exc)
        raise ProbeFailed(
            "tls-verify", f"{endpoint.label()}: certificate verify failed: {message}"
        ) from exc
    except ssl.SSLError as exc:
        raise ProbeFailed("tls-handshake", f"{endpoint.label()}: {exc}") from exc
    except TimeoutError as exc:
        raise ProbeFailed("timeout", f"TLS handshake with {endpoint.label()} timed out") from exc
    except OSError as exc:
        raise ProbeFailed("connect", f"{endpoint.label()}: connection lost: {exc}") from exc
    finally:
        raw.close()
    if endpoint.alpn and negotiated not in endpoint.alpn:
        raise ProbeFailed(
            "alpn", f"{endpoint.label()} did not agree to ALPN {', '.join(endpoint.alpn)}"
        )
    return version, negotiated
