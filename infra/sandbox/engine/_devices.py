"""The device data plane: what a device asks of Jobs over MQTT or HTTPS.

`get_pending`, `start_next`, `describe_execution` and `update_execution` are
the `JobsDataPlane` operations (`infra.sandbox.dataplane`); they raise
`DataPlaneError` with the MQTT rejection codes, which each front end renders.

Invariants:
- Nothing changes before a request is validated (statusDetails, step timeout).
- Updating a terminal execution is InvalidStateTransition, checked before
  expectedVersion (a choice listed in `infra.sandbox.decisions`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from infra.sandbox import decisions as d
from infra.sandbox.dataplane import DataPlaneError, ExecutionSnapshot, PendingJobs
from infra.sandbox.engine import _policies
from infra.sandbox.engine._records import DEVICE_STATUSES, TERMINAL, _Execution, _Thing
from infra.sandbox.engine._state import EngineState
from infra.sandbox.engine._timers import op

_DETAILS_KEY: Final = re.compile(d.STATUS_DETAILS_KEY_PATTERN)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_GOOD_KEYS: set[str] = set()  # statusDetails keys found valid (bounded: any client may send)
_GOOD_KEYS_LIMIT: Final = 1024


def _has_control(value: str) -> bool:
    """A control character in `value` (printable ASCII, the usual case, skips the regex)."""
    return not (value.isascii() and value.isprintable()) and _CONTROL.search(value) is not None


def _device_thing(state: EngineState, thing_name: str) -> _Thing:
    thing = state.things.get(thing_name)
    if thing is None:
        raise DataPlaneError("ResourceNotFound", f"Thing {thing_name} does not exist")
    return thing


def pending(thing: _Thing) -> tuple[list[_Execution], list[_Execution]]:
    """A thing's IN_PROGRESS and QUEUED executions, each oldest first."""
    in_progress: list[_Execution] = []
    queued: list[_Execution] = []
    for ex in thing.executions.values():
        if ex.status == "IN_PROGRESS":
            in_progress.append(ex)
        elif ex.status == "QUEUED":
            queued.append(ex)
    if len(in_progress) > 1:
        in_progress.sort(key=lambda e: (e.queued_at, e.seq))
    if len(queued) > 1:
        queued.sort(key=lambda e: (e.queued_at, e.seq))
    return in_progress, queued


def get_pending(state: EngineState, thing_name: str) -> PendingJobs:
    """The `get` topic / GetPendingJobExecutions."""
    with op(state) as now:
        thing = _device_thing(state, thing_name)
        in_progress, queued = pending(thing)
        in_progress = in_progress[: d.MAX_PENDING_LISTED]
        queued = queued[: d.MAX_PENDING_LISTED - len(in_progress)]
        return PendingJobs(
            in_progress=tuple(state.snapshot(e, now) for e in in_progress),
            queued=tuple(state.snapshot(e, now) for e in queued),
        )


def check_details(details: Mapping[str, str] | None) -> None:
    if details is None:
        return
    if len(details) > d.MAX_STATUS_DETAILS:
        raise DataPlaneError(
            "InvalidRequest",
            f"statusDetails has {len(details)} entries; at most {d.MAX_STATUS_DETAILS}",
        )
    for key, value in details.items():
        if key in _GOOD_KEYS:
            pass  # checked before: devices send the same few keys again and again
        elif (
            not isinstance(key, str)
            or not 1 <= len(key) <= d.STATUS_DETAILS_KEY_MAX
            or not _DETAILS_KEY.fullmatch(key)
        ):
            raise DataPlaneError(
                "InvalidRequest",
                f"statusDetails key {key!r} must be 1-{d.STATUS_DETAILS_KEY_MAX} characters "
                f"of {d.STATUS_DETAILS_KEY_PATTERN}",
            )
        elif len(_GOOD_KEYS) < _GOOD_KEYS_LIMIT:
            _GOOD_KEYS.add(key)
        if (
            not isinstance(value, str)
            or not 1 <= len(value) <= d.STATUS_DETAILS_VALUE_MAX
            or _has_control(value)
        ):
            raise DataPlaneError(
                "InvalidRequest",
                f"statusDetails value for {key!r} must be 1-{d.STATUS_DETAILS_VALUE_MAX} "
                "characters without control characters",
            )


def check_step_timeout(step_timeout_minutes: int | None) -> None:
    if step_timeout_minutes is None or step_timeout_minutes == -1:
        return
    if not 1 <= step_timeout_minutes <= d.MAX_STEP_TIMEOUT_MINUTES:
        raise DataPlaneError(
            "InvalidRequest",
            f"stepTimeoutInMinutes must be 1-{d.MAX_STEP_TIMEOUT_MINUTES}, or -1 to clear "
            "the step timer",
        )


def _start(
    state: EngineState, ex: _Execution, now: float, step_timeout_minutes: int | None
) -> None:
    """Arm the timers of an execution that has just become IN_PROGRESS."""
    ex.started_at = now
    timeout = (ex.job.timeout_config or {}).get("inProgressTimeoutInMinutes")
    ex.in_progress_deadline = now + float(timeout) * 60 if timeout else None
    _arm_step(state, ex, now, step_timeout_minutes)


