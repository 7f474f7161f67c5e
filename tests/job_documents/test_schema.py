"""The packaged JSON Schema and the pydantic models agree."""

from __future__ import annotations

import base64
import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from job_documents import (
    SCHEMA_ID,
    Endpoint,
    RootRef,
    build_document,
    load_catalog,
    load_schema,
    schema_path,
)
from job_documents._models import (
    DOCUMENT_ADAPTER,
    EndpointModel,
    MigrateDocument,
    MigrateTrust,
    ProbeModel,
    PruneDocument,
    PruneTrust,
    RestoreDocument,
    RootModel,
    RootRefModel,
    SignatureModel,
    render_schema,
    render_schema_text,
)
from job_documents._schema import document_validator


def test_the_packaged_schema_file_is_what_the_models_generate():
    assert schema_path().read_text(encoding="utf-8") == render_schema_text(), (
        "regenerate it: python -m job_documents._models > "
        "job_documents/schema/ca-migration-1.schema.json"
    )


def test_the_schema_is_draft_2020_12_and_names_its_version():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == SCHEMA_ID
    document_validator().check_schema(schema)
    assert render_schema() == schema


_ID = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=64)
_NAME = st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,20}\Z")
_SHA = st.text("0123456789abcdef", min_size=64, max_size=64)
_REGION = st.sampled_from(
    ["us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1"]
)


@st.composite
def _endpoints(draw: st.DrawFn) -> EndpointModel:
    region = draw(_REGION)
    prefix = draw(st.from_regex(r"\A[a-z0-9]{1,20}\Z"))
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    port = draw(st.sampled_from([8883, 443]))
    host = f"{prefix}-ats.iot.{region}.{suffix}"
    if port == 443:
        return EndpointModel(host=host, port=port, alpn=["x-amzn-mqtt-ca"])
    return EndpointModel(host=host, port=port)


_PEMS = [root.pem for root in load_catalog().roots]
_ROOTS = st.builds(RootModel, name=_NAME, sha256=_SHA, pem=st.sampled_from(_PEMS))
_REFS = st.builds(RootRefModel, name=_NAME, sha256=_SHA)
_PROBE = st.builds(
    ProbeModel,
    timeoutSeconds=st.one_of(st.integers(1, 300).map(float), st.floats(0.1, 300, allow_nan=False)),
    attempts=st.integers(1, 10),
)
_SIGNATURE = st.fixed_dictionaries(
    {
        "algorithm": st.sampled_from(["Ed25519", "ECDSA-P256-SHA256"]),
        "value": st.binary(min_size=1, max_size=100).map(lambda b: base64.b64encode(b).decode()),
    },
    optional={"keyId": st.from_regex(r"\A[A-Za-z0-9._:-]{1,64}\Z")},
).map(lambda kw: SignatureModel(**kw))


