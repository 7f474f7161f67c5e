"""`plan` and `start` refuse campaigns that cannot succeed: real boto3 against the sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from infra.sandbox import runtime
from tests.e2e.campaign_kit import without_listener

CAMPAIGN = """\
name: fit
region: us-east-1
endpoint: auto
trust: {add: [amazon-root-ca-1, amazon-root-ca-3]}
waves:
  - name: canary
    thing_groups: [canary]
    gate: {min_success_rate: CANARY_RATE, min_completed: 10}
  - name: wave-1
    thing_groups: [fleet-a]
    gate: {min_success_rate: 0.5, confidence: 0.6}
    approval: manual
"""
GOOD = CAMPAIGN.replace("CANARY_RATE", "0.75")  # 10 of 10 give 0.787 at 95 %
UNREACHABLE = CAMPAIGN.replace("CANARY_RATE", "0.95")  # needs 52


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def sandbox() -> Iterator[object]:
    with runtime.Sandbox(mqtt=False) as sb:
        sb.provision(30, [("canary", 10), ("fleet-a", 20)])
        yield sb


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def cli(sandbox, state: Path, *args: str) -> Ran:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    result = CliRunner().invoke(
        app,
        [
            "--endpoint-url",
            sandbox.control_plane_url,
            "--state",
            str(state),
            *without_listener(sandbox, args),
        ],
    )
    structlog.reset_defaults()
    return Ran(result.exit_code, result.stdout, result.stderr)


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_plan_refuses_a_gate_the_wave_cannot_reach_and_start_creates_nothing(
    sandbox, tmp_path: Path
) -> None:
    state = tmp_path / "s.sqlite"
    path = write(tmp_path, UNREACHABLE)
    planned = cli(sandbox, state, "plan", str(path))
    assert planned.code == 2
    assert "needs at least 52 devices; the wave has 10" in planned.stderr
    assert "Traceback" not in planned.stderr
    assert "- wave canary: 10 devices" in planned.stdout  # the plan is still shown
    as_json = cli(sandbox, state, "plan", "--output", "json", str(path))
    assert as_json.code == 2
    body = json.loads(as_json.stdout)
    assert [p["code"] for p in body["problems"]] == ["gate-unreachable"]
    assert body["waves"][0]["gate_needs_devices"] == 52
    started = cli(sandbox, state, "start", str(path))
    assert started.code == 2
    assert "needs at least 52 devices" in started.stderr
    assert sandbox.iot_client().list_jobs()["jobs"] == []
    assert cli(sandbox, state, "status", "fit").code == 2  # nothing stored


def test_plan_refuses_a_thing_two_waves_target_and_an_empty_wave(sandbox, tmp_path: Path) -> None:
    client = sandbox.iot_client()
    client.create_thing_group(thingGroupName="both")
    client.add_thing_to_thing_group(thingGroupName="both", thingName="device-00001")
    client.create_thing_group(thingGroupName="nobody")
    overlap = GOOD.replace("[fleet-a]", "[fleet-a, both]")
    planned = cli(sandbox, tmp_path / "s.sqlite", "plan", str(write(tmp_path, overlap)))
    assert planned.code == 2
    assert "waves canary and wave-1 both target 1 thing (device-00001)" in planned.stderr
    assert "canary and both" in planned.stderr
    empty = GOOD.replace("[fleet-a]", "[nobody]")
    planned = cli(sandbox, tmp_path / "s.sqlite", "plan", str(write(tmp_path, empty)))
    assert planned.code == 2
    assert "wave wave-1: its groups (nobody) hold no things" in planned.stderr


def test_a_campaign_that_can_pass_plans_and_starts_once(sandbox, tmp_path: Path) -> None:
    state = tmp_path / "s.sqlite"
    path = write(tmp_path, GOOD.replace("name: fit", "name: fit-ok"))
    planned = cli(sandbox, state, "plan", str(path))
    assert planned.code == 0, planned.stderr
    assert (
        "- wave canary: 10 devices in canary (10); its gate can pass with 10+ devices"
        in planned.stdout
    )
    first = cli(sandbox, state, "start", str(path))
    assert first.code == 0, first.stderr
    again = cli(sandbox, state, "start", str(path))
    assert again.code == 0, again.stderr
    assert "campaign fit-ok exists (started " in again.stderr
    assert "with this file: nothing new to start" in again.stderr
    other = write(tmp_path, GOOD.replace("name: fit", "name: fit-ok").replace("0.6", "0.7"), "o.y")
    refused = cli(sandbox, state, "start", str(other))
    assert refused.code == 2
    assert "campaign fit-ok exists (started " in refused.stderr
    assert "with another campaign file" in refused.stderr


def test_plan_on_a_console_shows_no_info_events_unless_verbose(sandbox, tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    state = tmp_path / "s.sqlite"
    quiet = cli(sandbox, state, "--log-format", "console", "plan", str(path))
    loud = cli(sandbox, state, "plan", str(path), "--log-format", "console", "-v")
    piped = cli(sandbox, state, "plan", str(path))  # not a terminal: JSON events stay
    assert quiet.code == loud.code == piped.code == 0, quiet.stderr
    assert "job_document.built" not in quiet.stderr
    assert "job_document.built" in loud.stderr
    assert '"event": "job_document.built"' in piped.stderr
