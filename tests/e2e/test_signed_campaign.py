"""A campaign signed with an AWS KMS key, end to end: moto's KMS in server mode over HTTP beside
the sandbox (found by boto3 through AWS_ENDPOINT_URL_KMS, as an operator would point it), the CLI
planning, starting and rolling back against the sandbox, and the device handler's own validator
verifying every document the sandbox hands out with the public key pinned from GetPublicKey."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from device_handler.errors import DocumentRejected
from device_handler.validation import ValidationSettings, make_validator
from orchestrator.store.sqlite import SqliteStateStore

from .campaign_kit import campaign_text, cli, in_process

pytestmark = pytest.mark.e2e


def _pin(kms: Any, key: str, path: Path) -> Path:
    der = kms.get_public_key(KeyId=key)["PublicKey"]
    path.write_bytes(
        serialization.load_der_public_key(der).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_a_kms_signed_campaign_creates_jobs_whose_documents_devices_verify(
    sandbox: Any, kms_server: Any, tmp_path: Path
) -> None:
    key = kms_server.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    kms_server.create_alias(AliasName="alias/ca-migrate-docs", TargetKeyId=key["KeyId"])
    other = kms_server.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    device = make_validator(
        ValidationSettings(
            region="us-east-1", verify_key=_pin(kms_server, key["Arn"], tmp_path / "k.pem")
        )
    )
    stranger = make_validator(
        ValidationSettings(
            region="us-east-1", verify_key=_pin(kms_server, other["Arn"], tmp_path / "o.pem")
        )
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        campaign_text() + "signing: {kms_key: alias/ca-migrate-docs, key_id: ops-2026}\n"
    )
    state = tmp_path / "state.sqlite"

    planned = in_process(sandbox, state, "plan", "--output", "json", str(path))
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["signing"] == {
        "signed": True,
        "key_id": "ops-2026",
        "source": "kms",
        "key": "alias/ca-migrate-docs",
    }
    text_plan = in_process(sandbox, state, "plan", str(path))
    assert "documents are signed: key id ops-2026, kms alias/ca-migrate-docs" in text_plan.stdout

    started = cli(sandbox, state, "start", str(path))  # the CLI as its own process
    assert started.returncode == 0, started.stderr
    iot = sandbox.iot_client()
    created = [job["jobId"] for job in iot.list_jobs()["jobs"]]
    assert created == [SqliteStateStore(state).load("e2e").state.wave("canary").job_id]
    for job_id in created:
        document = iot.get_job_document(jobId=job_id)["document"]
        assert json.loads(document)["signature"]["keyId"] == "ops-2026"
        assert device(document).operation == "migrate"
        with pytest.raises(DocumentRejected) as caught:
            stranger(document)
        assert caught.value.code == "signature-invalid"

    rolled = in_process(sandbox, state, "rollback", "e2e", "--wave", "canary")
    assert rolled.returncode == 0, rolled.stderr
    restore_id = SqliteStateStore(state).load("e2e").state.wave("canary").restore_job_id
    assert restore_id
    assert device(iot.get_job_document(jobId=restore_id)["document"]).operation == "restore"


def test_a_kms_key_that_cannot_sign_stops_plan_and_start_with_exit_2(
    sandbox: Any, kms_server: Any, tmp_path: Path
) -> None:
    rsa = kms_server.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    path = tmp_path / "c.yaml"
    path.write_text(campaign_text() + f"signing: {{kms_key: {rsa['Arn']}, key_id: ops}}\n")
    state = tmp_path / "state.sqlite"
    for command in ("plan", "start"):
        result = in_process(sandbox, state, command, str(path))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "is RSA_2048, not ECC_NIST_P256" in result.stderr
        assert "Traceback" not in result.stderr
    assert sandbox.iot_client().list_jobs()["jobs"] == []


def test_document_build_signs_with_a_kms_key(kms_server: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    key = kms_server.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    out = tmp_path / "doc.json"
    result = CliRunner().invoke(
        app,
        [
            "document", "build", "--region", "us-east-1",
            "--endpoint", "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com",
            "--ca", "amazon-root-ca-1", "--kms-key", key["Arn"], "--key-id", "ops",
            "--output-file", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    device = make_validator(
        ValidationSettings(
            region="us-east-1", verify_key=_pin(kms_server, key["Arn"], tmp_path / "k.pem")
        )
    )
    assert device(out.read_text()).operation == "migrate"
    both = CliRunner().invoke(
        app,
        [
            "document", "build", "--region", "us-east-1",
            "--endpoint", "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com",
            "--kms-key", key["Arn"], "--sign-key", str(tmp_path / "x.pem"),
        ],
    )  # fmt: skip
    assert both.exit_code == 2
    missing = CliRunner().invoke(
        app,
        [
            "document", "build", "--region", "us-east-1",
            "--endpoint", "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com",
            "--kms-key", "alias/nope",
        ],
    )  # fmt: skip
    assert missing.exit_code == 2
    assert "NotFoundException" in missing.output


def test_an_unusable_key_file_stops_plan_and_start_with_exit_2_without_echoing_it(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "p384.key").write_bytes(pem)
    path = tmp_path / "c.yaml"
    path.write_text(campaign_text() + "signing: {key_file: p384.key, key_id: ops}\n")
    state = tmp_path / "state.sqlite"
    body = pem.decode().splitlines()[1]
    for command in ("plan", "start"):
        result = in_process(sandbox, state, command, str(path))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "P-256" in result.stderr
        assert "Traceback" not in result.stderr
        assert body not in result.stdout + result.stderr
    assert sandbox.iot_client().list_jobs()["jobs"] == []
