"""`ca-migrate demo --scenario device-client`: a mixed fleet, agents and AWS IoT Device Client.

The Device Client wave's job carries the runHandler document; its simulated devices run
the real `ca-migrate-handler.sh` (a process each, a real handshake and MQTT CONNECT with
the sandbox's brokers), and Device Client reports from the exit code over the connection
it started with. Assertions read the sandbox's executions and the devices' files.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from device_handler.trust import EndpointConfig, TrustBundle
from infra.sandbox.fleet import parse_fleet_spec
from infra.sandbox.fleet.device_client import LAYOUT
from orchestrator.cli import app
from orchestrator.demo.runner import CampaignRun, RunSettings, run_campaign
from orchestrator.demo.scenarios import DEVICE_CLIENT_GROUP, campaign_text, demo_fleet, scenario
from tests.machine import NEEDS_MOSQUITTO

# The Device Client devices' handler probes the sandbox's brokers (mosquitto).
needs_brokers = NEEDS_MOSQUITTO
pytestmark = pytest.mark.e2e

DEVICES = 50
ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
LEGACY = "a1sandbox2demo.iot.us-east-1.amazonaws.com"


@needs_brokers
def test_a_device_client_wave_completes_beside_the_agent_waves() -> None:
    chosen = scenario("device-client")
    seen: dict[str, Any] = {}

    def inspect(run: CampaignRun) -> None:
        fleet: Any = run.fleet
        engine = run.sandbox.engine
        wave = next(
            w for w in run.reconciler.store.load("demo").state.waves if w.name == "device-client"
        )
        seen["document"] = json.loads(engine.get_job_document({"jobId": wave.job_id})["document"])
        seen["history"] = engine.execution_history(job_id=wave.job_id)
        seen["agent_history"] = [h for h in engine.execution_history() if h["jobId"] != wave.job_id]
        seen["dc"] = {}
        for thing in fleet.device_client_things():
            client = fleet.device_client(thing)
            paths = fleet.paths(thing)
            seen["dc"][thing] = {
                "host": EndpointConfig.parse(paths.endpoint_file.read_bytes()).host,
                "roots": len(TrustBundle.parse(paths.trust_bundle.read_bytes()).roots),
                "dc_endpoint": json.loads(client.inside(LAYOUT["config_path"]).read_text())[
                    "endpoint"
                ],
                "connected": client.connected_host,
                "committed": paths.previous.exists(),
            }

    result = run_campaign(
        campaign_text(chosen),
        demo_fleet(chosen, DEVICES),
        RunSettings(),
        source="device-client",
        inspect=inspect,
    )
    assert result.status == "COMPLETED"
    assert [w["phase"] for w in result.waves] == ["PASSED"] * 6
    assert result.waves[-1]["name"] == "device-client"
    assert result.endpoints == {"ats": DEVICES}
    # the job carried Device Client's document around the ca-migration/1 one
    action = seen["document"]["steps"][0]["action"]
    assert seen["document"]["version"] == "1.0"
    assert action["type"] == "runHandler"
    embedded = json.loads(action["input"]["args"][-1])
    assert embedded["schema"] == "ca-migration/1"
    assert embedded["wave"] == "device-client"
    # five Device Client devices, each SUCCEEDED from its handler's exit code, reported over
    # the connection Device Client started with (legacy), then restarted onto ATS
    assert len(seen["dc"]) == chosen.device_clients == len(seen["history"])
    for execution in seen["history"]:
        assert execution["status"] == "SUCCEEDED"
        assert execution["statusDetails"] == {"reason": "step ca-migrate exited 0"}
        assert [(h["status"], h["via"]) for h in execution["history"][-2:]] == [
            ("IN_PROGRESS", "legacy"),
            ("SUCCEEDED", "legacy"),
        ]
    for device in seen["dc"].values():
        assert device["host"] == ATS
        assert device["dc_endpoint"] == ATS  # the handler migrated Device Client's own config
        assert device["roots"] == 3  # the legacy root kept, two ATS roots added
        assert device["connected"] == ATS
        assert device["committed"]  # the handler's transaction kept the backup restore needs
    # the agent devices acknowledged over the new endpoint, as always
    agent_done = [h for h in seen["agent_history"] if h["status"] == "SUCCEEDED"]
    assert len(agent_done) == DEVICES - chosen.device_clients
    assert all(h["history"][-1]["via"] == "ats" for h in agent_done)
    assert DEVICE_CLIENT_GROUP in {g.name for g in demo_fleet(chosen, DEVICES).groups}


@needs_brokers
def test_the_demo_command_runs_the_device_client_scenario_to_completed() -> None:
    result = CliRunner().invoke(
        app,
        [
            "demo",
            "--scenario",
            "device-client",
            "--devices",
            str(DEVICES),
            "--time-scale",
            "0",
            "--output",
            "json",
        ],
    )
    structlog.reset_defaults()
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout.strip().splitlines()[-1])
    assert body["status"] == "COMPLETED"
    assert body["as_expected"] is True
    assert [w["name"] for w in body["waves"]][-1] == "device-client"


def test_rehearse_refuses_device_client_groups_on_worker_processes(tmp_path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "groups:\n"
        "  - {name: demo-canary, size: 5}\n"
        "  - {name: gw, size: 5, runtime: device-client}\n"
    )
    campaign = tmp_path / "c.yaml"
    campaign.write_text(
        "name: r\nregion: us-east-1\ntrust: {add: [amazon-root-ca-1]}\n"
        "waves:\n  - {name: canary, thing_groups: [demo-canary], gate: {min_success_rate: 0.5}}\n"
    )
    result = CliRunner().invoke(
        app, ["rehearse", str(campaign), "--fleet", str(fleet), "--workers", "2"]
    )
    structlog.reset_defaults()
    assert result.exit_code == 2
    assert "--workers 0" in result.stderr


_PATHS = (
    "device_toml: /etc/ca-migrate/device.toml, "
    "config_path: /etc/.aws-iot-device-client/aws-iot-device-client.conf"
)
_SIMULATED = "handler_path: /opt/ca-migrate/handlers/ca-migrate-handler.sh, " + _PATHS


@pytest.mark.parametrize(
    ("wave_keys", "group_runtime", "message"),
    [
        ("", "device-client", "the wave runs agent but the fleet file's group gw runs device-"),
        (
            f"device_runtime: device-client, device_client: {{handler_path: /h.sh, {_PATHS}}}, ",
            "device-client",
            "(waves.gw.device_client.handler_path): is '/h.sh'",
        ),
        (
            f"device_runtime: device-client, device_client: {{{_SIMULATED}}}, ",
            "agent",
            "the wave runs device-client but the fleet file's group gw runs agent",
        ),
    ],
)
def test_rehearse_refuses_a_wave_its_fleet_devices_would_not_take(
    tmp_path, wave_keys: str, group_runtime: str, message: str
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(f"groups:\n  - {{name: gw, size: 5, runtime: {group_runtime}}}\n")
    campaign = tmp_path / "c.yaml"
    wave = f"{{name: gw, thing_groups: [gw], {wave_keys}gate: {{min_success_rate: 0.5}}}}"
    campaign.write_text(
        f"name: r\nregion: us-east-1\ntrust: {{add: [amazon-root-ca-1]}}\nwaves:\n  - {wave}\n"
    )
    result = CliRunner().invoke(app, ["rehearse", str(campaign), "--fleet", str(fleet)])
    structlog.reset_defaults()
    assert result.exit_code == 2, result.output
    assert message in result.stderr


ROLLBACK_CAMPAIGN = f"""\
name: dc-rollback
region: us-east-1
endpoint: auto
trust: {{add: [amazon-root-ca-1, amazon-root-ca-3]}}
halt: {{max_failure_rate: 0.1, min_executed: 5}}
device_client: {{{_SIMULATED}}}
waves:
  - name: dc-canary
    thing_groups: [dc-canary]
    device_runtime: device-client
    gate: {{min_success_rate: 0.5, min_completed_fraction: 0.95, confidence: 0.8}}
  - name: wave-1
    thing_groups: [wave-1]
    gate: {{min_success_rate: 0.8, min_completed_fraction: 0.95, confidence: 0.8}}
