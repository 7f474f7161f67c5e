"""`ca-migrate demo --signed`: documents signed with a demo key every device pins, to COMPLETED.

The sandbox, the boto3 adapter and the devices' transaction are real; the assertions read
the jobs' documents from the sandbox and verify them with the public key the devices pin.
A fleet that pins the key refuses an unsigned campaign: the pin is not decoration.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from job_documents import load_verify_key
from job_documents._signature import signature_problem
from orchestrator.cli import app
from orchestrator.demo.runner import CampaignRun, RunSettings, run_campaign
from orchestrator.demo.scenarios import CAMPAIGN_FILE, demo_fleet, scenario
from orchestrator.demo.signed import DEMO_KEY_ID, make_demo_signing, with_signing
from orchestrator.errors import SpecError

pytestmark = pytest.mark.e2e

DEVICES = 50


def _jobs(run: CampaignRun) -> dict[str, dict[str, Any]]:
    engine = run.sandbox.engine
    job_ids = sorted({h["jobId"] for h in engine.execution_history()})
    return {j: json.loads(engine.get_job_document({"jobId": j})["document"]) for j in job_ids}


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "two-workers"])
def test_signed_demo_completes_and_every_job_document_verifies_with_the_pinned_key(
    workers: int,
) -> None:
    seen: dict[str, Any] = {}

    def inspect(run: CampaignRun) -> None:
        public = run.work_dir / "signing" / "demo-signing.pub"
        seen["key"] = load_verify_key(public)
        seen["documents"] = _jobs(run)
        seen["statuses"] = {h["status"] for h in run.sandbox.engine.execution_history()}
        seen["key_mode"] = (run.work_dir / "signing" / "demo-signing.key").stat().st_mode & 0o777

    result = run_campaign(
        CAMPAIGN_FILE.read_text(),
        demo_fleet(scenario("happy"), DEVICES),
        RunSettings(signed=True, workers=workers),
        source=str(CAMPAIGN_FILE),
        inspect=inspect,
    )
    assert result.status == "COMPLETED", result.reason
    assert result.extra["signed"] == {"key_id": DEMO_KEY_ID, "algorithm": "Ed25519"}
    assert len(seen["documents"]) == 5  # one migrate job per wave
    for document in seen["documents"].values():
        assert document["signature"]["keyId"] == DEMO_KEY_ID
        assert signature_problem(document, seen["key"]) is None
    assert seen["statuses"] == {"SUCCEEDED"}
    assert seen["key_mode"] == 0o600


def test_devices_pinning_the_demo_key_reject_an_unsigned_campaign(tmp_path: Path) -> None:
    pinned = make_demo_signing(tmp_path / "keys")
    fleet = replace(demo_fleet(scenario("happy"), DEVICES), signing_public_key=pinned.public_key)
    statuses: dict[str, str] = {}

    def inspect(run: CampaignRun) -> None:
        statuses.update(
            {h["thingName"]: h["status"] for h in run.sandbox.engine.execution_history()}
        )

    result = run_campaign(
        CAMPAIGN_FILE.read_text(),
        fleet,
        RunSettings(),  # not signed
        source=str(CAMPAIGN_FILE),
        inspect=inspect,
    )
    assert result.status == "HALTED"
    assert [w["phase"] for w in result.waves][:2] == ["HALTED", "PENDING"]
    assert statuses
    assert set(statuses.values()) <= {"REJECTED", "QUEUED", "CANCELED"}
    assert "REJECTED" in statuses.values()


def test_the_cli_signed_demo_exits_0_and_says_it_signed(tmp_path: Path) -> None:
    args = ["demo", "--signed", "--devices", str(DEVICES), "--time-scale", "0", "-o", "json"]
    ran = CliRunner().invoke(app, [*args, "--report", str(tmp_path / "r.html")])
    structlog.reset_defaults()
    assert ran.exit_code == 0, ran.output
    body = json.loads(ran.stdout.splitlines()[-1])
    assert body["status"] == "COMPLETED"
    assert body["as_expected"] is True
    assert body["signed"]["key_id"] == DEMO_KEY_ID
    assert "PRIVATE KEY" not in ran.stdout + ran.stderr


def test_a_campaign_that_signs_already_is_not_given_the_demo_key(tmp_path: Path) -> None:
    keys = make_demo_signing(tmp_path / "keys")
    text = CAMPAIGN_FILE.read_text() + "signing: {key_id: ops, kms_key: alias/ops}\n"
    with pytest.raises(SpecError, match="already signs its documents"):
        with_signing(text, "c.yaml", keys)
    signed = with_signing(CAMPAIGN_FILE.read_text(), "c.yaml", keys)
    assert signed.endswith(f'"key_file": "{keys.key_file}"}}\n')
    assert not os.access(keys.key_file, os.X_OK)
