"""A rehearsal that ends without a final campaign state says so, and exits 1.

A canary whose gate waits for more completed executions than its reachable devices
can give, with no deadline, never decides: the run stops at its simulated-time limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog
from typer.testing import CliRunner

from orchestrator.cli import app

CAMPAIGN = (
    "name: stuck\nregion: us-east-1\n"
    "trust: {add: [amazon-root-ca-1]}\n"
    "waves:\n"
    "  - name: canary\n    thing_groups: [pilot]\n"
    "    gate: {min_success_rate: 0.5, min_completed: 5}\n"
    "  - name: rest\n    thing_groups: [main]\n"
    "    gate: {min_success_rate: 0.5}\n"
)
# one of the five pilot devices never connects
FLEET = (
    "seed: 3\ngroups:\n  - {name: pilot, size: 5, profiles: {offline: 0.2}}\n"
    "  - {name: main, size: 2}\n"
)


def _rehearse(tmp_path: Path, campaign: str, *args: str):
    (tmp_path / "c.yaml").write_text(campaign)
    (tmp_path / "f.yaml").write_text(FLEET)
    result = CliRunner().invoke(
        app,
        ["rehearse", str(tmp_path / "c.yaml"), "--fleet", str(tmp_path / "f.yaml"), *args],
    )
    structlog.reset_defaults()
    return result


def test_a_rehearsal_stopped_at_the_time_limit_says_why_and_exits_1(tmp_path: Path) -> None:
    result = _rehearse(tmp_path, CAMPAIGN)
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "campaign stuck: RUNNING — stopped at the simulated-time limit (48 h)" in out
    assert "undecided: canary" in out
    assert "- canary: RUNNING since t+0 min, unfinished: waiting: 4 of 5 completed" in out
    assert "never launched" in out.split("- rest:")[1].splitlines()[0]
    assert "canary: RUNNING (never launched)" not in out
    assert "hint: " in out
    assert "deadline_minutes" in out
    as_json = _rehearse(tmp_path, CAMPAIGN, "--output", "json")
    assert as_json.exit_code == 1
    body = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert body["finished"] is False
    assert body["reason"].startswith("stopped at the simulated-time limit")


def test_with_a_deadline_the_same_canary_decides_and_the_rehearsal_exits_0(
    tmp_path: Path,
) -> None:
    with_deadline = CAMPAIGN.replace(
        "min_completed: 5}\n", "min_completed: 5}\n    deadline_minutes: 60\n", 1
    )
    result = _rehearse(tmp_path, with_deadline, "--output", "json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout.strip().splitlines()[-1])
    assert body["finished"] is True
    # 4 of 5 completed at the deadline: the gate is not met, so the canary halts (a decision)
    assert body["status"] == "HALTED"
    assert body["waves"][0]["phase"] == "HALTED"
    assert body["waves"][0]["never_started"] == 1
