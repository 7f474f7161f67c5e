"""When the planner's time-based decisions fall due: pure, no I/O, no clock.

The planner decides on observations and on time. The times are a baking wave's
`bake_until` (it passes if its gate still holds) and a running or baking wave's
deadline (its queued devices are counted as never started, and a gate not yet
met halts it). Drivers that move a simulated clock (the demo, rehearsals) ask
`next_decision_at` instead of copying the rule; the planner reads its deadlines
from `wave_deadline`, so the two cannot drift.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from orchestrator.model import (
    CampaignSpec,
    CampaignState,
    CampaignStatus,
    WavePhase,
    WaveSpec,
    WaveState,
)

__all__ = ["next_decision_at", "wave_deadline"]

_JUDGED = frozenset({WavePhase.RUNNING, WavePhase.BAKING})


def wave_deadline(wave_spec: WaveSpec, wave: WaveState) -> datetime | None:
    """When a launched wave's deadline is reached (None: it has none, or has not launched)."""
    if wave_spec.deadline_minutes is None or wave.launched_at is None:
        return None
    return wave.launched_at + timedelta(minutes=wave_spec.deadline_minutes)


def next_decision_at(spec: CampaignSpec, state: CampaignState) -> datetime | None:
    """The earliest time at which `decide` would act on the clock alone; None: never.

    Only a running or paused campaign judges its waves. A paused one still halts at
    a deadline but promotes nothing, so a bake's end is no decision while paused.
    A deadline is a decision once: after it, the wave's never-started count is set.
    A time already past is returned as it is: the decision is due now.
    """
    if state.status not in (CampaignStatus.RUNNING, CampaignStatus.PAUSED):
        return None
    times: list[datetime] = []
    for wave in state.waves:
        if wave.phase not in _JUDGED:
            continue
        if (
            wave.phase is WavePhase.BAKING
            and wave.bake_until is not None
            and state.status is CampaignStatus.RUNNING
        ):
            times.append(wave.bake_until)
        deadline = wave_deadline(spec.wave(wave.name), wave)
        if deadline is not None and wave.never_started is None:
            times.append(deadline)
    return min(times, default=None)
