"""Operator-side building: what it refuses, what it reports, and that devices accept its output."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from job_documents import (
    MAX_DOCUMENT_CHARS,
    CertificateRejected,
    DocumentInvalid,
    DocumentTooLarge,
    Endpoint,
    EndpointRejected,
    ManualClock,
    Operation,
    ProbeSettings,
    RootInput,
    RootRef,
    UnknownRoot,
    build_document,
    document_hash,
    load_catalog,
    validate_document,
)
from job_documents.testing import make_leaf, make_root_ca, private_key_pem

HOST = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"


def _key():
    return make_root_ca().key


def _migrate(**overrides):
    arguments = {
        "operation": Operation.MIGRATE,
        "region": "us-east-1",
        "campaign": "ats-2026",
        "wave": "canary",
        "endpoint": Endpoint(HOST),
        "roots": load_catalog().roots,
    }
    arguments.update(overrides)
    return build_document(**arguments)


def test_the_built_text_is_compact_canonical_json_with_its_size_and_hash():
    built = _migrate()
    assert built.text == json.dumps(built.document, sort_keys=True, separators=(",", ":"))
    assert built.size == len(built.text) < MAX_DOCUMENT_CHARS
    assert built.sha256 == document_hash(built.text)
    assert built.document["probe"] == {"timeoutSeconds": 10, "attempts": 3}
    assert built.document["trust"]["keepExisting"] is True


def test_port_443_carries_the_mqtt_alpn():
    built = _migrate(endpoint=Endpoint(HOST, 443))
    assert built.document["endpoint"] == {"host": HOST, "port": 443, "alpn": ["x-amzn-mqtt-ca"]}


def test_a_pem_file_of_a_catalog_root_is_named_by_the_catalog():
    root = load_catalog().get("amazon-root-ca-3")
    built = _migrate(roots=[RootInput(name="my-file", pem="# from disk\n" + root.pem)])
    assert built.document["trust"]["roots"][0]["name"] == "amazon-root-ca-3"


@pytest.mark.parametrize(
    ("roots", "error", "says"),
    [
        (
            lambda: [RootInput("leaf", make_leaf(make_root_ca()).pem)],
            CertificateRejected,
            "not a CA",
        ),
        (
            lambda: [
                RootInput(
                    "old",
                    make_root_ca(
                        not_before=datetime.now(UTC) - timedelta(days=900),
                        not_after=datetime.now(UTC) - timedelta(days=2),
                    ).pem,
                )
            ],
            CertificateRejected,
            "expired",
        ),
        (
            lambda: [
                RootInput(
                    "future", make_root_ca(not_before=datetime.now(UTC) + timedelta(days=3)).pem
                )
            ],
            CertificateRejected,
            "not valid yet",
        ),
        (lambda: [RootInput("stranger", make_root_ca().pem)], UnknownRoot, "--allow-unknown-ca"),
        (lambda: [RootInput("junk", "junk")], CertificateRejected, "not a PEM certificate"),
        (
            lambda: [load_catalog().roots[0], load_catalog().roots[0]],
            CertificateRejected,
            "given twice",
        ),
        (
            lambda: [
                RootInput("k", load_catalog().roots[0].pem + private_key_pem(make_root_ca().key))
            ],
            CertificateRejected,
            "private key",
        ),
    ],
    ids=["leaf", "expired", "not-yet-valid", "unknown", "garbage", "duplicate", "private-key"],
)
def test_bad_roots_are_refused_before_anything_is_built(roots, error, says):
    with pytest.raises(error, match=says):
        _migrate(roots=roots())


def test_an_unknown_root_is_accepted_when_explicitly_allowed():
    stranger = make_root_ca("Operator Private Root")
    built = _migrate(roots=[RootInput("private-root", stranger.pem)], allow_unknown_roots=True)
    assert built.document["trust"]["roots"][0] == {
        "name": "private-root",
        "sha256": stranger.sha256,
        "pem": stranger.pem,
    }


def test_the_endpoint_rules_apply_to_the_builder():
    with pytest.raises(EndpointRejected, match="legacy"):
        _migrate(endpoint=Endpoint("a1sandbox2demo.iot.us-east-1.amazonaws.com"))
    with pytest.raises(EndpointRejected, match="region eu-west-1"):
        _migrate(endpoint=Endpoint("a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com"))


def test_a_document_over_the_aws_limit_is_refused_with_its_size():
    padded = [
        RootInput(f"big-{i}", make_root_ca(f"Big Root {i}", padding_bytes=3_000).pem)
        for i in range(10)
    ]
    with pytest.raises(DocumentTooLarge) as caught:
        _migrate(roots=padded, allow_unknown_roots=True)
    assert caught.value.size > MAX_DOCUMENT_CHARS
    assert str(caught.value.size) in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"endpoint": None}, "/endpoint"),
        ({"roots": ()}, "/trust/roots"),
        ({"campaign": "no spaces"}, "/campaign"),
        ({"wave": ""}, "/wave"),
        ({"probe": ProbeSettings(attempts=0)}, "/probe/attempts"),
        ({"probe": ProbeSettings(timeout_seconds=0)}, "/probe/timeoutSeconds"),
        ({"operation": "upgrade"}, "/operation"),
    ],
)
def test_shape_problems_are_reported_with_their_path(overrides, path):
    with pytest.raises(DocumentInvalid) as caught:
        _migrate(**overrides)
    assert [p.path for p in caught.value.problems] == [path]


def test_restore_and_prune_carry_no_endpoint_and_no_roots():
    common = {"region": "us-east-1", "campaign": "c", "wave": "w"}
    restore = build_document(operation="restore", **common)
    assert set(restore.document) == {"schema", "operation", "campaign", "wave", "region", "probe"}
    old = RootRef(name="verisign-class-3-g5", sha256="9a" * 32)
    prune = build_document(operation="prune", remove=[old], **common)
    assert prune.document["trust"] == {"remove": [{"name": old.name, "sha256": old.sha256}]}
    assert validate_document(prune.text).remove == (old,)
    with pytest.raises(DocumentInvalid, match="no endpoint"):
        build_document(operation="restore", endpoint=Endpoint(HOST), **common)
    with pytest.raises(DocumentInvalid, match="removes 1 to 10"):
        build_document(operation="prune", **common)
    with pytest.raises(DocumentInvalid, match="migrate only"):
        build_document(operation="prune", remove=[old], keep_existing=False, **common)


def test_validity_is_judged_by_the_injected_clock():
    with pytest.raises(CertificateRejected, match="expires on 2038-01-17"):
        _migrate(clock=ManualClock(datetime(2037, 3, 1, tzinfo=UTC)))
    built = _migrate(
        clock=ManualClock(datetime(2037, 3, 1, tzinfo=UTC)), validity_margin=timedelta(days=30)
    )
    assert built.size > 0
