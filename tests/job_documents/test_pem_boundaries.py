"""PEM roots at their edges: each refusal's code and words, key names, subject labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from job_documents._pem import (
    check_root_validity,
    describe_key,
    inspect_root_pem,
    normalize_fingerprint,
    sha256_fingerprint,
)
from job_documents.errors import CertificateRejected
from job_documents.testing import make_root_ca, make_signing_key, private_key_pem

NOW = datetime.now(UTC)


def _self_signed(key: Any, subject: x509.Name, *, ca: bool = True) -> str:
    digest = (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else (hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, digest)
    )
    return cert.public_bytes(Encoding.PEM).decode()


def _cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


ROOT = make_root_ca("Edge Root").pem


def _refusal(pem: str | bytes, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(CertificateRejected) as caught:
        inspect_root_pem(pem, **kwargs)
    return caught.value.code, str(caught.value)


@pytest.mark.parametrize(
    ("pem", "code", "message"),
    [
        (
            private_key_pem(make_signing_key()),
            "private-key",
            (
                "the input contains private key material: never put a private key in a trust "
                "bundle; give the CA certificate alone"
            ),
        ),
        (
            "no block here",
            "pem-invalid",
            (
                "not a PEM certificate (no '-----BEGIN CERTIFICATE-----' block): give the root "
                "CA certificate in PEM form"
            ),
        ),
        (
            ROOT + ROOT,
            "pem-multiple",
            (
                "expected exactly one certificate, found 2 PEM blocks (CERTIFICATE, CERTIFICATE): "
                "give each root as its own entry"
            ),
        ),
        (
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "pem-invalid",
            "the PEM block is a 'PUBLIC KEY', not a CERTIFICATE: give the root CA certificate",
        ),
        (
            ROOT.replace("-----END CERTIFICATE-----", ""),
            "pem-invalid",
            "the PEM certificate block is not terminated by its END line",
        ),
        (
            "# a comment\n" + ROOT,
            "pem-invalid",
            "text outside the certificate block: the PEM must hold the block only",
        ),
        (
            ROOT + "# a comment\n",
            "pem-invalid",
            "text outside the certificate block: the PEM must hold the block only",
        ),
    ],
)
def test_each_pem_refusal_has_its_code_and_says_what_to_give(pem, code, message) -> None:
    assert _refusal(pem) == (code, message)
    assert _refusal(pem.encode()) == (code, message)  # bytes read from a file: the same


def test_text_around_the_block_is_allowed_only_when_not_strict() -> None:
    info = inspect_root_pem("# comment\n" + ROOT + "# another\n", strict=False)
    assert info.sha256 == sha256_fingerprint(ROOT)
    assert sha256_fingerprint(ROOT.encode()) == info.sha256
    assert info.subject == "Edge Root"


@pytest.mark.parametrize(
    ("key", "described"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "EC P-256"),
        (ec.generate_private_key(ec.SECP384R1()), "EC P-384"),
        (ec.generate_private_key(ec.SECP521R1()), "EC P-521"),
        (ec.generate_private_key(ec.SECP256K1()), "EC secp256k1"),
        (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
        (ed448.Ed448PrivateKey.generate(), "Ed448"),
        (dsa.generate_private_key(key_size=2048), "DSA 2048"),
    ],
)
def test_keys_are_described_by_their_common_names(key: Any, described: str) -> None:
    cert = x509.load_pem_x509_certificate(_self_signed(key, _cn("k")).encode())
    assert describe_key(cert) == described


@pytest.mark.parametrize(
    ("key", "weakness"),
    [
        (
            ec.generate_private_key(ec.SECP256K1()),
            "EC secp256k1 key, on a curve TLS stacks do not trust",
        ),
        (
            dsa.generate_private_key(key_size=2048),
            "DSA 2048 key, a key type TLS trust anchors must not use",
        ),
    ],
)
def test_a_weak_root_key_is_refused_with_why(key: Any, weakness: str) -> None:
    code, message = _refusal(_self_signed(key, _cn("Weak Root")))
    assert code == "pem-weak-key"
    assert f"has a {weakness}: a trust anchor's key must be" in message


def test_ed448_and_p521_roots_are_strong_enough() -> None:
    for key in (ed448.Ed448PrivateKey.generate(), ec.generate_private_key(ec.SECP521R1())):
        assert inspect_root_pem(_self_signed(key, _cn("Strong Root"))).subject == "Strong Root"


@pytest.mark.parametrize(
    ("subject", "label"),
    [
        (_cn("Named Root"), "Named Root"),
        (
            x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Org")]),
            "O=Example Org",
        ),
        (x509.Name([]), "(empty subject)"),
    ],
)
def test_a_root_is_labelled_by_its_common_name_else_its_subject(subject, label) -> None:
    pem = _self_signed(ec.generate_private_key(ec.SECP256R1()), subject)
    assert inspect_root_pem(pem).subject == label


def test_a_root_not_valid_yet_says_to_check_the_clock() -> None:
    info = inspect_root_pem(ROOT)
    with pytest.raises(CertificateRejected) as caught:
        check_root_validity(info, now=info.not_before - timedelta(days=1), margin=timedelta(0))
    assert caught.value.code == "pem-not-yet-valid"
    assert str(caught.value).endswith("UTC): check the certificate and this machine's clock")


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("AB:" * 31 + "AB", "ab" * 32),
        (" " + "0f" * 32 + "\n", "0f" * 32),
        ("ab" * 31, None),
        ("xy" * 32, None),
    ],
)
def test_fingerprints_are_normalized_or_refused(text: str, normal: str | None) -> None:
    assert normalize_fingerprint(text) == normal
