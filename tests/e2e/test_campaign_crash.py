"""Crash tests for the operator's stop commands: `rollback` and `abort` SIGKILLed after every
write (store commit, CreateJob, CancelJob), then `run` again and again, each run killed after
its first write, until the campaign settles. Nothing is lost or duplicated: one restore job per
rolled-back wave, every running job canceled, a consistent event log."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from infra.sandbox.decisions import CANCEL_PROPAGATION_SECONDS
from orchestrator.model import CampaignStatus, WavePhase
from orchestrator.spec import parse_spec
from orchestrator.store.sqlite import SqliteStateStore

from .campaign_kit import THINGS, Fleet, campaign_text, cli, jobs_in_sandbox, reconciler
from .cli_faults import ENV

pytestmark = pytest.mark.e2e

FLEET_A = frozenset(THINGS[4:8])


def run_until_settled(sandbox, state, store, name: str, settled: CampaignStatus) -> int:
    """`run` killed after its first write until the campaign is `settled` and a run writes
    nothing; returns how many runs were killed."""
    kills = 0
    for _ in range(60):
        before = store.load(name).state.version
        result = cli(sandbox, state, "run", name, kill_after=1)
        assert result.returncode in (0, -9), result.stderr
        kills += result.returncode == -9
        if result.returncode == 0:
            assert store.load(name).state.version == before  # a run that lived wrote nothing
            if store.load(name).state.status is settled:
                return kills
            threading.Event().wait(0.2)  # waiting for devices
    pytest.fail(f"campaign {name} did not settle as {settled.value}")


def test_sigkill_after_every_write_of_a_rollback_leaves_one_restore_job_per_wave(
    sandbox, tmp_path
) -> None:
    rec = reconciler(sandbox, tmp_path)
    text = campaign_text()
    state = rec.start(parse_spec(text), text, None)
    with Fleet(sandbox, offline=FLEET_A):  # the canary passes; wave-1 runs and never finishes
        for _ in range(200):
            state = rec.step("e2e").state
            if state.wave("wave-1").phase is WavePhase.RUNNING:
                break
            threading.Event().wait(0.05)
    assert state.wave("canary").phase is WavePhase.PASSED
    assert state.wave("wave-1").phase is WavePhase.RUNNING
    before = state.version
    path = tmp_path / "state.sqlite"
    store = SqliteStateStore(path)

    with Fleet(sandbox, restore_only=True):
        result = cli(sandbox, path, "rollback", "e2e", kill_after=1)
        assert result.returncode == -9, result.stderr
        kills = 1 + run_until_settled(sandbox, path, store, "e2e", CampaignStatus.ROLLED_BACK)

    final = store.load("e2e").state
    canary, wave1, wave2 = final.waves
    restores = sorted(j for j in jobs_in_sandbox(sandbox) if "-r" in j)
    assert restores == sorted([canary.restore_job_id, wave1.restore_job_id])
    assert jobs_in_sandbox(sandbox) == sorted([canary.job_id, wave1.job_id, *restores])
    assert wave2.launched_at is None
    assert wave2.restore_job_id is None
    client = sandbox.iot_client()
    assert client.describe_job(jobId=wave1.job_id)["job"]["status"] == "CANCELED"
    assert canary.restore_counts.succeeded == 4
    assert wave1.restore_counts.succeeded == 4
    # every write was followed by a kill: the store commits since the rollback (the version
    # counts them), the two restore CreateJobs and the one CancelJob of wave-1 (the run after
    # the cancel sees the job CANCELED and does not send it again)
    assert kills == (final.version - before) + 2 + 1
    log = store.events("e2e")
    kinds = [e.kind for e in log]
    assert kinds.count("rollback-started") == 1
    assert kinds.count("rollback-finished") == 1
    assert kinds[-1] == "rollback-finished"
    for wave in ("canary", "wave-1"):
        made = [e for e in log if e.wave == wave and e.kind.startswith("restore-job-")]
        assert len(made) == 1  # created, or adopted by the run after a kill lost the event
    versions = [(e.version, e.index) for e in log]
    assert versions == sorted(set(versions))


def test_sigkill_after_every_write_of_an_abort_cancels_the_running_wave_once(
    sandbox, tmp_path
) -> None:
    rec = reconciler(sandbox, tmp_path)
    text = campaign_text()
    state = rec.start(parse_spec(text), text, None)
    state = rec.step("e2e").state  # the canary's job is created; no device answers
    canary = state.wave("canary")
    assert canary.launched_at is not None
    before = state.version
    path = tmp_path / "state.sqlite"
    store = SqliteStateStore(path)

    result = cli(sandbox, path, "abort", "e2e", kill_after=1)
    assert result.returncode == -9, result.stderr
    kills = 1 + run_until_settled(sandbox, path, store, "e2e", CampaignStatus.ABORTED)

    final = store.load("e2e").state
    assert jobs_in_sandbox(sandbox) == [canary.job_id]  # nothing launched after the abort
    assert sandbox.iot_client().describe_job(jobId=canary.job_id)["job"]["status"] == "CANCELED"
    sandbox.engine.advance(CANCEL_PROPAGATION_SECONDS)  # AWS cancels executions after the job
    job = sandbox.iot_client().describe_job(jobId=canary.job_id)["job"]
    assert job["jobProcessDetails"]["numberOfCanceledThings"] == 4
    assert final.wave("canary").phase is WavePhase.CANCELED
    assert final.wave("canary").job_status == "CANCELED"
    assert kills == (final.version - before) + 1  # the commits and the one CancelJob
    log = store.events("e2e")
    kinds = [e.kind for e in log]
    assert kinds.count("campaign-aborted") == 1
    assert "job-created" not in kinds[kinds.index("campaign-aborted") :]
    versions = [(e.version, e.index) for e in log]
    assert versions == sorted(set(versions))


def test_the_shipped_cli_cannot_be_made_to_kill_itself_by_the_environment(
    sandbox, tmp_path
) -> None:
    """`ca-migrate` itself (not the fork server above, which wraps it through the CLI's
    seam): the crash tests' variable, set to its first write, changes nothing."""
    path = tmp_path / "c.yaml"
    path.write_text(campaign_text())
    state = tmp_path / "state.sqlite"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="sandbox", AWS_SECRET_ACCESS_KEY="sandbox")
    env.pop("AWS_PROFILE", None)
    env[ENV] = "1"
    args = ["--endpoint-url", sandbox.control_plane_url, "--state", str(state), "start", str(path)]
    args.append("--skip-endpoint-check")  # the sandbox has no MQTT listener to check
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    canary = SqliteStateStore(state).load("e2e").state.wave("canary").job_id
    assert jobs_in_sandbox(sandbox) == [canary]
