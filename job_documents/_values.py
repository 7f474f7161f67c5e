"""Plain values of the contract: what builders take and validators hand back.

Frozen dataclasses and enums, no pydantic: the device-side validator returns
these, and constrained devices import nothing heavier than jsonschema and
cryptography.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

from cryptography.hazmat.primitives.asymmetric.ec import (
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "ALPN_MQTT_CA",
    "MAX_DOCUMENT_CHARS",
    "MAX_ROOTS",
    "PORTS",
    "SCHEMA_ID",
    "BuiltDocument",
    "Endpoint",
    "Operation",
    "PrivateKey",
    "ProbeSettings",
    "PublicKey",
    "RootInput",
    "RootRef",
    "TrustedRoot",
    "ValidatedDocument",
]

SCHEMA_ID = "ca-migration/1"
#: AWS IoT Jobs refuses a `document` longer than this many characters.
MAX_DOCUMENT_CHARS = 32_768
#: At most this many roots to add (migrate) or remove (prune) in one document.
MAX_ROOTS = 10
#: The ALPN protocol AWS IoT Core requires for MQTT over port 443.
ALPN_MQTT_CA = "x-amzn-mqtt-ca"
PORTS = (8883, 443)

PrivateKey: TypeAlias = Ed25519PrivateKey | EllipticCurvePrivateKey
PublicKey: TypeAlias = Ed25519PublicKey | EllipticCurvePublicKey


class Operation(StrEnum):
    """What the device is asked to do."""

    MIGRATE = "migrate"
    """Add the roots, switch to the new endpoint (probe first, commit, reconnect)."""
    RESTORE = "restore"
    """Go back to the endpoint and trust the device backed up before its last migrate."""
    PRUNE = "prune"
    """Drop trust anchors that are no longer needed."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The MQTT endpoint to move to. Port 443 implies ALPN `x-amzn-mqtt-ca`."""

    host: str
    port: int = 8883
    alpn: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.port == 443 and not self.alpn:  # noqa: PLR2004 - the MQTT-over-443 port
            object.__setattr__(self, "alpn", (ALPN_MQTT_CA,))


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """How the device probes the new endpoint before it commits."""

    timeout_seconds: float = 10.0
    attempts: int = 3


@dataclass(frozen=True, slots=True)
class TrustedRoot:
    """A root CA carried by a document: name, SHA-256 of the DER (lowercase hex), PEM."""

    name: str
    sha256: str
    pem: str


@dataclass(frozen=True, slots=True)
class RootRef:
    """A root named by a prune document: name and SHA-256 of the DER."""

    name: str
    sha256: str


@dataclass(frozen=True, slots=True)
class RootInput:
    """A root given as PEM text (e.g. read from an operator's file) under a chosen name."""

    name: str
    pem: str


@dataclass(frozen=True, slots=True)
class ValidatedDocument:
    """A document that passed every check; `sha256` is its `document_hash`.

    `signed` is True only when a signature was present AND verified with the
    policy's key. For restore and prune, `endpoint` is None and `roots` empty;
    `keep_existing` is True except for a migrate that asked to drop old trust.
    """

    operation: Operation
    campaign: str
    wave: str
    region: str
    endpoint: Endpoint | None
    roots: tuple[TrustedRoot, ...]
    remove: tuple[RootRef, ...]
    keep_existing: bool
    probe: ProbeSettings
    signed: bool
    sha256: str


@dataclass(frozen=True, slots=True)
class BuiltDocument:
    """A built document: `text` is what goes into CreateJob's `document` (compact JSON).

    `size` is `len(text)`; `sha256` is the `document_hash`.
    """

    document: dict[str, Any] = field(hash=False)
    text: str
    size: int
    sha256: str
