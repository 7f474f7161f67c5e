from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.errors import UsageError
from orchestrator.model import CampaignState, CampaignStatus, Counts, WavePhase
from orchestrator.planner import (
    Abort,
    Approve,
    CancelJob,
    CreateJob,
    ExplainFailures,
    JobObservation,
    Observations,
    Pause,
    Resume,
    Rollback,
    abort_threshold,
    apply_command,
    decide,
    initial_state,
    job_id_for,
    jobs_to_observe,
)
from orchestrator.spec import parse_spec

from .conftest import README_CAMPAIGN

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPEC = parse_spec(README_CAMPAIGN)
DOCS = {w.name: (f'{{"wave":"{w.name}"}}', f"{i:064x}") for i, w in enumerate(SPEC.waves)}


def fresh() -> CampaignState:
    return initial_state(SPEC, DOCS, T0)


def seen(job_id: str, status: str = "IN_PROGRESS", **counts: int) -> JobObservation:
    return JobObservation(job_id=job_id, exists=True, status=status, counts=Counts(**counts))


def obs(*items: JobObservation) -> Observations:
    return Observations(jobs={o.job_id: o for o in items})


def absent(job_id: str) -> JobObservation:
    return JobObservation(job_id=job_id, exists=False)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def running_canary() -> CampaignState:
    state = decide(SPEC, fresh(), obs(), T0).state
    job = state.wave("canary").job_id
    return decide(SPEC, state, obs(seen(job, queued=100)), at(1)).state


def kinds(decision) -> list[str]:
    """The decisions taken (wave-progress, the reports' timeline marks, are checked apart)."""
    return [e.kind for e in decision.events if e.kind != "wave-progress"]


def test_job_ids_are_deterministic_and_valid() -> None:
    a = job_id_for("ats-2026", "canary", "ab" * 32, "migrate")
    assert a == job_id_for("ats-2026", "canary", "ab" * 32, "migrate")
    assert a != job_id_for("ats-2026", "canary", "ab" * 32, "restore")
    assert a != job_id_for("ats-2026", "canary", "cd" * 32, "migrate")
    long = job_id_for("c" * 64, "w" * 64, "ef" * 32, "migrate")
    assert len(long) <= 64
    assert long != job_id_for("c" * 64, "w" * 63 + "x", "ef" * 32, "migrate")


def test_first_reconcile_launches_the_first_wave_with_its_job_config() -> None:
    decision = decide(SPEC, fresh(), obs(), T0)
    (action,) = decision.actions
    assert isinstance(action, CreateJob)
    assert action.wave == "canary"
    assert action.operation == "migrate"
    cfg = action.config
    assert cfg.thing_groups == ("canary",)
    assert cfg.abort_threshold_percentage == 5.0
    assert cfg.abort_min_executed == 10
    assert cfg.in_progress_timeout_minutes == 30
    assert (cfg.retry_failed, cfg.retry_timed_out) == (1, 1)
    assert decision.state.wave("canary").phase is WavePhase.LAUNCHING
    assert kinds(decision) == ["wave-launching"]


@pytest.mark.parametrize(
    ("rate", "threshold"), [(0.05, 5.0), (0.125, 12.5), (0.0, 0.01), (0.00001, 0.01)]
)
def test_abort_threshold_is_the_rate_in_percent_never_zero(rate, threshold) -> None:
    """AWS aborts at >= threshold; 0 % would abort a wave without failures, so 0 goes as 0.01 %."""
    assert abort_threshold(rate) == threshold


@pytest.mark.parametrize(
    ("observation", "phase", "creates"),
    [
        (None, WavePhase.LAUNCHING, True),  # crashed before the create: create again
        ("absent", WavePhase.LAUNCHING, True),
        ("present", WavePhase.RUNNING, False),  # crashed after the create: adopt, no duplicate
    ],
)
def test_launching_resumes_without_duplicates(observation, phase, creates) -> None:
    state = decide(SPEC, fresh(), obs(), T0).state
    job = state.wave("canary").job_id
    o = {None: obs(), "absent": obs(absent(job)), "present": obs(seen(job, queued=5))}[observation]
    decision = decide(SPEC, state, o, at(1))
    assert decision.state.wave("canary").phase is phase
    assert any(isinstance(a, CreateJob) for a in decision.actions) is creates


