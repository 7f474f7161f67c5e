"""Certificates as principals in the sandbox's control plane, driven by boto3 and the AWS CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from infra.sandbox.decisions import DETACH_PROPAGATION_SECONDS
from infra.sandbox.engine import JobsEngine
from infra.sandbox.runtime import Sandbox
from job_documents.clock import ManualClock
from job_documents.x509_issuer import issue_ca, issue_leaf, new_key, subject_name

VENV_BIN = Path(sys.executable).parent
NOW = datetime.now(UTC)


def _ca(name: str = "Test device CA") -> tuple[x509.Certificate, object]:
    key = new_key("ec-p256")
    cert = issue_ca(
        subject_name(name),
        key,
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=30),
    )
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: object, name: str = "device") -> x509.Certificate:
    return issue_leaf(
        subject_name(name),
        new_key("ec-p256"),
        issuer=ca,
        issuer_key=ca_key,  # type: ignore[arg-type]
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=30),
        usages=("client",),
    )


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _self_signed(name: str = "self-signed device") -> str:
    cert, _ = _ca(name)
    return _pem(cert)


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# ------------------------------------------------------------------ creation
def test_create_keys_and_certificate_is_inactive_unless_set_as_active(iot):
    plain = iot.create_keys_and_certificate()
    active = iot.create_keys_and_certificate(setAsActive=True)
    statuses = [
        iot.describe_certificate(certificateId=r["certificateId"])["certificateDescription"][
            "status"
        ]
        for r in (plain, active)
    ]
    assert statuses == ["INACTIVE", "ACTIVE"]


def test_a_created_certificate_has_aws_id_arn_and_a_matching_key_pair(iot):
    created = iot.create_keys_and_certificate(setAsActive=True)
    cert = x509.load_pem_x509_certificate(created["certificatePem"].encode())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert created["certificateId"] == hashlib.sha256(der).hexdigest()
    assert created["certificateArn"] == (
        f"arn:aws:iot:us-east-1:123456789012:cert/{created['certificateId']}"
    )
    key = serialization.load_pem_private_key(created["keyPair"]["PrivateKey"].encode(), None)
    public = serialization.load_pem_public_key(created["keyPair"]["PublicKey"].encode())
    assert key.public_key() == public == cert.public_key()
    assert cert.subject.rfc4514_string() == "CN=AWS IoT Certificate"
    description = iot.describe_certificate(certificateId=created["certificateId"])[
        "certificateDescription"
    ]
    assert description["certificatePem"] == created["certificatePem"]
    assert description["certificateMode"] == "DEFAULT"
    assert description["ownedBy"] == "123456789012"
    assert "caCertificateId" in description


def test_register_certificate_without_ca_takes_any_certificate_in_sni_only_mode(iot):
    pem = _self_signed()
    registered = iot.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
    description = iot.describe_certificate(certificateId=registered["certificateId"])[
        "certificateDescription"
    ]
    assert (description["status"], description["certificateMode"]) == ("ACTIVE", "SNI_ONLY")
    assert "caCertificateId" not in description
    default = iot.register_certificate_without_ca(certificatePem=_self_signed("other"))
    assert (
        iot.describe_certificate(certificateId=default["certificateId"])["certificateDescription"][
            "status"
        ]
        == "INACTIVE"
    )


@pytest.mark.parametrize(
    ("call", "kwargs", "code", "status"),
    [
        (
            "register_certificate_without_ca",
            {"certificatePem": "not a pem"},
            "CertificateValidationException",
            400,
        ),
        (
            "register_certificate",
            {"certificatePem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            "CertificateValidationException",
            400,
        ),
        (
            "register_certificate_without_ca",
            {"certificatePem": "PEM", "status": "PENDING_TRANSFER"},
            "InvalidRequestException",
            400,
        ),
    ],
)
def test_an_unreadable_certificate_or_an_internal_status_is_refused(
    iot, call, kwargs, code, status
):
    if kwargs["certificatePem"] == "PEM":
        kwargs = kwargs | {"certificatePem": _self_signed()}
    with pytest.raises(ClientError) as exc:
        getattr(iot, call)(**kwargs)
    assert _code(exc) == (code, status)


def test_the_same_certificate_cannot_be_registered_twice(iot):
    pem = _self_signed()
    iot.register_certificate_without_ca(certificatePem=pem)
    with pytest.raises(ClientError) as exc:
        iot.register_certificate_without_ca(certificatePem=pem)
    assert _code(exc) == ("ResourceAlreadyExistsException", 409)


def test_register_certificate_needs_its_issuer_registered(sandbox: Sandbox, iot):
    ca, ca_key = _ca()
    other, _ = _ca("Another CA")
    device = _pem(_leaf(ca, ca_key))
    with pytest.raises(ClientError) as exc:
        iot.register_certificate(certificatePem=device)
    assert _code(exc) == ("CertificateValidationException", 400)
    with pytest.raises(ClientError) as exc:
        iot.register_certificate(certificatePem=device, caCertificatePem=_pem(ca))
    assert _code(exc) == ("CertificateValidationException", 400)
    ca_id = sandbox.engine.trust_ca_certificate(_pem(ca))
    sandbox.engine.trust_ca_certificate(_pem(other))
    with pytest.raises(ClientError) as exc:
        iot.register_certificate(certificatePem=device, caCertificatePem=_pem(other))
    assert _code(exc) == ("CertificateValidationException", 400)
    registered = iot.register_certificate(certificatePem=device, setAsActive=True)
    description = iot.describe_certificate(certificateId=registered["certificateId"])[
        "certificateDescription"
    ]
    assert (description["status"], description["certificateMode"]) == ("ACTIVE", "DEFAULT")
    assert description["caCertificateId"] == ca_id


def test_register_certificate_with_its_ca_pem_and_a_status(sandbox: Sandbox, iot):
    ca, ca_key = _ca()
    sandbox.engine.trust_ca_certificate(_pem(ca))
    registered = iot.register_certificate(
        certificatePem=_pem(_leaf(ca, ca_key)), caCertificatePem=_pem(ca), status="REVOKED"
    )
    description = iot.describe_certificate(certificateId=registered["certificateId"])[
        "certificateDescription"
    ]
    assert description["status"] == "REVOKED"


# ------------------------------------------------------------------- status
@pytest.mark.parametrize(
    ("start", "to", "outcome"),
    [
        ("ACTIVE", "INACTIVE", "INACTIVE"),
        ("INACTIVE", "ACTIVE", "ACTIVE"),
        ("ACTIVE", "REVOKED", "REVOKED"),
        ("INACTIVE", "REVOKED", "REVOKED"),
        ("ACTIVE", "ACTIVE", "ACTIVE"),
        ("REVOKED", "REVOKED", "REVOKED"),
        ("REVOKED", "ACTIVE", "CertificateStateException"),
        ("REVOKED", "INACTIVE", "CertificateStateException"),
        ("ACTIVE", "PENDING_TRANSFER", "InvalidRequestException"),
        ("ACTIVE", "PENDING_ACTIVATION", "InvalidRequestException"),
        ("INACTIVE", "REGISTER_INACTIVE", "InvalidRequestException"),
    ],
)
def test_update_certificate_follows_aws_transitions(iot, start, to, outcome):
    certificate_id = iot.register_certificate_without_ca(
        certificatePem=_self_signed(), status=start
    )["certificateId"]
    if outcome.endswith("Exception"):
        with pytest.raises(ClientError) as exc:
            iot.update_certificate(certificateId=certificate_id, newStatus=to)
        assert _code(exc)[0] == outcome
        outcome = start
    else:
        iot.update_certificate(certificateId=certificate_id, newStatus=to)
    description = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
    assert description["status"] == outcome


def test_a_status_change_raises_the_customer_version_and_last_modified(iot, sandbox: Sandbox):
    certificate_id = iot.register_certificate_without_ca(
        certificatePem=_self_signed(), status="ACTIVE"
    )["certificateId"]
    sandbox.engine.clock.advance(timedelta(seconds=30))  # type: ignore[attr-defined]
    iot.update_certificate(certificateId=certificate_id, newStatus="INACTIVE")
    description = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
    assert description["customerVersion"] == 2
    elapsed = description["lastModifiedDate"] - description["creationDate"]
    assert elapsed.total_seconds() == pytest.approx(30)


def test_an_unknown_certificate_is_resource_not_found(iot):
    with pytest.raises(ClientError) as exc:
        iot.describe_certificate(certificateId="a" * 64)
    assert _code(exc) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        iot.update_certificate(certificateId="b" * 64, newStatus="ACTIVE")
    assert _code(exc) == ("ResourceNotFoundException", 404)


# ------------------------------------------------------------------- delete
def test_delete_certificate_is_refused_while_active_or_attached(iot):
    created = iot.create_keys_and_certificate(setAsActive=True)
    certificate_id, arn = created["certificateId"], created["certificateArn"]
    iot.create_thing(thingName="thing-1")
    iot.attach_thing_principal(thingName="thing-1", principal=arn)
    with pytest.raises(ClientError) as exc:
        iot.delete_certificate(certificateId=certificate_id)
    assert _code(exc) == ("CertificateStateException", 406)
    iot.update_certificate(certificateId=certificate_id, newStatus="INACTIVE")
    with pytest.raises(ClientError) as exc:
        iot.delete_certificate(certificateId=certificate_id, forceDelete=True)
    assert _code(exc) == ("DeleteConflictException", 409)
    iot.detach_thing_principal(thingName="thing-1", principal=arn)
    iot.delete_certificate(certificateId=certificate_id)
    with pytest.raises(ClientError) as exc:
        iot.describe_certificate(certificateId=certificate_id)
    assert _code(exc) == ("ResourceNotFoundException", 404)


# -------------------------------------------------------------- attachments
def test_attach_list_and_detach_thing_principals(iot):
    first = iot.create_keys_and_certificate()["certificateArn"]
    second = iot.create_keys_and_certificate()["certificateArn"]
    for name in ("thing-a", "thing-b"):
        iot.create_thing(thingName=name)
    iot.attach_thing_principal(thingName="thing-a", principal=first)
    iot.attach_thing_principal(thingName="thing-a", principal=second)
    iot.attach_thing_principal(thingName="thing-a", principal=first)  # idempotent
    iot.attach_thing_principal(thingName="thing-b", principal=first)
    page = iot.list_thing_principals(thingName="thing-a", maxResults=1)
    rest = iot.list_thing_principals(thingName="thing-a", nextToken=page["nextToken"])
    assert page["principals"] + rest["principals"] == [first, second]
    assert "nextToken" not in rest
    assert iot.list_principal_things(principal=first)["things"] == ["thing-a", "thing-b"]
    v2 = iot.list_thing_principals_v2(thingName="thing-b")["thingPrincipalObjects"]
    assert v2 == [{"principal": first, "thingPrincipalType": "NON_EXCLUSIVE_THING"}]
    iot.detach_thing_principal(thingName="thing-a", principal=first)
    iot.detach_thing_principal(thingName="thing-a", principal=first)  # idempotent
    assert iot.list_thing_principals(thingName="thing-a")["principals"] == [second]
    assert iot.list_principal_things(principal=first)["things"] == ["thing-b"]


def test_an_exclusive_attachment_allows_one_thing(iot):
    arn = iot.create_keys_and_certificate()["certificateArn"]
    for name in ("thing-a", "thing-b"):
        iot.create_thing(thingName=name)
    iot.attach_thing_principal(
        thingName="thing-a", principal=arn, thingPrincipalType="EXCLUSIVE_THING"
    )
    with pytest.raises(ClientError) as exc:
        iot.attach_thing_principal(thingName="thing-b", principal=arn)
    assert _code(exc) == ("InvalidRequestException", 400)
    assert iot.list_principal_things(principal=arn)["things"] == ["thing-a"]


@pytest.mark.parametrize(
    ("thing", "principal", "code"),
    [
        ("ghost", "CERT", "ResourceNotFoundException"),
        (
            "thing-a",
            "arn:aws:iot:us-east-1:123456789012:cert/" + "c" * 64,
            "ResourceNotFoundException",
        ),
        ("thing-a", "arn:aws:iam::123456789012:role/device", "InvalidRequestException"),
        ("thing-a", "us-east-1:11111111-2222-3333-4444-555555555555", "InvalidRequestException"),
    ],
)
def test_attach_thing_principal_errors(iot, thing, principal, code):
    iot.create_thing(thingName="thing-a")
    if principal == "CERT":
        principal = iot.create_keys_and_certificate()["certificateArn"]
    with pytest.raises(ClientError) as exc:
        iot.attach_thing_principal(thingName=thing, principal=principal)
    assert _code(exc)[0] == code


def test_list_principal_things_of_an_unknown_certificate_is_not_found(iot):
    with pytest.raises(ClientError) as exc:
        iot.list_principal_things(principal="arn:aws:iot:us-east-1:123456789012:cert/" + "d" * 64)
    assert _code(exc) == ("ResourceNotFoundException", 404)


def test_a_thing_with_a_principal_attached_cannot_be_deleted_until_detached(iot, sandbox):
    """AWS: `InvalidRequestException: Cannot delete. Thing <name> is still attached to one
    or more principals`; nothing changes. DetachThingPrincipal "might take several seconds
    to propagate": DeleteThing is refused until it has, then the delete goes."""
    arn = iot.create_keys_and_certificate()["certificateArn"]
    iot.create_thing(thingName="thing-a")
    iot.attach_thing_principal(thingName="thing-a", principal=arn)
    with pytest.raises(ClientError) as refused:
        iot.delete_thing(thingName="thing-a")
    assert _code(refused) == ("InvalidRequestException", 400)
    assert refused.value.response["Error"]["Message"] == (
        "Cannot delete. Thing thing-a is still attached to one or more principals"
    )
    assert iot.describe_thing(thingName="thing-a")["thingName"] == "thing-a"
    assert iot.list_principal_things(principal=arn)["things"] == ["thing-a"]
    iot.detach_thing_principal(thingName="thing-a", principal=arn)
    assert iot.list_principal_things(principal=arn)["things"] == []
    sandbox.engine.advance(DETACH_PROPAGATION_SECONDS - 1)
    with pytest.raises(iot.exceptions.InvalidRequestException, match="still attached"):
        iot.delete_thing(thingName="thing-a")
    sandbox.engine.advance(1)
    iot.delete_thing(thingName="thing-a")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName="thing-a")


