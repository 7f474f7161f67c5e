"""PEM checks for trust anchors, shared by the builder and the device-side validator.

A root in a document must be exactly one X.509 certificate that is a CA
(basicConstraints CA=true), self-signed (issuer == subject and the signature
verifies with its own key), with a key strong enough to anchor trust (RSA of
at least 2048 bits, EC P-256/P-384/P-521, Ed25519 or Ed448), valid now and
for a margin after now. No input may
carry private key material. Only cryptography is used here (no pydantic).

Messages name the certificate by subject and fingerprint, never by PEM body.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning

from job_documents.errors import CertificateRejected

__all__ = [
    "CertificateInfo",
    "check_root_validity",
    "contains_private_key",
    "describe_key",
    "inspect_root_pem",
    "normalize_fingerprint",
    "sha256_fingerprint",
]

_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----",
    re.DOTALL,
)
_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
_PRIVATE_KEY = re.compile(r"PRIVATE KEY-----|BEGIN OPENSSH PRIVATE|PuTTY-User-Key-File")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def contains_private_key(text: str | bytes) -> bool:
    """True when `text` holds anything that looks like private key material."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return _PRIVATE_KEY.search(text) is not None


def sha256_fingerprint(cert: x509.Certificate | str | bytes) -> str:
    """SHA-256 of the certificate's DER, lowercase hex without colons.

    Accepts a parsed certificate or PEM text (str or bytes) holding one certificate.
    """
    if not isinstance(cert, x509.Certificate):
        cert = _load_pem_certificate(cert.encode("ascii") if isinstance(cert, str) else cert)
    return cert.fingerprint(hashes.SHA256()).hex()


def normalize_fingerprint(text: str) -> str | None:
    """`text` as 64 lowercase hex digits (colons and case tolerated), or None if it is not one."""
    candidate = text.strip().replace(":", "").lower()
    return candidate if _HEX64.fullmatch(candidate) else None


def describe_key(cert: x509.Certificate) -> str:
    """The certificate's key type for people: "RSA 2048", "EC P-256", "Ed25519"..."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"EC {names.get(key.curve.name, key.curve.name)}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    return type(key).__name__


def _load_pem_certificate(data: bytes) -> x509.Certificate:
    # Some long-lived public roots carry a non-positive serial number; cryptography
    # warns about them on every load. They are still the roots devices trust.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return x509.load_pem_x509_certificate(data)


def _subject_label(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = cns[0].value if cns else cert.subject.rfc4514_string()
    label = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return label or "(empty subject)"


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """A parsed root with what the checks and the catalog report about it."""

    certificate: x509.Certificate
    sha256: str
    subject: str
    key_type: str
    not_before: datetime
    not_after: datetime

    def canonical_pem(self) -> str:
        """The certificate re-encoded as PEM (64-column base64, one trailing newline)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def label(self) -> str:
        """How messages name this certificate: subject and a fingerprint prefix."""
        return f"{self.subject!r} (sha256 {self.sha256[:16]}...)"


def inspect_root_pem(pem: str | bytes, *, strict: bool = True) -> CertificateInfo:
    """Parse one PEM certificate and check it is a self-signed CA (clock-independent checks).

    `strict` refuses any text outside the certificate block (documents); operator
    files may carry comments around the block when `strict` is False.
    Raises CertificateRejected with code private-key, pem-invalid, pem-multiple,
    pem-not-ca, pem-not-self-signed or pem-weak-key.

    The result depends on the text alone, so accepted roots are remembered: the
    orchestrator builds many documents from the same few roots, and the builder
    re-validates what it built.
    """
    text = pem.decode("latin-1") if isinstance(pem, bytes) else pem
    if contains_private_key(text):
        raise CertificateRejected(
            "private-key",
            "the input contains private key material: never put a private key in a trust "
            "bundle; give the CA certificate alone",
        )
    labels = _BEGIN.findall(text)
    if not labels:
        raise CertificateRejected(
            "pem-invalid",
            "not a PEM certificate (no '-----BEGIN CERTIFICATE-----' block): give the root "
            "CA certificate in PEM form",
        )
    if len(labels) > 1:
        raise CertificateRejected(
            "pem-multiple",
            f"expected exactly one certificate, found {len(labels)} PEM blocks "
            f"({', '.join(labels)}): give each root as its own entry",
        )
    if labels[0] != "CERTIFICATE":
        raise CertificateRejected(
            "pem-invalid",
            f"the PEM block is a {labels[0]!r}, not a CERTIFICATE: give the root CA certificate",
        )
    block = _BLOCK.search(text)
    if block is None:
        raise CertificateRejected(
            "pem-invalid", "the PEM certificate block is not terminated by its END line"
        )
    if strict and (text[: block.start()].strip() or text[block.end() :].strip()):
        raise CertificateRejected(
            "pem-invalid", "text outside the certificate block: the PEM must hold the block only"
        )
    return _inspect(block.group(0))


