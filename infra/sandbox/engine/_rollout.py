"""Rollout: which of a job's things are notified when.

Without a rollout configuration or maintenance windows every target is
notified at once; otherwise things wait in `rollout_pending` and are released
one batch per `ROLLOUT_PERIOD_SECONDS` (constant or exponential rate), and only
while a maintenance window is open.

Invariants:
- `rollout_queued` is the set of `rollout_pending`; a thing is in at most one
  of `rollout_pending` and `executions`.
- `job.rollout` is True exactly while a "rollout" deadline for the job is armed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from infra.sandbox import decisions as d
from infra.sandbox.engine import _policies
from infra.sandbox.engine._records import _Job
from infra.sandbox.engine._state import EngineState


def release_batch(state: EngineState, job: _Job, now: float) -> None:
    """Notify the next batch of a paced job's things; schedule the following batch."""
    if job.windows is not None and job.windows.open_until(now) is None:
        # Outside every maintenance window: wait for the next one to open.
        job.next_rollout_at = job.windows.next_open(now)
        if job.next_rollout_at is not None:
            state.push_deadline(job.next_rollout_at, "rollout", job, 0)
        return
    config = job.rollout_config or {}
    cap = float(min(config.get("maximumPerMinute", d.MAX_PER_MINUTE), d.MAX_PER_MINUTE))
    exponential = config.get("exponentialRate")
    if exponential:
        criteria = exponential["rateIncreaseCriteria"]
        step = criteria.get("numberOfNotifiedThings") or criteria.get("numberOfSucceededThings")
        progress = job.notified if "numberOfNotifiedThings" in criteria else job.counts["SUCCEEDED"]
        if step:
            while progress - job.rate_baseline >= step and job.rate < cap:
                job.rate = min(job.rate * float(exponential["incrementFactor"]), cap)
                job.rate_baseline += int(step)
    batch = (
        len(job.rollout_pending)
        if job.rollout_config is None
        else max(1, math.floor(min(job.rate, cap)))
    )
    released = 0
    while job.rollout_pending and released < batch:
        name = job.rollout_pending.popleft()
        job.rollout_queued.discard(name)
        thing = state.things.get(name)
        if thing is None or name in job.executions:
            continue
        state.new_execution(job, thing, now)
        released += 1
    job.next_rollout_at = now + d.ROLLOUT_PERIOD_SECONDS
    if job.rollout_pending:
        state.push_deadline(job.next_rollout_at, "rollout", job, 0)
    else:
        job.rollout = False
        _policies.maybe_complete(state, job, now)


def enqueue_targets(state: EngineState, job: _Job, names: Iterable[str], now: float) -> None:
    """Add things to a job: at once without a rollout config or windows, else paced."""
    if job.end_at is not None and now >= job.end_at:
        return  # the job's scheduled end stopped its rollout
    if job.rollout_config is None and job.windows is None:
        for name in names:
            if name not in job.executions:
                state.new_execution(job, state.things[name], now)
        return
    was_idle = not job.rollout_pending
    for name in names:
        if name not in job.executions and name not in job.rollout_queued:
            job.rollout_pending.append(name)
            job.rollout_queued.add(name)
    if job.rollout_pending and was_idle and not job.rollout:
        job.rollout = True
        # A continuous job's late arrivals wait for the next batch slot, so the
        # pace holds across idle periods.
        if job.next_rollout_at is not None and now < job.next_rollout_at:
            state.push_deadline(job.next_rollout_at, "rollout", job, 0)
        else:
            release_batch(state, job, now)
