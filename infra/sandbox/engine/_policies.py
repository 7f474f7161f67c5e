"""Policies applied when an execution ends: retry, abort, completion, and job cancel.

`after_outcome` runs after every execution reaches a terminal status (device
update, timeout, cancel, removal): a retry criterion may queue the thing again,
an abort criterion may cancel the job, and a snapshot job whose executions have
all ended completes.

Invariants:
- A retried execution keeps its record: executionNumber + 1, versionNumber back
  to 1, statusDetails cleared; the previous attempt stays readable.
- `cancel` is the one way a job becomes CANCELED (CancelJob, abortConfig, a
  scheduled end with CANCEL / FORCE_CANCEL). The job is CANCELED at once; its
  executions are canceled `state.cancel_delay` later (`cancel_executions`), as
  AWS does asynchronously.
"""

from __future__ import annotations

import structlog

from infra.sandbox import decisions as d
from infra.sandbox.engine._records import HistoryEntry, _Execution, _Job
from infra.sandbox.engine._state import EngineState

log = structlog.get_logger(__name__)


def running(job: _Job) -> bool:
    """IN_PROGRESS, or SCHEDULED between two maintenance windows with its rollout under way.

    Retry and abort apply to both: the executions notified in a window run on after it.
    """
    return job.status == "IN_PROGRESS" or (job.status == "SCHEDULED" and job.rollout)


def after_outcome(state: EngineState, ex: _Execution, now: float) -> None:
    """Retry, abort and completion after an execution reached a terminal status."""
    job = ex.job
    if ex.status in ("FAILED", "TIMED_OUT") and running(job):
        maybe_retry(state, ex, now)
    maybe_abort(state, job, now)
    maybe_complete(state, job, now)


def maybe_retry(state: EngineState, ex: _Execution, now: float) -> None:
    config = ex.job.retry_config
    if not config:
        return
    allowed: int | None = None
    fallback: int | None = None
    for criterion in config["criteriaList"]:
        if criterion["failureType"] == ex.status:
            allowed = int(criterion["numberOfRetries"])
        elif criterion["failureType"] == "ALL":
            fallback = int(criterion["numberOfRetries"])
    limit = min(allowed if allowed is not None else (fallback or 0), d.MAX_RETRIES_PER_DEVICE)
    if ex.retry_attempt >= limit:
        return
    ex.previous.append(state.snapshot(ex, now))
    job = ex.job
    job.counts[ex.status] -= 1
    job.counts["QUEUED"] += 1
    ex.status = "QUEUED"
    ex.retry_attempt += 1
    ex.execution_number += 1
    ex.version = 1
    ex.details = {}
    ex.queued_at = now
    ex.started_at = None
    ex.last_updated_at = now
    ex.force_canceled = False
    ex.history.append(HistoryEntry("QUEUED", "service", now, 1, ex.execution_number))
    state.changed()


def maybe_abort(state: EngineState, job: _Job, now: float) -> None:
    if not running(job) or not job.abort_config:
        return
    counts = job.counts
    executed = sum(counts[s] for s in d.ABORT_EXECUTED_STATUSES)
    for criterion in job.abort_config["criteriaList"]:
        if executed < int(criterion["minNumberOfExecutedThings"]) or executed == 0:
            continue
        kind = criterion["failureType"]
        failures = (
            counts["FAILED"] + counts["REJECTED"] + counts["TIMED_OUT"]
            if kind == "ALL"
            else counts[kind]
        )
        percentage = failures / executed * 100
        if percentage >= float(criterion["thresholdPercentage"]):
            log.info("job_aborted", job_id=job.job_id, failure_type=kind, percent=percentage)
            cancel(
                state,
                job,
                now,
                force=False,
                reason_code=d.ABORT_REASON_CODE,
                comment=(
                    f"aborted: {kind} executions are {percentage:.2f}% of {executed} "
                    f"executed, at or over the threshold {criterion['thresholdPercentage']}%"
                ),
            )
            return


def maybe_complete(state: EngineState, job: _Job, now: float) -> None:
    if (
        job.status == "IN_PROGRESS"
        and job.target_selection == "SNAPSHOT"
        and not job.rollout_pending
        and job.counts["QUEUED"] == 0
        and job.counts["IN_PROGRESS"] == 0
    ):
        job.status = "COMPLETED"
        job.completed_at = now
        job.last_updated_at = now
        job.rollout = False
        state.changed()


def cancel(
    state: EngineState,
    job: _Job,
    now: float,
    *,
    force: bool,
    reason_code: str | None,
    comment: str | None,
) -> None:
    if job.status != "CANCELED":
        job.status = "CANCELED"
        job.reason_code = reason_code
        job.comment = comment
    job.force_canceled = job.force_canceled or force
    job.last_updated_at = now
    job.rollout_pending.clear()
    job.rollout_queued.clear()
    job.rollout = False
    state.changed()
    if state.cancel_delay <= 0:
        cancel_executions(state, job, now)
    elif job.cancel_due_at is None:
        # AWS cancels the executions asynchronously; the job is concurrent meanwhile.
        job.cancel_due_at = now + state.cancel_delay
        state.push_deadline(job.cancel_due_at, "cancel", job, 0)


def cancel_executions(state: EngineState, job: _Job, now: float) -> None:
    """The second half of a cancel: QUEUED executions (IN_PROGRESS ones when forced) end."""
    job.cancel_due_at = None
    force = job.force_canceled
    for ex in job.executions.values():
        if ex.status == "QUEUED" or (force and ex.status == "IN_PROGRESS"):
            if ex.status == "IN_PROGRESS":
                ex.force_canceled = True
            state.set_status(ex, "CANCELED", now, "control-plane")
    state.changed()


def delete(state: EngineState, job: _Job, now: float) -> None:
    """DeleteJob: DELETION_IN_PROGRESS for `state.delete_delay`, then gone (its id free)."""
    job.rollout = False
    job.rollout_pending.clear()
    job.rollout_queued.clear()
    if state.delete_delay <= 0:
        finish_deletion(state, job)
        return
    job.status = "DELETION_IN_PROGRESS"
    job.last_updated_at = now
    job.delete_due_at = now + state.delete_delay
    state.push_deadline(job.delete_due_at, "delete", job, 0)
    state.changed()


def finish_deletion(state: EngineState, job: _Job) -> None:
    """The job and its executions leave the service; its id can be used again."""
    for ex in job.executions.values():
        thing = state.things.get(ex.thing)
        if thing is not None and thing.executions.get(job.job_id) is ex:
            del thing.executions[job.job_id]
            if state.subscribers:
                state.dirty.append(ex.thing)
    job.delete_due_at = None
    del state.jobs[job.job_id]
    state.changed()
