"""Whole campaigns against the sandbox: real boto3 over HTTP, devices acknowledging through
`iot-jobs-data`, the CLI as its own process where the behaviour is the process's (SIGKILL at
every write, `run --follow`)."""

from __future__ import annotations

import json
import threading

import pytest

from infra.sandbox.decisions import CANCEL_PROPAGATION_SECONDS
from job_documents import validate_document
from orchestrator.errors import JobConflictError
from orchestrator.model import CampaignStatus, WavePhase
from orchestrator.spec import parse_spec
from orchestrator.store.sqlite import SqliteStateStore

from .campaign_kit import (
    CAMPAIGN,
    THINGS,
    Fleet,
    campaign_text,
    cli,
    drive,
    in_process,
    jobs_in_sandbox,
    reconciler,
)

pytestmark = pytest.mark.e2e


def test_campaign_completes_with_manual_approval_one_job_per_wave(sandbox, tmp_path) -> None:
    rec = reconciler(sandbox, tmp_path)
    text = campaign_text("manual")
    rec.start(parse_spec(text), text, None)
    with Fleet(sandbox):
        state = drive(rec, "e2e", approve="wave-1")
    assert state.status is CampaignStatus.COMPLETED
    assert jobs_in_sandbox(sandbox) == sorted(w.job_id for w in state.waves)
    for wave in state.waves:
        assert wave.counts.succeeded == 4
    client = sandbox.iot_client()
    job = client.describe_job(jobId=state.wave("wave-1").job_id)["job"]
    assert job["jobExecutionsRolloutConfig"]["maximumPerMinute"] == 100
    assert job["abortConfig"]["criteriaList"][0]["thresholdPercentage"] == 50.0
    assert job["timeoutConfig"]["inProgressTimeoutInMinutes"] == 30
    document = client.get_job_document(jobId=state.wave("canary").job_id)["document"]
    assert validate_document(document).endpoint.host == (
        "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
    )
    kinds = [e.kind for e in rec.store.events("e2e")]
    assert kinds.count("job-created") == 3
    assert kinds.index("wave-approved") < kinds.index("wave-launching", kinds.index("wave-passed"))


def test_failing_canary_halts_cancels_and_explains(sandbox, tmp_path) -> None:
    rec = reconciler(sandbox, tmp_path)
    text = campaign_text()
    rec.start(parse_spec(text), text, None)
    # the fourth canary device stays offline: its execution is still QUEUED when the wave halts,
    # so the job cannot complete on its own and only a cancel ends it
    with Fleet(sandbox, failing=frozenset(THINGS[:3]), offline=frozenset(THINGS[3:4])):
        state = drive(rec, "e2e")
    assert state.status is CampaignStatus.HALTED
    canary = state.wave("canary")
    assert canary.phase is WavePhase.HALTED
    assert jobs_in_sandbox(sandbox) == [canary.job_id]
    client = sandbox.iot_client()
    job = client.describe_job(jobId=canary.job_id)["job"]
    assert job["status"] == "CANCELED"
    # halted by AWS's abortConfig or by the orchestrator's gate, whichever saw the failures first
    assert job["reasonCode"] in ("ABORT_CRITERIA_MET", "CA_MIGRATE_HALT")
    sandbox.engine.advance(CANCEL_PROPAGATION_SECONDS)  # AWS cancels executions after the job
    executions = client.list_job_executions_for_job(jobId=canary.job_id)["executionSummaries"]
    statuses = {
        e["thingArn"].rsplit("/", 1)[1]: e["jobExecutionSummary"]["status"] for e in executions
    }
    assert statuses[THINGS[3]] == "CANCELED"
    explained = [e for e in rec.store.events("e2e") if e.kind == "failures-explained"]
    assert explained
    samples = explained[0].data["samples"]
    assert {s["thing"] for s in samples} <= set(THINGS[:3])
    assert samples[0]["details"] == {"reason": "probe-failed"}