@pytest.mark.parametrize(
    ("counts", "phase", "status"),
    [
        ({"succeeded": 5, "queued": 95}, WavePhase.RUNNING, CampaignStatus.RUNNING),
        ({"succeeded": 100}, WavePhase.BAKING, CampaignStatus.RUNNING),
        ({"succeeded": 3, "failed": 1, "queued": 96}, WavePhase.HALTED, CampaignStatus.HALTED),
        ({"succeeded": 90, "failed": 10}, WavePhase.HALTED, CampaignStatus.HALTED),
    ],
)
def test_canary_gate_table(counts, phase, status) -> None:
    state = running_canary()
    job = state.wave("canary").job_id
    decision = decide(SPEC, state, obs(seen(job, **counts)), at(2))
    assert decision.state.wave("canary").phase is phase
    assert decision.state.status is status


def test_bake_then_manual_approval_then_launch() -> None:
    state = running_canary()
    canary = state.wave("canary").job_id
    good = obs(seen(canary, succeeded=100))
    state = decide(SPEC, state, good, at(2)).state
    assert state.wave("canary").bake_until == at(12)
    still = decide(SPEC, state, good, at(11))
    assert still.state.wave("canary").phase is WavePhase.BAKING
    assert still.actions == ()
    done = decide(SPEC, state, good, at(12))
    assert done.state.wave("canary").phase is WavePhase.PASSED
    assert done.state.wave("wave-1").phase is WavePhase.AWAITING_APPROVAL
    assert kinds(done) == ["bake-finished", "wave-passed", "wave-awaiting-approval"]
    assert done.actions == ()
    again = decide(SPEC, done.state, obs(seen(canary, "COMPLETED", succeeded=100)), at(20))
    assert again.actions == ()
    assert again.events == ()
    approved = apply_command(SPEC, again.state, Approve("wave-1"), at(21))
    assert kinds(approved) == ["wave-approved"]
    launch = decide(SPEC, approved.state, obs(), at(22))
    (action,) = launch.actions
    assert isinstance(action, CreateJob)
    assert action.wave == "wave-1"
    assert action.config.maximum_per_minute == 100


def test_gate_lost_during_bake_goes_back_to_running() -> None:
    state = running_canary()
    job = state.wave("canary").job_id
    state = decide(SPEC, state, obs(seen(job, succeeded=100, queued=100)), at(2)).state
    assert state.wave("canary").phase is WavePhase.BAKING
    worse = decide(SPEC, state, obs(seen(job, succeeded=100, failed=4, queued=96)), at(3))
    assert worse.state.wave("canary").phase is WavePhase.RUNNING
    assert kinds(worse) == ["gate-lost"]


def test_gate_lost_during_bake_on_a_completed_job_halts_in_the_same_step() -> None:
    state = running_canary()
    job = state.wave("canary").job_id
    state = decide(SPEC, state, obs(seen(job, succeeded=100, queued=100)), at(2)).state
    assert state.wave("canary").phase is WavePhase.BAKING
    done = obs(seen(job, "COMPLETED", succeeded=5))
    lost = decide(SPEC, state, done, at(3))
    assert kinds(lost) == ["gate-lost", "wave-halted", "campaign-halted"]
    assert lost.state.wave("canary").phase is WavePhase.HALTED
    assert decide(SPEC, lost.state, done, at(3)).events == ()


def test_halt_cancels_the_wave_explains_failures_and_keeps_cancelling_until_canceled() -> None:
    state = running_canary()
    job = state.wave("canary").job_id
    failing = obs(seen(job, succeeded=8, failed=2, queued=90))
    halted = decide(SPEC, state, failing, at(2))
    assert halted.state.status is CampaignStatus.HALTED
    assert {type(a) for a in halted.actions} == {CancelJob, ExplainFailures}
    assert kinds(halted) == ["wave-halted", "campaign-halted"]
    # the cancel did not land (crash): the next reconcile asks again, without new events
    retry = decide(SPEC, halted.state, failing, at(3))
    assert [type(a) for a in retry.actions] == [CancelJob]
    assert retry.events == ()
    stopped = decide(SPEC, halted.state, obs(seen(job, "CANCELED", succeeded=8, failed=2)), at(4))
    assert stopped.actions == ()
    assert job not in jobs_to_observe(stopped.state)


def test_a_halt_cancels_a_job_that_is_still_scheduled() -> None:
    state = running_canary()
    job = state.wave("canary").job_id
    state = decide(SPEC, state, obs(seen(job, "SCHEDULED")), at(2)).state
    aborted = apply_command(SPEC, state, Abort(), at(3))
    assert [type(a) for a in aborted.actions] == [CancelJob]
    assert job in jobs_to_observe(aborted.state)


