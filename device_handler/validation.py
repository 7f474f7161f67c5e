"""The device's single call into the job document contract.

`make_validator` turns the device's settings into one function,
`raw document -> Order`, which the transaction calls before anything is
written. It wraps `job_documents.validate_document` (jsonschema and
cryptography only) and converts the result into the handler's own `Order`, so
the transaction core depends on the contract in exactly one place and tests
can hand it any validator with the same shape.

Invariant: a validator never writes a file and never raises anything but
`DocumentRejected`; whatever else goes wrong while checking untrusted input
is a rejection too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_handler.errors import ConfigError, DocumentRejected
from device_handler.order import OPERATIONS, Order, Validator
from device_handler.trust import BundleRoot, EndpointConfig
from job_documents.clock import Clock, SystemClock

__all__ = [
    "DEFAULT_VALIDITY_MARGIN_DAYS",
    "ValidationSettings",
    "load_verify_key",
    "make_validator",
]

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

#: What `signing_public_key` may hold: the document signature algorithms the contract defines.
ACCEPTED_KEY_TYPES = "Ed25519 or ECDSA P-256 (secp256r1)"

#: A root in a document must stay valid this many days after the device checks it: the
#: default of `ca-migrate document build` and `document validate` (`--margin-days`), so
#: that what the operator's check accepts, a device with the default setting accepts too.
DEFAULT_VALIDITY_MARGIN_DAYS = 365

#: statusDetails values are at most 1024 characters; the message leaves room for the code.
_MAX_MESSAGE = 900


@dataclass(frozen=True, slots=True)
class ValidationSettings:
    """The device's validation policy, as read from its configuration file."""

    region: str | None = None
    catalog: Path | None = None
    allowed_fingerprints: frozenset[str] | None = None
    verify_key: Path | None = None
    validity_margin_days: int = DEFAULT_VALIDITY_MARGIN_DAYS
    clock: Clock = field(default_factory=SystemClock)


def load_verify_key(path: Path) -> Ed25519PublicKey | EllipticCurvePublicKey:
    """Read the document-signing public key; anything but Ed25519 or P-256 is a `ConfigError`.

    Checked when the configuration is loaded: a key of another type (P-384, RSA) would
    otherwise be accepted here and then reject every signed document as invalid.
    """
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"signing_public_key {path}: cannot read a PEM public key ({exc}); "
            f"give the {ACCEPTED_KEY_TYPES} public key that verifies the job documents"
        ) from exc
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        found = f"an elliptic-curve key on {key.curve.name}"
    else:
        found = f"a key of type {type(key).__name__.removeprefix('_').replace('PublicKey', '')}"
    raise ConfigError(
        f"signing_public_key {path}: {found} cannot verify job documents; accepted key types: "
        f"{ACCEPTED_KEY_TYPES} (the signature algorithms Ed25519 and ECDSA-P256-SHA256)"
    )


def make_validator(settings: ValidationSettings) -> Validator:
    """Build the validator once (catalog and key loaded up front, errors raised now)."""
    import job_documents as jd

    try:
        catalog = jd.load_catalog(settings.catalog)
    except jd.JobDocumentError as exc:
        raise ConfigError(f"catalog {settings.catalog or '(packaged)'}: {exc}") from exc
    verify_key = None if settings.verify_key is None else load_verify_key(settings.verify_key)
    policy = jd.ValidationPolicy(
        region=settings.region,
        catalog=catalog,
        allowed_fingerprints=settings.allowed_fingerprints,
        verify_key=verify_key,
        require_signature=verify_key is not None,
        validity_margin=timedelta(days=settings.validity_margin_days),
        clock=settings.clock,
    )

    def validate(raw: str | bytes | Mapping[str, Any]) -> Order:
        try:
            doc = jd.validate_document(raw, policy)
        except jd.DocumentInvalid as exc:
            problems = exc.problems
            first = problems[0] if problems else None
            code = first.code if first else "invalid"
            text = "; ".join(f"{p.path or '/'}: {p.message}" for p in problems) or str(exc)
            raise DocumentRejected(code, _clip(text)) from exc
        except jd.JobDocumentError as exc:
            raise DocumentRejected(_code_of(exc), _clip(str(exc))) from exc
        except Exception as exc:  # untrusted input: any failure is a rejection
            raise DocumentRejected("invalid", _clip(f"{type(exc).__name__}: {exc}")) from exc
        operation = doc.operation
        if operation not in OPERATIONS:
            raise DocumentRejected("operation", f"operation {operation!r} is not supported")
        endpoint = None
        if doc.endpoint is not None:
            endpoint = EndpointConfig(
                host=doc.endpoint.host, port=doc.endpoint.port, alpn=tuple(doc.endpoint.alpn)
            )
        return Order(
            operation=operation,
            campaign=doc.campaign,
            wave=doc.wave,
            region=doc.region,
            sha256=doc.sha256,
            endpoint=endpoint,
            roots=tuple(BundleRoot(sha256=r.sha256, pem=r.pem) for r in doc.roots),
            remove=frozenset(r.sha256 for r in doc.remove),
            keep_existing=doc.keep_existing,
            probe_timeout=float(doc.probe.timeout_seconds),
            probe_attempts=int(doc.probe.attempts),
        )

    return validate


def _code_of(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code
    return type(exc).__name__


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
