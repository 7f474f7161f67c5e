"""The connect rule in process: which certificate and client id the engine admits.

The same rule over real TLS is in test_connect_rule.py; here the engine's
`authorize_connection` is asked directly, with certificates registered through boto3.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from infra.sandbox.decisions import DETACH_PROPAGATION_SECONDS
from infra.sandbox.engine import ConnectionRefusedByPolicyError, ConnectPolicy
from infra.sandbox.runtime import Sandbox
from job_documents.x509_issuer import issue_ca, new_key, subject_name

NOW = datetime.now(UTC)


def _self_signed(name: str) -> str:
    key = new_key("ec-p256")
    cert = issue_ca(
        subject_name(name),
        key,
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=30),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _der(pem: str) -> bytes:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("admitted", None),
        ("unregistered", "unregistered"),
        ("inactive", "inactive"),
        ("revoked", "revoked"),
        ("unattached", "unattached"),
        ("detached", "unattached"),
        ("other thing's name", "client-id"),
        ("attached elsewhere", "client-id"),
        ("detached and thing deleted", "unattached"),
    ],
)
def test_the_engine_admits_only_an_active_certificate_attached_to_the_client_ids_thing(
    sandbox: Sandbox, iot, case, reason
):
    for name in ("thing-a", "thing-b"):
        iot.create_thing(thingName=name)
    pem = _self_signed("connect rule")
    if case != "unregistered":
        registered = iot.register_certificate_without_ca(
            certificatePem=pem, status="INACTIVE" if case == "inactive" else "ACTIVE"
        )
        arn = registered["certificateArn"]
        if case != "unattached":
            target = "thing-b" if case == "attached elsewhere" else "thing-a"
            iot.attach_thing_principal(thingName=target, principal=arn)
        if case == "detached":
            iot.detach_thing_principal(thingName="thing-a", principal=arn)
        if case == "revoked":
            iot.update_certificate(certificateId=registered["certificateId"], newStatus="REVOKED")
        if case == "detached and thing deleted":
            iot.detach_thing_principal(thingName="thing-a", principal=arn)
            sandbox.engine.advance(DETACH_PROPAGATION_SECONDS)
            iot.delete_thing(thingName="thing-a")
    client_id = "thing-b" if case == "other thing's name" else "thing-a"
    if reason is None:
        assert sandbox.engine.authorize_connection(_der(pem), client_id) == "thing-a"
        return
    with pytest.raises(ConnectionRefusedByPolicyError) as refused:
        sandbox.engine.authorize_connection(_der(pem), client_id)
    assert refused.value.reason == reason
    # The message (logged by the MQTT front) names the certificate, never its PEM.
    assert hashlib.sha256(_der(pem)).hexdigest() in refused.value.message
    assert "BEGIN CERTIFICATE" not in refused.value.message
    if reason == "client-id":
        assert repr(client_id) in refused.value.message


def test_any_client_id_needs_a_certificate_attached_to_exactly_one_thing(sandbox: Sandbox, iot):
    pem = _self_signed("any client id")
    registered = iot.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
    for name in ("thing-a", "thing-b"):
        iot.create_thing(thingName=name)
    iot.attach_thing_principal(thingName="thing-a", principal=registered["certificateArn"])
    engine = sandbox.engine
    engine.set_connect_policy(ConnectPolicy.ANY_CLIENT_ID)
    assert engine.authorize_connection(_der(pem), "random-id") == "thing-a"
    iot.attach_thing_principal(thingName="thing-b", principal=registered["certificateArn"])
    with pytest.raises(ConnectionRefusedByPolicyError) as refused:
        engine.authorize_connection(_der(pem), "thing-a")
    assert refused.value.reason == "things"
    message = refused.value.message
    assert registered["certificateId"] in message
    assert "attached to 2 things" in message
    assert "things; the any-client-id connect policy needs exactly one (detach the others" in (
        message
    )
    assert "or connect with --connect-policy thing-name and the thing name as client id)" in (
        message
    )


def test_a_certificate_attached_to_two_things_connects_as_either_by_client_id(
    sandbox: Sandbox, iot
):
    pem = _self_signed("shared")
    arn = iot.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")["certificateArn"]
    for name in ("thing-a", "thing-b"):
        iot.create_thing(thingName=name)
        iot.attach_thing_principal(thingName=name, principal=arn)
    assert [sandbox.engine.authorize_connection(_der(pem), n) for n in ("thing-a", "thing-b")] == [
        "thing-a",
        "thing-b",
    ]
