"""Detached document signatures: Ed25519, or ECDSA P-256 with SHA-256 (DER signature).

The signature covers `canonical_json(document without its "signature" member)`,
so any change to any other member breaks it, and a device verifies it with a
public key pinned in its configuration. Keys are loaded from PEM files here so
the CLI and the device handler share one loader and one set of messages.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from job_documents._canonical import canonical_json
from job_documents._values import PrivateKey, PublicKey
from job_documents.errors import SigningKeyError

__all__ = [
    "ALGORITHMS",
    "Signer",
    "algorithm_for",
    "load_signing_key",
    "load_verify_key",
    "sign_document",
    "signature_problem",
]

ED25519 = "Ed25519"
ECDSA_P256 = "ECDSA-P256-SHA256"
ALGORITHMS = (ED25519, ECDSA_P256)


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    """The document's algorithm name for `key`; refuses curves other than P-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return ED25519
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise SigningKeyError(
                f"ECDSA keys must be on P-256 (secp256r1), this one is on {key.curve.name}: "
                "generate a P-256 or Ed25519 key"
            )
        return ECDSA_P256
    raise SigningKeyError(
        f"unsupported key type {type(key).__name__}: use an Ed25519 or ECDSA P-256 key"
    )


@runtime_checkable
class Signer(Protocol):
    """Signs documents with a key held elsewhere (a KMS, an HSM), never in this process.

    `sign` returns what the document's `value` carries, before base64: a DER
    ECDSA signature over SHA-256 of `payload` for ECDSA-P256-SHA256, the raw
    64 bytes for Ed25519. `public_key` is the key devices pin; the builder
    verifies every signature with it before a document leaves.
    """

    def public_key(self) -> PublicKey:
        """The public half of the signing key."""
        ...

    def sign(self, payload: bytes) -> bytes:
        """The signature of `payload` (the canonical document without `signature`)."""
        ...


def _unsigned_payload(document: Mapping[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in document.items() if k != "signature"})


def sign_document(
    document: Mapping[str, Any], key: PrivateKey | Signer, key_id: str | None = None
) -> dict[str, str]:
    """The `signature` member for `document` (any existing signature is ignored).

    `key` is a private key in this process, or a `Signer` that holds it elsewhere.
    """
    payload = _unsigned_payload(document)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm, raw = ED25519, key.sign(payload)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = algorithm_for(key)
        raw = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    else:
        algorithm = algorithm_for(key.public_key())
        raw = key.sign(payload)
    member = {"algorithm": algorithm, "value": base64.b64encode(raw).decode("ascii")}
    if key_id is not None:
        member["keyId"] = key_id
    return member


def signature_problem(document: Mapping[str, Any], key: PublicKey) -> tuple[str, str] | None:
    """None when the document's signature verifies with `key`, else (code, message)."""
    member = document.get("signature")
    if not isinstance(member, Mapping):
        return (
            "signature-missing",
            (
                "the document is not signed but this device requires a signature: sign it "
                "with the operators' key (ca-migrate document build --sign-key)"
            ),
        )
    try:
        expected = algorithm_for(key)
    except SigningKeyError as exc:
        return ("signature-key", str(exc))
    algorithm = member.get("algorithm")
    if algorithm != expected:
        return (
            "signature-algorithm",
            (
                f"the document is signed with {algorithm!r} but the pinned key is {expected}: "
                "sign with the key the devices pin"
            ),
        )
    try:
        raw = base64.b64decode(str(member.get("value", "")), validate=True)
    except (binascii.Error, ValueError):
        return ("signature-invalid", "the signature value is not valid base64")
    payload = _unsigned_payload(document)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(raw, payload)
        else:
            key.verify(raw, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return (
            "signature-invalid",
            (
                "the signature does not verify with the pinned key: the document was altered "
                "after signing, or signed with another key"
            ),
        )
    return None


def _read(source: Path | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return source.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read key file {source}: {exc.strerror}") from exc


def load_signing_key(source: Path | bytes, password: bytes | None = None) -> PrivateKey:
    """An Ed25519 or ECDSA P-256 private key from a PEM file (or PEM bytes)."""
    try:
        key = serialization.load_pem_private_key(_read(source), password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(
            f"not a usable PEM private key ({exc}): give an unencrypted PKCS#8 Ed25519 or "
            "ECDSA P-256 key, e.g. from 'openssl genpkey -algorithm ed25519'"
        ) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise SigningKeyError(
            f"unsupported signing key type {type(key).__name__}: use Ed25519 or ECDSA P-256"
        )
    algorithm_for(key)
    return key


def load_verify_key(source: Path | bytes) -> PublicKey:
    """An Ed25519 or ECDSA P-256 public key from a PEM file (or PEM bytes)."""
    data = _read(source)
    if b"PRIVATE KEY" in data:
        raise SigningKeyError(
            "this is a private key: devices pin the PUBLIC key only "
            "(openssl pkey -in key.pem -pubout)"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(
            f"not a usable PEM public key ({exc}): give an Ed25519 or ECDSA P-256 public key"
        ) from exc
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise SigningKeyError(
            f"unsupported verification key type {type(key).__name__}: use Ed25519 or ECDSA P-256"
        )
    algorithm_for(key)
    return key