def test_job_canceled_outside_the_campaign_halts_it() -> None:
    state = running_canary()
    job = state.wave("canary").job_id
    decision = decide(SPEC, state, obs(seen(job, "CANCELED", succeeded=1)), at(2))
    assert decision.state.status is CampaignStatus.HALTED
    assert "canceled outside" in decision.state.reason


def test_job_completed_without_meeting_the_gate_halts() -> None:
    state = running_canary()
    job = state.wave("canary").job_id
    decision = decide(SPEC, state, obs(seen(job, "COMPLETED", succeeded=5)), at(2))
    assert decision.state.wave("canary").phase is WavePhase.HALTED
    assert "job completed" in decision.state.reason


def test_fleet_failure_budget_spans_waves_and_stops_everything() -> None:
    spec = replace(SPEC, halt=replace(SPEC.halt, fleet_failure_budget=5, max_failure_rate=1.0))
    state = initial_state(spec, DOCS, T0)
    canary = state.wave("canary").job_id
    wave1 = state.wave("wave-1").job_id
    state = replace(
        state,
        waves=(
            replace(
                state.waves[0],
                phase=WavePhase.PASSED,
                launched_at=T0,
                job_status="IN_PROGRESS",
                counts=Counts(succeeded=500, failed=3),
            ),
            replace(
                state.waves[1],
                phase=WavePhase.RUNNING,
                launched_at=T0,
                approved=True,
                job_status="IN_PROGRESS",
                counts=Counts(succeeded=500, failed=2),
            ),
            state.waves[2],
        ),
    )
    under = decide(
        spec,
        state,
        obs(
            seen(canary, failed=3, succeeded=500), seen(wave1, failed=2, succeeded=500, queued=5000)
        ),
        at(5),
    )
    assert under.state.status is CampaignStatus.RUNNING
    over = decide(
        spec,
        state,
        obs(
            seen(canary, failed=4, succeeded=500), seen(wave1, failed=2, succeeded=500, queued=5000)
        ),
        at(5),
    )
    assert over.state.status is CampaignStatus.HALTED
    assert "budget" in over.state.reason
    assert {a.job_id for a in over.actions if isinstance(a, CancelJob)} == {canary, wave1}


@pytest.mark.parametrize(
    ("offline", "minutes", "phase"),
    [
        ("ignore", 59, WavePhase.RUNNING),
        ("ignore", 60, WavePhase.PASSED),
        ("block", 60, WavePhase.HALTED),
    ],
)
def test_wave_deadline_with_devices_that_never_started(offline, minutes, phase) -> None:
    text = README_CAMPAIGN.replace(
        "    gate: {min_success_rate: 0.98, min_completed_fraction: 0.95}\n",
        f"    gate: {{min_success_rate: 0.9, min_completed_fraction: 0.95}}\n"
        f"    deadline_minutes: 60\n    offline: {offline}\n",
    )
    spec = parse_spec(text)
    state = initial_state(spec, DOCS, T0)
    job = state.wave("wave-2").job_id
    state = replace(
        state,
        waves=(
            replace(state.waves[0], phase=WavePhase.PASSED, job_status="COMPLETED"),
            replace(state.waves[1], phase=WavePhase.PASSED, job_status="COMPLETED"),
            replace(state.waves[2], phase=WavePhase.RUNNING, launched_at=T0),
        ),
    )
    decision = decide(spec, state, obs(seen(job, succeeded=900, queued=100)), at(minutes))
    wave = decision.state.wave("wave-2")
    assert wave.phase is phase
    if minutes >= 60:
        assert wave.never_started == 100
        assert "deadline-reached" in kinds(decision)
    else:
        assert wave.never_started is None


def test_pause_stops_launches_and_resume_continues() -> None:
    paused = apply_command(SPEC, fresh(), Pause(), T0).state
    assert decide(SPEC, paused, obs(), at(1)).actions == ()
    with pytest.raises(UsageError, match="only a RUNNING one pauses"):
        apply_command(SPEC, paused, Pause(), at(1))
    resumed = apply_command(SPEC, paused, Resume(), at(2)).state
    assert [type(a) for a in decide(SPEC, resumed, obs(), at(3)).actions] == [CreateJob]


def test_abort_cancels_running_jobs_at_once() -> None:
    state = running_canary()
    job = state.wave("canary").job_id
    decision = apply_command(SPEC, state, Abort(), at(2))
    assert decision.state.status is CampaignStatus.ABORTED
    assert [a.job_id for a in decision.actions if isinstance(a, CancelJob)] == [job]
    later = decide(SPEC, decision.state, obs(seen(job, "CANCELED")), at(3))
    assert later.actions == ()
    with pytest.raises(UsageError, match="nothing to abort"):
        apply_command(SPEC, later.state, Abort(), at(4))


