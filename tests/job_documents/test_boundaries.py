"""The document checks at their edges: host rules, expiry instants, signatures and keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from job_documents import (
    MAX_DOCUMENT_CHARS,
    EndpointRejected,
    Problem,
    SigningKeyError,
    check_ats_endpoint,
    load_signing_key,
    load_verify_key,
    sign_document,
)
from job_documents._endpoint import check_region, known_regions, partition_suffix
from job_documents._pem import check_root_validity, inspect_root_pem
from job_documents._signature import algorithm_for, signature_problem
from job_documents.errors import CertificateRejected
from job_documents.testing import make_root_ca, make_signing_key, private_key_pem
from job_documents.validator import _check_size_and_secrets

REGION = "us-east-1"
SUFFIX = ".iot.us-east-1.amazonaws.com"


def _host(length: int) -> str:
    """An AWS-IoT-shaped host of exactly `length` characters with extra labels before -ats."""
    head = length - len(SUFFIX) - len("-ats")
    labels = []
    while head > 0:
        label = "a" * min(head, 60)
        labels.append(label)
        head -= len(label) + 1
    text = ".".join(labels).rstrip(".")
    host = text + "a" * (length - len(SUFFIX) - len("-ats") - len(text)) + "-ats" + SUFFIX
    assert len(host) == length
    return host


def _code(host: str) -> str:
    with pytest.raises(EndpointRejected) as caught:
        check_ats_endpoint(host, REGION)
    return caught.value.code


@pytest.mark.parametrize("length", [254, 255, 400])
def test_a_host_longer_than_253_characters_is_refused_for_its_length(length: int) -> None:
    with pytest.raises(EndpointRejected, match="longer than 253 characters") as caught:
        check_ats_endpoint(_host(length), REGION)
    assert caught.value.code == "endpoint-host"


@pytest.mark.parametrize("length", [252, 253])
def test_a_host_of_up_to_253_characters_passes_the_length_rule(length: int) -> None:
    # the same shape one character shorter: refused by the next rule (extra labels), not length
    assert _code(_host(length)) == "endpoint-labels"


def test_the_longest_valid_prefix_is_accepted() -> None:
    check_ats_endpoint("a" * 63 + "-ats" + SUFFIX, REGION)
    assert _code("a" * 64 + "-ats" + SUFFIX) == "endpoint-prefix"


NOT_AFTER = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def dated_root():
    root = make_root_ca(not_before=NOT_AFTER - timedelta(days=3650), not_after=NOT_AFTER)
    info = inspect_root_pem(root.pem)
    assert info.not_after == NOT_AFTER
    return info


def test_a_root_is_expired_at_its_exact_not_after_instant(dated_root) -> None:
    with pytest.raises(CertificateRejected) as caught:
        check_root_validity(dated_root, now=NOT_AFTER, margin=timedelta(0))
    assert caught.value.code == "pem-expired"


def test_a_root_is_still_valid_one_second_before_not_after(dated_root) -> None:
    check_root_validity(dated_root, now=NOT_AFTER - timedelta(seconds=1), margin=timedelta(0))


def test_the_expiry_margin_is_inclusive_of_its_last_instant(dated_root) -> None:
    margin = timedelta(days=30)
    check_root_validity(dated_root, now=NOT_AFTER - margin, margin=margin)
    with pytest.raises(CertificateRejected) as caught:
        check_root_validity(
            dated_root, now=NOT_AFTER - margin + timedelta(seconds=1), margin=margin
        )
    assert caught.value.code == "pem-expires-soon"


def test_a_root_is_valid_from_its_exact_not_before_instant(dated_root) -> None:
    start = dated_root.not_before
    check_root_validity(dated_root, now=start, margin=timedelta(0))
    with pytest.raises(CertificateRejected) as caught:
        check_root_validity(dated_root, now=start - timedelta(seconds=1), margin=timedelta(0))
    assert caught.value.code == "pem-not-yet-valid"


# -- what `make mutate` found unchecked in the endpoint rules ------------------------------


@pytest.mark.parametrize(
    ("host", "code"),
    [
        ("mqtt:broker", "endpoint-scheme"),  # a scheme without //
        ("Mqtt:broker", "endpoint-scheme"),  # schemes are case-insensitive
        ("1://broker", "endpoint-scheme"),  # :// alone is enough
        ("10.0.0.1X", "endpoint-case"),  # not an IP address: only "[]" is stripped
        ("Xyz-ats" + SUFFIX, "endpoint-case"),
        (".a1-ats" + SUFFIX, "endpoint-host"),  # an empty first label
        ("a1b2-ats" + SUFFIX + ":8883", "endpoint-port"),
    ],
)
def test_each_malformed_host_gets_its_own_code(host: str, code: str) -> None:
    assert _code(host) == code


@pytest.mark.parametrize("prefix", ["abc", "a", "abcdefgh"])
def test_a_china_endpoint_with_a_dot_before_ats_is_accepted(prefix: str) -> None:
    check_ats_endpoint(f"{prefix}.ats.iot.cn-north-1.amazonaws.com.cn", "cn-north-1")


def test_a_china_endpoint_keeps_its_whole_prefix_for_the_prefix_rule() -> None:
    with pytest.raises(EndpointRejected) as caught:
        check_ats_endpoint("abcd_x.ats.iot.cn-north-1.amazonaws.com.cn", "cn-north-1")
    assert caught.value.code == "endpoint-prefix"


@pytest.mark.parametrize(
    ("host", "region", "says"),
    [
        ("", REGION, r"give <prefix>-ats\.iot\.us-east-1\.amazonaws\.com"),
        ("a1-ats" + SUFFIX + ":443", REGION, r"separately \(8883, or 443 with ALPN\)$"),
        ("A1-ats" + SUFFIX, REGION, r"lowercase, as DescribeEndpoint returns it$"),
    ],
)
def test_the_endpoint_messages_say_what_to_do(host: str, region: str, says: str) -> None:
    with pytest.raises(EndpointRejected, match=says):
        check_ats_endpoint(host, region)


def test_an_isolated_region_is_refused_with_what_to_use() -> None:
    with pytest.raises(
        EndpointRejected,
        match=r"does not know: use a commercial, GovCloud or China region$",
    ):
        check_ats_endpoint("a1-ats.iot.us-iso-east-1.c2s.ic.gov", "us-iso-east-1")


# -- signatures and signing keys: codes and messages ----------------------------------------


def _pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _pem_private(key: Any, password: bytes | None = None) -> bytes:
    crypt = BestAvailableEncryption(password) if password else NoEncryption()
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, crypt)


DOC = {"schema": "ca-migration/1", "operation": "migrate", "wave": "canary"}


def test_an_unsigned_document_is_signature_missing_with_how_to_sign() -> None:
    verify = make_signing_key().public_key()
    assert signature_problem(DOC, verify) == (
        "signature-missing",
        (
            "the document is not signed but this device requires a signature: sign it with the "
            "operators' key (ca-migrate document build --sign-key)"
        ),
    )


def test_a_signature_value_that_is_not_strict_base64_is_refused_as_such() -> None:
    key = make_signing_key()
    signed = {**DOC, "signature": sign_document(DOC, key)}
    signed["signature"]["value"] += "$"  # decodes when non-alphabet characters are skipped
    assert signature_problem(signed, key.public_key()) == (
        "signature-invalid",
        "the signature value is not valid base64",
    )


def test_a_signature_by_another_key_does_not_verify() -> None:
    signed = {**DOC, "signature": sign_document(DOC, make_signing_key())}
    code, message = signature_problem(signed, make_signing_key().public_key()) or ("", "")
    assert code == "signature-invalid"
    assert message.startswith("the signature does not verify with the pinned key")


def test_a_signature_under_another_algorithm_names_both() -> None:
    signed = {**DOC, "signature": sign_document(DOC, make_signing_key("Ed25519"))}
    code, message = signature_problem(
        signed, make_signing_key("ECDSA-P256-SHA256").public_key()
    ) or ("", "")
    assert code == "signature-algorithm"
    assert message.endswith("sign with the key the devices pin")


def test_a_pinned_key_of_an_unsupported_type_is_a_signature_key_problem() -> None:
    rsa_public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    signed = {**DOC, "signature": {"algorithm": "Ed25519", "value": ""}}
    assert signature_problem(signed, rsa_public) == (  # type: ignore[arg-type]
        "signature-key",
        "unsupported key type RSAPublicKey: use an Ed25519 or ECDSA P-256 key",
    )


def test_an_ecdsa_key_off_p256_is_refused_with_what_to_generate() -> None:
    with pytest.raises(SigningKeyError) as caught:
        algorithm_for(ec.generate_private_key(ec.SECP384R1()))
    assert str(caught.value) == (
        "ECDSA keys must be on P-256 (secp256r1), this one is on secp384r1: "
        "generate a P-256 or Ed25519 key"
    )


def test_an_encrypted_signing_key_loads_with_its_password() -> None:
    key = make_signing_key()
    loaded = load_signing_key(_pem_private(key, b"s3cret"), password=b"s3cret")
    assert _pem_public(loaded) == _pem_public(key)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: b"not a key",
            (
                "give an unencrypted PKCS#8 Ed25519 or ECDSA P-256 key, e.g. from "
                "'openssl genpkey -algorithm ed25519'"
            ),
        ),
        (
            lambda: _pem_private(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "unsupported signing key type RSAPrivateKey: use Ed25519 or ECDSA P-256",
        ),
    ],
)
def test_an_unusable_signing_key_says_what_to_give(make: Any, message: str) -> None:
    with pytest.raises(SigningKeyError) as caught:
        load_signing_key(make())
    assert str(caught.value).endswith(message)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: _pem_private(make_signing_key()),
            (
                "this is a private key: devices pin the PUBLIC key only "
                "(openssl pkey -in key.pem -pubout)"
            ),
        ),
        (
            lambda: _pem_public(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "unsupported verification key type RSAPublicKey: use Ed25519 or ECDSA P-256",
        ),
    ],
)
def test_an_unusable_verify_key_says_what_to_give(make: Any, message: str) -> None:
    with pytest.raises(SigningKeyError) as caught:
        load_verify_key(make())
    assert str(caught.value) == message


def test_a_missing_key_file_names_the_file_and_the_cause(tmp_path: Path) -> None:
    missing = tmp_path / "ops.key"
    with pytest.raises(SigningKeyError) as caught:
        load_signing_key(missing)
    assert str(caught.value) == f"cannot read key file {missing}: No such file or directory"


# -- the size limit and secrets ------------------------------------------------------------


def _size_problems(text: str) -> list[Problem]:
    problems: list[Problem] = []
    _check_size_and_secrets(text, problems)
    return problems


def test_a_document_of_exactly_the_limit_is_not_too_large() -> None:
    assert _size_problems("x" * MAX_DOCUMENT_CHARS) == []


def test_one_character_over_the_limit_is_too_large_with_its_size() -> None:
    (problem,) = _size_problems("x" * (MAX_DOCUMENT_CHARS + 1))
    assert problem.code == "too-large"
    assert problem.message == (
        f"the document is {MAX_DOCUMENT_CHARS + 1} characters, over AWS's limit of "
        f"{MAX_DOCUMENT_CHARS}: build it with fewer roots"
    )


def test_private_key_material_is_refused_with_what_to_do() -> None:
    (problem,) = _size_problems(private_key_pem(make_signing_key()))
    assert problem.code == "private-key"
    assert problem.message == (
        "the document contains private key material: it must never be sent; "
        "rotate that key and rebuild the document from certificates only"
    )


# -- regions: the packaged list and the explicit allowance ---------------------------------


def test_an_unknown_region_is_refused_with_how_to_allow_it() -> None:
    with pytest.raises(EndpointRejected) as caught:
        check_region("us-east-9")
    assert caught.value.code == "region-invalid"
    assert str(caught.value).startswith("'us-east-9' is not an AWS region (")
    assert str(caught.value).endswith(
        "check the spelling; a region AWS opened since must be allowed explicitly "
        "(--allow-region in the CLI, extra_regions in Python)"
    )


def test_a_region_allowed_explicitly_is_checked_as_known_everywhere() -> None:
    host = "a1b2-ats.iot.us-east-9.amazonaws.com"
    check_ats_endpoint(host, "us-east-9", extra_regions=("us-east-9",))
    assert partition_suffix("us-east-9", extra_regions=("us-east-9",)) == "amazonaws.com"
    with pytest.raises(EndpointRejected):
        partition_suffix("us-east-9")


def test_a_region_that_is_not_text_is_refused() -> None:
    with pytest.raises(EndpointRejected) as caught:
        check_region(None)  # type: ignore[arg-type]
    assert caught.value.code == "region-invalid"


def test_the_known_regions_are_the_packaged_commercial_china_and_govcloud_ones() -> None:
    regions = known_regions()
    assert {"us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1"} <= regions
    assert "us-iso-east-1" not in regions
