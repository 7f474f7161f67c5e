"""Issue X.509 certificates: the one builder for CAs and leaves (sandbox PKI and test kits).

The sandbox's stand-in roots and endpoint certificates and the test kits'
certificates are all built here, so that the extensions they carry (and the
checks they exercise: CA basic constraints, key usage, SAN, EKU, key
identifiers) cannot drift between copies. Pure: keys and times are the
caller's; nothing is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "KeyKind",
    "PrivateKey",
    "Usage",
    "issue_ca",
    "issue_leaf",
    "new_key",
    "subject_name",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
KeyKind = Literal["ec-p256", "ec-p384", "rsa-2048", "ed25519"]
Usage = Literal["server", "client"]
_EKU = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


def new_key(kind: KeyKind = "ec-p256", *, rsa_bits: int = 2048) -> PrivateKey:
    """A fresh private key of `kind` (`rsa_bits` sizes an "rsa-2048" one differently)."""
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    return ed25519.Ed25519PrivateKey.generate()


def subject_name(
    common_name: str, *, organization: str | None = None, country: str | None = None
) -> x509.Name:
    """C, O and CN, each only when given, in that order."""
    attributes = []
    if country is not None:
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _key_usage(*, ca: bool, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def issue_ca(
    subject: x509.Name,
    key: PrivateKey,
    *,
    not_before: datetime,
    not_after: datetime,
    ca: bool = True,
    signer: PrivateKey | None = None,
    extensions: Sequence[x509.ExtensionType] = (),
) -> x509.Certificate:
    """A self-issued certificate (issuer == subject): a root CA unless `ca=False`.

    `signer` signs with another key while keeping issuer == subject (a forged
    "root", for tests of signature checks); `extensions` are added non-critical.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_key_usage(ca=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    sign_with = signer if signer is not None else key
    return builder.sign(sign_with, _hash_for(sign_with))


def issue_leaf(
    subject: x509.Name,
    key: PrivateKey,
    *,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    not_before: datetime,
    not_after: datetime,
    server_names: Sequence[str] = (),
    usages: Sequence[Usage] = ("server",),
) -> x509.Certificate:
    """An end-entity certificate (CA=false) issued by `issuer`.

    `server_names` go in the SAN as DNS names; `usages` in the extended key usage.
    """
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False, key_encipherment=isinstance(key, rsa.RSAPrivateKey)),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([_EKU[u] for u in usages]), critical=False)
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in server_names]), critical=False
        )
    return builder.sign(issuer_key, _hash_for(issuer_key))
