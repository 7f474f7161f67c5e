"""Rollout: which of a job's things are notified when.

Without a rollout configuration or maintenance windows every target is
notified at once; otherwise things wait in `rollout_pending` and are released
one batch per `ROLLOUT_PERIOD_SECONDS` (constant or exponential rate), and only
while a maintenance window is open; a job whose window closes with things
still to notify is SCHEDULED until the next window opens.

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
        if thing is None or not state.notifiable(job, name):
            continue
        state.notify(job, thing, now)
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
        # pace holds across idle periods.
        if job.next_rollout_at is not None and now < job.next_rollout_at:
            state.push_deadline(job.next_rollout_at, "rollout", job, 0)
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
