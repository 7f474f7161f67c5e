"""Pre-flight of the new endpoint: does it serve a chain the campaign's roots verify?

Why: a campaign sends every device of a wave the roots to trust and the
endpoint to move to. If those roots do not sign the endpoint's server
certificate (the wrong roots, the wrong endpoint, a sandbox catalog sent
against AWS), every device's probe fails and the wave halts, at best, after it
reached devices. One TLS handshake from the operator's machine finds that out
before any job exists, so `plan` and `start` run this check first.

What it does: one TLS handshake to the endpoint's host and port, with SNI and
host-name verification on the endpoint's name, trusting exactly the roots the
campaign adds (never the system's trust store), TLS 1.2 at least, and on port
443 offering ALPN `x-amzn-mqtt-ca` as the devices do (AWS serves MQTT with
X.509 client certificates on 443 only with that ALPN). The TCP connection and
the handshake share one `timeout`. No client certificate is presented and no
MQTT is spoken: the check proves the server's identity, which is what the
pushed roots are for; the devices' credentials and policy are their own
probe's business. Over TLS 1.3 a server that wants a client certificate still
lets the client finish its handshake (its refusal comes after), so the check
passes there on the server's identity alone.

`connect_to` sends the TCP connection elsewhere than the endpoint's name (the
sandbox's local listeners, a TCP forwarder) while SNI and verification still
use the endpoint's name: curl's `--connect-to`, the device's
`connect_override`.

Failures (`EndpointCheckError.reason`), each with what to do in its message:

- `unreachable`: no TCP connection (refused, unresolvable name, no route, time-out);
- `wrong-chain`: the server certificate does not chain to any root the campaign adds
  (or the chain is expired);
- `hostname-mismatch`: the chain verifies but the certificate does not name the host;
- `alpn`: on 443 the server did not select `x-amzn-mqtt-ca`;
- `handshake`: TLS failed otherwise (no common protocol version or cipher, the
  server ended the handshake).

Invariant: never a PEM body in a message or a log event (roots are named).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

import structlog
from cryptography import x509

from orchestrator.errors import EndpointCheckError, UsageError

__all__ = [
    "ALPN_MQTT",
    "DEFAULT_TIMEOUT",
    "CheckFailure",
    "EndpointProof",
    "TrustedRoot",
    "check_endpoint",
    "parse_connect_to",
]

log = structlog.get_logger(__name__)

#: AWS IoT serves MQTT with X.509 client certificates on 443 only to this ALPN protocol.
ALPN_MQTT: Final = "x-amzn-mqtt-ca"
ALPN_PORT: Final = 443
#: Seconds for the TCP connection and the handshake together.
DEFAULT_TIMEOUT: Final = 10.0
#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH: the chain verified, the name did not.
_HOSTNAME_MISMATCH: Final = 62
_MAX_PORT: Final = 65535
#: The client's flight that follows its verification of the server (TLS 1.2: Finished).
_SECOND_FLIGHT: Final = 2


class CheckFailure(StrEnum):
    """Why the endpoint did not prove itself (the `reason` of `EndpointCheckError`)."""

    UNREACHABLE = "unreachable"
    WRONG_CHAIN = "wrong-chain"
    HOSTNAME_MISMATCH = "hostname-mismatch"
    ALPN = "alpn"
    HANDSHAKE = "handshake"


@dataclass(frozen=True, slots=True)
class TrustedRoot:
    """A root the campaign pushes: its catalog name and its PEM (never logged)."""

    name: str
    pem: str


@dataclass(frozen=True, slots=True)
class EndpointProof:
    """What a passed check saw: where it connected and the certificate it verified."""

    host: str
    port: int
    address: str  # where the TCP connection went (host:port, or the connect-to target)
    roots: tuple[str, ...]  # the names of the roots trusted
    tls_version: str
    alpn: str | None
    subject: str  # "" when the server ended the handshake after verification (below)
    issuer: str
    not_after: datetime | None
    elapsed_ms: int
    #: The server ended a TLS 1.2 handshake after the client had verified its certificate
    #: and name (it wants a client certificate): verified, but no certificate details kept.
    client_certificate_required: bool = False

    def as_dict(self) -> dict[str, Any]:
        """For plan's JSON and the campaign's event log."""
        return {
            "host": self.host,
            "port": self.port,
            "address": self.address,
            "roots": list(self.roots),
            "tls_version": self.tls_version,
            "alpn": self.alpn,
            "subject": self.subject,
            "issuer": self.issuer,
            "not_after": None if self.not_after is None else self.not_after.isoformat(),
            "elapsed_ms": self.elapsed_ms,
            "client_certificate_required": self.client_certificate_required,
        }

    def describe(self) -> str:
        """'HOST:PORT presents SUBJECT (issued by ISSUER)', or what was verified without it."""
        if self.client_certificate_required:
            return (
                f"{self.host}:{self.port} ({self.tls_version}) presented a certificate that "
                "verified, then ended the handshake for want of a client certificate"
            )
        return f"{self.host}:{self.port} presents {self.subject} (issued by {self.issuer})"


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= _MAX_PORT:
        raise UsageError(
            f"--connect-to (or CA_MIGRATE_CONNECT_TO): {what} {text!r} is not HOST:PORT "
            "(port 1-65535)"
        )
    return host.lower() if what == "endpoint" else host, int(port)


def parse_connect_to(values: Sequence[str]) -> dict[str, tuple[str, int]]:
    """`HOST:PORT=ADDRESS:PORT` entries as {"host:port": (address, port)}; `UsageError` if bad."""
    found: dict[str, tuple[str, int]] = {}
    for value in values:
        left, sep, right = value.partition("=")
        if not sep:
            raise UsageError(
                f"--connect-to (or CA_MIGRATE_CONNECT_TO) {value!r}: write it as "
                "HOST:PORT=ADDRESS:PORT (the endpoint's name and port, then where to connect "
                "instead)"
            )
        host, port = _host_port(left, "endpoint")
        found[f"{host}:{port}"] = _host_port(right, "address")
    return found


def _context(roots: Sequence[TrustedRoot], alpn: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for root in roots:
        try:
            context.load_verify_locations(cadata=root.pem)
        except (ssl.SSLError, ValueError) as exc:
            raise EndpointCheckError(
                CheckFailure.HANDSHAKE,
                f"root {root.name} cannot be loaded for the endpoint check ({exc}); check the "
                "catalog the campaign names",
            ) from exc
    if alpn:
        context.set_alpn_protocols([ALPN_MQTT])
    return context


def check_endpoint(
    host: str,
    port: int,
    roots: Sequence[TrustedRoot],
    *,
    connect_to: Mapping[str, tuple[str, int]] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> EndpointProof:
    """Handshake with `host:port` trusting only `roots`; `EndpointCheckError` if it fails."""
    if not roots:
        raise UsageError("the endpoint check needs at least one root to trust")
    label = f"{host}:{port}"
    address = (connect_to or {}).get(label.lower(), (host, port))
    via = label if address == (host, port) else f"{label} (connecting to {address[0]}:{address[1]})"
    names = tuple(r.name for r in roots)
    context = _context(roots, alpn=port == ALPN_PORT)
    started = time.monotonic()
    deadline = started + timeout
    try:
        raw = socket.create_connection(address, timeout=timeout)
    except OSError as exc:
        raise _unreachable(via, exc) from exc
    try:
        raw.settimeout(max(0.001, deadline - time.monotonic()))
        with context.wrap_socket(raw, server_hostname=host) as tls:
            version = tls.version() or "unknown"
            alpn = tls.selected_alpn_protocol()
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        raise _unverified(via, names, exc) from exc
    except ssl.SSLError as exc:
        refused = _verified_before_refusal(address, host, roots, port == ALPN_PORT, deadline, via)
        if refused is None:
            raise EndpointCheckError(
                CheckFailure.HANDSHAKE,
                f"the TLS handshake with {via} failed ({exc.reason or exc}); check that this is "
                "the AWS IoT iot:Data-ATS endpoint and port, or run where that endpoint is "
                "reachable",
            ) from exc
        version, alpn, der = "TLSv1.2", refused or None, None
    except OSError as exc:  # a time-out or a reset during the handshake
        raise _unreachable(via, exc) from exc
    finally:
        raw.close()
    if port == ALPN_PORT and alpn != ALPN_MQTT:
        raise EndpointCheckError(
            CheckFailure.ALPN,
            f"{via} did not agree to ALPN {ALPN_MQTT}: devices could not use MQTT there on "
            "port 443; use endpoint_port: 8883, or check the endpoint",
        )
    cert = x509.load_der_x509_certificate(der) if der else None
    proof = EndpointProof(
        host=host,
        port=port,
        address=f"{address[0]}:{address[1]}",
        roots=names,
        tls_version=version,
        alpn=alpn,
        subject=cert.subject.rfc4514_string() if cert else "",
        issuer=cert.issuer.rfc4514_string() if cert else "",
        not_after=cert.not_valid_after_utc if cert else None,
        elapsed_ms=int((time.monotonic() - started) * 1000),
        client_certificate_required=der is None,
    )
    log.info("endpoint-checked", endpoint=label, address=proof.address, roots=list(names))
    return proof


def _verified_before_refusal(
    address: tuple[str, int],
    host: str,
    roots: Sequence[TrustedRoot],
    alpn: bool,
    deadline: float,
    via: str,
) -> str | None:
    """Did a TLS 1.2 server end the handshake only after the client had verified it?

    Over TLS 1.2 a server that requires a client certificate ends the handshake after
    the client's second flight, and the client sends that flight only once it has
    verified the server's chain and name (OpenSSL verifies the Certificate message as it
    arrives). So the handshake is driven again, TLS 1.2 only, through memory buffers,
    counting the client's flights: a refusal after the second one means the server's
    identity verified. Returns the ALPN the server selected ('' for none), or None when
    the handshake failed before the client's second flight (or completed: then the first
    failure was not this one). TLS 1.2 has no HelloRetryRequest, so no second flight
    is sent before verification.
    """
    context = _context(roots, alpn=alpn)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=host)
    flights = 0
    try:
        with socket.create_connection(address, timeout=_left(deadline)) as raw:
            while True:
                try:
                    tls.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLCertVerificationError as exc:
                    raise _unverified(via, tuple(r.name for r in roots), exc) from exc
                except ssl.SSLError:
                    return _verified_alpn(tls, flights)
                else:
                    return None
                pending = outgoing.read()
                if pending:
                    raw.settimeout(_left(deadline))
                    raw.sendall(pending)
                    flights += 1
                raw.settimeout(_left(deadline))
                chunk = raw.recv(65536)
                if not chunk:
                    return _verified_alpn(tls, flights)
                incoming.write(chunk)
    except OSError:
        return None


def _verified_alpn(tls: ssl.SSLObject, flights: int) -> str | None:
    """After the server ended the handshake: its ALPN ('' for none) if the client had verified."""
    if flights < _SECOND_FLIGHT:
        return None
    return tls.selected_alpn_protocol() or ""


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _unreachable(via: str, exc: OSError) -> EndpointCheckError:
    why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
    return EndpointCheckError(
        CheckFailure.UNREACHABLE,
        f"cannot reach the new endpoint {via}: {why}. Devices will connect there: check the "
        "endpoint and port in the campaign, run where it is reachable, or (no network "
        "access from here) pass --skip-endpoint-check",
    )


def _unverified(
    via: str, names: tuple[str, ...], exc: ssl.SSLCertVerificationError
) -> EndpointCheckError:
    detail = exc.verify_message or str(exc)
    roots = ", ".join(names)
    if exc.verify_code == _HOSTNAME_MISMATCH:
        return EndpointCheckError(
            CheckFailure.HOSTNAME_MISMATCH,
            f"{via} presents a certificate for another name ({detail}): devices would refuse "
            "it; check the campaign's endpoint (endpoint: auto asks AWS for the account's "
            "iot:Data-ATS endpoint)",
        )
    return EndpointCheckError(
        CheckFailure.WRONG_CHAIN,
        f"the server certificate of {via} does not chain to the roots the campaign adds "
        f"({roots}): {detail}. Devices trusting only these roots could not connect; add the "
        "root that signs the endpoint (trust.add), or use the catalog meant for this "
        "endpoint (a sandbox catalog is for the sandbox only)",
    )
