"""Rollout: which of a job's things are notified when.

Things wait in `rollout_pending` and are released one batch per
`ROLLOUT_PERIOD_SECONDS`: at the job's rate (constant or exponential) or, without
a rollout configuration, at AWS's default pace (`state.default_per_minute`), and
only while a maintenance window is open; a job whose window closes with things
still to notify is SCHEDULED until the next window opens. Only an engine built
with `default_per_minute=None` notifies an unconfigured job's targets at once.

Invariants:
- `rollout_queued` is the set of `rollout_pending`; a thing waiting there has
  no execution of the job, or a REMOVED one (its thing left and came back).
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
    if job.windows is not None:
        until = job.windows.open_until(now)
        if until is None:
            # Outside every maintenance window: wait for the next one to open.
            pause_between_windows(state, job, now)
            job.next_rollout_at = job.windows.next_open(now)
            if job.next_rollout_at is not None:
                state.push_deadline(job.next_rollout_at, "rollout", job, 0)
            return
        if job.status == "SCHEDULED":
            job.status = "IN_PROGRESS"  # the next window opened: the rollout resumes
            job.last_updated_at = now
            state.changed()
        if job.window_end_at != until:
            job.window_end_at = until
            state.push_deadline(until, "window-end", job, 0)
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
    if job.rollout_config is not None:
        batch = max(1, math.floor(min(job.rate, cap)))
    elif state.default_per_minute is not None:
        batch = state.default_per_minute
    else:
        batch = len(job.rollout_pending)
    job.period_released = _release(state, job, now, batch)
    job.next_rollout_at = now + d.ROLLOUT_PERIOD_SECONDS
    _after_release(state, job, now)


def _release(state: EngineState, job: _Job, now: float, batch: int) -> int:
    """Notify up to `batch` of the job's waiting things, in order; returns how many."""
    released = 0
    while job.rollout_pending and released < batch:
        name = job.rollout_pending.popleft()
        job.rollout_queued.discard(name)
        thing = state.things.get(name)
        if thing is None or not state.notifiable(job, name):
            continue
        state.notify(job, thing, now)
        released += 1
    return released


def _after_release(state: EngineState, job: _Job, now: float) -> None:
    """Arm the next batch while things wait; else the rollout is done."""
    if job.rollout_pending:
        assert job.next_rollout_at is not None  # noqa: S101 - set by every release
        state.push_deadline(job.next_rollout_at, "rollout", job, 0)
    else:
        job.rollout = False
        _policies.maybe_complete(state, job, now)


def _default_budget(state: EngineState, job: _Job) -> int:
    """Things a job at AWS's default pace may still notify in its current minute (0: none).

    Only for a job without a rollout configuration or windows: a thing that joins
    its continuous job between batches is notified at once while the minute's
    DEFAULT_PER_MINUTE is not used up (the pace is a ceiling, not a clock tick).
    An explicit rate keeps its batch slots (decisions.py).
    """
    per_minute = state.default_per_minute
    if job.rollout_config is not None or job.windows is not None or per_minute is None:
        return 0
    return max(0, per_minute - job.period_released)


def enqueue_targets(state: EngineState, job: _Job, names: Iterable[str], now: float) -> None:
    """Add things to a job: paced, or at once when nothing paces it (see the module doc)."""
    if job.end_at is not None and now >= job.end_at:
        return  # the job's scheduled end stopped its rollout
    if job.rollout_config is None and job.windows is None and state.default_per_minute is None:
        for name in names:
            if state.notifiable(job, name):
                state.notify(job, state.things[name], now)
        return
    was_idle = not job.rollout_pending
    for name in names:
        if state.notifiable(job, name) and name not in job.rollout_queued:
            job.rollout_pending.append(name)
            job.rollout_queued.add(name)
    if job.rollout_pending and was_idle and not job.rollout:
        job.rollout = True
        # A continuous job's late arrivals wait for the next batch slot, so the
        # pace holds across idle periods; at the default pace, what is left of
        # the current minute's budget goes at once.
        if job.next_rollout_at is not None and now < job.next_rollout_at:
            budget = _default_budget(state, job)
            if budget:
                job.period_released += _release(state, job, now, budget)
            _after_release(state, job, now)
        else:
            release_batch(state, job, now)


def pause_between_windows(state: EngineState, job: _Job, now: float) -> None:
    """A window closed with things still to notify: the job is SCHEDULED until the next one.

    AWS: "When an IN_PROGRESS job reaches the end of the current maintenance
    window, the rollout of the job document stops. The job updates to SCHEDULED
    until the startTime of the next maintenance window." A job whose rollout is
    done has nothing to resume and stays IN_PROGRESS (decisions.py).
    """
    job.window_end_at = None
    if job.status == "IN_PROGRESS" and job.rollout_pending:
        job.status = "SCHEDULED"
        job.last_updated_at = now
        state.changed()