def test_rollback_sends_restore_jobs_to_the_waves_that_ran(sandbox, tmp_path) -> None:
    rec = reconciler(sandbox, tmp_path)
    text = campaign_text("manual")
    rec.start(parse_spec(text), text, None)
    with Fleet(sandbox):
        state = drive(rec, "e2e")  # stops waiting for approval of wave-1: still RUNNING
        assert state.wave("wave-1").phase is WavePhase.AWAITING_APPROVAL
        rec.rollback("e2e")
        state = drive(rec, "e2e")
    assert state.status is CampaignStatus.ROLLED_BACK
    restore = state.wave("canary").restore_job_id
    assert restore is not None
    assert state.wave("wave-1").restore_job_id is None
    document = sandbox.iot_client().get_job_document(jobId=restore)["document"]
    assert validate_document(document).operation == "restore"
    assert state.wave("canary").restore_counts.succeeded == 4


@pytest.mark.parametrize("sandbox", [0.2], indirect=True)
def test_throttled_control_plane_gives_the_same_result(sandbox, tmp_path) -> None:
    rec = reconciler(sandbox, tmp_path)
    text = campaign_text()
    rec.start(parse_spec(text), text, None)
    with Fleet(sandbox):
        state = drive(rec, "e2e")
    assert state.status is CampaignStatus.COMPLETED
    assert len(jobs_in_sandbox(sandbox)) == 3
    assert [w.counts.succeeded for w in state.waves] == [4, 4, 4]


