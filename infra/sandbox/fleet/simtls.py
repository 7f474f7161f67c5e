"""A simulated TLS stack for in-memory fleets: decides a handshake from the real bundle file.

Large fleets cannot open 100k real TLS connections, so with the memory
transport the one network step of the device transaction, the probe (and the
connector's check before a channel is handed out), is replaced by this
simulation. It still decides from what the device really has on disk: it
reads the bundle file the transaction staged, parses every certificate in it
and accepts the handshake only when one of them is a trust anchor of the
endpoint being probed.

The endpoints are the sandbox's two: the legacy (`iot:Data`) host, anchored by
the legacy stand-in root, and the ATS (`iot:Data-ATS`) host, anchored by
every ATS stand-in root (AWS serves RSA or ECDSA chains to the ATS roots,
depending on what the client offers). A device whose TLS stack cannot use ECC
roots (`rsa_only`) only counts RSA anchors, so it fails when a campaign adds
only ECC roots.

Invariants:
- The bundle file is read on every handshake; only the parse of a given
  content is cached (every device of a fleet holds one of a few bundles).
- Failures raise `ProbeFailed` with the reason codes of the real probe:
  `connect` (unknown or unreachable host), `tls-verify` (no usable anchor).
  The real probe's MQTT step (CONNECT/CONNACK as the thing) is not simulated:
  the sandbox's brokers accept every device certificate they issued.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from device_handler.errors import ProbeFailed
from device_handler.fsops import StrPath, read_bytes
from device_handler.probe import ProbeResult
from device_handler.trust import EndpointConfig
from infra.sandbox.pki import ATS_ROOTS, SandboxPki

__all__ = ["SimulatedTls", "certificate_fingerprint"]

_Anchor = tuple[str, bool]  # (SHA-256 of the DER, is RSA)


def certificate_fingerprint(pem: bytes) -> str:
    """SHA-256 of a PEM certificate's DER, as catalogs and documents write it."""
    cert = x509.load_pem_x509_certificate(pem)
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


class SimulatedTls:
    """Handshake decisions for the sandbox's endpoints, from the device's bundle file."""

    def __init__(self, anchors: Mapping[str, frozenset[str]]) -> None:
        self._anchors = {host: frozenset(fps) for host, fps in anchors.items()}
        self._parsed: dict[str, tuple[_Anchor, ...]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_pki(cls, pki: SandboxPki) -> SimulatedTls:
        """The legacy host trusts the legacy root; the ATS host is anchored by every ATS root."""
        legacy = certificate_fingerprint(pki.legacy_root_pem.read_bytes())
        ats = frozenset(
            certificate_fingerprint(pki.ats_root_pems[spec.name].read_bytes()) for spec in ATS_ROOTS
        )
        return cls({pki.hosts["legacy"]: frozenset({legacy}), pki.hosts["ats"]: ats})

    def _bundle(self, ca_file: StrPath) -> tuple[_Anchor, ...]:
        try:
            data = read_bytes(ca_file)
        except OSError as exc:
            raise ProbeFailed("tls-verify", f"cannot read the CA bundle {ca_file}: {exc}") from exc
        key = hashlib.sha256(data).hexdigest()
        with self._lock:
            found = self._parsed.get(key)
        if found is not None:
            return found
        try:
            certs = x509.load_pem_x509_certificates(data) if data.strip() else []
        except ValueError as exc:
            raise ProbeFailed("tls-verify", f"the CA bundle {ca_file} is unreadable") from exc
        parsed = tuple(
            (
                hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest(),
                isinstance(c.public_key(), rsa.RSAPublicKey),
            )
            for c in certs
        )
        with self._lock:
            self._parsed[key] = parsed
        return parsed

    def handshake(
        self,
        endpoint: EndpointConfig,
        ca_file: StrPath,
        *,
        rsa_only: bool = False,
        unreachable: frozenset[str] = frozenset(),
    ) -> None:
        """Succeed, or raise `ProbeFailed` as the real probe would for this device."""
        anchors = self._anchors.get(endpoint.host)
        if anchors is None or endpoint.host in unreachable:
            raise ProbeFailed(
                "connect", f"cannot connect to {endpoint.label()}: no route to host (simulated)"
            )
        usable = [fp for fp, is_rsa in self._bundle(ca_file) if is_rsa or not rsa_only]
        if not anchors.intersection(usable):
            stack = "an RSA-only TLS stack" if rsa_only else "the bundle"
            raise ProbeFailed(
                "tls-verify",
                f"{endpoint.label()}: certificate verify failed: unable to get local issuer "
                f"certificate (no root in {stack} anchors this endpoint)",
            )

    def probe_fn(
        self, *, rsa_only: bool = False, unreachable: frozenset[str] = frozenset()
    ) -> Callable[..., ProbeResult]:
        """A drop-in for `device_handler.probe.probe` for one device's TLS stack."""

        def probe(endpoint: EndpointConfig, ca_file: StrPath, **_: Any) -> ProbeResult:
            self.handshake(endpoint, ca_file, rsa_only=rsa_only, unreachable=unreachable)
            return ProbeResult(elapsed_ms=1, tls_version="TLSv1.2", alpn=None, attempts=1)

        return probe

    def check_fn(
        self, *, rsa_only: bool = False, unreachable: frozenset[str] = frozenset()
    ) -> Callable[[EndpointConfig, StrPath], None]:
        """A `MemoryConnector` check: the connection needs the same handshake."""

        def check(endpoint: EndpointConfig, ca_file: StrPath) -> None:
            self.handshake(endpoint, ca_file, rsa_only=rsa_only, unreachable=unreachable)

        return check
