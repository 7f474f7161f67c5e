"""Timers: the heap of deadlines, the scheduler thread, and the operation prologue.

Every time-driven change (a rollout batch, a timeout, a scheduled start or
end, the opening of a maintenance window) sits in one heap of deadlines.
`process_due(state, now)` runs at the start of every operation (`op()`), so
state read through any operation is up to date with the clock; the scheduler
thread (`run_scheduler`) waits on a condition until the next deadline or a
change, so subscribers also hear about timeouts when nobody is calling.

Invariants:
- A deadline carries a token; a deadline whose record moved on (the execution
  was retried, the job deleted or restarted) is dropped when it falls due.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from infra.sandbox.engine import _membership, _policies, _rollout, _schedule
from infra.sandbox.engine._records import _Execution, _Job
from infra.sandbox.engine._state import EngineState
from infra.sandbox.errors import invalid_request
from job_documents.clock import ManualClock


@contextmanager
def op(state: EngineState) -> Iterator[float]:
    """The prologue and epilogue of every operation that reads or changes executions.

    Takes the lock, brings the state up to the clock (what fell due is applied)
    and yields the current time; after the lock is released, tells subscribers
    what changed. When the operation raises, subscribers hear at the next flush.
    """
    with state.lock:
        now = state.now()
        process_due(state, now)
        yield now
    state.flush()


def next_deadline(state: EngineState) -> float | None:
    """The sandbox time of the next time-driven change, if any."""
    with state.lock:
        return state.deadlines[0][0] if state.deadlines else None


def process_due_now(state: EngineState) -> None:
    """Apply every rollout batch and timeout due by now; notify subscribers."""
    with state.lock:
        process_due(state, state.now())
    state.flush()


def process_due(state: EngineState, now: float) -> None:
    """Settle dynamic groups, then apply every deadline due by `now`, in time order; lock held."""
    _membership.settle(state, now)
    while state.deadlines and state.deadlines[0][0] <= now:
        when, _, kind, ref, token = heapq.heappop(state.deadlines)
        if kind == "timeout":
            _execution_timeout(state, ref, when, token)
            continue
        if kind == "group-built":
            _membership.finish_build(state, ref, when)
            continue
        job: _Job = ref
        if state.jobs.get(job.job_id) is job:  # the job is still this one
            _JOB_DEADLINES[kind](state, job, when)


def _execution_timeout(state: EngineState, ex: _Execution, when: float, token: int) -> None:
    if (
        ex.status == "IN_PROGRESS"
        and ex.timer_deadline == when
        and token == ex.execution_number
        and ex.job.job_id in state.jobs
    ):
        state.set_status(ex, "TIMED_OUT", when, "service")
        _policies.after_outcome(state, ex, when)


def _rollout_batch(state: EngineState, job: _Job, when: float) -> None:
    if job.rollout:
        _rollout.release_batch(state, job, when)


def _scheduled_start(state: EngineState, job: _Job, when: float) -> None:
    if job.status == "SCHEDULED":
        _schedule.start_job(state, job, when)


def _scheduled_end(state: EngineState, job: _Job, when: float) -> None:
    if _policies.running(job):
        _schedule.end_job(state, job, when)


def _cancel_due(state: EngineState, job: _Job, when: float) -> None:
    if job.cancel_due_at == when:
        _policies.cancel_executions(state, job, when)


def _deletion_due(state: EngineState, job: _Job, when: float) -> None:
    if job.delete_due_at == when:
        _policies.finish_deletion(state, job)


def _window_end(state: EngineState, job: _Job, when: float) -> None:
    if job.window_end_at == when:
        _rollout.pause_between_windows(state, job, when)


# Each job deadline kind, and what it does when it falls due (a deadline whose
# record moved on since it was armed does nothing).
_JOB_DEADLINES: Final[dict[str, Callable[[EngineState, _Job, float], None]]] = {
    "rollout": _rollout_batch,
    "start": _scheduled_start,
    "end": _scheduled_end,
    "cancel": _cancel_due,
    "delete": _deletion_due,
    "window-end": _window_end,
}


def run_scheduler(state: EngineState, stop: threading.Event) -> None:
    """Body of the scheduler thread: sleep until the next deadline or a change, then act.

    With a `ManualClock` there is nothing to wait for: the clock moves only
    through `advance`, which processes what falls due itself.
    """
    manual = isinstance(state.clock, ManualClock)
    while not stop.is_set():
        with state.lock:
            if state.stopping:
                return
            timeout: float | None
            if manual or not state.deadlines:
                timeout = None
            else:
                delay = (state.deadlines[0][0] - state.now()) / state.time_scale
                timeout = None if delay <= 0 else min(delay, 60.0)
            # Work marked while this thread was busy outside the lock (flushing) rang no
            # bell it could hear: settle it before sleeping.
            settling = state.index_stale is None or bool(state.index_stale)
            if settling:
                pass
            elif timeout is None and (manual or not state.deadlines):
                state.wake.wait()
            elif timeout is not None:
                state.wake.wait(timeout)
        process_due_now(state)


def stop_scheduler(state: EngineState) -> None:
    """Wake the scheduler thread so it can see its stop event."""
    with state.lock:
        state.stopping = True
        state.wake.notify_all()


def advance(state: EngineState, seconds: float) -> float:
    """Jump the clock forward and apply what fell due; returns the new epoch time.

    Works with clocks that can jump (`ManualClock`, the sandbox's `ScaledClock`).
    """
    jump = getattr(state.clock, "advance", None)
    if jump is None:
        raise invalid_request(
            "this sandbox's clock cannot jump; advance needs a manual or scaled clock"
        )
    if seconds < 0:
        raise invalid_request("advance the clock by zero or more seconds")
    jump(seconds)
    process_due_now(state)
    with state.lock:
        state.wake.notify_all()
    return state.now()
