import json

import pytest

from job_documents import (
    DocumentInvalid,
    Endpoint,
    Operation,
    build_document,
    document_hash,
    load_catalog,
    validate_document,
)


def test_a_document_with_the_five_ats_roots_builds_and_validates():
    catalog = load_catalog()
    built = build_document(
        operation=Operation.MIGRATE,
        region="us-east-1",
        campaign="ats-2026",
        wave="canary",
        endpoint=Endpoint("a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"),
        roots=catalog.roots,
    )
    validated = validate_document(built.text)
    assert validated.operation is Operation.MIGRATE
    assert [r.name for r in validated.roots] == list(catalog.names())
    assert validated.sha256 == built.sha256 == document_hash(built.text)
    assert built.size == len(built.text)


def test_a_tampered_fingerprint_is_refused_with_its_path():
    catalog = load_catalog()
    built = build_document(
        operation="migrate",
        region="us-east-1",
        campaign="c",
        wave="w",
        endpoint=Endpoint("a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"),
        roots=[catalog.get("amazon-root-ca-1")],
    )
    doc = json.loads(built.text)
    doc["trust"]["roots"][0]["sha256"] = "0" * 64
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(doc)
    assert [(p.code, p.path) for p in caught.value.problems] == [
        ("fingerprint-mismatch", "/trust/roots/0/sha256")
    ]
