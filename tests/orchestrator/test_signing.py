"""Signed campaigns: a key file or an AWS KMS key signs every document, the device verifies.

KMS is moto's (`mock_aws`): real ECDSA P-256 keys that sign for real. The device side is
the device handler's own validator (`make_validator`), pinning the public key exported the
way docs/device-handler.md says (GetPublicKey's DER, as PEM).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from moto import mock_aws

from device_handler.errors import DocumentRejected
from device_handler.validation import ValidationSettings, make_validator
from job_documents import Endpoint, Operation, SigningKeyError, build_document, load_catalog
from job_documents.testing import make_signing_key, private_key_pem, public_key_pem
from orchestrator.aws.kms import MAX_RAW_MESSAGE, open_kms_signer
from orchestrator.errors import SpecError
from orchestrator.jobdocs import build_restore_document, build_wave_documents
from orchestrator.signing import kms_key_region, open_signer
from orchestrator.spec import parse_spec

HOST = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
CAMPAIGN = """\
name: signed
region: us-east-1
endpoint: auto
trust: {add: [amazon-root-ca-1]}
waves:
  - name: canary
    thing_groups: [canary]
    gate: {min_success_rate: 0.5}
"""


@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_KMS", raising=False)
    with mock_aws():
        yield boto3.client("kms", region_name="us-east-1")


def _kms_key(kms: Any, spec: str = "ECC_NIST_P256", usage: str = "SIGN_VERIFY") -> str:
    arn: str = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["Arn"]
    return arn


def _pinned_pem(kms: Any, key: str, tmp_path: Path) -> Path:
    """What the device pins: GetPublicKey's DER (SubjectPublicKeyInfo) written as PEM."""
    der = kms.get_public_key(KeyId=key)["PublicKey"]
    pem = serialization.load_der_public_key(der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / f"pinned-{hashlib.sha256(der).hexdigest()[:8]}.pem"
    path.write_bytes(pem)
    return path


def _device(pinned: Path) -> Any:
    return make_validator(ValidationSettings(region="us-east-1", verify_key=pinned))


def _spec(extra: str) -> Any:
    return parse_spec(CAMPAIGN + extra, "signed.yaml", base_dir=Path("/campaigns"))


# -- KMS ---------------------------------------------------------------------------------------


def test_a_device_verifies_a_kms_signed_campaign_document_and_rejects_another_key(
    kms: Any, tmp_path: Path
) -> None:
    key = _kms_key(kms)
    other = _kms_key(kms)
    spec = _spec(f"signing: {{kms_key: {key}, key_id: ops-2026}}\n")
    signer = open_signer(spec.signing, spec.region)
    built = build_wave_documents(spec, HOST, signer).documents["canary"]
    signature = built.document["signature"]
    assert signature["algorithm"] == "ECDSA-P256-SHA256"
    assert signature["keyId"] == "ops-2026"
    order = _device(_pinned_pem(kms, key, tmp_path))(built.text)
    assert order.operation == "migrate"
    with pytest.raises(DocumentRejected) as caught:
        _device(_pinned_pem(kms, other, tmp_path))(built.text)
    assert caught.value.code == "signature-invalid"


def test_an_alias_in_the_campaign_signs_with_its_target_key(kms: Any, tmp_path: Path) -> None:
    key = _kms_key(kms)
    kms.create_alias(AliasName="alias/ca-migrate-docs", TargetKeyId=key)
    spec = _spec("signing: {kms_key: alias/ca-migrate-docs, key_id: ops}\n")
    restore = build_restore_document(spec, "canary", open_signer(spec.signing, spec.region))
    assert _device(_pinned_pem(kms, key, tmp_path))(restore.text).operation == "restore"


@pytest.mark.parametrize(
    ("spec", "usage", "expected"),
    [
        ("RSA_2048", "SIGN_VERIFY", "is RSA_2048, not ECC_NIST_P256"),
        ("ECC_NIST_P384", "SIGN_VERIFY", "is ECC_NIST_P384, not ECC_NIST_P256"),
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "not ECC_NIST_P256"),
    ],
)
def test_a_kms_key_of_the_wrong_spec_or_usage_is_refused(
    kms: Any, spec: str, usage: str, expected: str
) -> None:
    key = _kms_key(kms, spec, usage)
    with pytest.raises(SigningKeyError, match=expected):
        open_kms_signer(kms, key)


def test_a_disabled_or_missing_kms_key_is_refused_with_what_to_do(kms: Any) -> None:
    key = _kms_key(kms)
    kms.disable_key(KeyId=key.rsplit("/", 1)[-1])
    with pytest.raises(SigningKeyError, match="enable"):
        open_kms_signer(kms, key)
    with pytest.raises(SigningKeyError, match=r"NotFoundException.*check the key id"):
        open_kms_signer(kms, "alias/no-such-key")


def test_the_kms_client_is_made_in_the_region_of_the_key_arn() -> None:
    arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert kms_key_region(arn, "us-east-1") == "eu-west-1"
    assert kms_key_region("alias/docs", "us-east-1") == "us-east-1"