def test_deleting_a_thing_that_does_not_exist_succeeds(iot):
    """AWS: DeleteThing "returns successfully with no error if ... you specify a thing that
    doesn't exist"."""
    iot.delete_thing(thingName="never-created")
    iot.delete_thing(thingName="never-created", expectedVersion=3)


# ------------------------------------------------------------------ listing
def test_list_certificates_pages_with_markers_newest_first_unless_ascending(iot, sandbox):
    ids = []
    for _ in range(5):
        ids.append(
            iot.register_certificate_without_ca(certificatePem=_self_signed())["certificateId"]
        )
        sandbox.engine.clock.advance(timedelta(seconds=1))
    seen: list[str] = []
    marker = None
    while True:
        page = iot.list_certificates(pageSize=2, **({"marker": marker} if marker else {}))
        seen += [c["certificateId"] for c in page["certificates"]]
        marker = page.get("nextMarker")
        if marker is None:
            break
    assert seen == ids[::-1]
    ascending = iot.list_certificates(ascendingOrder=True)["certificates"]
    assert [c["certificateId"] for c in ascending] == ids
    assert {c["certificateMode"] for c in ascending} == {"SNI_ONLY"}
    with pytest.raises(ClientError) as exc:
        iot.list_certificates(marker="Zm9v")
    assert _code(exc) == ("InvalidRequestException", 400)


