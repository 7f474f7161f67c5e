from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from orchestrator.cli import campaign
from orchestrator.errors import LeaseHeldError


def test_operator_commands_wait_for_a_short_reconcile_then_give_up(monkeypatch) -> None:
    monkeypatch.setattr(campaign, "LEASE_WAIT_SECONDS", 0)
    attempts = []

    def busy_twice():
        attempts.append(1)
        if len(attempts) <= 2:
            raise LeaseHeldError("busy")
        return "done"

    assert campaign._waiting_for_the_lease(busy_twice) == "done"
    assert len(attempts) == 3

    def always_busy():
        raise LeaseHeldError("busy")

    with pytest.raises(LeaseHeldError):
        campaign._waiting_for_the_lease(always_busy)


def test_status_reads_a_dynamodb_state_store(monkeypatch) -> None:
    import boto3
    import moto
    import structlog
    from typer.testing import CliRunner

    from job_documents import ManualClock
    from orchestrator.aws.dynamodb import DynamoDbStateStore
    from orchestrator.cli import app
    from orchestrator.planner import initial_state
    from orchestrator.spec import parse_spec
    from orchestrator.store import StoredCampaign

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    text = (Path(__file__).parent / "data" / "readme-campaign.yaml").read_text()
    spec = parse_spec(text)
    with moto.mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        DynamoDbStateStore.create_table(client, "campaigns")
        docs = {w.name: ("{}", "c" * 64) for w in spec.waves}
        state = initial_state(spec, docs, ManualClock().now())
        DynamoDbStateStore(client, "campaigns").create(StoredCampaign(text, None, state), [])
        result = CliRunner().invoke(
            app,
            ["--state", "dynamodb://campaigns", "--region", "us-east-1", "status", "ats-2026"],
        )
        missing = CliRunner().invoke(
            app, ["--state", "dynamodb://campaigns", "--region", "us-east-1", "status", "nope"]
        )
    structlog.reset_defaults()
    assert result.exit_code == 0, result.stderr
    assert "campaign ats-2026: RUNNING" in result.stdout
    assert missing.exit_code == 2
    assert "no campaign named nope" in missing.stderr


@pytest.mark.parametrize("command", ["demo", "rehearse", "demo-mqtt"])
def test_memory_transport_runs_use_the_simulation_collector_settings(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from typer.testing import CliRunner

    from infra.sandbox.fleet.sharded import GC_THRESHOLDS
    from orchestrator.cli import app
    from orchestrator.demo import runner
    from orchestrator.errors import UsageError

    seen = []

    def run_campaign(*_args: object, **_kwargs: object) -> None:
        seen.append(gc.get_threshold())
        raise UsageError("stopped by the test")

    monkeypatch.setattr(runner, "run_campaign", run_campaign)
    before = gc.get_threshold()
    assert before != GC_THRESHOLDS  # else this test could not tell
    (tmp_path / "c.yaml").write_text("name: c\n")
    (tmp_path / "f.yaml").write_text("groups: [{name: g, size: 10}]\n")
    args = {
        "demo": ["demo", "--devices", "50"],
        "rehearse": ["rehearse", str(tmp_path / "c.yaml"), "--fleet", str(tmp_path / "f.yaml")],
        "demo-mqtt": ["demo", "--devices", "50", "--transport", "mqtt"],
    }[command]
    saved = structlog.get_config()
    try:
        result = CliRunner().invoke(app, args)
    finally:
        structlog.configure(**saved)  # the CLI configured logging for its run; undo it
    assert result.exit_code == 2, result.output
    # the program's setting, for a run on the memory transport; MQTT keeps the default
    assert seen == [before if command == "demo-mqtt" else GC_THRESHOLDS]
    assert gc.get_threshold() == before  # and the previous one after it, even on an error