def _arm_step(
    state: EngineState, ex: _Execution, now: float, step_timeout_minutes: int | None
) -> None:
    if step_timeout_minutes is None:
        deadline = ex.timer_deadline or ex.in_progress_deadline
    elif step_timeout_minutes == -1:
        deadline = ex.in_progress_deadline
    else:
        deadline = now + step_timeout_minutes * 60.0
        if ex.in_progress_deadline is not None:
            deadline = min(deadline, ex.in_progress_deadline)
    ex.timer_deadline = deadline
    if deadline is not None:
        state.push_deadline(deadline, "timeout", ex, ex.execution_number)


def start_next(
    state: EngineState,
    thing_name: str,
    *,
    status_details: Mapping[str, str] | None,
    step_timeout_minutes: int | None,
    via: str,
) -> ExecutionSnapshot | None:
    """`start-next` / StartNextPendingJobExecution: None when nothing is pending."""
    check_details(status_details)
    check_step_timeout(step_timeout_minutes)
    with op(state) as now:
        thing = _device_thing(state, thing_name)
        in_progress, queued = pending(thing)
        result: ExecutionSnapshot | None = None
        if in_progress:
            result = state.snapshot(in_progress[0], now)
        elif queued:
            ex = queued[0]
            if status_details is not None:
                ex.details = dict(status_details)
            state.set_status(ex, "IN_PROGRESS", now, via)
            _start(state, ex, now, step_timeout_minutes)
            result = state.snapshot(ex, now)
        return result


def _find_execution(thing: _Thing, job_id: str) -> _Execution:
    if job_id == "$next":
        in_progress, queued = pending(thing)
        waiting = in_progress or queued
        if not waiting:
            raise DataPlaneError("ResourceNotFound", f"No pending job for {thing.name}")
        return waiting[0]
    ex = thing.executions.get(job_id)
    if ex is None:
        raise DataPlaneError(
            "ResourceNotFound", f"Job execution {job_id} for thing {thing.name} not found"
        )
    return ex


def describe_execution(
    state: EngineState, thing_name: str, job_id: str, *, execution_number: int | None
) -> ExecutionSnapshot:
    """`{jobId}/get` / DescribeJobExecution; `job_id` may be "$next"; ResourceNotFound."""
    with op(state) as now:
        result, _ = describe_locked(state, thing_name, job_id, execution_number, now)
        return result


def describe_locked(
    state: EngineState, thing_name: str, job_id: str, execution_number: int | None, now: float
) -> tuple[ExecutionSnapshot, _Execution]:
    """An execution (or one of its earlier attempts) and its record; lock held."""
    thing = _device_thing(state, thing_name)
    ex = _find_execution(thing, job_id)
    if execution_number is None or execution_number == ex.execution_number:
        return state.snapshot(ex, now), ex
    for old in ex.previous:
        if old.execution_number == execution_number:
            return old, ex
    raise DataPlaneError(
        "ResourceNotFound",
        f"Job execution {job_id} #{execution_number} for thing {thing_name} not found",
    )


def update_execution(
    state: EngineState,
    thing_name: str,
    job_id: str,
    *,
    status: str,
    status_details: Mapping[str, str] | None,
    expected_version: int | None,
    execution_number: int | None,
    step_timeout_minutes: int | None,
    via: str,
) -> ExecutionSnapshot:
    """`{jobId}/update` / UpdateJobExecution; returns the execution after the change."""
    if status not in DEVICE_STATUSES:
        raise DataPlaneError(
            "InvalidRequest",
            f"status {status!r} cannot be set by a device; use one of "
            f"{', '.join(sorted(DEVICE_STATUSES))}",
        )
    check_details(status_details)
    check_step_timeout(step_timeout_minutes)
    with op(state) as now:
        thing = _device_thing(state, thing_name)
        ex = _find_execution(thing, job_id)
        if execution_number is not None and execution_number != ex.execution_number:
            if any(p.execution_number == execution_number for p in ex.previous):
                raise DataPlaneError(
                    "InvalidStateTransition",
                    f"execution #{execution_number} of {job_id} has ended; the current "
                    f"one is #{ex.execution_number}",
                    state.snapshot(ex, now),
                )
            raise DataPlaneError(
                "ResourceNotFound",
                f"Job execution {job_id} #{execution_number} for thing {thing_name} not found",
            )
        if ex.status in TERMINAL:
            raise DataPlaneError(
                "InvalidStateTransition",
                f"Job execution {job_id} for {thing_name} is {ex.status}, a terminal status: "
                "it cannot be updated",
                state.snapshot(ex, now),
            )
        if expected_version is not None and expected_version != ex.version:
            raise DataPlaneError(
                "VersionMismatch",
                f"expectedVersion {expected_version} does not match the current version "
                f"{ex.version}; describe the execution and retry",
                state.snapshot(ex, now),
            )
        if (
            ex.status == "QUEUED"
            and status != "IN_PROGRESS"
            and not (d.DEVICE_MAY_SKIP_IN_PROGRESS)
        ):
            raise DataPlaneError(
                "InvalidStateTransition",
                f"Job execution {job_id} is QUEUED; set IN_PROGRESS first",
                state.snapshot(ex, now),
            )
        if status_details is not None:
            ex.details = dict(status_details)
        was = ex.status
        state.set_status(ex, status, now, via)
        if status == "IN_PROGRESS":
            if was == "QUEUED":
                _start(state, ex, now, step_timeout_minutes)
            elif step_timeout_minutes is not None:
                _arm_step(state, ex, now, step_timeout_minutes)
            else:
                ex.timer_deadline = ex.timer_deadline or ex.in_progress_deadline
        result = state.snapshot(ex, now)
        if status in TERMINAL:
            _policies.after_outcome(state, ex, now)
        return result