def test_cli_exit_codes_and_outputs(sandbox, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    state = tmp_path / "state.sqlite"
    bad = tmp_path / "bad.yaml"
    bad.write_text(campaign_text().replace("region: us-east-1", "region: nowhere"))
    result = in_process(sandbox, state, "plan", str(bad))
    assert result.returncode == 2
    assert "line 2 (region)" in result.stderr
    good = tmp_path / "c.yaml"
    good.write_text(campaign_text())
    result = in_process(sandbox, state, "plan", "--output", "json", str(good))
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert [sum(w["devices"].values()) for w in plan["waves"]] == [4, 4, 4]
    assert plan["endpoint"] == "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
    assert plan["waves"][0]["create_job"]["targets"] == [
        "arn:aws:iot:us-east-1:123456789012:thinggroup/canary"
    ]
    missing = tmp_path / "missing.yaml"
    missing.write_text(campaign_text().replace("[fleet-b]", "[fleet-z]"))
    result = in_process(sandbox, state, "plan", str(missing))
    assert result.returncode == 2
    assert "thing group fleet-z does not exist" in result.stderr
    assert not state.exists()
    assert in_process(sandbox, state, "status", "e2e").returncode == 2
    assert in_process(sandbox, state, "start", str(good)).returncode == 0
    result = in_process(sandbox, state, "status", "e2e", "--output", "json")
    assert json.loads(result.stdout)["waves"][0]["phase"] == "LAUNCHING"
    assert in_process(sandbox, state, "approve", "e2e", "canary").returncode == 2
    assert in_process(sandbox, state, "resume", "e2e").returncode == 2  # only a paused one resumes
    assert in_process(sandbox, state, "abort", "e2e").returncode == 0
    report = tmp_path / "r.html"
    assert in_process(sandbox, state, "report", "e2e", "--output-file", str(report)).returncode == 0
    page = report.read_text()
    assert "<svg" in page
    assert "campaign-aborted" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")
    events = in_process(sandbox, state, "events", "e2e").stdout
    assert "campaign-aborted" in events
    job = sandbox.iot_client().describe_job(jobId=json.loads(result.stdout)["waves"][0]["job_id"])
    assert job["job"]["status"] == "CANCELED"
    lines = in_process(sandbox, state, "events", "e2e", "--output", "json").stdout.splitlines()
    assert json.loads(lines[0])["kind"] == "campaign-started"
    assert in_process(sandbox, state, "rollback", "e2e", "--wave", "wave-2").returncode == 2
    rolled = in_process(sandbox, state, "rollback", "e2e", "--wave", "canary")
    assert rolled.returncode == 0, rolled.stderr
    assert "restore job e2e-canary-r" in rolled.stdout
    data = json.loads(in_process(sandbox, state, "report", "e2e", "--format", "json").stdout)
    assert data["status"] == "ROLLING_BACK"
    assert data["waves"][0]["restore_job_id"] in jobs_in_sandbox(sandbox)
    assert in_process(sandbox, state, "report", "e2e", "--format", "pdf").returncode == 2
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    broken = in_process(sandbox, blocker / "state.sqlite", "run", "e2e")
    assert broken.returncode == 1
    assert "cannot open the state store" in broken.stderr


def test_sigkill_at_every_step_still_finishes_with_one_job_per_wave(sandbox, tmp_path) -> None:
    """Every process SIGKILLs itself right after its first write (store commit, CreateJob or
    CancelJob), so every write of a three-wave campaign is followed by a kill; `run` again
    and again must still finish it, with one job per wave and a consistent event log."""
    state = tmp_path / "state.sqlite"
    path = tmp_path / "c.yaml"
    path.write_text(campaign_text())
    kills = 0
    with Fleet(sandbox):
        result = cli(sandbox, state, "start", str(path), kill_after=1)
        assert result.returncode == -9
        kills += 1
        store = SqliteStateStore(state)
        for _ in range(80):
            before = store.load("e2e").state.version
            result = cli(sandbox, state, "run", "e2e", kill_after=1)
            assert result.returncode in (0, -9), result.stderr
            if result.returncode == 0:
                # a process that lived made no write at all: it waited for the devices
                assert store.load("e2e").state.version == before
                threading.Event().wait(0.5)
            kills += result.returncode == -9
            if store.load("e2e").state.status is not CampaignStatus.RUNNING:
                break
    final = store.load("e2e").state
    assert final.status is CampaignStatus.COMPLETED
    # every write was followed by a kill: each store commit (the version counts them) and
    # exactly one CreateJob per wave
    assert kills == final.version + 3
    assert jobs_in_sandbox(sandbox) == sorted(w.job_id for w in final.waves)
    log = store.events("e2e")
    kinds = [e.kind for e in log]
    for kind in ("wave-launching", "job-observed", "gate-passed", "wave-passed"):
        assert sorted(e.wave for e in log if e.kind == kind) == ["canary", "wave-1", "wave-2"]
    assert kinds.count("campaign-started") == 1
    assert kinds[-1] == "campaign-completed"
    # a kill right after CreateJob loses its job-created event: the next run adopts the job
    made = sorted(e.wave for e in log if e.kind in ("job-created", "job-adopted"))
    assert made == ["canary", "wave-1", "wave-2"]
    versions = [(e.version, e.index) for e in log]
    assert versions == sorted(set(versions))


def test_sigkill_at_every_step_of_a_halt_still_cancels_the_wave(sandbox, tmp_path) -> None:
    """The same, for a canary that fails: the halt and the cancel survive a kill after every
    write, and the job is canceled once AWS shows it stopped."""
    state = tmp_path / "state.sqlite"
    path = tmp_path / "c.yaml"
    # no abortConfig: the orchestrator's own gate halts the wave and cancels the job
    path.write_text(campaign_text().replace("max_failure_rate: 0.5", "max_failure_rate: 1.0"))
    kills = 0
    store = SqliteStateStore(state)
    client = sandbox.iot_client()
    with Fleet(sandbox, failing=frozenset(THINGS[:3]), offline=frozenset(THINGS[3:4])):
        assert cli(sandbox, state, "start", str(path), kill_after=1).returncode == -9
        kills += 1
        for _ in range(40):
            result = cli(sandbox, state, "run", "e2e", kill_after=1)
            assert result.returncode in (0, -9), result.stderr
            kills += result.returncode == -9
            if result.returncode == 0:
                break
    final = store.load("e2e").state
    assert final.status is CampaignStatus.HALTED
    canary = final.wave("canary")
    assert jobs_in_sandbox(sandbox) == [canary.job_id]
    job = client.describe_job(jobId=canary.job_id)["job"]
    assert job["status"] == "CANCELED"
    assert job["reasonCode"] == "CA_MIGRATE_HALT"
    assert "abortConfig" not in job
    assert canary.job_status == "CANCELED"
    kinds = [e.kind for e in store.events("e2e")]
    assert kinds.count("wave-halted") == 1
    assert kinds.count("campaign-halted") == 1
    assert kills >= 5


def test_run_follow_reconciles_until_the_campaign_stops(sandbox, tmp_path) -> None:
    state = tmp_path / "state.sqlite"
    path = tmp_path / "c.yaml"
    path.write_text(campaign_text())
    with Fleet(sandbox):
        assert cli(sandbox, state, "start", str(path)).returncode == 0
        result = cli(sandbox, state, "run", "e2e", "--follow", "--interval", "0.1")
    assert result.returncode == 0, result.stderr
    # piped: one JSON line per change, the last one the final state
    assert json.loads(result.stdout.splitlines()[-1])["status"] == "COMPLETED"
    assert len(jobs_in_sandbox(sandbox)) == 3


def test_a_job_left_by_a_crashed_run_is_adopted_and_a_foreign_one_is_refused(
    sandbox, tmp_path
) -> None:
    rec = reconciler(sandbox, tmp_path)
    text = campaign_text()
    state = rec.start(parse_spec(text), text, None)
    canary = state.wave("canary").job_id
    client = sandbox.iot_client()
    arn = client.describe_thing_group(thingGroupName="canary")["thingGroupArn"]
    # a run that died after CreateJob: same id, same document, written with other whitespace
    document = json.dumps(json.loads(state.documents[canary]), indent=2)
    client.create_job(jobId=canary, targets=[arn], document=document)
    rec.step("e2e")
    kinds = [e.kind for e in rec.store.events("e2e")]
    assert "job-adopted" in kinds
    assert "job-created" not in kinds
    assert jobs_in_sandbox(sandbox) == [canary]

    other = CAMPAIGN.replace("name: e2e", "name: e2e-2").replace("APPROVAL", "auto")
    state2 = rec.start(parse_spec(other), other, None)
    foreign = state2.wave("canary").job_id
    client.create_job(jobId=foreign, targets=[arn], document='{"not":"ours"}')
    with pytest.raises(JobConflictError, match="different document"):
        rec.step("e2e-2")


def test_a_catalog_file_is_used_explicitly_and_shown_loudly(sandbox, tmp_path, monkeypatch) -> None:
    from infra.sandbox import pki as pki_module

    pki = pki_module.SandboxPki.create_or_load(tmp_path / "pki")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    path = tmp_path / "c.yaml"
    path.write_text(campaign_text() + f"catalog: {pki.ats_catalog}\n")
    state = tmp_path / "state.sqlite"
    planned = in_process(sandbox, state, "plan", str(path))
    assert planned.returncode == 0, planned.stderr
    assert f"!! CATALOG {pki.ats_catalog}: NOT the packaged" in planned.stdout
    started = in_process(sandbox, state, "start", str(path))
    assert started.returncode == 0, started.stderr
    assert f"CATALOG: {pki.ats_catalog}" in started.stdout
    assert f"CATALOG: {pki.ats_catalog}" in in_process(sandbox, state, "status", "e2e").stdout
    first = SqliteStateStore(state).events("e2e")[0]
    assert first.data["catalog_is_default"] is False
    assert "NOT the packaged Amazon catalog" in first.reason
    job_id = SqliteStateStore(state).load("e2e").state.wave("canary").job_id
    document = sandbox.iot_client().get_job_document(jobId=job_id)["document"]
    from job_documents import ValidationPolicy, load_catalog

    policy = ValidationPolicy(catalog=load_catalog(pki.ats_catalog))
    roots = validate_document(document, policy).roots
    sandbox_fingerprints = load_catalog(pki.ats_catalog).fingerprints()
    assert {r.sha256 for r in roots} <= sandbox_fingerprints
    assert {r.name for r in roots} == {"amazon-root-ca-1", "amazon-root-ca-3"}