@lru_cache(maxsize=64)
def _inspect(block: str) -> CertificateInfo:
    try:
        cert = _load_pem_certificate(block.encode("ascii") + b"\n")
    except (ValueError, UnicodeEncodeError) as exc:
        raise CertificateRejected(
            "pem-invalid", f"the PEM block is not a readable X.509 certificate ({exc})"
        ) from exc
    info = CertificateInfo(
        certificate=cert,
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
        subject=_subject_label(cert),
        key_type=describe_key(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    except ValueError as exc:
        raise CertificateRejected(
            "pem-invalid", f"{info.label} has malformed extensions ({exc})"
        ) from exc
    if not is_ca:
        raise CertificateRejected(
            "pem-not-ca",
            f"{info.label} is not a CA certificate (basicConstraints CA=true is missing): "
            "it looks like a leaf or server certificate; give the root CA that issued it",
        )
    if cert.issuer != cert.subject:
        raise CertificateRejected(
            "pem-not-self-signed",
            f"{info.label} is not self-signed (issued by {cert.issuer.rfc4514_string()!r}): "
            "give the root CA at the top of the chain, not an intermediate",
        )
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateRejected(
            "pem-not-self-signed",
            f"{info.label} names itself as issuer but its signature does not verify with its "
            "own key: the file is corrupt or forged",
        ) from exc
    weakness = _key_weakness(cert)
    if weakness is not None:
        raise CertificateRejected(
            "pem-weak-key",
            f"{info.label} has a {info.key_type} key, {weakness}: a trust anchor's key must be "
            "RSA of at least 2048 bits, EC P-256/P-384/P-521, Ed25519 or Ed448",
        )
    return info


_STRONG_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_MIN_RSA_BITS = 2048


def _key_weakness(cert: x509.Certificate) -> str | None:
    """Why the certificate's key is too weak to anchor trust, or None when it is not."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            return f"under {_MIN_RSA_BITS} bits"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return None if key.curve.name in _STRONG_CURVES else "on a curve TLS stacks do not trust"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    return "a key type TLS trust anchors must not use"


def check_root_validity(info: CertificateInfo, *, now: datetime, margin: timedelta) -> None:
    """Refuse a root not valid now, or expiring within `margin` of now.

    Raises CertificateRejected with code pem-not-yet-valid, pem-expired or pem-expires-soon.
    """
    if info.not_before > now:
        raise CertificateRejected(
            "pem-not-yet-valid",
            f"{info.label} is not valid yet (not before {info.not_before:%Y-%m-%d %H:%M} UTC): "
            "check the certificate and this machine's clock",
        )
    if info.not_after <= now:
        raise CertificateRejected(
            "pem-expired",
            f"{info.label} expired on {info.not_after:%Y-%m-%d} UTC: use a current root",
        )
    if info.not_after < now + margin:
        raise CertificateRejected(
            "pem-expires-soon",
            f"{info.label} expires on {info.not_after:%Y-%m-%d} UTC, within the required "
            f"margin of {margin.days} days: use a root that stays valid longer",
        )
