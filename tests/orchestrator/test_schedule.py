"""`next_decision_at`: when the planner acts on the clock alone, checked against `decide`."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.model import CampaignSpec, CampaignState, CampaignStatus, Counts, WavePhase
from orchestrator.planner import JobObservation, Observations, decide, initial_state
from orchestrator.schedule import next_decision_at, wave_deadline
from orchestrator.spec import parse_spec

from .conftest import README_CAMPAIGN

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
DEADLINE_SPEC = parse_spec(
    README_CAMPAIGN.replace(
        "    gate: {min_success_rate: 0.98, min_completed_fraction: 0.95}\n",
        "    gate: {min_success_rate: 0.9, min_completed_fraction: 0.95}\n"
        "    deadline_minutes: 60\n    offline: block\n",
    )
)
SPEC = parse_spec(README_CAMPAIGN)


def _state(spec: CampaignSpec) -> CampaignState:
    docs = {w.name: (f'{{"wave":"{w.name}"}}', f"{i:064x}") for i, w in enumerate(spec.waves)}
    return initial_state(spec, docs, T0)


def _last_wave(state: CampaignState, **fields: object) -> CampaignState:
    passed = [replace(w, phase=WavePhase.PASSED, job_status="COMPLETED") for w in state.waves]
    return replace(state, waves=(*passed[:-1], replace(state.waves[-1], **fields)))


def _observe(state: CampaignState, **counts: int) -> Observations:
    job = state.waves[-1].job_id
    seen = JobObservation(job_id=job, exists=True, status="IN_PROGRESS", counts=Counts(**counts))
    return Observations(jobs={job: seen})


def _acts_at(spec: CampaignSpec, state: CampaignState, obs: Observations, now: datetime) -> bool:
    decision = decide(spec, state, obs, now)
    return bool(decision.events or decision.actions)


def test_a_baking_wave_is_due_when_its_bake_ends_and_decide_acts_then_not_before() -> None:
    bake_until = T0 + timedelta(minutes=10)
    state = _last_wave(
        _state(SPEC),
        phase=WavePhase.BAKING,
        launched_at=T0,
        bake_until=bake_until,
        counts=Counts(succeeded=1000),
    )
    obs = _observe(state, succeeded=1000)
    state = decide(SPEC, state, obs, T0).state  # fold the observation in
    assert next_decision_at(SPEC, state) == bake_until
    assert not _acts_at(SPEC, state, obs, bake_until - SECOND)
    assert _acts_at(SPEC, state, obs, bake_until)


def test_a_running_wave_is_due_at_its_deadline_once() -> None:
    state = _last_wave(_state(DEADLINE_SPEC), phase=WavePhase.RUNNING, launched_at=T0)
    obs = _observe(state, succeeded=500, queued=500)
    state = decide(DEADLINE_SPEC, state, obs, T0).state
    deadline = T0 + timedelta(minutes=60)
    assert next_decision_at(DEADLINE_SPEC, state) == deadline
    assert not _acts_at(DEADLINE_SPEC, state, obs, deadline - SECOND)
    after = decide(DEADLINE_SPEC, state, obs, deadline).state
    assert after.waves[-1].never_started == 500
    assert next_decision_at(DEADLINE_SPEC, after) is None


def test_a_baking_wave_whose_deadline_comes_first_is_due_at_the_deadline() -> None:
    # The planner judges baking waves against their deadline too; a copy of the rule
    # that looked at running waves only would sleep through it to the bake's end.
    deadline = T0 + timedelta(minutes=60)
    state = _last_wave(
        _state(DEADLINE_SPEC),
        phase=WavePhase.BAKING,
        launched_at=T0,
        bake_until=deadline + timedelta(minutes=30),
        counts=Counts(succeeded=960, queued=40),
    )
    obs = _observe(state, succeeded=960, queued=40)
    state = decide(DEADLINE_SPEC, state, obs, T0).state
    assert state.waves[-1].phase is WavePhase.BAKING
    assert next_decision_at(DEADLINE_SPEC, state) == deadline
    assert _acts_at(DEADLINE_SPEC, state, obs, deadline)


def test_a_paused_campaign_is_due_at_a_deadline_but_not_at_a_bake_end() -> None:
    base = _state(DEADLINE_SPEC)
    baking = _last_wave(
        base,
        phase=WavePhase.BAKING,
        launched_at=T0,
        bake_until=T0 + timedelta(minutes=10),
        never_started=0,
    )
    paused = replace(baking, status=CampaignStatus.PAUSED)
    assert next_decision_at(DEADLINE_SPEC, paused) is None
    running = _last_wave(base, phase=WavePhase.RUNNING, launched_at=T0)
    paused_running = replace(running, status=CampaignStatus.PAUSED)
    assert next_decision_at(DEADLINE_SPEC, paused_running) == T0 + timedelta(minutes=60)


@pytest.mark.parametrize(
    "status", [CampaignStatus.HALTED, CampaignStatus.COMPLETED, CampaignStatus.ROLLING_BACK]
)
def test_a_campaign_that_judges_no_waves_has_no_time_based_decision(status) -> None:
    state = _last_wave(_state(DEADLINE_SPEC), phase=WavePhase.RUNNING, launched_at=T0)
    assert next_decision_at(DEADLINE_SPEC, replace(state, status=status)) is None


def test_waves_without_bake_or_deadline_have_no_time_based_decision() -> None:
    state = _last_wave(_state(SPEC), phase=WavePhase.RUNNING, launched_at=T0)
    assert wave_deadline(SPEC.wave(state.waves[-1].name), state.waves[-1]) is None
    assert next_decision_at(SPEC, state) is None
    assert next_decision_at(SPEC, _state(SPEC)) is None
