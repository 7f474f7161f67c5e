"""The demo over MQTT/TLS: every device is the real agent on the AWS IoT Device SDK v2, talking
to the sandbox's mosquitto listeners with its own client certificate, probing with a real TLS
handshake. Needs mosquitto and the sandbox host names resolving to 127.0.0.1 (scripts/env.sh)."""

from __future__ import annotations

from typing import Any

import pytest

from device_handler.trust import EndpointConfig
from infra.sandbox.fleet import Profile
from orchestrator.demo.runner import CampaignRun, RunSettings, run_campaign
from orchestrator.demo.scenarios import CAMPAIGN_FILE, demo_fleet, scenario
from tests.machine import NEEDS_MOSQUITTO, needs_loopback_name

ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
LEGACY = "a1sandbox2demo.iot.us-east-1.amazonaws.com"


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.mqtt,
    NEEDS_MOSQUITTO,
    needs_loopback_name(ATS),
]


def run(name: str, devices: int) -> tuple[Any, dict[str, Any]]:
    chosen = scenario(name)
    seen: dict[str, Any] = {}

    def inspect(run: CampaignRun) -> None:
        fleet: Any = run.fleet
        seen["history"] = run.sandbox.engine.execution_history()
        seen["hosts"] = {
            t: EndpointConfig.parse(fleet.paths(t).endpoint_file.read_bytes()).host
            if fleet.paths(t).endpoint_file.exists()
            else None
            for t in fleet.things()
        }
        seen["profiles"] = {t: fleet.profile(t) for t in fleet.things()}

    result = run_campaign(
        CAMPAIGN_FILE.read_text(),
        demo_fleet(chosen, devices),
        RunSettings(transport="mqtt", time_scale=300.0, rollback_on_halt=chosen.rollback),
        source=str(CAMPAIGN_FILE),
        inspect=inspect,
    )
    return result, seen


def test_happy_over_mqtt_every_device_acknowledges_on_the_ats_listener() -> None:
    result, seen = run("happy", 50)
    assert result.status == "COMPLETED"
    assert len(seen["history"]) == 50
    for h in seen["history"]:
        assert h["status"] == "SUCCEEDED", h
        assert h["history"][-1]["via"] == "ats"  # the bridge saw it on the ATS broker
        assert h["history"][1]["via"] == "legacy"  # and the start on the legacy one
    assert set(seen["hosts"].values()) == {ATS}
    assert set(result.profiles) - {"ok"}  # late, slow, power-cut... devices got there too


def test_bad_canary_over_mqtt_halts_on_real_refused_connections() -> None:
    result, seen = run("bad-canary", 50)
    assert result.status == "HALTED"
    assert {h["jobId"].split("-m")[0] for h in seen["history"]} == {"demo-canary"}
    for h in seen["history"]:
        thing = h["thingName"]
        if seen["profiles"][thing] is Profile.PROBE_FAILS:
            assert h["status"] == "FAILED"
            assert h["statusDetails"]["reason"] == "connect"
            assert seen["hosts"][thing] == LEGACY
