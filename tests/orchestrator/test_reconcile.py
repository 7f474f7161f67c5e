from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from job_documents import ManualClock, validate_document
from orchestrator.errors import CampaignExistsError, JobConflictError, LeaseHeldError, SpecError
from orchestrator.model import CampaignStatus, WavePhase
from orchestrator.planner import Approve, Pause
from orchestrator.reconcile import Reconciler
from orchestrator.spec import parse_spec
from orchestrator.store.sqlite import SqliteStateStore
from orchestrator.testing import FakeJobs

from .conftest import README_CAMPAIGN

GROUPS = {"canary": 100, "fleet-a": 1000, "fleet-b": 500, "fleet-c": 500}


@pytest.fixture
def world(tmp_path: Path):
    clock = ManualClock()
    api = FakeJobs(GROUPS)
    store = SqliteStateStore(tmp_path / "state.sqlite")
    rec = Reconciler(store, api, clock)
    rec.start(parse_spec(README_CAMPAIGN), README_CAMPAIGN, None)
    return rec, api, clock, store


def kinds(store) -> list[str]:
    return [e.kind for e in store.events("ats-2026")]


def test_start_builds_valid_documents_and_records_the_endpoint(world) -> None:
    _, api, _, store = world
    state = store.load("ats-2026").state
    assert len(state.documents) == 3
    for wave in state.waves:
        doc = validate_document(state.documents[wave.job_id])
        assert doc.wave == wave.name
        assert doc.endpoint is not None
        assert doc.endpoint.host == api.endpoint
        assert doc.sha256[:12] in wave.job_id
    (started,) = store.events("ats-2026")
    assert started.data["endpoint"] == api.endpoint
    assert started.data["catalog_is_default"] is True


def test_start_refuses_a_legacy_endpoint(tmp_path: Path) -> None:
    text = README_CAMPAIGN.replace("endpoint: auto", "endpoint: a1b2.iot.us-east-1.amazonaws.com")
    rec = Reconciler(SqliteStateStore(tmp_path / "s"), FakeJobs(GROUPS), ManualClock())
    with pytest.raises(SpecError, match="endpoint"):
        rec.start(parse_spec(text), text, None)


def test_whole_campaign_runs_to_completion_with_one_job_per_wave(world) -> None:
    rec, api, clock, store = world
    for _ in range(40):
        result = rec.step("ats-2026")
        for job_id, job in api.jobs.items():
            if job.status == "IN_PROGRESS":
                api.finish(job_id)
        if result.state.wave("wave-1").phase is WavePhase.AWAITING_APPROVAL:
            rec.command("ats-2026", lambda _s, _st: Approve("wave-1"))
        if result.state.status is CampaignStatus.COMPLETED:
            break
        clock.advance(timedelta(minutes=10))
    assert result.state.status is CampaignStatus.COMPLETED
    assert api.calls["CreateJob"] == 3
    assert len(api.jobs) == 3
    log = kinds(store)
    assert log.count("job-created") == 3
    assert log.count("wave-passed") == 3
    assert log[-1] == "campaign-completed"


def test_create_that_finds_the_job_adopts_it(world) -> None:
    rec, api, _, store = world
    state = store.load("ats-2026").state
    job_id = state.wave("canary").job_id
    # a previous run created the job and died before recording it
    api.create_job(job_id, state.documents[job_id], _config(rec, "canary"))
    rec.step("ats-2026")
    assert api.calls["GetJobDocument"] == 1
    assert "job-adopted" in kinds(store)
    assert "job-created" not in kinds(store)


def test_create_that_finds_another_document_stops_with_a_conflict(world) -> None:
    rec, api, _, store = world
    job_id = store.load("ats-2026").state.wave("canary").job_id
    api.create_job(job_id, '{"schema":"something else"}', _config(rec, "canary"))
    with pytest.raises(JobConflictError, match="different document"):
        rec.step("ats-2026")
    assert kinds(store)[-1] == "action-failed"


def test_halt_explains_failures_and_cancels(world) -> None:
    rec, api, clock, store = world
    rec.step("ats-2026")
    job_id = store.load("ats-2026").state.wave("canary").job_id
    api.set_counts(job_id, succeeded=5, failed=5, queued=90)
    clock.advance(60)
    result = rec.step("ats-2026")
    assert result.state.status is CampaignStatus.HALTED
    assert api.jobs[job_id].status == "CANCELED"
    explained = next(e for e in store.events("ats-2026") if e.kind == "failures-explained")
    assert len(explained.data["samples"]) == 5
    assert explained.data["samples"][0]["details"] == {"reason": "probe-failed"}


def test_a_held_lease_blocks_a_second_reconcile(world) -> None:
    rec, _, clock, store = world
    store.acquire_lease("ats-2026", "other-host:1:x", timedelta(minutes=2), clock.now())
    with pytest.raises(LeaseHeldError, match="try again"):
        rec.step("ats-2026")


def test_pause_is_recorded_and_stops_launches(world) -> None:
    rec, api, _, store = world
    result = rec.command("ats-2026", lambda _s, _st: Pause())
    assert result.state.status is CampaignStatus.PAUSED
    assert api.calls["CreateJob"] == 0
    assert "campaign-paused" in kinds(store)


def test_rollback_creates_restore_jobs_for_launched_waves(world) -> None:
    rec, api, clock, store = world
    rec.step("ats-2026")
    canary = store.load("ats-2026").state.wave("canary").job_id
    clock.advance(60)
    result = rec.rollback("ats-2026")
    restore_id = result.state.wave("canary").restore_job_id
    assert restore_id is not None
    assert restore_id in api.jobs
    assert validate_document(api.jobs[restore_id].document).operation == "restore"
    assert api.jobs[canary].status == "CANCELED"
    api.finish(restore_id)
    assert rec.step("ats-2026").state.status is CampaignStatus.ROLLED_BACK


def _config(rec: Reconciler, wave: str):
    from orchestrator.planner import job_config

    spec = parse_spec(README_CAMPAIGN)
    _ = rec
    return job_config(spec, spec.wave(wave), "migrate")


def test_start_again_with_the_same_file_is_a_no_op_and_another_file_is_refused(world) -> None:
    rec, api, _, store = world
    again = rec.start(parse_spec(README_CAMPAIGN), README_CAMPAIGN, None)
    assert again == store.load("ats-2026").state
    assert kinds(store) == ["campaign-started"]
    other = README_CAMPAIGN.replace("bake_minutes: 10", "bake_minutes: 11")
    with pytest.raises(CampaignExistsError, match="already exists"):
        rec.start(parse_spec(other), other, None)
    assert api.calls["CreateJob"] == 0


def test_a_reconciler_parses_a_stored_campaign_file_once(world, monkeypatch) -> None:
    import orchestrator.reconcile as reconcile_module

    rec, _, clock, _ = world
    calls: list[str] = []

    def counting_parse(text: str, source: str = "", base_dir: Path | None = None):
        calls.append(source)
        return parse_spec(text, source, base_dir)

    monkeypatch.setattr(reconcile_module, "parse_spec", counting_parse)
    for _ in range(3):
        rec.step("ats-2026")
        clock.advance(timedelta(minutes=1))
    assert calls == ["campaign ats-2026"]