class _DigestKms:
    """KMS Sign as AWS documents it for MessageType=DIGEST (moto 5 does not implement DIGEST:
    it hashes the digest again). Real P-256 key; only the DIGEST branch is exercised here."""

    ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.calls: list[tuple[str, int]] = []

    def describe_key(self, *, KeyId: str) -> Any:  # noqa: N803
        assert KeyId == "alias/docs"
        return {
            "KeyMetadata": {
                "Arn": self.ARN,
                "KeySpec": "ECC_NIST_P256",
                "KeyUsage": "SIGN_VERIFY",
                "KeyState": "Enabled",
                "SigningAlgorithms": ["ECDSA_SHA_256"],
            }
        }

    def get_public_key(self, *, KeyId: str) -> Any:  # noqa: N803
        assert KeyId == self.ARN
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {"PublicKey": der}

    def sign(self, *, KeyId: str, Message: bytes, MessageType: str, SigningAlgorithm: str) -> Any:  # noqa: N803
        assert KeyId.startswith("arn:aws:kms:")
        self.calls.append((MessageType, len(Message)))
        assert SigningAlgorithm == "ECDSA_SHA_256"
        if MessageType == "DIGEST":
            assert len(Message) == 32
            algorithm: Any = utils.Prehashed(hashes.SHA256())
        else:
            assert len(Message) <= MAX_RAW_MESSAGE
            algorithm = hashes.SHA256()
        return {"Signature": self.key.sign(Message, ec.ECDSA(algorithm))}


def test_a_document_over_the_raw_limit_is_signed_as_a_digest_and_still_verifies(
    tmp_path: Path,
) -> None:
    fake = _DigestKms()
    signer = open_kms_signer(fake, "alias/docs")
    catalog = load_catalog()
    roots = list(catalog.roots)[:4]
    built = build_document(
        operation=Operation.MIGRATE,
        region="us-east-1",
        campaign="c",
        wave="w",
        endpoint=Endpoint(HOST),
        roots=roots,
        catalog=catalog,
        sign_key=signer,
        key_id="docs",
    )
    assert built.size > MAX_RAW_MESSAGE
    assert fake.calls == [("DIGEST", 32)]
    pinned = tmp_path / "pinned.pem"
    pinned.write_text(public_key_pem(fake.key))
    assert _device(pinned)(built.text).operation == "migrate"


# -- key files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["Ed25519", "ECDSA-P256-SHA256"])
def test_a_key_file_signs_every_wave_document_and_the_port_443_endpoint(
    tmp_path: Path, algorithm: str
) -> None:
    key = make_signing_key(algorithm)
    (tmp_path / "ops.key").write_text(private_key_pem(key))
    (tmp_path / "ops.pub").write_text(public_key_pem(key))
    text = CAMPAIGN + "endpoint_port: 443\nsigning: {key_file: ops.key, key_id: ops-2026}\n"
    spec = parse_spec(text, "c.yaml", base_dir=tmp_path)
    assert spec.signing is not None
    assert spec.signing.key_file == str(tmp_path / "ops.key")
    built = build_wave_documents(spec, HOST, open_signer(spec.signing, spec.region))
    order = _device(tmp_path / "ops.pub")(built.documents["canary"].text)
    assert order.endpoint is not None
    assert (order.endpoint.port, order.endpoint.alpn) == (443, ("x-amzn-mqtt-ca",))
    stranger = make_signing_key(algorithm)
    (tmp_path / "stranger.pub").write_text(public_key_pem(stranger))
    with pytest.raises(DocumentRejected):
        _device(tmp_path / "stranger.pub")(built.documents["canary"].text)


def test_unusable_key_files_are_refused_without_echoing_the_key(tmp_path: Path) -> None:
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "rsa.key").write_bytes(pem)
    p384 = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "p384.key").write_text(private_key_pem(p384))
    (tmp_path / "garbage.key").write_text("-----BEGIN PRIVATE KEY-----\nnope\n")
    for name, expected in [
        ("rsa.key", "unsupported signing key type"),
        ("p384.key", "P-256"),
        ("garbage.key", "not a usable PEM private key"),
        ("missing.key", "cannot read key file"),
    ]:
        spec = parse_spec(
            CAMPAIGN + f"signing: {{key_file: {name}, key_id: k}}\n", "c", base_dir=tmp_path
        )
        assert spec.signing is not None
        with pytest.raises(SigningKeyError, match=expected) as caught:
            open_signer(spec.signing, spec.region)
        assert "BEGIN" not in str(caught.value)
        assert pem.decode().splitlines()[1] not in str(caught.value)


def test_a_signed_campaign_never_builds_unsigned_documents() -> None:
    spec = _spec("signing: {key_file: ops.key, key_id: ops}\n")
    with pytest.raises(SpecError, match="signing"):
        build_wave_documents(spec, HOST, None)


# -- the campaign file -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "where", "message"),
    [
        ("signing: {key_id: k}\n", "signing", "exactly one of key_file or kms_key"),
        (
            "signing: {key_id: k, key_file: a.key, kms_key: alias/x}\n",
            "signing",
            "exactly one of key_file or kms_key",
        ),
        ("signing: {key_file: a.key}\n", "signing.key_id", "required key is missing"),
        ("signing: {key_file: a.key, key_id: 'has space'}\n", "signing.key_id", "pattern"),
        ("signing: {kms_key: 'http://x', key_id: k}\n", "signing.kms_key", "pattern"),
        ("signing: {key_file: '', key_id: k}\n", "signing.key_file", "at least 1"),
        ("signing: {key_file: a.key, key_id: k, pem: x}\n", "signing.pem", "unknown key"),
        ("endpoint_port: 1883\n", "endpoint_port", "8883 or 443"),
        ("endpoint_port: '443'\n", "endpoint_port", "8883 or 443"),
    ],
)
def test_bad_signing_and_port_keys_are_located_and_explained(
    extra: str, where: str, message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(CAMPAIGN + extra, "c.yaml")
    text = str(caught.value)
    assert where in text
    assert message in text
    assert "line 9" in text or "line 8" in text


def test_a_long_kms_key_is_refused_by_its_bound() -> None:
    with pytest.raises(SpecError, match=r"signing\.kms_key"):
        parse_spec(CAMPAIGN + f"signing: {{kms_key: alias/{'a' * 3000}, key_id: k}}\n", "c")