# -------------------------------------------------------------- persistence
def test_certificates_and_attachments_survive_export_and_import(iot, sandbox: Sandbox):
    created = iot.create_keys_and_certificate(setAsActive=True)
    iot.create_thing(thingName="thing-a")
    iot.attach_thing_principal(thingName="thing-a", principal=created["certificateArn"])
    iot.update_certificate(certificateId=created["certificateId"], newStatus="INACTIVE")
    saved = json.loads(json.dumps(sandbox.engine.export_state()))
    restored = JobsEngine(clock=ManualClock(NOW))
    restored.import_state(saved)
    params = {"certificateId": created["certificateId"]}
    assert restored.describe_certificate(params) == sandbox.engine.describe_certificate(params)
    assert restored.list_thing_principals({"thingName": "thing-a"})["principals"] == [
        created["certificateArn"]
    ]


# ------------------------------------------------------------------ AWS CLI
def _aws(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "AWS_ACCESS_KEY_ID": "sandbox",
        "AWS_SECRET_ACCESS_KEY": "sandbox",
        "AWS_DEFAULT_REGION": sandbox.region,
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    return subprocess.run(
        [str(VENV_BIN / "aws"), "iot", *args, "--endpoint-url", sandbox.control_plane_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_aws_cli_creates_attaches_revokes_and_sees_the_errors(sandbox: Sandbox, tmp_path):
    created = _aws(
        sandbox,
        "create-keys-and-certificate",
        "--set-as-active",
        "--certificate-pem-outfile",
        str(tmp_path / "cert.pem"),
        "--private-key-outfile",
        str(tmp_path / "key.pem"),
    )
    assert created.returncode == 0, created.stderr
    answer = json.loads(created.stdout)
    assert (tmp_path / "cert.pem").read_text() == answer["certificatePem"]
    assert _aws(sandbox, "create-thing", "--thing-name", "cli-thing").returncode == 0
    attached = _aws(
        sandbox,
        "attach-thing-principal",
        "--thing-name",
        "cli-thing",
        "--principal",
        answer["certificateArn"],
    )
    assert attached.returncode == 0, attached.stderr
    listed = _aws(sandbox, "list-thing-principals", "--thing-name", "cli-thing")
    assert json.loads(listed.stdout)["principals"] == [answer["certificateArn"]]
    busy = _aws(sandbox, "delete-certificate", "--certificate-id", answer["certificateId"])
    assert busy.returncode != 0
    assert "CertificateStateException" in busy.stderr
    revoked = _aws(
        sandbox,
        "update-certificate",
        "--certificate-id",
        answer["certificateId"],
        "--new-status",
        "REVOKED",
    )
    assert revoked.returncode == 0, revoked.stderr
    again = _aws(
        sandbox,
        "update-certificate",
        "--certificate-id",
        answer["certificateId"],
        "--new-status",
        "ACTIVE",
    )
    assert again.returncode != 0
    assert "CertificateStateException" in again.stderr
    described = _aws(sandbox, "describe-certificate", "--certificate-id", answer["certificateId"])
    assert json.loads(described.stdout)["certificateDescription"]["status"] == "REVOKED"
    own = _self_signed("cli device")
    registered = _aws(
        sandbox,
        "register-certificate-without-ca",
        "--certificate-pem",
        own,
        "--status",
        "ACTIVE",
    )
    assert registered.returncode == 0, registered.stderr
    own_arn = json.loads(registered.stdout)["certificateArn"]
    for verb in ("attach-thing-principal", "detach-thing-principal"):
        done = _aws(sandbox, verb, "--thing-name", "cli-thing", "--principal", own_arn)
        assert done.returncode == 0, done.stderr
    things = _aws(sandbox, "list-principal-things", "--principal", answer["certificateArn"])
    assert json.loads(things.stdout)["things"] == ["cli-thing"]
    attached_thing = _aws(sandbox, "delete-thing", "--thing-name", "cli-thing")
    assert attached_thing.returncode != 0
    assert (
        "An error occurred (InvalidRequestException) when calling the DeleteThing operation: "
        "Cannot delete. Thing cli-thing is still attached to one or more principals"
    ) in attached_thing.stderr
    detached = _aws(
        sandbox,
        "detach-thing-principal",
        "--thing-name",
        "cli-thing",
        "--principal",
        answer["certificateArn"],
    )
    assert detached.returncode == 0, detached.stderr
    sandbox.engine.advance(DETACH_PROPAGATION_SECONDS)
    deleted = _aws(sandbox, "delete-thing", "--thing-name", "cli-thing")
    assert deleted.returncode == 0, deleted.stderr
    twice = _aws(sandbox, "register-certificate-without-ca", "--certificate-pem", own)
    assert twice.returncode != 0
    assert "ResourceAlreadyExistsException" in twice.stderr
    listed_all = _aws(sandbox, "list-certificates")
    assert {c["certificateId"] for c in json.loads(listed_all.stdout)["certificates"]} == {
        answer["certificateId"],
        json.loads(registered.stdout)["certificateId"],
    }
