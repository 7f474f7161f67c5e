"""A campaign whose wave has a maintenance window, against the sandbox on a manual clock: the
orchestrator's schedulingConfig reaches the sandbox, the wave's executions are notified only
inside the window, and the campaign still finishes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from infra.sandbox import runtime
from job_documents.clock import ManualClock
from orchestrator.aws.iot import IotJobsAdapter
from orchestrator.model import CampaignStatus, WavePhase
from orchestrator.reconcile import Reconciler
from orchestrator.spec import parse_spec
from orchestrator.store.sqlite import SqliteStateStore

pytestmark = pytest.mark.e2e

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # a Sunday, noon UTC
WINDOW_OPENS = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
GROUPS = [("canary", 2), ("fleet-a", 5)]
CAMPAIGN = """\
name: windows
region: us-east-1
endpoint: auto
trust: {add: [amazon-root-ca-1]}
execution: {in_progress_timeout_minutes: 30, retries: {failed: 0, timed_out: 0}}
waves:
  - name: canary
    thing_groups: [canary]
    gate: {min_success_rate: 0.5, min_completed: 2, confidence: 0.6}
  - name: wave-1
    thing_groups: [fleet-a]
    rollout: {maximum_per_minute: 3}
    maintenance_windows: [{start: 'cron(0 2 ? * * *)', duration_minutes: 60}]
    gate: {min_success_rate: 0.5, min_completed_fraction: 1.0, confidence: 0.6}
"""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def sandbox(clock: ManualClock) -> Iterator[object]:
    with runtime.Sandbox(mqtt=False, clock=clock) as sb:
        sb.provision(7, GROUPS)
        yield sb


def ack_everything(sandbox) -> int:
    """Every device with a pending execution reports success (iot-jobs-data, boto3)."""
    client = sandbox.jobs_data_client()
    acks = 0
    for index in range(1, 8):
        thing = f"device-{index:05d}"
        for job in client.get_pending_job_executions(thingName=thing).get("queuedJobs", []):
            client.update_job_execution(thingName=thing, jobId=job["jobId"], status="SUCCEEDED")
            acks += 1
    return acks


def test_a_wave_rolls_out_only_inside_its_maintenance_window_and_the_campaign_finishes(
    sandbox, clock, tmp_path
) -> None:
    rec = Reconciler(
        SqliteStateStore(tmp_path / "state.sqlite"),
        IotJobsAdapter(sandbox.iot_client()),
        clock,
    )
    rec.start(parse_spec(CAMPAIGN), CAMPAIGN, None)
    state = rec.step("windows").state
    assert ack_everything(sandbox) == 2  # the canary has no window: at once
    for _ in range(10):
        state = rec.step("windows").state
        if state.wave("wave-1").launched_at is not None:
            break
    wave = state.wave("wave-1")
    assert state.wave("canary").phase is WavePhase.PASSED
    assert wave.launched_at is not None
    iot = sandbox.iot_client()
    job = iot.describe_job(jobId=wave.job_id)["job"]
    assert job["schedulingConfig"] == {
        "maintenanceWindows": [{"startTime": "cron(0 2 ? * * *)", "durationInMinutes": 60}]
    }
    assert job["scheduledJobRollouts"][0]["startTime"] == "2026-03-02T02:00"

    # outside the window: nothing notified however long the orchestrator waits
    for hours in (1, 6, 13):
        clock.set(START + timedelta(hours=hours, minutes=59))
        sandbox.engine.advance(0)
        state = rec.step("windows").state
        assert ack_everything(sandbox) == 0
        assert state.status is CampaignStatus.RUNNING
        assert state.wave("wave-1").phase not in (WavePhase.PASSED, WavePhase.HALTED)
        assert iot.list_job_executions_for_job(jobId=wave.job_id)["executionSummaries"] == []

    # inside it: three a minute (the wave's rollout rate), then the gate passes
    clock.set(WINDOW_OPENS)
    sandbox.engine.advance(0)
    assert ack_everything(sandbox) == 3
    sandbox.engine.advance(60)
    assert ack_everything(sandbox) == 2
    for _ in range(10):
        state = rec.step("windows").state
        if state.status is not CampaignStatus.RUNNING:
            break
    assert state.status is CampaignStatus.COMPLETED
    assert state.wave("wave-1").counts.succeeded == 5

    history = sandbox.engine.execution_history(job_id=wave.job_id)
    queued_at = [entry["history"][0]["at"] for entry in history]
    assert len(queued_at) == 5
    opened = WINDOW_OPENS.timestamp()
    assert all(opened <= at < opened + 3600 for at in queued_at)
