"""Device-side validation: every refusal, each naming the problem and where it is."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from job_documents import (
    Catalog,
    DocumentInvalid,
    ManualClock,
    Operation,
    ValidationPolicy,
    load_catalog,
    validate_document,
)
from job_documents.testing import (
    IssuedCert,
    make_leaf,
    make_root_ca,
    make_signing_key,
    private_key_pem,
)


@dataclass(frozen=True)
class Certs:
    a: IssuedCert
    b: IssuedCert
    stranger: IssuedCert
    leaf: IssuedCert
    expired: IssuedCert
    not_yet_valid: IssuedCert
    expiring: IssuedCert
    intermediate: IssuedCert
    forged: IssuedCert


@pytest.fixture(scope="module")
def certs(root_a, root_b, stranger) -> Certs:
    now = datetime.now(UTC)
    intermediate_key_holder = make_root_ca("ca-migrate Test Intermediate")
    # An intermediate: a CA whose issuer is root A (re-signed by A with A's subject as issuer).
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    inter = intermediate_key_holder.certificate
    issued = (
        x509.CertificateBuilder()
        .subject_name(inter.subject)
        .issuer_name(root_a.certificate.subject)
        .public_key(inter.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(inter.not_valid_before_utc)
        .not_valid_after(inter.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root_a.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Certs(
        a=root_a,
        b=root_b,
        stranger=stranger,
        leaf=make_leaf(root_a),
        expired=make_root_ca(
            "Expired Root", not_before=now - timedelta(days=800), not_after=now - timedelta(days=1)
        ),
        not_yet_valid=make_root_ca("Future Root", not_before=now + timedelta(days=2)),
        expiring=make_root_ca("Expiring Root", not_after=now + timedelta(days=100)),
        intermediate=IssuedCert(certificate=issued, key=intermediate_key_holder.key),
        forged=make_root_ca("Forged Root", self_signed_by=stranger),
    )


def _entry(cert: IssuedCert, name: str = "test-root-x") -> dict[str, str]:
    return {"name": name, "sha256": cert.sha256, "pem": cert.pem}


Mutation = Callable[[dict[str, Any], Certs], None]


def _root0(pick: Callable[[Certs], IssuedCert]) -> Mutation:
    def mutate(doc: dict[str, Any], c: Certs) -> None:
        doc["trust"]["roots"][0] = _entry(pick(c))

    return mutate


def _do(fn: Callable[[dict[str, Any], Certs], Any]) -> Mutation:
    def mutate(doc: dict[str, Any], c: Certs) -> None:
        fn(doc, c)

    return mutate


def _doc(fn: Callable[[dict[str, Any]], Any]) -> Mutation:
    def mutate(doc: dict[str, Any], c: Certs) -> None:
        del c
        fn(doc)

    return mutate


def _unchanged(doc: dict[str, Any], c: Certs) -> None:
    del doc, c


_KEY_PEM = private_key_pem(make_signing_key("ECDSA-P256-SHA256"))

REFUSALS: list[tuple[str, Mutation, dict[str, Any], str, str, str]] = [
    # (id, mutation, policy overrides, code, path, words the message must contain)
    ("leaf", _root0(lambda c: c.leaf), {}, "pem-not-ca", "/trust/roots/0/pem", "not a CA"),
    ("expired", _root0(lambda c: c.expired), {}, "pem-expired", "/trust/roots/0/pem", "expired"),
    (
        "not-yet-valid",
        _root0(lambda c: c.not_yet_valid),
        {},
        "pem-not-yet-valid",
        "/trust/roots/0/pem",
        "not valid yet",
    ),
    (
        "expires-within-margin",
        _root0(lambda c: c.expiring),
        {},
        "pem-expires-soon",
        "/trust/roots/0/pem",
        "margin of 365 days",
    ),
    (
        "intermediate",
        _root0(lambda c: c.intermediate),
        {},
        "pem-not-self-signed",
        "/trust/roots/0/pem",
        "not self-signed",
    ),
    (
        "forged-self-signature",
        _root0(lambda c: c.forged),
        {},
        "pem-not-self-signed",
        "/trust/roots/0/pem",
        "does not verify",
    ),
    (
        "unknown-fingerprint",
        _root0(lambda c: c.stranger),
        {},
        "unknown-root",
        "/trust/roots/0/pem",
        "not a pinned root",
    ),
    (
        "fingerprint-not-in-allow-list",
        _unchanged,
        {"allowed_fingerprints": frozenset({"0" * 64})},
        "unknown-root",
        "/trust/roots/0/pem",
        "not a pinned root",
    ),
    (
        "garbage-text",
        _doc(lambda d: d["trust"]["roots"][0].update(pem="hello world")),
        {},
        "pem-invalid",
        "/trust/roots/0/pem",
        "not a PEM certificate",
    ),
    (
        "garbage-in-a-pem-block",
        _doc(
            lambda d: d["trust"]["roots"][0].update(
                pem="-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n"
            )
        ),
        {},
        "pem-invalid",
        "/trust/roots/0/pem",
        "not a readable X.509",
    ),
    (
        "two-certificates-in-one-entry",
        _do(lambda d, c: d["trust"]["roots"][0].update(pem=c.a.pem + c.b.pem)),
        {},
        "pem-multiple",
        "/trust/roots/0/pem",
        "exactly one certificate",
    ),
    (
        "private-key-in-a-root",
        _do(lambda d, c: d["trust"]["roots"][0].update(pem=c.a.pem + _KEY_PEM)),
        {},
        "private-key",
        "/trust/roots/0/pem",
        "private key",
    ),
    (
        "private-key-anywhere",
        _doc(lambda d: d.update(campaign=_KEY_PEM)),
        {},
        "private-key",
        "",
        "private key",
    ),
    (
        "duplicate-root",
        _do(lambda d, c: d["trust"]["roots"].append(_entry(c.a, "test-root-a"))),
        {},
        "duplicate-root",
        "/trust/roots/1/pem",
        "already listed",
    ),
    (
        "duplicate-name",
        _do(lambda d, c: d["trust"]["roots"].append(_entry(c.b, "test-root-a"))),
        {},
        "duplicate-root",
        "/trust/roots/1/name",
        "already used",
    ),
    (
        "fingerprint-mismatch",
        _do(lambda d, c: d["trust"]["roots"][0].update(sha256=c.b.sha256)),
        {},
        "fingerprint-mismatch",
        "/trust/roots/0/sha256",
        "altered",
    ),
    (
        "catalog-root-under-another-name",
        _doc(lambda d: d["trust"]["roots"][0].update(name="test-root-b")),
        {},
        "root-name-mismatch",
        "/trust/roots/0/name",
        "'test-root-a'",
    ),
    (
        "region-of-another-device",
        _unchanged,
        {"region": "eu-west-1"},
        "region-mismatch",
        "/region",
        "eu-west-1",
    ),
    (
        "legacy-endpoint",
        _doc(lambda d: d["endpoint"].update(host="a1sandbox2demo.iot.us-east-1.amazonaws.com")),
        {},
        "endpoint-legacy",
        "/endpoint/host",
        "legacy",
    ),
    (
        "endpoint-of-another-region",
        _doc(lambda d: d["endpoint"].update(host="a1-ats.iot.eu-west-1.amazonaws.com")),
        {},
        "endpoint-region",
        "/endpoint/host",
        "region eu-west-1",
    ),
    (
        "ip-endpoint",
        _doc(lambda d: d["endpoint"].update(host="10.0.0.1")),
        {},
        "endpoint-ip",
        "/endpoint/host",
        "IP address",
    ),
    (
        "too-large",
        _doc(lambda d: d.update(padding="x" * 33_000)),
        {},
        "too-large",
        "",
        "limit of 32768",
    ),
    (
        "unsupported-schema-version",
        _doc(lambda d: d.update(schema="ca-migration/2")),
        {},
        "schema",
        "/schema",
        "unsupported schema",
    ),
    (
        "unknown-operation",
        _doc(lambda d: d.update(operation="upgrade")),
        {},
        "schema",
        "/operation",
        "not one of migrate, restore, prune",
    ),
    (
        "migrate-without-endpoint",
        _doc(lambda d: d.pop("endpoint")),
        {},
        "schema",
        "",
        "'endpoint' is a required property",
    ),
    (
        "restore-with-endpoint-and-roots",
        _doc(lambda d: d.update(operation="restore")),
        {},
        "schema",
        "",
        "Additional properties are not allowed",
    ),
    (
        "port-443-without-alpn",
        _doc(lambda d: d["endpoint"].update(port=443)),
        {},
        "schema",
        "/endpoint",
        "'alpn' is a required property",
    ),
    (
        "unknown-member",
        _doc(lambda d: d["trust"].update(force=True)),
        {},
        "schema",
        "/trust",
        "'force' was unexpected",
    ),
    (
        "signature-required-without-key",
        _unchanged,
        {"require_signature": True},
        "signature-key",
        "/signature",
        "no verification key",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "policy", "code", "path", "says"),
    [pytest.param(*case[1:], id=case[0]) for case in REFUSALS],
)
def test_each_refusal_names_its_problem(
    test_migrate, test_catalog, certs, mutate, policy, code, path, says
):
    validate_document(test_migrate, ValidationPolicy(catalog=test_catalog))
    mutate(test_migrate, certs)
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(test_migrate, ValidationPolicy(catalog=test_catalog, **policy))
    found = [p for p in caught.value.problems if p.code == code and p.path == path]
    assert found, f"no {code} at {path!r} in:\n{caught.value}"
    assert says in found[0].message
    # No PEM body (DER in base64 starts "MII") and no key material in any message.
    assert "MII" not in str(caught.value)
    assert "-----END" not in str(caught.value)


def test_every_problem_is_reported_not_just_the_first(test_migrate, test_catalog, certs):
    test_migrate["wave"] = "no spaces allowed"
    test_migrate["endpoint"]["host"] = "a1.iot.us-east-1.amazonaws.com"
    test_migrate["trust"]["roots"].append(_entry(certs.leaf))
    test_migrate["trust"]["roots"].append(_entry(certs.expired))
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(test_migrate, ValidationPolicy(catalog=test_catalog, region="eu-west-1"))
    assert {
        "schema",
        "endpoint-legacy",
        "pem-not-ca",
        "pem-expired",
        "region-mismatch",
    } <= caught.value.codes
    assert len(str(caught.value).splitlines()) == len(caught.value.problems)


def test_a_document_that_is_not_json_is_refused():
    with pytest.raises(DocumentInvalid) as caught:
        validate_document("{not json")
    assert caught.value.codes == {"json"}


def test_private_key_material_in_undecodable_bytes_is_still_named():
    raw = b"\xff\xfe-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(raw)
    assert caught.value.codes == {"json", "private-key"}


def test_duplicate_member_names_are_refused(ats_migrate_text):
    text = ats_migrate_text.replace('"wave":"canary"', '"wave":"canary","wave":"all"')
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(text)
    assert caught.value.codes == {"json-duplicate-key"}
    assert "'wave'" in str(caught.value)


def test_the_five_ats_roots_validate_under_the_packaged_catalog(ats_migrate_text):
    result = validate_document(ats_migrate_text, ValidationPolicy(region="us-east-1"))
    assert result.operation is Operation.MIGRATE
    assert [r.name for r in result.roots] == list(load_catalog().names())
    assert result.keep_existing is True
    assert result.signed is False


def test_the_same_document_from_bytes_text_or_object_gives_the_same_result(ats_migrate_text):
    from_text = validate_document(ats_migrate_text)
    assert validate_document(ats_migrate_text.encode()) == from_text
    assert validate_document(json.loads(ats_migrate_text)) == from_text


def test_test_roots_are_unknown_to_the_packaged_catalog(test_migrate):
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(test_migrate)
    assert caught.value.codes == {"unknown-root"}


def test_unknown_roots_pass_only_when_explicitly_allowed(test_migrate, test_catalog, certs):
    test_migrate["trust"]["roots"][0] = _entry(certs.stranger)
    result = validate_document(
        test_migrate, ValidationPolicy(catalog=test_catalog, allow_unknown_roots=True)
    )
    assert result.roots[0].sha256 == certs.stranger.sha256


@pytest.mark.parametrize(
    ("when", "code", "root"),
    [
        (datetime(2037, 6, 1, tzinfo=UTC), "pem-expires-soon", "starfield-services-root-ca-g2"),
        (datetime(2038, 2, 1, tzinfo=UTC), "pem-expired", "amazon-root-ca-1"),
    ],
)
def test_validity_is_judged_by_the_injected_clock(ats_migrate_text, when, code, root):
    clock = ManualClock(when)
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(ats_migrate_text, ValidationPolicy(clock=clock))
    index = load_catalog().names().index(root)
    assert any(
        p.code == code and p.path == f"/trust/roots/{index}/pem" for p in caught.value.problems
    )


def test_a_shorter_margin_accepts_a_root_expiring_soon(test_migrate, test_catalog, certs):
    test_migrate["trust"]["roots"][0] = _entry(certs.expiring)
    policy = ValidationPolicy(
        catalog=test_catalog, allow_unknown_roots=True, validity_margin=timedelta(days=30)
    )
    assert validate_document(test_migrate, policy).roots[0].sha256 == certs.expiring.sha256


def test_restore_and_prune_documents_validate(test_catalog: Catalog):
    base = {
        "schema": "ca-migration/1",
        "campaign": "c",
        "wave": "w",
        "region": "us-east-1",
        "probe": {"timeoutSeconds": 5, "attempts": 2},
    }
    restored = validate_document({**base, "operation": "restore"})
    assert (restored.operation, restored.endpoint, restored.roots) == (Operation.RESTORE, None, ())
    pruned = validate_document(
        {**base, "operation": "prune", "trust": {"remove": [{"name": "old", "sha256": "a" * 64}]}}
    )
    assert pruned.remove[0].sha256 == "a" * 64
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(
            {
                **base,
                "operation": "prune",
                "trust": {"remove": [{"name": "old", "sha256": "a" * 64}] * 2},
            }
        )
    assert caught.value.codes == {"duplicate-root"}


@pytest.mark.parametrize("region", ["cn-south-1", "us-iso-east-1"])
def test_a_region_outside_the_known_partitions_is_refused_without_an_endpoint(region):
    doc = {
        "schema": "ca-migration/1",
        "operation": "restore",
        "campaign": "c",
        "wave": "w",
        "region": region,
        "probe": {"timeoutSeconds": 5, "attempts": 2},
    }
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(doc)
    assert [(p.code, p.path) for p in caught.value.problems] == [("region-invalid", "/region")]
