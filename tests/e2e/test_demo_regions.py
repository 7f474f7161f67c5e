"""The multi-region demo end to end: one sandbox serving eu-west-1 and us-east-1, the real boto3
adapter per region, simulated devices in each region running the real transaction. Assertions
read each region's job executions and the devices' files."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from device_handler.trust import EndpointConfig
from orchestrator.cli import app
from orchestrator.demo.runner import CampaignRun, RunSettings, run_campaign
from orchestrator.demo.scenarios import demo_fleet, group_sizes, scenario
from orchestrator.errors import SpecError, UsageError

pytestmark = pytest.mark.e2e

DEVICES = 60


def _ats(region: str) -> str:
    return f"a1sandbox2demo-ats.iot.{region}.amazonaws.com"


def test_the_canary_region_migrates_first_and_every_device_ends_on_its_regions_ats() -> None:
    chosen = scenario("multi-region")
    seen: dict[str, Any] = {}

    def inspect(run: CampaignRun) -> None:
        fleets: Any = run.fleet.fleets  # type: ignore[attr-defined]
        seen["jobs"] = {
            region: sorted({h["jobId"] for h in engine.execution_history()})
            for region, engine in run.sandbox.engines.items()
        }
        seen["hosts"] = {
            region: {
                EndpointConfig.parse(fleet.paths(t).endpoint_file.read_bytes()).host
                for t in fleet.things()
            }
            for region, fleet in fleets.items()
        }
        seen["things"] = {region: sorted(fleet.things()) for region, fleet in fleets.items()}
        seen["waves"] = {w.name: w for w in run.reconciler.store.load(run.spec.name).state.waves}

    result = run_campaign(
        chosen.campaign.read_text(),
        demo_fleet(chosen, DEVICES),
        RunSettings(),
        source=str(chosen.campaign),
        inspect=inspect,
    )
    assert result.status == "COMPLETED", result.reason
    # each region's jobs live in that region only
    assert [j.split("-m")[0] for j in seen["jobs"]["eu-west-1"]] == [
        "demo-regions-eu-canary",
        "demo-regions-eu-fleet",
    ]
    assert [j.split("-m")[0] for j in seen["jobs"]["us-east-1"]] == ["demo-regions-us-fleet"]
    # every device moved to its own region's ATS endpoint
    assert seen["hosts"] == {"eu-west-1": {_ats("eu-west-1")}, "us-east-1": {_ats("us-east-1")}}
    sizes = group_sizes(DEVICES, chosen.groups)
    assert len(seen["things"]["eu-west-1"]) == sizes["demo-eu-canary"] + sizes["demo-eu-fleet"]
    assert all(t.startswith("eu-west-1-device-") for t in seen["things"]["eu-west-1"])
    # the canary region first: us-east-1 launched only once both eu-west-1 waves had passed
    waves = seen["waves"]
    assert waves["us-fleet"].launched_at >= waves["eu-fleet"].finished_at
    assert waves["eu-fleet"].launched_at >= waves["eu-canary"].finished_at
    assert [w["executions"]["succeeded"] for w in result.waves] == list(sizes.values())


def test_ca_migrate_demo_multi_region_completes() -> None:
    ran = CliRunner().invoke(
        app,
        [
            *("demo", "--scenario", "multi-region", "--devices", "50"),
            *("--time-scale", "0", "--output", "json"),
        ],
    )
    assert ran.exit_code == 0, ran.output[-2000:]
    body = json.loads(ran.stdout.strip().splitlines()[-1])
    assert body["scenario"] == "multi-region"
    assert body["status"] == "COMPLETED"
    assert body["as_expected"] is True
    assert [w["name"] for w in body["waves"]] == ["eu-canary", "eu-fleet", "us-fleet"]


def test_a_rehearsal_over_several_regions_refuses_mqtt_and_a_group_in_two_regions() -> None:
    chosen = scenario("multi-region")
    fleet = demo_fleet(chosen, DEVICES)
    text = chosen.campaign.read_text()
    with pytest.raises(UsageError, match="memory transport only"):
        run_campaign(text, fleet, RunSettings(transport="mqtt"))
    # the us-east-1 wave now targets a group that an eu-west-1 wave targets too
    shared = text.replace("thing_groups: [demo-us-fleet]", "thing_groups: [demo-eu-fleet]")
    with pytest.raises(SpecError, match="targeted in eu-west-1 and in us-east-1"):
        run_campaign(shared, fleet, RunSettings())
