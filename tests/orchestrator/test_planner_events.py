"""The planner's transitions, event by event: what each says, about which wave, and when."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from job_documents import Operation
from orchestrator.model import CampaignState, CampaignStatus, Counts, WavePhase
from orchestrator.planner import (
    CreateJob,
    Decision,
    JobObservation,
    Observations,
    decide,
    initial_state,
    job_config,
)
from orchestrator.spec import parse_spec

from .conftest import README_CAMPAIGN

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPEC = parse_spec(README_CAMPAIGN)
DEADLINE_SPEC = parse_spec(
    README_CAMPAIGN.replace(
        "    gate: {min_success_rate: 0.95, min_completed: 10, bake_minutes: 10}\n",
        "    gate: {min_success_rate: 0.95, min_completed: 10, bake_minutes: 10}\n"
        "    deadline_minutes: 30\n",
    )
)
DOCS = {w.name: (f'{{"wave":"{w.name}"}}', f"{i:064x}") for i, w in enumerate(SPEC.waves)}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def seen(job_id: str, status: str = "IN_PROGRESS", **counts: int) -> JobObservation:
    return JobObservation(
        job_id=job_id, exists=True, status=status, counts=Counts(**counts), rollout_done=True
    )


def obs(*items: JobObservation) -> Observations:
    return Observations(jobs={o.job_id: o for o in items})


def events(decision: Decision) -> list[tuple[str, str, str | None]]:
    """The transitions a decision reports (progress points aside)."""
    return [(e.kind, e.reason, e.wave) for e in decision.events if e.kind != "wave-progress"]


def data(decision: Decision, kind: str) -> dict[str, Any]:
    (event,) = [e for e in decision.events if e.kind == kind]
    return dict(event.data)


def running(spec: Any = SPEC) -> tuple[CampaignState, str]:
    state = decide(spec, initial_state(spec, DOCS, T0), obs(), T0).state
    job = state.wave("canary").job_id
    return decide(spec, state, obs(seen(job, queued=100)), at(1)).state, job


def test_a_launching_wave_whose_job_is_absent_gets_its_create_job_again() -> None:
    state = decide(SPEC, initial_state(SPEC, DOCS, T0), obs(), T0).state
    job = state.wave("canary").job_id
    again = decide(SPEC, state, obs(JobObservation(job_id=job, exists=False)), at(1))
    assert again.actions == (
        CreateJob(
            wave="canary",
            job_id=job,
            operation=Operation.MIGRATE,
            config=job_config(SPEC, SPEC.wave("canary"), Operation.MIGRATE),
        ),
    )


def test_a_gate_met_bakes_then_passes_and_the_next_manual_wave_waits() -> None:
    state, job = running()
    passed = decide(SPEC, state, obs(seen(job, succeeded=100)), at(2))
    verdict = passed.state.wave("canary").verdict
    assert verdict.startswith("gate met: 100/100 succeeded")
    assert events(passed) == [("gate-passed", verdict, "canary")]
    baking = passed.state.wave("canary")
    assert baking.phase is WavePhase.BAKING
    assert baking.bake_until == at(12)
    done = decide(SPEC, passed.state, obs(seen(job, "COMPLETED", succeeded=100)), at(12))
    assert events(done) == [
        ("bake-finished", "bake time over, gate still met", "canary"),
        ("wave-passed", verdict, "canary"),
        (
            "wave-awaiting-approval",
            "run `ca-migrate approve ats-2026 wave-1` to launch it",
            "wave-1",
        ),
    ]
    canary = done.state.wave("canary")
    assert canary.phase is WavePhase.PASSED
    assert canary.finished_at == at(12)
    assert done.state.wave("wave-1").phase is WavePhase.AWAITING_APPROVAL


def test_a_gate_lost_while_baking_goes_back_to_running_and_says_why() -> None:
    state, job = running()
    baking = decide(SPEC, state, obs(seen(job, succeeded=100)), at(2)).state
    lost = decide(SPEC, baking, obs(seen(job, succeeded=100, failed=2)), at(3))
    wave = lost.state.wave("canary")
    assert wave.verdict.startswith("waiting: success lower bound")
    assert events(lost) == [("gate-lost", wave.verdict, "canary")]
    assert wave.phase is WavePhase.RUNNING
    assert wave.bake_until is None


def test_the_last_wave_passing_completes_the_campaign() -> None:
    state, _ = running()
    waves = tuple(
        replace(w, phase=WavePhase.PASSED) if w.name != "wave-2" else w for w in state.waves
    )
    last = state.wave("wave-2")
    waves = tuple(
        replace(w, phase=WavePhase.RUNNING, launched_at=at(1)) if w.name == "wave-2" else w
        for w in waves
    )
    state = replace(state, waves=waves)
    done = decide(SPEC, state, obs(seen(last.job_id, "COMPLETED", succeeded=400)), at(5))
    verdict = done.state.wave("wave-2").verdict
    assert events(done) == [
        ("gate-passed", verdict, "wave-2"),
        ("wave-passed", verdict, "wave-2"),
        ("campaign-completed", "every wave passed", None),
    ]
    assert done.state.status is CampaignStatus.COMPLETED
    assert done.state.reason == "every wave passed"
    assert done.state.wave("wave-2").finished_at == at(5)


def test_a_deadline_counts_what_never_started_and_halts_an_unmet_gate() -> None:
    state, job = running(DEADLINE_SPEC)
    counts = {"queued": 40, "in_progress": 10, "succeeded": 50}
    late = decide(DEADLINE_SPEC, state, obs(seen(job, **counts)), at(31))
    halted = late.state.wave("canary")
    assert halted.never_started == 40
    assert halted.phase is WavePhase.HALTED
    assert halted.verdict.startswith("deadline reached and waiting: ")
    assert events(late)[0] == (
        "deadline-reached",
        "40 devices never started, 10 still running",
        "canary",
    )
    assert data(late, "deadline-reached") == {"never_started": 40, "in_progress": 10}
    assert events(late)[1] == ("wave-halted", halted.verdict, "canary")


def test_a_job_canceled_outside_the_campaign_halts_its_wave() -> None:
    state, job = running()
    canceled = decide(SPEC, state, obs(seen(job, "CANCELED", succeeded=5, queued=95)), at(2))
    wave = canceled.state.wave("canary")
    assert wave.phase is WavePhase.HALTED
    assert wave.verdict == "the job was canceled outside this campaign"


def test_a_job_its_abort_config_canceled_halts_its_wave_naming_the_rule() -> None:
    state, job = running()
    canceled = decide(SPEC, state, obs(seen(job, "CANCELED", succeeded=9, failed=1)), at(2))
    wave = canceled.state.wave("canary")
    assert wave.phase is WavePhase.HALTED
    assert wave.verdict == (
        "the job's abortConfig canceled it: 1 of 10 finished executions failed, "
        "reaching max_failure_rate 5.0%"
    )


def test_a_failure_rate_halt_keeps_the_gate_reason() -> None:
    state, job = running()
    halted = decide(SPEC, state, obs(seen(job, succeeded=20, failed=10)), at(2))
    wave = halted.state.wave("canary")
    assert wave.verdict == "failure rate 33.3% (10/30) reaches max_failure_rate 5.0%"
    assert halted.state.reason == f"wave canary halted: {wave.verdict}"


def test_an_exhausted_fleet_budget_cancels_the_active_waves_only() -> None:
    state, job = running()
    spent = decide(SPEC, state, obs(seen(job, succeeded=1000, failed=201)), at(2))
    assert spent.state.status is CampaignStatus.HALTED
    canary = spent.state.wave("canary")
    assert canary.phase is WavePhase.CANCELED
    assert canary.finished_at == at(2)
    assert spent.state.wave("wave-1").phase is WavePhase.PENDING
    assert spent.state.reason == "fleet failure budget exhausted: 201 failed devices > 200"


def test_a_gate_met_while_the_job_still_rolls_out_waits() -> None:
    state, job = running()
    rolling = JobObservation(
        job_id=job, exists=True, status="IN_PROGRESS", counts=Counts(succeeded=100),
        rollout_done=False,
    )  # fmt: skip
    waiting = decide(SPEC, state, obs(rolling), at(2))
    assert events(waiting) == []
    assert waiting.state.wave("canary").phase is WavePhase.RUNNING
    verdict = waiting.state.wave("canary").verdict
    assert verdict.startswith("waiting: the job is still rolling out to its targets (")
