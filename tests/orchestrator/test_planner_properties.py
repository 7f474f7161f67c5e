"""Invariants of the planner over random histories of observations and operator commands."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import UsageError
from orchestrator.model import ACTIVE_PHASES, CampaignStatus, Counts, WavePhase
from orchestrator.planner import (
    Abort,
    Approve,
    CreateJob,
    JobObservation,
    Observations,
    Pause,
    Resume,
    apply_command,
    decide,
    initial_state,
)
from orchestrator.spec import parse_spec

from .conftest import README_CAMPAIGN

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SPEC = parse_spec(README_CAMPAIGN)
DOCS = {w.name: ("{}", f"{i:064x}") for i, w in enumerate(SPEC.waves)}

counts = st.builds(
    Counts,
    queued=st.integers(0, 300),
    in_progress=st.integers(0, 50),
    succeeded=st.integers(0, 1000),
    failed=st.integers(0, 30),
    rejected=st.integers(0, 5),
    timed_out=st.integers(0, 5),
)
job_status = st.sampled_from(["IN_PROGRESS", "IN_PROGRESS", "COMPLETED", "CANCELED"])
command = st.sampled_from([None, None, None, "approve", "pause", "resume", "abort"])
history = st.lists(
    st.tuples(counts, job_status, st.booleans(), command, st.integers(1, 40)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(history)
def test_waves_run_in_order_and_each_job_is_created_for_a_launching_wave(steps) -> None:
    state = initial_state(SPEC, DOCS, T0)
    now = T0
    created: set[str] = set()
    for wave_counts, status, exists, cmd, minutes in steps:
        now += timedelta(minutes=minutes)
        jobs = {
            w.job_id: JobObservation(w.job_id, exists or w.job_id in created, status, wave_counts)
            for w in state.waves
            if w.phase in ACTIVE_PHASES or w.launched_at is not None
        }
        decision = decide(SPEC, state, Observations(jobs), now)
        again = decide(SPEC, decision.state, Observations(jobs), now)
        assert again.events == ()
        state = decision.state
        for action in decision.actions:
            if isinstance(action, CreateJob):
                assert state.wave(action.wave).phase is WavePhase.LAUNCHING
                assert action.job_id == state.wave(action.wave).job_id
                created.add(action.job_id)
        for index, wave in enumerate(state.waves):
            if wave.launched_at is not None:
                assert all(w.phase is WavePhase.PASSED for w in state.waves[:index])
        if state.status is CampaignStatus.COMPLETED:
            assert all(w.phase is WavePhase.PASSED for w in state.waves)
        if cmd is not None:
            made = {
                "approve": Approve("wave-1"),
                "pause": Pause(),
                "resume": Resume(),
                "abort": Abort(),
            }[cmd]
            with contextlib.suppress(UsageError):
                state = apply_command(SPEC, state, made, now).state
        if state.status is CampaignStatus.ABORTED:
            assert not any(w.phase in ACTIVE_PHASES for w in state.waves)
