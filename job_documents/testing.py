"""Certificates and keys for tests, shipped as public API so every area's tests share them.

`make_root_ca` and `make_leaf` build real X.509 certificates with
cryptography (self-signed roots, leaves issued by them); `write_catalog`
writes a catalog file in the `ca-migrate-catalog/1` format, the way the
sandbox publishes its stand-in roots. Nothing here is for production trust.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from job_documents._catalog import CATALOG_FORMAT
from job_documents._pem import sha256_fingerprint

__all__ = [
    "IssuedCert",
    "KeyKind",
    "make_leaf",
    "make_root_ca",
    "make_signing_key",
    "private_key_pem",
    "public_key_pem",
    "write_catalog",
]

KeyKind = Literal["ec-p256", "ec-p384", "rsa-2048", "ed25519"]
_PRIVATE_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")


@dataclass(frozen=True)
class IssuedCert:
    """A certificate with its private key; `pem` is the certificate alone."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @property
    def pem(self) -> str:
        """The certificate as PEM text."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def sha256(self) -> str:
        """SHA-256 of the DER, lowercase hex."""
        return sha256_fingerprint(self.certificate)

    @property
    def key_pem(self) -> str:
        """The private key as unencrypted PKCS#8 PEM."""
        return private_key_pem(self.key)


def _new_key(
    kind: KeyKind,
) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


def _hash_for(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ca-migrate test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_root_ca(
    common_name: str = "ca-migrate Test Root CA",
    *,
    key_kind: KeyKind = "ec-p256",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    ca: bool = True,
    self_signed_by: IssuedCert | None = None,
    padding_bytes: int = 0,
) -> IssuedCert:
    """A root CA certificate (self-signed, basicConstraints CA=true) and its key.

    Defaults: valid from a day before now for 20 years. `ca=False` makes a
    self-signed non-CA certificate; `self_signed_by` signs it with another
    issuer's key while keeping issuer == subject (a forged "root");
    `padding_bytes` adds a private, non-critical extension of that size (to
    test size limits with real certificates).
    """
    now = datetime.now(UTC)
    not_before = not_before or now - timedelta(days=1)
    not_after = not_after or now + timedelta(days=365 * 20)
    key = _new_key(key_kind)
    name = _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if padding_bytes:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(_PRIVATE_OID, b"\x00" * padding_bytes), critical=False
        )
    signer = self_signed_by.key if self_signed_by is not None else key
    cert = builder.sign(signer, _hash_for(signer))
    return IssuedCert(certificate=cert, key=key)


def make_leaf(
    issuer: IssuedCert,
    host: str = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com",
    *,
    key_kind: KeyKind = "ec-p256",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    extra_names: Sequence[str] = (),
) -> IssuedCert:
    """A TLS server (leaf) certificate for `host` issued by `issuer` (CA=false, SAN = host)."""
    now = datetime.now(UTC)
    key = _new_key(key_kind)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in (host, *extra_names)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .sign(issuer.key, _hash_for(issuer.key))
    )
    return IssuedCert(certificate=cert, key=key)


def make_signing_key(
    algorithm: Literal["Ed25519", "ECDSA-P256-SHA256"] = "Ed25519",
) -> ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey:
    """A fresh document-signing key for one of the two signature algorithms."""
    if algorithm == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
) -> str:
    """`key` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_key_pem(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
) -> str:
    """The public half of `key` as SubjectPublicKeyInfo PEM."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def write_catalog(
    directory: Path,
    roots: dict[str, IssuedCert | str],
    *,
    description: str = "test roots",
    sandbox: bool = True,
) -> Path:
    """Write `<name>.pem` files and a catalog.json pinning them; returns the catalog path.

    `roots` maps a root name to a certificate (or its PEM text).
    """
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, root in roots.items():
        pem = root.pem if isinstance(root, IssuedCert) else root
        file = f"{name}.pem"
        (directory / file).write_text(pem, encoding="ascii")
        entries.append({"name": name, "file": file, "sha256": sha256_fingerprint(pem)})
    path = directory / "catalog.json"
    document = {
        "catalog": CATALOG_FORMAT,
        "description": description,
        "sandbox": sandbox,
        "roots": entries,
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path
