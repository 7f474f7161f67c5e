"""Adversarial review of the device-side validator: inputs that must be refused cleanly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from job_documents import (
    Catalog,
    DocumentInvalid,
    ValidationPolicy,
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
