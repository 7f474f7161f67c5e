"""Detached signatures: both algorithms round-trip; any change or wrong key is caught."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from job_documents import (
    DocumentInvalid,
    Endpoint,
    SigningKeyError,
    ValidationPolicy,
    build_document,
    canonical_json,
    load_catalog,
    load_signing_key,
    load_verify_key,
)
from job_documents.testing import make_signing_key, private_key_pem, public_key_pem

HOST = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
ALGORITHMS = ["Ed25519", "ECDSA-P256-SHA256"]


def _signed(algorithm: str) -> tuple[dict[str, Any], Any]:
    key = make_signing_key(algorithm)  # type: ignore[arg-type]
    built = build_document(
        operation="migrate",
        region="us-east-1",
        campaign="ats-2026",
        wave="canary",
        endpoint=Endpoint(HOST),
        roots=[load_catalog().get("amazon-root-ca-1")],
        sign_key=key,
        key_id="ops-2026",
    )
    return json.loads(built.text), key


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_signed_document_verifies_with_the_pinned_key(algorithm):
    doc, key = _signed(algorithm)
    assert doc["signature"]["algorithm"] == algorithm
    assert doc["signature"]["keyId"] == "ops-2026"
    result = validate(doc, key.public_key())
    assert result.signed is True


def validate(doc: dict[str, Any], public_key: Any):
    from job_documents import validate_document

    return validate_document(doc, ValidationPolicy(verify_key=public_key))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d.update(wave="all-devices"),
        lambda d: d["endpoint"].update(port=443, alpn=["x-amzn-mqtt-ca"]),
        lambda d: d["trust"].update(keepExisting=False),
        lambda d: d["probe"].update(attempts=1),
        lambda d: d["trust"]["roots"][0].update(name="amazon-root-ca-9"),
    ],
    ids=["wave", "endpoint", "keep-existing", "probe", "root-name"],
)
def test_any_change_after_signing_breaks_the_signature(algorithm, tamper):
    doc, key = _signed(algorithm)
    tampered = copy.deepcopy(doc)
    tamper(tampered)
    with pytest.raises(DocumentInvalid) as caught:
        validate(tampered, key.public_key())
    assert "signature-invalid" in caught.value.codes
    assert "altered after signing" in str(caught.value)


def test_the_key_id_is_a_hint_outside_the_signed_payload():
    doc, key = _signed("Ed25519")
    doc["signature"]["keyId"] = "rotated-2027"
    assert validate(doc, key.public_key()).signed is True


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_flipped_signature_bit_is_caught(algorithm):
    doc, key = _signed(algorithm)
    raw = bytearray(base64.b64decode(doc["signature"]["value"]))
    raw[len(raw) // 2] ^= 0x01
    doc["signature"]["value"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(DocumentInvalid) as caught:
        validate(doc, key.public_key())
    assert caught.value.codes == {"signature-invalid"}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_another_key_of_the_same_kind_is_refused(algorithm):
    doc, _ = _signed(algorithm)
    other = make_signing_key(algorithm)  # type: ignore[arg-type]
    with pytest.raises(DocumentInvalid) as caught:
        validate(doc, other.public_key())
    assert caught.value.codes == {"signature-invalid"}


def test_a_key_of_the_other_algorithm_is_refused_by_name():
    doc, _ = _signed("Ed25519")
    with pytest.raises(DocumentInvalid) as caught:
        validate(doc, make_signing_key("ECDSA-P256-SHA256").public_key())
    assert caught.value.codes == {"signature-algorithm"}
    assert "'Ed25519'" in str(caught.value)


def test_an_unsigned_document_is_refused_when_a_key_is_pinned():
    doc, key = _signed("Ed25519")
    del doc["signature"]
    with pytest.raises(DocumentInvalid) as caught:
        validate(doc, key.public_key())
    assert caught.value.codes == {"signature-missing"}


def test_the_signature_covers_the_canonical_form_without_the_signature_member():
    doc, key = _signed("Ed25519")
    payload = canonical_json({k: v for k, v in doc.items() if k != "signature"})
    assert payload.startswith(b'{"campaign":"ats-2026","endpoint":{"host":')
    assert b'": ' not in payload
    assert b', "' not in payload
    key.public_key().verify(base64.b64decode(doc["signature"]["value"]), payload)


def test_keys_load_from_pem_files(tmp_path: Path):
    key = make_signing_key("ECDSA-P256-SHA256")
    private = tmp_path / "ops.key.pem"
    public = tmp_path / "ops.pub.pem"
    private.write_text(private_key_pem(key))
    public.write_text(public_key_pem(key))
    assert load_signing_key(private).private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    assert load_verify_key(public) == key.public_key()


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: public_key_pem(ec.generate_private_key(ec.SECP384R1())), "P-256"),
        (lambda: private_key_pem(make_signing_key()), "PUBLIC key only"),
        (lambda: "garbage", "not a usable PEM public key"),
    ],
    ids=["p384", "private-key-as-verify-key", "garbage"],
)
def test_unusable_verification_keys_are_refused(tmp_path: Path, make, says):
    path = tmp_path / "key.pem"
    path.write_text(make())
    with pytest.raises(SigningKeyError, match=says):
        load_verify_key(path)


def test_a_p384_signing_key_is_refused(tmp_path: Path):
    path = tmp_path / "p384.pem"
    path.write_text(private_key_pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(SigningKeyError, match="P-256"):
        load_signing_key(path)