def _document(model: type[Any], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Keyword names are the wire aliases (pydantic's __init__ takes them); optional
    # members are left out rather than passed as None, as on the wire.
    required = {
        "schema": st.just(SCHEMA_ID),
        "campaign": _ID,
        "wave": _ID,
        "region": _REGION,
        "probe": _PROBE,
        **fields,
    }
    return st.fixed_dictionaries(required, optional={"signature": _SIGNATURE}).map(
        lambda kw: model(**kw)
    )


_DOCUMENTS = st.one_of(
    _document(
        MigrateDocument,
        operation=st.just("migrate"),
        endpoint=_endpoints(),
        trust=st.builds(
            MigrateTrust,
            keepExisting=st.booleans(),
            roots=st.lists(_ROOTS, min_size=1, max_size=10),
        ),
    ),
    _document(RestoreDocument, operation=st.just("restore")),
    _document(
        PruneDocument,
        operation=st.just("prune"),
        trust=st.builds(PruneTrust, remove=st.lists(_REFS, min_size=1, max_size=10)),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCUMENTS)
def test_every_model_instance_validates_against_the_schema_and_round_trips(model):
    wire = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    errors = [e.message for e in document_validator().iter_errors(wire)]
    assert errors == []
    assert DOCUMENT_ADAPTER.validate_python(wire) == model
    assert DOCUMENT_ADAPTER.validate_json(json.dumps(wire)) == model


def _valid_migrate() -> dict[str, Any]:
    root = load_catalog().roots[0]
    return {
        "schema": SCHEMA_ID,
        "operation": "migrate",
        "campaign": "c",
        "wave": "w",
        "region": "us-east-1",
        "endpoint": {"host": "a1-ats.iot.us-east-1.amazonaws.com", "port": 8883},
        "trust": {
            "keepExisting": True,
            "roots": [{"name": root.name, "sha256": root.sha256, "pem": root.pem}],
        },
        "probe": {"timeoutSeconds": 10, "attempts": 3},
    }


def _set(path: str, value: Any = None) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return mutate


_DELETE = object()


@pytest.mark.parametrize(
    "mutate",
    [
        _set("schema", "ca-migration/2"),
        _set("operation", "upgrade"),
        _set("campaign", ""),
        _set("campaign", "a b"),
        _set("campaign", "x" * 65),
        _set("wave", "canary\n"),
        _set("region", "US-EAST-1"),
        _set("endpoint/port", 1883),
        _set("endpoint/port", "8883"),
        _set("endpoint/alpn", ["x-amzn-mqtt-ca"]),
        _set("endpoint/host", "a1.iot.us-east-1.amazonaws.com"),
        _set("endpoint", _DELETE),
        _set("trust/roots", []),
        _set("trust/keepExisting", "yes"),
        _set("trust/remove", [{"name": "x", "sha256": "0" * 64}]),
        _set("trust/roots/0/sha256", "0" * 63),
        _set("trust/roots/0/pem", "not a pem"),
        _set("probe/attempts", 0),
        _set("probe/attempts", 11),
        _set("probe/attempts", 2.5),
        _set("probe/timeoutSeconds", 0),
        _set("probe", _DELETE),
        _set("signature", None),
        _set("signature", {"algorithm": "RSA", "value": "AAAA"}),
        _set("extra", 1),
    ],
)
def test_models_and_schema_refuse_the_same_invalid_documents(mutate):
    doc = _valid_migrate()
    assert list(document_validator().iter_errors(doc)) == []
    DOCUMENT_ADAPTER.validate_python(doc)
    mutate(doc)
    assert list(document_validator().iter_errors(doc)) != []
    with pytest.raises(ValidationError):
        DOCUMENT_ADAPTER.validate_python(doc)


@pytest.mark.parametrize(
    "arguments",
    [
        {
            "operation": "migrate",
            "endpoint": Endpoint("a1-ats.iot.us-east-1.amazonaws.com", 443),
            "roots": load_catalog().roots,
            "keep_existing": False,
        },
        {"operation": "restore"},
        {"operation": "prune", "remove": [RootRef("old-root", "ab" * 32)]},
    ],
    ids=["migrate", "restore", "prune"],
)
def test_every_built_document_validates_against_the_packaged_schema(arguments):
    built = build_document(region="us-east-1", campaign="c", wave="w", **arguments)
    assert list(document_validator().iter_errors(json.loads(built.text))) == []
    DOCUMENT_ADAPTER.validate_json(built.text)


@pytest.mark.parametrize(
    "mutate",
    [
        _set("probe/attempts", 2.0),
        _set("endpoint/port", 8883.0),
        _set("probe/timeoutSeconds", 2.5),
        _set("trust/keepExisting", value=False),
        _set("signature", {"algorithm": "Ed25519", "value": "AAAA"}),
    ],
)
def test_models_and_schema_accept_the_same_edge_cases(mutate):
    doc = _valid_migrate()
    mutate(doc)
    assert list(document_validator().iter_errors(doc)) == []
    DOCUMENT_ADAPTER.validate_python(doc)
    DOCUMENT_ADAPTER.validate_json(json.dumps(doc))


def test_port_443_needs_alpn_in_both():
    doc = _valid_migrate()
    doc["endpoint"]["port"] = 443
    assert list(document_validator().iter_errors(doc)) != []
    with pytest.raises(ValidationError):
        DOCUMENT_ADAPTER.validate_python(doc)
    doc["endpoint"]["alpn"] = ["x-amzn-mqtt-ca"]
    assert list(document_validator().iter_errors(doc)) == []
    DOCUMENT_ADAPTER.validate_python(doc)