def test_rollback_creates_restore_jobs_and_finishes_when_they_complete() -> None:
    state = running_canary()
    canary = state.wave("canary").job_id
    restore_docs = {"canary": ('{"op":"restore"}', "f" * 64)}
    started = apply_command(SPEC, state, Rollback(restore_docs), at(2))
    restore_id = started.state.wave("canary").restore_job_id
    assert restore_id == job_id_for(SPEC.name, "canary", "f" * 64, "restore")
    assert started.state.documents[restore_id] == '{"op":"restore"}'
    step = decide(SPEC, started.state, obs(seen(canary, queued=90), absent(restore_id)), at(3))
    creates = [a for a in step.actions if isinstance(a, CreateJob)]
    assert [(a.job_id, a.operation) for a in creates] == [(restore_id, "restore")]
    assert creates[0].config.abort_threshold_percentage is None
    assert [a.job_id for a in step.actions if isinstance(a, CancelJob)] == [canary]
    running = decide(SPEC, step.state, obs(seen(canary, "CANCELED"), seen(restore_id)), at(4))
    assert running.state.status is CampaignStatus.ROLLING_BACK
    assert running.actions == ()
    done = decide(SPEC, running.state, obs(seen(restore_id, "COMPLETED", succeeded=10)), at(5))
    assert done.state.status is CampaignStatus.ROLLED_BACK


def test_commands_that_do_not_apply_say_so() -> None:
    state = running_canary()
    with pytest.raises(UsageError, match="only a waiting wave"):
        apply_command(SPEC, state, Approve("canary"), at(2))
    with pytest.raises(UsageError, match="no wave named"):
        apply_command(SPEC, state, Approve("nope"), at(2))
    with pytest.raises(UsageError, match="only a PAUSED one resumes"):
        apply_command(SPEC, state, Resume(), at(2))


def test_decide_is_idempotent_for_unchanged_observations() -> None:
    state = running_canary()
    job = state.wave("canary").job_id
    o = obs(seen(job, succeeded=5, queued=95))
    first = decide(SPEC, state, o, at(2))
    second = decide(SPEC, first.state, o, at(2))
    assert second.state == first.state
    assert second.events == ()
    assert second.actions == ()


def test_whole_campaign_to_completion() -> None:
    state = fresh()
    now = T0
    done_jobs: dict[str, JobObservation] = {}
    for _ in range(50):
        now += timedelta(minutes=15)
        decision = decide(SPEC, state, Observations(jobs=done_jobs), now)
        state = decision.state
        for action in decision.actions:
            assert isinstance(action, CreateJob)
            done_jobs[action.job_id] = seen(action.job_id, "COMPLETED", succeeded=1000)
        if state.wave("wave-1").phase is WavePhase.AWAITING_APPROVAL:
            state = apply_command(SPEC, state, Approve("wave-1"), now).state
        if state.status is CampaignStatus.COMPLETED:
            break
    assert state.status is CampaignStatus.COMPLETED
    assert len(done_jobs) == 3


@pytest.mark.parametrize(
    ("counts", "phase", "status"),
    [
        ({"succeeded": 100}, WavePhase.RUNNING, CampaignStatus.PAUSED),  # no promotion
        ({"succeeded": 8, "failed": 2, "queued": 90}, WavePhase.HALTED, CampaignStatus.HALTED),
    ],
)
def test_a_paused_campaign_still_halts_but_promotes_nothing(counts, phase, status) -> None:
    state = apply_command(SPEC, running_canary(), Pause(), at(1)).state
    job = state.wave("canary").job_id
    decision = decide(SPEC, state, obs(seen(job, **counts)), at(30))
    assert decision.state.wave("canary").phase is phase
    assert decision.state.status is status
    assert not any(isinstance(a, CreateJob) for a in decision.actions)


def test_a_paused_campaign_still_honours_the_fleet_failure_budget() -> None:
    spec = replace(SPEC, halt=replace(SPEC.halt, fleet_failure_budget=3, max_failure_rate=1.0))
    state = apply_command(spec, running_canary(), Pause(), at(1)).state
    job = state.wave("canary").job_id
    decision = decide(spec, state, obs(seen(job, succeeded=500, failed=4)), at(2))
    assert decision.state.status is CampaignStatus.HALTED
    assert [a.job_id for a in decision.actions if isinstance(a, CancelJob)] == [job]