"""


@needs_brokers
def test_a_rollback_returns_device_client_devices_through_the_wrapped_restore_document() -> None:
    """The Device Client canary passes, the agent wave halts, the operator rolls back."""
    fleet = parse_fleet_spec(
        {
            "groups": [
                {"name": "dc-canary", "size": 5, "runtime": "device-client"},
                {"name": "wave-1", "size": 10, "profiles": {"probe_fails": 0.5}},
            ]
        }
    )
    seen: dict[str, Any] = {}

    def inspect(run: CampaignRun) -> None:
        fleet_: Any = run.fleet
        engine = run.sandbox.engine
        state = run.reconciler.store.load("dc-rollback").state
        canary = next(w for w in state.waves if w.name == "dc-canary")
        seen["migrate"] = engine.execution_history(job_id=canary.job_id)
        seen["restore"] = engine.execution_history(job_id=canary.restore_job_id)
        document = engine.get_job_document({"jobId": canary.restore_job_id})["document"]
        seen["restore_document"] = json.loads(document)
        seen["dc"] = {
            thing: (
                EndpointConfig.parse(fleet_.paths(thing).endpoint_file.read_bytes()).host,
                json.loads(fleet_.device_client(thing).inside(LAYOUT["config_path"]).read_text())[
                    "endpoint"
                ],
            )
            for thing in fleet_.device_client_things()
        }

    result = run_campaign(
        ROLLBACK_CAMPAIGN,
        fleet,
        RunSettings(rollback_on_halt=True),
        source="dc-rollback",
        inspect=inspect,
    )
    assert result.status == "ROLLED_BACK"
    action = seen["restore_document"]["steps"][0]["action"]
    assert json.loads(action["input"]["args"][-1])["operation"] == "restore"
    assert [e["status"] for e in seen["migrate"]] == ["SUCCEEDED"] * 5  # they were on ATS
    assert len(seen["restore"]) == 5
    assert all(e["status"] == "SUCCEEDED" for e in seen["restore"])
    # back on the legacy endpoint, Device Client's own configuration too
    assert set(seen["dc"].values()) == {(LEGACY, LEGACY)}
