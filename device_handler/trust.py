"""Trust bundles and endpoint configurations as the device keeps them on disk.

A trust bundle is a PEM file of root certificates (what the TLS stack loads as
its CA file). The endpoint configuration is a small JSON file:
`{"host": "...", "port": 8883, "alpn": []}`. Both are replaced together by the
transaction; this module only reads, renders and compares them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from device_handler.errors import ConfigError

__all__ = ["BundleRoot", "EndpointConfig", "TrustBundle", "bundle_sha256"]


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """Where the device connects: host name (also SNI and verified name), port, ALPN."""

    host: str
    port: int = 8883
    alpn: tuple[str, ...] = ()

    def render(self) -> bytes:
        body = {"alpn": list(self.alpn), "host": self.host, "port": self.port}
        return (json.dumps(body, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes, *, source: str = "endpoint file") -> EndpointConfig:
        known = _ENDPOINTS.get(data) if type(data) is bytes else None
        if known is not None:
            return known
        try:
            body: Any = json.loads(data)
            host = body["host"]
            port = body.get("port", 8883)
            alpn = tuple(body.get("alpn", ()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{source} is not a valid endpoint configuration "
                '(expected JSON {"host": "...", "port": 8883, "alpn": []}): '
                f"{exc}"
            ) from exc
        if not isinstance(host, str) or not host or not isinstance(port, int):
            raise ConfigError(f"{source}: host must be a non-empty string and port an integer")
        if not all(isinstance(p, str) for p in alpn):
            raise ConfigError(f"{source}: alpn must be a list of strings")
        parsed = cls(host=host, port=port, alpn=alpn)
        _remember(_ENDPOINTS, data, parsed)
        return parsed

    def label(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class BundleRoot:
    """One certificate of a trust bundle: its SHA-256 (of the DER) and its PEM text."""

    sha256: str
    pem: str


@dataclass(frozen=True, slots=True)
class TrustBundle:
    """An ordered set of root certificates, without duplicates."""

    roots: tuple[BundleRoot, ...] = field(default=())

    @classmethod
    def parse(cls, data: bytes, *, source: str = "trust bundle") -> TrustBundle:
        known = _BUNDLES.get(data) if type(data) is bytes else None
        if known is not None:
            return known
        if not data.strip():
            return cls()
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise ConfigError(
                f"{source} holds no readable PEM certificates: {exc}; "
                "restore it from the device's backup or reprovision the device"
            ) from exc
        roots: list[BundleRoot] = []
        for cert in certs:
            der = cert.public_bytes(Encoding.DER)
            pem = cert.public_bytes(Encoding.PEM).decode("ascii")
            roots.append(BundleRoot(sha256=hashlib.sha256(der).hexdigest(), pem=pem))
        parsed = cls().extended(roots)
        _remember(_BUNDLES, data, parsed)
        return parsed

    def extended(self, roots: tuple[BundleRoot, ...] | list[BundleRoot]) -> TrustBundle:
        seen = {r.sha256 for r in self.roots}
        out = list(self.roots)
        for root in roots:
            if root.sha256 not in seen:
                seen.add(root.sha256)
                out.append(root)
        return TrustBundle(tuple(out))

    def without(self, fingerprints: frozenset[str]) -> TrustBundle:
        return TrustBundle(tuple(r for r in self.roots if r.sha256 not in fingerprints))

    def fingerprints(self) -> tuple[str, ...]:
        return tuple(r.sha256 for r in self.roots)

    def render(self) -> bytes:
        return "".join(r.pem for r in self.roots).encode("ascii")


# Parses of file contents already seen, by their exact bytes: a device re-reads the same few
# files many times per transaction (and a fleet holds a few distinct ones). The values are
# immutable; only successful parses are kept, so every unreadable file is reported afresh.
_CACHE_LIMIT = 64
_T = TypeVar("_T")
_ENDPOINTS: dict[bytes, EndpointConfig] = {}
_BUNDLES: dict[bytes, TrustBundle] = {}


def _remember(cache: dict[bytes, _T], data: bytes, parsed: _T) -> None:
    if type(data) is not bytes:
        return
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[data] = parsed


def bundle_sha256(data: bytes) -> str:
    """The fingerprint of a bundle file as reported to operators: SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()
