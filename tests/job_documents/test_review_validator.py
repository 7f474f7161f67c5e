"""Adversarial review of the device-side validator: inputs that must be refused cleanly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import NameOID

from job_documents import (
    Catalog,
    DocumentInvalid,
    ValidationPolicy,
    sha256_fingerprint,
    sign_document,
    validate_document,
)
from job_documents.testing import make_signing_key

from .conftest import REGION


@pytest.mark.parametrize(
    ("label", "old", "new"),
    [
        ("NaN literal", '"attempts": 1', '"attempts": NaN'),
        ("Infinity literal", '"attempts": 1', '"attempts": Infinity'),
        ("-Infinity literal", '"attempts": 1', '"attempts": -Infinity'),
        ("overflowing float", '"attempts": 1', '"attempts": 1e400'),
        ("lone surrogate", '"wave": "w1"', '"wave": "w1\\ud800"'),
    ],
)
def test_non_json_values_are_refused_as_invalid_input_even_with_a_pinned_key(
    test_migrate: dict[str, Any], test_catalog: Catalog, label: str, old: str, new: str
):
    """NaN, infinities and lone surrogates are not JSON: a DocumentInvalid, never a crash."""
    test_migrate["probe"]["attempts"] = 1
    key = make_signing_key()
    test_migrate["signature"] = sign_document(test_migrate, key)
    text = json.dumps(test_migrate)
    assert old in text, label
    policy = ValidationPolicy(region=REGION, catalog=test_catalog, verify_key=key.public_key())
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(text.replace(old, new), policy)
    assert "json" in {p.code for p in caught.value.problems}, label


@pytest.mark.parametrize("port", [8883.0, 443.0])
def test_an_integral_float_port_is_handed_to_the_device_as_an_integer(
    test_migrate: dict[str, Any], test_catalog: Catalog, port: float
):
    """JSON Schema counts 8883.0 as an integer; the device must get the int 8883, not a float.

    A float port reaches the socket layer ("Int or String expected") and the endpoint
    file, which the device then cannot read back.
    """
    test_migrate["endpoint"]["port"] = port
    if port == 443.0:
        test_migrate["endpoint"]["alpn"] = ["x-amzn-mqtt-ca"]
    result = validate_document(
        json.dumps(test_migrate), ValidationPolicy(region=REGION, catalog=test_catalog)
    )
    assert result.endpoint is not None
    assert type(result.endpoint.port) is int
    assert result.endpoint.port == int(port)


def _self_signed_ca(key: rsa.RSAPrivateKey | dsa.DSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca-migrate Weak Test Root")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


@pytest.mark.parametrize(
    ("label", "make_key"),
    [
        ("RSA 1024", lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # noqa: S505 - the point
        ("DSA", lambda: dsa.generate_private_key(key_size=2048)),
        ("EC P-192", lambda: ec.generate_private_key(ec.SECP192R1())),
    ],
)
def test_a_root_with_a_weak_key_is_refused_even_when_unknown_roots_are_allowed(
    test_migrate: dict[str, Any], test_catalog: Catalog, label: str, make_key: Any
):
    """A trust anchor must not be forgeable: RSA under 2048 bits, DSA, small curves."""
    pem = _self_signed_ca(make_key())
    test_migrate["trust"]["roots"] = [
        {"name": "weak-root", "sha256": sha256_fingerprint(pem), "pem": pem}
    ]
    policy = ValidationPolicy(region=REGION, catalog=test_catalog, allow_unknown_roots=True)
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(json.dumps(test_migrate), policy)
    problem = next(p for p in caught.value.problems if p.code == "pem-weak-key")
    assert problem.path == "/trust/roots/0/pem", label
    assert "2048" in problem.message, label
