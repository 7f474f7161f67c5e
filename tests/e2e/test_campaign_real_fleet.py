"""Every real-fleet feature in one campaign: signing, port 443, Device Client, two regions.

The campaign signs its documents with a key file (ECDSA P-256, generated here), moves
devices to the ATS endpoint on port 443 (ALPN x-amzn-mqtt-ca), runs a wave of AWS IoT
Device Client devices in each region and a wave of agents in each region. `plan` and
`start` run against a two-region sandbox with its MQTT listeners (the endpoint
pre-flight included); the run to COMPLETED is the rehearsal machinery (`ca-migrate
rehearse`): the sandbox serving both regions, the real boto3 adapter per region, agents
running the real transaction and Device Client devices running the real handler script,
whose probe is a real TLS handshake (with the ALPN, on the ATS endpoint's 443 listener)
and MQTT CONNECT. Every device pins the campaign's public key. Assertions read the
sandbox's jobs and the devices' files.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from device_handler.trust import EndpointConfig
from infra.sandbox import runtime
from infra.sandbox.fleet import load_fleet_spec
from infra.sandbox.fleet.device_client import LAYOUT
from job_documents import load_verify_key
from job_documents._signature import signature_problem
from orchestrator.cli import app
from orchestrator.demo.runner import CampaignRun, RunSettings, run_campaign
from orchestrator.demo.scenarios import demo_fleet, scenario
from tests.machine import NEEDS_MOSQUITTO

from .campaign_kit import in_process

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.mqtt,
    NEEDS_MOSQUITTO,
]

REGIONS = ("us-east-1", "eu-west-1")
KEY_ID = "ops-2026"
GATE = "gate: {min_success_rate: 0.8, min_completed_fraction: 1.0, confidence: 0.6}"
# The Device Client waves come first in each region: a device that did not pin the key,
# or could not reach 443, shows in the first wave's gate.
CAMPAIGN = f"""\
name: real-fleet
region: us-east-1
endpoint: auto
endpoint_port: 443
catalog: CATALOG
trust: {{add: [amazon-root-ca-1, amazon-root-ca-3]}}
signing: {{key_file: keys/ops.key, key_id: {KEY_ID}}}
device_client: {{handler_path: {LAYOUT["handler_path"]}, device_toml: {LAYOUT["device_toml"]}, \
config_path: {LAYOUT["config_path"]}}}
halt: {{max_failure_rate: 0.1, min_executed: 2}}
waves:
  - name: us-gateways
    thing_groups: [us-gateways]
    device_runtime: device-client
    {GATE}
  - name: us-sensors
    thing_groups: [us-sensors]
    {GATE}
  - name: eu-gateways
    region: eu-west-1
    thing_groups: [eu-gateways]
    device_runtime: device-client
    {GATE}
  - name: eu-sensors
    region: eu-west-1
    thing_groups: [eu-sensors]
    {GATE}
"""
GROUPS = {
    "us-east-1": [("us-gateways", 2, "device-client"), ("us-sensors", 4, "agent")],
    "eu-west-1": [("eu-gateways", 2, "device-client"), ("eu-sensors", 4, "agent")],
}
FLEET = "groups:\n" + "".join(
    f"  - {{name: {name}, size: {size}, runtime: {kind}}}\n"
    for groups in GROUPS.values()
    for name, size, kind in groups
)


def _ats(region: str) -> str:
    return f"a1sandbox2demo-ats.iot.{region}.amazonaws.com"


def _key_pair(directory: Path, name: str) -> Path:
    """A P-256 private key file `name`.key (0600) and its public key `name`.pub."""
    directory.mkdir(exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    private = directory / f"{name}.key"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public = directory / f"{name}.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public


def _device(fleet: Any, thing: str) -> dict[str, Any]:
    """What a device's files say: its endpoint; for Device Client, its config and its pin."""
    found: dict[str, Any] = {
        "endpoint": EndpointConfig.parse(fleet.paths(thing).endpoint_file.read_bytes()),
        "device_client": thing in fleet.device_client_things(),
    }
    if found["device_client"]:
        client = fleet.device_client(thing)
        config = json.loads(client.inside(LAYOUT["config_path"]).read_text())
        toml = tomllib.loads(client.inside(LAYOUT["device_toml"]).read_text())
        pinned = toml.get("signing_public_key")
        found.update(dc_endpoint=config["endpoint"], pinned=pinned and Path(pinned).read_bytes())
    return found


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The operator's files: the campaign (key file relative to it), the fleet, the keys."""
    public = _key_pair(tmp_path / "keys", "ops")
    campaign = tmp_path / "campaign.yaml"
    campaign.write_text(CAMPAIGN.replace("CATALOG", "pki/ats/catalog.json"))
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    return {"campaign": campaign, "fleet": fleet, "public": public}


def test_plan_on_two_regions_shows_both_endpoints_the_handler_document_key_and_port_then_start(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with runtime.Sandbox(
        mqtt=True, region=REGIONS[0], regions=REGIONS[1:], work_dir=tmp_path / "sandbox"
    ) as sandbox:
        for region, groups in GROUPS.items():
            sandbox.provision(
                sum(size for _, size, _ in groups),
                [(name, size) for name, size, _ in groups],
                prefix=f"{region}-device",
                region=region,
            )
        assert sandbox.pki is not None
        campaign = files["campaign"]
        campaign.write_text(CAMPAIGN.replace("CATALOG", str(sandbox.pki.ats_catalog)))
        state = tmp_path / "state.sqlite"
        planned = in_process(sandbox, state, "plan", "-o", "json", str(campaign))
        # `start` as the operator runs it: the pre-flight again, then the first wave's job
        started = in_process(sandbox, state, "start", str(campaign))
        assert started.returncode == 0, started.stderr
        jobs = {r: sandbox.iot_client(region=r).list_jobs()["jobs"] for r in REGIONS}
        assert [j["jobId"].split("-m")[0] for j in jobs["us-east-1"]] == ["real-fleet-us-gateways"]
        assert jobs["eu-west-1"] == []
        job_id = jobs["us-east-1"][0]["jobId"]
        wrapped = json.loads(
            sandbox.iot_client(region="us-east-1").get_job_document(jobId=job_id)["document"]
        )
    embedded = json.loads(wrapped["steps"][0]["action"]["input"]["args"][-1])
    assert signature_problem(embedded, load_verify_key(files["public"])) is None
    assert embedded["endpoint"]["port"] == 443
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["endpoints"] == {region: _ats(region) for region in REGIONS}
    assert plan["endpoint_port"] == 443
    assert plan["signing"] == {
        "signed": True,
        "key_id": KEY_ID,
        "source": "key-file",
        "key": str(tmp_path / "keys" / "ops.key"),
    }
    # the pre-flight ran: a TLS handshake with each region's ATS endpoint, on 443 with the ALPN
    assert plan["endpoint_check"]["passed"] is True
    assert {(e["host"], e["port"], e["alpn"]) for e in plan["endpoint_check"]["endpoints"]} == {
        (_ats(region), 443, "x-amzn-mqtt-ca") for region in REGIONS
    }
    waves = {w["wave"]: w for w in plan["waves"]}
    assert {w: waves[w]["region"] for w in waves} == {
        "us-gateways": "us-east-1",
        "us-sensors": "us-east-1",
        "eu-gateways": "eu-west-1",
        "eu-sensors": "eu-west-1",
    }
    for name in ("us-gateways", "eu-gateways"):
        assert waves[name]["device_runtime"] == "device-client"
        action = waves[name]["job_document"]["steps"][0]["action"]
        assert action["type"] == "runHandler"
        assert action["input"]["handler"] == Path(LAYOUT["handler_path"]).name
    for name in ("us-sensors", "eu-sensors"):
        assert waves[name]["device_runtime"] == "agent"
        assert "job_document" not in waves[name]


def test_the_combined_campaign_completes_with_every_device_on_its_regions_ats_443(
    files: dict[str, Path],
) -> None:
    seen: dict[str, Any] = {}

    def inspect(run: CampaignRun) -> None:
        fleets: Any = run.fleet.fleets  # type: ignore[attr-defined]
        seen["documents"] = {}
        seen["history"] = {}
        for region, engine in run.sandbox.engines.items():
            jobs = sorted({h["jobId"] for h in engine.execution_history()})
            seen["documents"][region] = {
                j: json.loads(engine.get_job_document({"jobId": j})["document"]) for j in jobs
            }
            seen["history"][region] = engine.execution_history()
        seen["devices"] = {
            region: {thing: _device(fleet, thing) for thing in fleet.things()}
            for region, fleet in fleets.items()
        }

    result = run_campaign(
        files["campaign"].read_text(),
        load_fleet_spec(files["fleet"]),
        RunSettings(),
        source=str(files["campaign"]),
        inspect=inspect,
        base_dir=files["campaign"].parent,
    )
    assert result.status == "COMPLETED", result.reason
    assert [w["phase"] for w in result.waves] == ["PASSED"] * 4
    key = load_verify_key(files["public"])
    for region in REGIONS:
        documents = seen["documents"][region]
        assert len(documents) == 2  # a Device Client wave and an agent wave per region
        for job_document in documents.values():
            document = job_document
            if "steps" in job_document:  # Device Client's runHandler document wraps ours
                document = json.loads(job_document["steps"][0]["action"]["input"]["args"][-1])
            assert document["signature"]["keyId"] == KEY_ID
            assert signature_problem(document, key) is None
            assert document["endpoint"] == {
                "host": _ats(region),
                "port": 443,
                "alpn": ["x-amzn-mqtt-ca"],
            }
        assert {h["status"] for h in seen["history"][region]} == {"SUCCEEDED"}
        devices = seen["devices"][region]
        assert sum(d["device_client"] for d in devices.values()) == 2
        for device in devices.values():
            assert device["endpoint"] == EndpointConfig(_ats(region), 443, ("x-amzn-mqtt-ca",))
            if device["device_client"]:
                assert device["dc_endpoint"] == _ats(region)  # Device Client's own config
                assert device["pinned"] == files["public"].read_bytes()  # the campaign's key


def test_devices_pinning_another_key_refuse_the_campaign_in_its_first_wave(
    files: dict[str, Path], tmp_path: Path
) -> None:
    stranger = _key_pair(tmp_path / "other", "stranger")
    fleet = replace(load_fleet_spec(files["fleet"]), signing_public_key=stranger)
    statuses: dict[str, str] = {}

    def inspect(run: CampaignRun) -> None:
        statuses.update(
            {h["thingName"]: h["status"] for h in run.sandbox.engine.execution_history()}
        )

    result = run_campaign(
        files["campaign"].read_text(),
        fleet,
        RunSettings(),
        source=str(files["campaign"]),
        inspect=inspect,
        base_dir=files["campaign"].parent,
    )
    assert result.status == "HALTED"
    assert [w["phase"] for w in result.waves][:2] == ["HALTED", "PENDING"]
    # the first wave's devices are Device Client devices: their handler refused the document
    assert statuses
    assert set(statuses.values()) <= {"FAILED", "QUEUED", "CANCELED"}
    assert "FAILED" in statuses.values()


def test_rehearse_runs_the_operators_signed_campaign_to_completed(
    files: dict[str, Path],
) -> None:
    ran = CliRunner().invoke(
        app,
        ["rehearse", str(files["campaign"]), "--fleet", str(files["fleet"]), "-o", "json"],
    )
    structlog.reset_defaults()
    assert ran.exit_code == 0, ran.output[-2000:]
    body = json.loads(ran.stdout.strip().splitlines()[-1])
    assert body["status"] == "COMPLETED"
    assert body["signed"] == {"key_id": KEY_ID, "source": "key-file"}
    assert [w["name"] for w in body["waves"]] == [
        "us-gateways",
        "us-sensors",
        "eu-gateways",
        "eu-sensors",
    ]
    assert "PRIVATE KEY" not in ran.stdout + ran.stderr


def test_rehearse_signs_with_the_campaigns_kms_key_through_the_configured_client(
    files: dict[str, Path], kms_server: Any
) -> None:
    """KMS found as `start` finds it (here AWS_ENDPOINT_URL_KMS); devices pin GetPublicKey's."""
    key = kms_server.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    kms_server.create_alias(AliasName="alias/ca-migrate-rehearsal", TargetKeyId=key["KeyId"])
    campaign = files["campaign"]
    campaign.write_text(
        campaign.read_text().replace(
            "signing: {key_file: keys/ops.key,", "signing: {kms_key: alias/ca-migrate-rehearsal,"
        )
    )
    ran = CliRunner().invoke(
        app, ["rehearse", str(campaign), "--fleet", str(files["fleet"]), "-o", "json"]
    )
    structlog.reset_defaults()
    assert ran.exit_code == 0, ran.output[-2000:]
    body = json.loads(ran.stdout.strip().splitlines()[-1])
    assert body["status"] == "COMPLETED"
    assert body["signed"] == {"key_id": KEY_ID, "source": "kms"}
    assert all(w["executions"]["succeeded"] for w in body["waves"])
    text = CliRunner().invoke(app, ["rehearse", str(campaign), "--fleet", str(files["fleet"])])
    structlog.reset_defaults()
    assert text.exit_code == 0, text.output[-2000:]
    assert f"signed as start would sign (key id {KEY_ID}, kms)" in text.stdout


@pytest.mark.parametrize(
    ("key_file", "message"),
    [
        ("keys/p384.key", "P-256"),
        ("keys/missing.key", "keys/missing.key: No such file or directory"),
    ],
    ids=["p384", "missing"],
)
def test_rehearse_refuses_a_signing_key_that_cannot_sign_with_exit_2(
    files: dict[str, Path], key_file: str, message: str
) -> None:
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (files["campaign"].parent / "keys" / "p384.key").write_bytes(pem)
    campaign = files["campaign"]
    campaign.write_text(campaign.read_text().replace("keys/ops.key", key_file))
    ran = CliRunner().invoke(app, ["rehearse", str(campaign), "--fleet", str(files["fleet"])])
    structlog.reset_defaults()
    assert ran.exit_code == 2, ran.output
    assert message in ran.stderr
    assert "Traceback" not in ran.output
    assert pem.decode().splitlines()[1] not in ran.output


def test_ca_migrate_demo_real_fleet_completes_signed_over_two_regions() -> None:
    fleet = demo_fleet(scenario("real-fleet"), 50)
    assert {g.name for g in fleet.groups if g.runtime == "device-client"} == {
        "demo-eu-gateways",
        "demo-us-gateways",
    }
    ran = CliRunner().invoke(
        app,
        ["demo", "--scenario", "real-fleet", "--devices", "50", "--time-scale", "0", "-o", "json"],
    )
    structlog.reset_defaults()
    assert ran.exit_code == 0, ran.output[-2000:]
    body = json.loads(ran.stdout.strip().splitlines()[-1])
    assert body["status"] == "COMPLETED"
    assert body["as_expected"] is True
    assert body["signed"]["key_id"] == "ca-migrate-demo"  # signed without --signed
    assert [(w["name"], w["phase"]) for w in body["waves"]] == [
        ("eu-canary", "PASSED"),
        ("eu-gateways", "PASSED"),
        ("us-fleet", "PASSED"),
        ("us-gateways", "PASSED"),
    ]
    assert sum(w["executions"]["succeeded"] for w in body["waves"]) == 50
