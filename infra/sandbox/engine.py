"""The sandbox's AWS IoT Jobs engine: registry, jobs, executions, rollout, timers.

One object holds the whole service state behind one lock. The HTTP control
plane calls its operation methods with already-validated request parameters
(botocore member names) and renders what they return; device front ends use
the `JobsDataPlane` methods.

Invariants:
- `job.counts[status]` equals the number of the job's rolled-out executions in
  that status (the current execution per thing). Counters change only in
  `_set_status`, `_new_execution` and `_maybe_retry`; `recount()` recomputes
  them for cross-checks.
- Every time-driven change (a rollout batch, a timeout, a scheduled start or
  end, the opening of a maintenance window) sits in one heap of deadlines.
  `_process_due(now)` runs at the start of every operation, so state
  read through any method is up to date with the clock; the scheduler thread
  (`run_scheduler`) waits on a condition until the next deadline or a change, so
  subscribers also hear about timeouts when nobody is calling.
- Subscribers are called outside the lock, with the thing names whose pending
  list may have changed.
- Choices where AWS behaviour is unconfirmed live in `infra.sandbox.decisions`.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import structlog

from infra.sandbox import decisions as d
from infra.sandbox.dataplane import DataPlaneError, ExecutionSnapshot, PendingJobs
from infra.sandbox.errors import ServiceError, already_exists, invalid_request, not_found
from infra.sandbox.scheduling import MaintenanceWindows, parse_datetime
from job_documents.clock import Clock, ManualClock

__all__ = ["HistoryEntry", "JobsEngine"]

log = structlog.get_logger(__name__)

TERMINAL: Final = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED"})
PENDING: Final = frozenset({"QUEUED", "IN_PROGRESS"})
ALL_STATUSES: Final = (
    "QUEUED",
    "IN_PROGRESS",
    "SUCCEEDED",
    "FAILED",
    "TIMED_OUT",
    "REJECTED",
    "REMOVED",
    "CANCELED",
)
DEVICE_STATUSES: Final = frozenset({"IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"})
_COUNT_FIELDS: Final = {
    "CANCELED": "numberOfCanceledThings",
    "SUCCEEDED": "numberOfSucceededThings",
    "FAILED": "numberOfFailedThings",
    "REJECTED": "numberOfRejectedThings",
    "QUEUED": "numberOfQueuedThings",
    "IN_PROGRESS": "numberOfInProgressThings",
    "REMOVED": "numberOfRemovedThings",
    "TIMED_OUT": "numberOfTimedOutThings",
}
_DETAILS_KEY: Final = re.compile(d.STATUS_DETAILS_KEY_PATTERN)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_GOOD_KEYS: set[str] = set()  # statusDetails keys found valid (bounded: any client may send)
_GOOD_KEYS_LIMIT: Final = 1024
_ARN: Final = re.compile(r"arn:(aws[a-z-]*):iot:([a-z0-9-]+):(\d{12}):(thing|thinggroup)/(.+)")
_PERCENT_TWO_DECIMALS: Final = re.compile(r"\d{1,3}(\.\d{1,2})?")


def _has_control(value: str) -> bool:
    """A control character in `value` (printable ASCII, the usual case, skips the regex)."""
    return not (value.isascii() and value.isprintable()) and _CONTROL.search(value) is not None


class HistoryEntry(NamedTuple):
    """One status change of an execution, with the way the request came in."""

    status: str
    via: str  # "legacy" | "ats" | "https" | "service" | "control-plane"
    at: float
    version_number: int
    execution_number: int


class _Thing:
    __slots__ = ("arn", "attributes", "executions", "groups", "name", "thing_id", "version")

    def __init__(self, name: str, arn: str, attributes: dict[str, str], thing_id: str) -> None:
        self.name = name
        self.arn = arn
        self.attributes = attributes
        self.thing_id = thing_id
        self.version = 1
        self.groups: list[str] = []
        self.executions: dict[str, _Execution] = {}


class _Group:
    __slots__ = (
        "arn",
        "children",
        "created_at",
        "description",
        "group_id",
        "name",
        "parent",
        "things",
        "version",
    )

    def __init__(
        self, name: str, arn: str, parent: str | None, created_at: float, group_id: str
    ) -> None:
        self.name = name
        self.arn = arn
        self.parent = parent
        self.created_at = created_at
        self.group_id = group_id
        self.description: str | None = None
        self.version = 1
        self.children: set[str] = set()
        self.things: set[str] = set()


class _Execution:
    __slots__ = (
        "details",
        "execution_number",
        "force_canceled",
        "history",
        "in_progress_deadline",
        "job",
        "last_updated_at",
        "previous",
        "queued_at",
        "retry_attempt",
        "seq",
        "started_at",
        "status",
        "thing",
        "timer_deadline",
        "version",
    )

    def __init__(self, job: _Job, thing: str, now: float, seq: int) -> None:
        self.job = job
        self.thing = thing
        self.status = "QUEUED"
        self.details: dict[str, str] = {}
        self.queued_at = now
        self.started_at: float | None = None
        self.last_updated_at = now
        self.version = 1
        self.execution_number = 1
        self.retry_attempt = 0
        self.force_canceled = False
        self.in_progress_deadline: float | None = None
        self.timer_deadline: float | None = None
        self.seq = seq
        self.history: list[HistoryEntry] = [HistoryEntry("QUEUED", "service", now, 1, 1)]
        self.previous: list[ExecutionSnapshot] = []


class _Job:
    __slots__ = (
        "abort_config",
        "arn",
        "comment",
        "completed_at",
        "counts",
        "created_at",
        "description",
        "document",
        "end_at",
        "executions",
        "force_canceled",
        "job_id",
        "last_updated_at",
        "next_rollout_at",
        "notified",
        "rate",
        "rate_baseline",
        "reason_code",
        "retry_config",
        "rollout",
        "rollout_config",
        "rollout_pending",
        "rollout_queued",
        "scheduling_config",
        "start_at",
        "status",
        "target_groups",
        "target_selection",
        "target_things",
        "targets",
        "timeout_config",
        "windows",
    )

    def __init__(self, job_id: str, arn: str, now: float) -> None:
        self.job_id = job_id
        self.arn = arn
        self.created_at = now
        self.last_updated_at = now
        self.completed_at: float | None = None
        self.status = "IN_PROGRESS"
        self.force_canceled = False
        self.reason_code: str | None = None
        self.comment: str | None = None
        self.description: str | None = None
        self.document = "{}"
        self.targets: list[str] = []
        self.target_things: set[str] = set()
        self.target_groups: set[str] = set()
        self.target_selection = "SNAPSHOT"
        self.rollout_config: dict[str, Any] | None = None
        self.abort_config: dict[str, Any] | None = None
        self.timeout_config: dict[str, Any] | None = None
        self.retry_config: dict[str, Any] | None = None
        self.counts: dict[str, int] = dict.fromkeys(ALL_STATUSES, 0)
        self.executions: dict[str, _Execution] = {}
        self.rollout_pending: deque[str] = deque()
        self.rollout_queued: set[str] = set()
        self.rollout = False
        self.next_rollout_at: float | None = None
        self.notified = 0
        self.rate = 0.0
        self.rate_baseline = 0
        self.scheduling_config: dict[str, Any] | None = None
        self.start_at: float | None = None
        self.end_at: float | None = None
        self.windows: MaintenanceWindows | None = None


class JobsEngine:
    """AWS IoT Jobs for one account and region, in memory. Thread-safe."""

    def __init__(
        self,
        *,
        clock: Clock,
        region: str = d.DEFAULT_REGION,
        account_id: str = d.ACCOUNT_ID,
        time_scale: float = 1.0,
    ) -> None:
        self.clock = clock
        self.region = region
        self.account_id = account_id
        self.time_scale = time_scale
        self.partition = (
            "aws-cn"
            if region.startswith("cn-")
            else "aws-us-gov"
            if region.startswith("us-gov-")
            else "aws"
        )
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._things: dict[str, _Thing] = {}
        self._groups: dict[str, _Group] = {}
        self._jobs: dict[str, _Job] = {}
        self._deadlines: list[tuple[float, int, str, Any, int]] = []
        self._seq = itertools.count()
        self._subscribers: list[Callable[[str], None]] = []
        self._dirty: list[str] = []
        self._stopping = False
        self.revision = 0  # rises on every change; persistence watches it
        self.changes_event: threading.Event | None = None  # set on every change, when given

    # ------------------------------------------------------------------ basics
    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _arn(self, kind: str, name: str) -> str:
        return f"arn:{self.partition}:iot:{self.region}:{self.account_id}:{kind}/{name}"

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call `callback(thing_name)` after changes that may alter that thing's pending jobs."""
        with self._lock:
            self._subscribers.append(callback)

    def _flush(self) -> None:
        """Tell subscribers about the things changed since the last flush (outside the lock)."""
        if not self._dirty:
            return
        with self._lock:
            if not self._dirty:
                return
            things = self._dirty
            self._dirty = []
            subscribers = list(self._subscribers)
        for thing in dict.fromkeys(things):
            for callback in subscribers:
                try:
                    callback(thing)
                except Exception:
                    log.exception("subscriber_failed", thing=thing)

    def _push_deadline(self, when: float, kind: str, ref: Any, token: int) -> None:
        head = self._deadlines[0][0] if self._deadlines else None
        heapq.heappush(self._deadlines, (when, next(self._seq), kind, ref, token))
        if head is None or when < head:
            self._wake.notify_all()

    # --------------------------------------------------------------- scheduler
    def next_deadline(self) -> float | None:
        """The sandbox time of the next time-driven change, if any."""
        with self._lock:
            return self._deadlines[0][0] if self._deadlines else None

    def process_due(self) -> None:
        """Apply every rollout batch and timeout due by now; notify subscribers."""
        with self._lock:
            self._process_due(self._now())
        self._flush()

    def _process_due(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            when, _, kind, ref, token = heapq.heappop(self._deadlines)
            if kind == "rollout":
                job: _Job = ref
                if job.rollout and self._jobs.get(job.job_id) is job:
                    self._release_batch(job, when)
            elif kind == "start":
                job = ref
                if job.status == "SCHEDULED" and self._jobs.get(job.job_id) is job:
                    self._start_job(job, when)
            elif kind == "end":
                job = ref
                if job.status == "IN_PROGRESS" and self._jobs.get(job.job_id) is job:
                    self._end_job(job, when)
            elif kind == "timeout":
                ex: _Execution = ref
                if (
                    ex.status == "IN_PROGRESS"
                    and ex.timer_deadline == when
                    and token == ex.execution_number
                    and ex.job.job_id in self._jobs
                ):
                    self._set_status(ex, "TIMED_OUT", when, "service")
                    self._after_outcome(ex, when)

    def run_scheduler(self, stop: threading.Event) -> None:
        """Body of the scheduler thread: sleep until the next deadline or a change, then act.

        With a `ManualClock` there is nothing to wait for: the clock moves only
        through `advance`, which processes what falls due itself.
        """
        manual = isinstance(self.clock, ManualClock)
        while not stop.is_set():
            with self._lock:
                if self._stopping:
                    return
                timeout: float | None
                if manual or not self._deadlines:
                    timeout = None
                else:
                    delay = (self._deadlines[0][0] - self._now()) / self.time_scale
                    timeout = None if delay <= 0 else min(delay, 60.0)
                if timeout is None and (manual or not self._deadlines):
                    self._wake.wait()
                elif timeout is not None:
                    self._wake.wait(timeout)
            self.process_due()

    def stop_scheduler(self) -> None:
        """Wake the scheduler thread so it can see its stop event."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()

    def advance(self, seconds: float) -> float:
        """Jump the clock forward and apply what fell due; returns the new epoch time.

        Works with clocks that can jump (`ManualClock`, the sandbox's `ScaledClock`).
        """
        jump = getattr(self.clock, "advance", None)
        if jump is None:
            raise invalid_request(
                "this sandbox's clock cannot jump; advance needs a manual or scaled clock"
            )
        if seconds < 0:
            raise invalid_request("advance the clock by zero or more seconds")
        jump(seconds)
        self.process_due()
        with self._lock:
            self._wake.notify_all()
        return self._now()

    # ----------------------------------------------------------- state helpers
    def _changed(self) -> None:
        self.revision += 1
        if self.changes_event is not None:
            self.changes_event.set()

    def _set_status(self, ex: _Execution, status: str, now: float, via: str) -> None:
        job = ex.job
        if job.executions.get(ex.thing) is ex:
            job.counts[ex.status] -= 1
            job.counts[status] += 1
        ex.status = status
        ex.last_updated_at = now
        ex.version += 1
        if status != "IN_PROGRESS":
            ex.timer_deadline = None
            ex.in_progress_deadline = None
        ex.history.append(HistoryEntry(status, via, now, ex.version, ex.execution_number))
        job.last_updated_at = now
        if self._subscribers:
            self._dirty.append(ex.thing)
        self._changed()

    def _after_outcome(self, ex: _Execution, now: float) -> None:
        """Retry, abort and completion after an execution reached a terminal status."""
        job = ex.job
        if ex.status in ("FAILED", "TIMED_OUT") and job.status == "IN_PROGRESS":
            self._maybe_retry(ex, now)
        self._maybe_abort(job, now)
        self._maybe_complete(job, now)

    def _maybe_retry(self, ex: _Execution, now: float) -> None:
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
        ex.previous.append(self._snapshot(ex, now))
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
        self._changed()

    def _maybe_abort(self, job: _Job, now: float) -> None:
        if job.status != "IN_PROGRESS" or not job.abort_config:
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
            if percentage > float(criterion["thresholdPercentage"]):
                log.info("job_aborted", job_id=job.job_id, failure_type=kind, percent=percentage)
                self._cancel_job(
                    job,
                    now,
                    force=False,
                    reason_code=d.ABORT_REASON_CODE,
                    comment=(
                        f"aborted: {kind} executions are {percentage:.2f}% of {executed} "
                        f"executed, over the threshold {criterion['thresholdPercentage']}%"
                    ),
                )
                return

    def _maybe_complete(self, job: _Job, now: float) -> None:
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
            self._changed()

    def _new_execution(self, job: _Job, thing: _Thing, now: float) -> _Execution:
        ex = _Execution(job, thing.name, now, next(self._seq))
        job.executions[thing.name] = ex
        thing.executions[job.job_id] = ex
        job.counts["QUEUED"] += 1
        job.notified += 1
        if self._subscribers:
            self._dirty.append(thing.name)
        self._changed()
        return ex

    def _release_batch(self, job: _Job, now: float) -> None:
        """Notify the next batch of a paced job's things; schedule the following batch."""
        if job.windows is not None and job.windows.open_until(now) is None:
            # Outside every maintenance window: wait for the next one to open.
            job.next_rollout_at = job.windows.next_open(now)
            if job.next_rollout_at is not None:
                self._push_deadline(job.next_rollout_at, "rollout", job, 0)
            return
        config = job.rollout_config or {}
        cap = float(min(config.get("maximumPerMinute", d.MAX_PER_MINUTE), d.MAX_PER_MINUTE))
        exponential = config.get("exponentialRate")
        if exponential:
            criteria = exponential["rateIncreaseCriteria"]
            step = criteria.get("numberOfNotifiedThings") or criteria.get("numberOfSucceededThings")
            progress = (
                job.notified if "numberOfNotifiedThings" in criteria else job.counts["SUCCEEDED"]
            )
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
            thing = self._things.get(name)
            if thing is None or name in job.executions:
                continue
            self._new_execution(job, thing, now)
            released += 1
        job.next_rollout_at = now + d.ROLLOUT_PERIOD_SECONDS
        if job.rollout_pending:
            self._push_deadline(job.next_rollout_at, "rollout", job, 0)
        else:
            job.rollout = False
            self._maybe_complete(job, now)

    def _enqueue_targets(self, job: _Job, names: Iterable[str], now: float) -> None:
        """Add things to a job: at once without a rollout config or windows, else paced."""
        if job.end_at is not None and now >= job.end_at:
            return  # the job's scheduled end stopped its rollout
        if job.rollout_config is None and job.windows is None:
            for name in names:
                if name not in job.executions:
                    self._new_execution(job, self._things[name], now)
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
                self._push_deadline(job.next_rollout_at, "rollout", job, 0)
            else:
                self._release_batch(job, now)

    def _covered(self, job: _Job, thing: _Thing) -> bool:
        if thing.name in job.target_things:
            return True
        return any(g in job.target_groups for g in self._ancestry(thing.groups))

    def _ancestry(self, groups: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        for name in groups:
            current: str | None = name
            while current is not None and current not in seen:
                seen.add(current)
                current = self._groups[current].parent
        return seen

    def _descendants(self, name: str) -> list[str]:
        out: list[str] = []
        stack = [name]
        while stack:
            current = stack.pop()
            out.append(current)
            stack.extend(sorted(self._groups[current].children, reverse=True))
        return out

    def _group_things(self, name: str, *, recursive: bool) -> list[str]:
        groups = self._descendants(name) if recursive else [name]
        members: set[str] = set()
        for group in groups:
            members.update(self._groups[group].things)
        return sorted(members)

    def _snapshot(self, ex: _Execution, now: float) -> ExecutionSnapshot:
        remaining: int | None = None
        if ex.status == "IN_PROGRESS" and ex.timer_deadline is not None:
            remaining = max(0, math.ceil(ex.timer_deadline - now))
        return ExecutionSnapshot(
            job_id=ex.job.job_id,
            thing_name=ex.thing,
            status=ex.status,
            # ex.details is only ever replaced, never mutated, so it can be shared.
            status_details=ex.details,
            queued_at=int(ex.queued_at),
            started_at=None if ex.started_at is None else int(ex.started_at),
            last_updated_at=int(ex.last_updated_at),
            version_number=ex.version,
            execution_number=ex.execution_number,
            approximate_seconds_before_timed_out=remaining,
            job_document=ex.job.document,
        )

    # --------------------------------------------------------- device data plane
    def _device_thing(self, thing_name: str) -> _Thing:
        thing = self._things.get(thing_name)
        if thing is None:
            raise DataPlaneError("ResourceNotFound", f"Thing {thing_name} does not exist")
        return thing

    def _pending(self, thing: _Thing) -> tuple[list[_Execution], list[_Execution]]:
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

    def get_pending(self, thing_name: str) -> PendingJobs:
        """The `get` topic / GetPendingJobExecutions."""
        with self._lock:
            now = self._now()
            self._process_due(now)
            thing = self._device_thing(thing_name)
            in_progress, queued = self._pending(thing)
            result = PendingJobs(
                in_progress=tuple(self._snapshot(e, now) for e in in_progress),
                queued=tuple(self._snapshot(e, now) for e in queued),
            )
        self._flush()
        return result

    @staticmethod
    def _check_details(details: Mapping[str, str] | None) -> None:
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

    @staticmethod
    def _check_step_timeout(step_timeout_minutes: int | None) -> None:
        if step_timeout_minutes is None or step_timeout_minutes == -1:
            return
        if not 1 <= step_timeout_minutes <= d.MAX_STEP_TIMEOUT_MINUTES:
            raise DataPlaneError(
                "InvalidRequest",
                f"stepTimeoutInMinutes must be 1-{d.MAX_STEP_TIMEOUT_MINUTES}, or -1 to clear "
                "the step timer",
            )

    def _start(self, ex: _Execution, now: float, step_timeout_minutes: int | None) -> None:
        """Arm the timers of an execution that has just become IN_PROGRESS."""
        ex.started_at = now
        timeout = (ex.job.timeout_config or {}).get("inProgressTimeoutInMinutes")
        ex.in_progress_deadline = now + float(timeout) * 60 if timeout else None
        self._arm_step(ex, now, step_timeout_minutes)

    def _arm_step(self, ex: _Execution, now: float, step_timeout_minutes: int | None) -> None:
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
            self._push_deadline(deadline, "timeout", ex, ex.execution_number)

    def start_next(
        self,
        thing_name: str,
        *,
        status_details: Mapping[str, str] | None,
        step_timeout_minutes: int | None,
        via: str,
    ) -> ExecutionSnapshot | None:
        """`start-next` / StartNextPendingJobExecution: None when nothing is pending."""
        self._check_details(status_details)
        self._check_step_timeout(step_timeout_minutes)
        with self._lock:
            now = self._now()
            self._process_due(now)
            thing = self._device_thing(thing_name)
            in_progress, queued = self._pending(thing)
            result: ExecutionSnapshot | None = None
            if in_progress:
                result = self._snapshot(in_progress[0], now)
            elif queued:
                ex = queued[0]
                if status_details is not None:
                    ex.details = dict(status_details)
                self._set_status(ex, "IN_PROGRESS", now, via)
                self._start(ex, now, step_timeout_minutes)
                result = self._snapshot(ex, now)
        self._flush()
        return result

    def _find_execution(self, thing: _Thing, job_id: str) -> _Execution:
        if job_id == "$next":
            in_progress, queued = self._pending(thing)
            pending = in_progress or queued
            if not pending:
                raise DataPlaneError("ResourceNotFound", f"No pending job for {thing.name}")
            return pending[0]
        ex = thing.executions.get(job_id)
        if ex is None:
            raise DataPlaneError(
                "ResourceNotFound", f"Job execution {job_id} for thing {thing.name} not found"
            )
        return ex

    def describe_execution(
        self,
        thing_name: str,
        job_id: str,
        *,
        execution_number: int | None,
    ) -> ExecutionSnapshot:
        """`{jobId}/get` / DescribeJobExecution; `job_id` may be "$next"; ResourceNotFound."""
        with self._lock:
            now = self._now()
            self._process_due(now)
            result, _ = self._describe_locked(thing_name, job_id, execution_number, now)
        self._flush()
        return result

    def _describe_locked(
        self, thing_name: str, job_id: str, execution_number: int | None, now: float
    ) -> tuple[ExecutionSnapshot, _Execution]:
        thing = self._device_thing(thing_name)
        ex = self._find_execution(thing, job_id)
        if execution_number is None or execution_number == ex.execution_number:
            return self._snapshot(ex, now), ex
        for old in ex.previous:
            if old.execution_number == execution_number:
                return old, ex
        raise DataPlaneError(
            "ResourceNotFound",
            f"Job execution {job_id} #{execution_number} for thing {thing_name} not found",
        )

    def update_execution(
        self,
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
        self._check_details(status_details)
        self._check_step_timeout(step_timeout_minutes)
        with self._lock:
            now = self._now()
            self._process_due(now)
            thing = self._device_thing(thing_name)
            ex = self._find_execution(thing, job_id)
            if execution_number is not None and execution_number != ex.execution_number:
                if any(p.execution_number == execution_number for p in ex.previous):
                    raise DataPlaneError(
                        "InvalidStateTransition",
                        f"execution #{execution_number} of {job_id} has ended; the current "
                        f"one is #{ex.execution_number}",
                        self._snapshot(ex, now),
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
                    self._snapshot(ex, now),
                )
            if expected_version is not None and expected_version != ex.version:
                raise DataPlaneError(
                    "VersionMismatch",
                    f"expectedVersion {expected_version} does not match the current version "
                    f"{ex.version}; describe the execution and retry",
                    self._snapshot(ex, now),
                )
            if (
                ex.status == "QUEUED"
                and status != "IN_PROGRESS"
                and not (d.DEVICE_MAY_SKIP_IN_PROGRESS)
            ):
                raise DataPlaneError(
                    "InvalidStateTransition",
                    f"Job execution {job_id} is QUEUED; set IN_PROGRESS first",
                    self._snapshot(ex, now),
                )
            if status_details is not None:
                ex.details = dict(status_details)
            was = ex.status
            self._set_status(ex, status, now, via)
            if status == "IN_PROGRESS":
                if was == "QUEUED":
                    self._start(ex, now, step_timeout_minutes)
                elif step_timeout_minutes is not None:
                    self._arm_step(ex, now, step_timeout_minutes)
                else:
                    ex.timer_deadline = ex.timer_deadline or ex.in_progress_deadline
            result = self._snapshot(ex, now)
            if status in TERMINAL:
                self._after_outcome(ex, now)
        self._flush()
        return result

    # ------------------------------------------------------------------ things
    def _thing(self, name: str) -> _Thing:
        thing = self._things.get(name)
        if thing is None:
            raise not_found(f"Thing {name} cannot be found.")
        return thing

    def _group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            raise not_found(f"Thing group {name} cannot be found.")
        return group

    def describe_endpoint(self, params: Mapping[str, Any]) -> dict[str, Any]:
        endpoint_type = params.get("endpointType") or "iot:Data"
        suffix = "amazonaws.com.cn" if self.region.startswith("cn-") else "amazonaws.com"
        hosts = {
            "iot:Data": f"{d.ENDPOINT_PREFIX}.iot.{self.region}.{suffix}",
            "iot:Data-ATS": f"{d.ENDPOINT_PREFIX}-ats.iot.{self.region}.{suffix}",
            "iot:CredentialProvider": f"{d.ENDPOINT_PREFIX}.credentials.iot.{self.region}.{suffix}",
            "iot:Jobs": f"{d.ENDPOINT_PREFIX}.jobs.iot.{self.region}.{suffix}",
        }
        if endpoint_type not in hosts:
            raise invalid_request(
                f"Endpoint type {endpoint_type} is not valid; use one of {', '.join(hosts)}"
            )
        return {"endpointAddress": hosts[endpoint_type]}

    def create_thing(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name = params["thingName"]
        attributes = dict((params.get("attributePayload") or {}).get("attributes") or {})
        with self._lock:
            existing = self._things.get(name)
            if existing is not None:
                if existing.attributes != attributes:
                    raise already_exists(
                        f"Thing {name} already exists in account with different attributes"
                    )
                thing = existing
            else:
                thing = _Thing(name, self._arn("thing", name), attributes, str(uuid.uuid4()))
                self._things[name] = thing
                self._changed()
            return {"thingName": name, "thingArn": thing.arn, "thingId": thing.thing_id}

    def create_things(self, names: Sequence[str]) -> None:
        """Bulk CreateThing for simulations and the benchmark (same effect, one lock)."""
        with self._lock:
            for name in names:
                if name not in self._things:
                    self._things[name] = _Thing(
                        name, self._arn("thing", name), {}, str(uuid.uuid4())
                    )
            self._changed()

    def describe_thing(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            thing = self._thing(params["thingName"])
            return {
                "defaultClientId": thing.name,
                "thingName": thing.name,
                "thingId": thing.thing_id,
                "thingArn": thing.arn,
                "attributes": dict(thing.attributes),
                "version": thing.version,
            }

    def list_things(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            things: Iterable[_Thing] = sorted(self._things.values(), key=lambda t: t.name)
            attr = params.get("attributeName")
            if attr is not None:
                value = params.get("attributeValue")
                prefix = bool(params.get("usePrefixAttributeValue"))
                things = [
                    t
                    for t in things
                    if attr in t.attributes
                    and (
                        value is None
                        or (
                            t.attributes[attr].startswith(value)
                            if prefix
                            else t.attributes[attr] == value
                        )
                    )
                ]
            page, token = _paginate(list(things), params)
            out: dict[str, Any] = {
                "things": [
                    {
                        "thingName": t.name,
                        "thingArn": t.arn,
                        "attributes": dict(t.attributes),
                        "version": t.version,
                    }
                    for t in page
                ]
            }
            if token:
                out["nextToken"] = token
            return out

    def delete_thing(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name = params["thingName"]
        with self._lock:
            now = self._now()
            self._process_due(now)
            thing = self._thing(name)
            expected = params.get("expectedVersion")
            if expected is not None and expected != thing.version:
                raise ServiceError(
                    "VersionConflictException",
                    f"expectedVersion {expected} does not match the thing's version "
                    f"{thing.version}",
                    409,
                )
            for group in list(thing.groups):
                self._groups[group].things.discard(name)
            # The jobs keep the executions (REMOVED if they were pending), so
            # numberOfRemovedThings counts deleted things, as AWS documents.
            for ex in list(thing.executions.values()):
                if ex.status in PENDING:
                    self._set_status(ex, "REMOVED", now, "control-plane")
                    self._after_outcome(ex, now)
            del self._things[name]
            self._changed()
        self._flush()
        return {}

    def create_thing_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name = params["thingGroupName"]
        parent = params.get("parentGroupName")
        description = (params.get("thingGroupProperties") or {}).get("thingGroupDescription")
        with self._lock:
            existing = self._groups.get(name)
            if existing is not None:
                if existing.parent != parent:
                    raise already_exists(
                        f"Thing group {name} already exists with a different parent"
                    )
                group = existing
            else:
                if parent is not None:
                    parent_group = self._group(parent)
                    depth = len(self._ancestry([parent_group.name]))
                    if depth >= d.MAX_GROUP_DEPTH:
                        raise invalid_request(
                            f"Thing group hierarchy too deep: at most {d.MAX_GROUP_DEPTH} levels"
                        )
                group = _Group(
                    name,
                    self._arn("thinggroup", name),
                    parent,
                    self._now(),
                    str(uuid.uuid4()),
                )
                group.description = description
                self._groups[name] = group
                if parent is not None:
                    self._groups[parent].children.add(name)
                self._changed()
            return {
                "thingGroupName": name,
                "thingGroupArn": group.arn,
                "thingGroupId": group.group_id,
            }

    def describe_thing_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            group = self._group(params["thingGroupName"])
            chain: list[_Group] = []
            current = group.parent
            while current is not None:
                chain.append(self._groups[current])
                current = self._groups[current].parent
            metadata: dict[str, Any] = {"creationDate": group.created_at}
            if group.parent is not None:
                metadata["parentGroupName"] = group.parent
                metadata["rootToParentThingGroups"] = [
                    {"groupName": g.name, "groupArn": g.arn} for g in reversed(chain)
                ]
            properties: dict[str, Any] = {}
            if group.description is not None:
                properties["thingGroupDescription"] = group.description
            return {
                "thingGroupName": group.name,
                "thingGroupId": group.group_id,
                "thingGroupArn": group.arn,
                "version": group.version,
                "thingGroupProperties": properties,
                "thingGroupMetadata": metadata,
            }

    def _resolve_membership(self, params: Mapping[str, Any]) -> tuple[_Thing, _Group]:
        group_name = params.get("thingGroupName") or _name_from_arn(
            params.get("thingGroupArn"), "thinggroup"
        )
        thing_name = params.get("thingName") or _name_from_arn(params.get("thingArn"), "thing")
        if not group_name:
            raise invalid_request("Give thingGroupName or thingGroupArn")
        if not thing_name:
            raise invalid_request("Give thingName or thingArn")
        return self._thing(thing_name), self._group(group_name)

    def add_thing_to_thing_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            now = self._now()
            self._process_due(now)
            thing, group = self._resolve_membership(params)
            if group.name not in thing.groups:
                if len(thing.groups) >= d.MAX_GROUPS_PER_THING:
                    raise invalid_request(
                        f"Thing {thing.name} is already in {d.MAX_GROUPS_PER_THING} thing groups, "
                        "the most a thing can belong to; remove it from one first"
                    )
                thing.groups.append(group.name)
                group.things.add(thing.name)
                self._changed()
                ancestry = self._ancestry([group.name])
                for job in self._jobs.values():
                    if (
                        job.target_selection == "CONTINUOUS"
                        and job.status == "IN_PROGRESS"
                        and job.target_groups & ancestry
                    ):
                        self._enqueue_targets(job, [thing.name], now)
        self._flush()
        return {}

    def remove_thing_from_thing_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            now = self._now()
            self._process_due(now)
            thing, group = self._resolve_membership(params)
            if group.name in thing.groups:
                thing.groups.remove(group.name)
                group.things.discard(thing.name)
                self._changed()
                for job in self._jobs.values():
                    if job.target_selection != "CONTINUOUS" or self._covered(job, thing):
                        continue
                    if thing.name in job.rollout_queued:
                        job.rollout_queued.discard(thing.name)
                        job.rollout_pending.remove(thing.name)
                    ex = job.executions.get(thing.name)
                    if ex is not None and ex.status in PENDING:
                        self._set_status(ex, "REMOVED", now, "control-plane")
                        self._after_outcome(ex, now)
        self._flush()
        return {}

    def list_things_in_thing_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            group = self._group(params["thingGroupName"])
            names = self._group_things(group.name, recursive=bool(params.get("recursive")))
            page, token = _paginate(names, params)
            out: dict[str, Any] = {"things": page}
            if token:
                out["nextToken"] = token
            return out

    def add_things_to_group(self, group_name: str, names: Sequence[str]) -> None:
        """Bulk AddThingToThingGroup for simulations and the benchmark."""
        for name in names:
            self.add_thing_to_thing_group({"thingGroupName": group_name, "thingName": name})

    # -------------------------------------------------------------------- jobs
    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise not_found(f"Job {job_id} cannot be found.")
        return job

    def _validate_job_config(self, params: Mapping[str, Any]) -> None:
        targets = params["targets"]
        if len(targets) > d.MAX_TARGETS_PER_JOB:
            raise invalid_request(
                f"A job can have at most {d.MAX_TARGETS_PER_JOB} targets; got {len(targets)}. "
                "Put the things in a thing group and target the group"
            )
        rollout = params.get("jobExecutionsRolloutConfig") or {}
        per_minute = rollout.get("maximumPerMinute")
        if per_minute is not None and not 1 <= per_minute <= d.MAX_PER_MINUTE:
            raise invalid_request(f"maximumPerMinute must be 1-{d.MAX_PER_MINUTE}")
        exponential = rollout.get("exponentialRate")
        if exponential is not None:
            factor = float(exponential["incrementFactor"])
            if round(factor, 1) != factor:
                raise invalid_request("incrementFactor takes one decimal place, e.g. 1.5")
            criteria = exponential["rateIncreaseCriteria"]
            if len(criteria) != 1:
                raise invalid_request(
                    "rateIncreaseCriteria takes exactly one of numberOfNotifiedThings, "
                    "numberOfSucceededThings"
                )
        for criterion in (params.get("abortConfig") or {}).get("criteriaList", []):
            threshold = criterion["thresholdPercentage"]
            if threshold < 0 or not _PERCENT_TWO_DECIMALS.fullmatch(f"{threshold:.10g}"):
                raise invalid_request(
                    "thresholdPercentage must be 0-100 with at most two decimal places"
                )
        timeout = (params.get("timeoutConfig") or {}).get("inProgressTimeoutInMinutes")
        if timeout is not None and not 1 <= timeout <= d.MAX_IN_PROGRESS_TIMEOUT_MINUTES:
            raise invalid_request(
                f"inProgressTimeoutInMinutes must be 1-{d.MAX_IN_PROGRESS_TIMEOUT_MINUTES}"
            )
        retry = params.get("jobExecutionsRetryConfig")
        if retry is not None:
            kinds = [c["failureType"] for c in retry["criteriaList"]]
            if len(set(kinds)) != len(kinds):
                raise invalid_request("Each failureType may appear once in the retry criteria")
            if "TIMED_OUT" in kinds and not timeout:
                raise invalid_request("Retrying TIMED_OUT executions needs a timeoutConfig")
        for field in ("jobTemplateArn", "documentParameters"):
            if params.get(field) is not None:
                raise invalid_request(
                    f"{field} is not supported by the sandbox; give the document itself"
                )
        if params.get("documentSource") is not None:
            raise invalid_request(
                "documentSource (an S3 URL) is not supported by the sandbox; pass document"
            )
        document = params.get("document")
        if document is None:
            raise invalid_request("Give the job document (document) or a documentSource")
        if len(document) > d.MAX_DOCUMENT_CHARS:
            raise invalid_request(
                f"The job document is {len(document)} characters; at most {d.MAX_DOCUMENT_CHARS}"
            )
        try:
            parsed = json.loads(document)
        except ValueError as exc:
            raise invalid_request(f"The job document is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise invalid_request("The job document must be a JSON object")

    @staticmethod
    def _parse_schedule(
        config: Mapping[str, Any] | None, now: float
    ) -> tuple[float | None, float | None, MaintenanceWindows | None]:
        """Start, end and windows from a schedulingConfig, within the documented limits."""
        if not config:
            return None, None, None
        start = end = None
        if config.get("startTime") is not None:
            start = parse_datetime(config["startTime"], "startTime").timestamp()
            if start < now + d.SCHEDULE_MIN_LEAD_SECONDS:
                raise invalid_request(
                    f"schedulingConfig.startTime {config['startTime']} must be at least "
                    f"{d.SCHEDULE_MIN_LEAD_SECONDS / 60:.0f} minutes from now; "
                    "omit it to start at once"
                )
            if start > now + d.SCHEDULE_MAX_START_AHEAD_SECONDS:
                raise invalid_request(
                    f"schedulingConfig.startTime {config['startTime']} is more than "
                    f"{d.SCHEDULE_MAX_START_AHEAD_SECONDS / 86400:.0f} days ahead; "
                    "schedule the job nearer the time"
                )
        if config.get("endTime") is not None:
            end = parse_datetime(config["endTime"], "endTime").timestamp()
            begins = now if start is None else start
            if end < begins + d.SCHEDULE_MIN_DURATION_SECONDS:
                raise invalid_request(
                    f"schedulingConfig.endTime {config['endTime']} must be at least "
                    f"{d.SCHEDULE_MIN_DURATION_SECONDS / 60:.0f} minutes after the "
                    + ("startTime" if start is not None else "current time")
                )
            if end > now + d.SCHEDULE_MAX_END_SECONDS:
                raise invalid_request(
                    f"schedulingConfig.endTime {config['endTime']} is more than two years from now"
                )
        windows_config = config.get("maintenanceWindows")
        windows = MaintenanceWindows.parse(windows_config) if windows_config else None
        return start, end, windows

    def _start_job(self, job: _Job, now: float) -> None:
        """A SCHEDULED job reached its startTime: resolve its targets and roll out."""
        job.status = "IN_PROGRESS"
        job.last_updated_at = now
        self._changed()
        members: set[str] = {t for t in job.target_things if t in self._things}
        for group in job.target_groups:
            if group in self._groups:
                members.update(self._group_things(group, recursive=True))
        self._enqueue_targets(job, sorted(members), now)
        self._maybe_complete(job, now)
        log.info("job_started", job_id=job.job_id, things=len(members))

    def _end_job(self, job: _Job, now: float) -> None:
        """The job reached its endTime: stop the rollout, or cancel, per endBehavior."""
        behavior = (job.scheduling_config or {}).get(
            "endBehavior"
        ) or d.SCHEDULE_DEFAULT_END_BEHAVIOR
        log.info("job_end_time", job_id=job.job_id, behavior=behavior)
        if behavior == "STOP_ROLLOUT":
            job.rollout_pending.clear()
            job.rollout_queued.clear()
            job.rollout = False
            job.last_updated_at = now
            self._changed()
            self._maybe_complete(job, now)
            return
        self._cancel_job(
            job,
            now,
            force=behavior == "FORCE_CANCEL",
            reason_code=d.SCHEDULE_END_REASON_CODE,
            comment=f"the job reached its scheduled endTime ({behavior})",
        )

    def _resolve_targets(self, targets: Sequence[str]) -> tuple[set[str], set[str]]:
        things: set[str] = set()
        groups: set[str] = set()
        for arn in targets:
            match = _ARN.fullmatch(arn)
            if match is None:
                raise invalid_request(
                    f"Target {arn} is not a thing or thing group ARN "
                    "(arn:aws:iot:<region>:<account>:thing/<name> or .../thinggroup/<name>)"
                )
            partition, region, account, kind, name = match.groups()
            if (partition, region, account) != (self.partition, self.region, self.account_id):
                raise invalid_request(
                    f"Target {arn} is not in this partition, account and region "
                    f"({self.partition}, {self.account_id}, {self.region})"
                )
            if kind == "thing":
                self._thing(name)
                things.add(name)
            else:
                self._group(name)
                groups.add(name)
        return things, groups

    def create_job(self, params: Mapping[str, Any]) -> dict[str, Any]:
        job_id = params["jobId"]
        self._validate_job_config(params)
        with self._lock:
            now = self._now()
            self._process_due(now)
            if job_id in self._jobs:
                raise already_exists(f"Job {job_id} already exists.")
            selection = params.get("targetSelection") or "SNAPSHOT"
            if selection == "SNAPSHOT":
                active = sum(
                    1
                    for j in self._jobs.values()
                    if j.status == "IN_PROGRESS" and j.target_selection == "SNAPSHOT"
                )
                if active >= d.MAX_ACTIVE_SNAPSHOT_JOBS:
                    raise ServiceError(
                        "LimitExceededException",
                        f"At most {d.MAX_ACTIVE_SNAPSHOT_JOBS} snapshot jobs may be in progress; "
                        "wait for some to complete or cancel them",
                        410,
                    )
            things, groups = self._resolve_targets(params["targets"])
            start_at, end_at, windows = self._parse_schedule(params.get("schedulingConfig"), now)
            job = _Job(job_id, self._arn("job", job_id), now)
            job.scheduling_config = params.get("schedulingConfig") or None
            job.start_at, job.end_at, job.windows = start_at, end_at, windows
            job.targets = list(params["targets"])
            job.target_things = things
            job.target_groups = groups
            job.target_selection = selection
            job.document = params["document"]
            job.description = params.get("description")
            job.rollout_config = params.get("jobExecutionsRolloutConfig") or None
            job.abort_config = params.get("abortConfig")
            job.timeout_config = params.get("timeoutConfig")
            job.retry_config = params.get("jobExecutionsRetryConfig")
            if job.rollout_config:
                exponential = job.rollout_config.get("exponentialRate")
                per_minute = job.rollout_config.get("maximumPerMinute", d.MAX_PER_MINUTE)
                job.rate = float(
                    min(exponential["baseRatePerMinute"], per_minute) if exponential else per_minute
                )
            self._jobs[job_id] = job
            self._changed()
            if end_at is not None:
                self._push_deadline(end_at, "end", job, 0)
            if start_at is not None:
                job.status = "SCHEDULED"
                self._push_deadline(start_at, "start", job, 0)
                log.info("job_scheduled", job_id=job_id, start_at=start_at, selection=selection)
            else:
                self._start_job(job, now)
                log.info("job_created", job_id=job_id, selection=selection)
            out: dict[str, Any] = {"jobArn": job.arn, "jobId": job_id}
            if job.description is not None:
                out["description"] = job.description
        self._flush()
        return out

    def _process_details(self, job: _Job) -> dict[str, Any]:
        details: dict[str, Any] = {field: job.counts[s] for s, field in _COUNT_FIELDS.items()}
        if job.rollout_pending:
            details["processingTargets"] = list(job.targets)
        return details

    def describe_job(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            now = self._now()
            self._process_due(now)
            job = self._job(params["jobId"])
            out: dict[str, Any] = {
                "jobArn": job.arn,
                "jobId": job.job_id,
                "targetSelection": job.target_selection,
                "status": job.status,
                "forceCanceled": job.force_canceled,
                "targets": list(job.targets),
                "createdAt": job.created_at,
                "lastUpdatedAt": job.last_updated_at,
                "jobProcessDetails": self._process_details(job),
                "isConcurrent": False,
            }
            optional = {
                "reasonCode": job.reason_code,
                "comment": job.comment,
                "description": job.description,
                "completedAt": job.completed_at,
                "jobExecutionsRolloutConfig": job.rollout_config,
                "abortConfig": job.abort_config,
                "timeoutConfig": job.timeout_config,
                "jobExecutionsRetryConfig": job.retry_config,
                "schedulingConfig": job.scheduling_config,
            }
            out.update({k: v for k, v in optional.items() if v is not None})
            if job.windows is not None and job.status in ("SCHEDULED", "IN_PROGRESS"):
                after = max(now, job.start_at or now)
                out["scheduledJobRollouts"] = [
                    {"startTime": _format_time(t)}
                    for t in job.windows.upcoming(after, d.SCHEDULED_ROLLOUTS_SHOWN)
                ]
        self._flush()
        return {"job": out}

    def get_job_document(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            return {"document": self._job(params["jobId"]).document}

    def list_jobs(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            now = self._now()
            self._process_due(now)
            jobs = sorted(self._jobs.values(), key=lambda j: (j.created_at, j.job_id))
            status = params.get("status")
            selection = params.get("targetSelection")
            group = params.get("thingGroupName")
            selected = [
                j
                for j in jobs
                if (status is None or j.status == status)
                and (selection is None or j.target_selection == selection)
                and (group is None or group in j.target_groups)
            ]
            page, token = _paginate(selected, params)
            summaries = []
            for job in page:
                summary: dict[str, Any] = {
                    "jobArn": job.arn,
                    "jobId": job.job_id,
                    "targetSelection": job.target_selection,
                    "status": job.status,
                    "isConcurrent": False,
                    "createdAt": job.created_at,
                    "lastUpdatedAt": job.last_updated_at,
                }
                if job.completed_at is not None:
                    summary["completedAt"] = job.completed_at
                summaries.append(summary)
            out: dict[str, Any] = {"jobs": summaries}
            if token:
                out["nextToken"] = token
        self._flush()
        return out

    @staticmethod
    def _execution_summary(ex: _Execution) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "status": ex.status,
            "queuedAt": ex.queued_at,
            "lastUpdatedAt": ex.last_updated_at,
            "executionNumber": ex.execution_number,
            "retryAttempt": ex.retry_attempt,
        }
        if ex.started_at is not None:
            summary["startedAt"] = ex.started_at
        return summary

    def list_job_executions_for_job(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            now = self._now()
            self._process_due(now)
            job = self._job(params["jobId"])
            status = params.get("status")
            executions = [
                ex for ex in job.executions.values() if status is None or ex.status == status
            ]
            page, token = _paginate(executions, params)
            out: dict[str, Any] = {
                "executionSummaries": [
                    {
                        "thingArn": self._arn("thing", ex.thing),
                        "jobExecutionSummary": self._execution_summary(ex),
                    }
                    for ex in page
                ]
            }
            if token:
                out["nextToken"] = token
        self._flush()
        return out

    def list_job_executions_for_thing(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            now = self._now()
            self._process_due(now)
            thing = self._thing(params["thingName"])
            status = params.get("status")
            job_id = params.get("jobId")
            executions = [
                ex
                for ex in thing.executions.values()
                if (status is None or ex.status == status)
                and (job_id is None or ex.job.job_id == job_id)
            ]
            page, token = _paginate(executions, params)
            out: dict[str, Any] = {
                "executionSummaries": [
                    {"jobId": ex.job.job_id, "jobExecutionSummary": self._execution_summary(ex)}
                    for ex in page
                ]
            }
            if token:
                out["nextToken"] = token
        self._flush()
        return out

    def describe_job_execution(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The control plane's DescribeJobExecution (iot service shape)."""
        thing_name = params["thingName"]
        job_id = params["jobId"]
        with self._lock:
            now = self._now()
            self._process_due(now)
            self._job(job_id)
            self._thing(thing_name)
            try:
                snap, ex = self._describe_locked(
                    thing_name, job_id, params.get("executionNumber"), now
                )
            except DataPlaneError as exc:
                raise not_found(
                    f"Job execution {job_id} for thing {thing_name} cannot be found."
                ) from exc
            force_canceled = ex.force_canceled and snap.execution_number == ex.execution_number
        self._flush()
        execution: dict[str, Any] = {
            "jobId": snap.job_id,
            "status": snap.status,
            "forceCanceled": force_canceled,
            "statusDetails": {"detailsMap": dict(snap.status_details)},
            "thingArn": self._arn("thing", thing_name),
            "queuedAt": snap.queued_at,
            "lastUpdatedAt": snap.last_updated_at,
            "executionNumber": snap.execution_number,
            "versionNumber": snap.version_number,
        }
        if snap.started_at is not None:
            execution["startedAt"] = snap.started_at
        if snap.approximate_seconds_before_timed_out is not None:
            execution["approximateSecondsBeforeTimedOut"] = (
                snap.approximate_seconds_before_timed_out
            )
        return {"execution": execution}

    def _cancel_job(
        self,
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
        for ex in job.executions.values():
            if ex.status == "QUEUED" or (force and ex.status == "IN_PROGRESS"):
                if ex.status == "IN_PROGRESS":
                    ex.force_canceled = True
                self._set_status(ex, "CANCELED", now, "control-plane")
        self._changed()

    def cancel_job(self, params: Mapping[str, Any]) -> dict[str, Any]:
        force = bool(params.get("force"))
        with self._lock:
            now = self._now()
            self._process_due(now)
            job = self._job(params["jobId"])
            if job.status == "COMPLETED":
                raise invalid_request(
                    f"Job {job.job_id} is COMPLETED; a completed job cannot be canceled"
                )
            self._cancel_job(
                job,
                now,
                force=force,
                reason_code=params.get("reasonCode"),
                comment=params.get("comment"),
            )
            log.info("job_canceled", job_id=job.job_id, force=force)
            out: dict[str, Any] = {"jobArn": job.arn, "jobId": job.job_id}
            if job.description is not None:
                out["description"] = job.description
        self._flush()
        return out

    def cancel_job_execution(self, params: Mapping[str, Any]) -> dict[str, Any]:
        force = bool(params.get("force"))
        job_id = params["jobId"]
        thing_name = params["thingName"]
        details = params.get("statusDetails")
        with self._lock:
            now = self._now()
            self._process_due(now)
            job = self._job(job_id)
            ex = job.executions.get(thing_name)
            if ex is None:
                raise not_found(f"Job execution {job_id} for thing {thing_name} cannot be found.")
            if ex.status in TERMINAL:
                raise ServiceError(
                    "InvalidStateTransitionException",
                    f"Job execution {job_id} for {thing_name} is {ex.status}, a terminal status",
                    409,
                )
            if ex.status == "IN_PROGRESS" and not force:
                raise ServiceError(
                    "InvalidStateTransitionException",
                    f"Job execution {job_id} for {thing_name} is IN_PROGRESS; cancel it with "
                    "force=True (the device will no longer be able to update it)",
                    409,
                )
            expected = params.get("expectedVersion")
            if expected is not None and expected != ex.version:
                raise ServiceError(
                    "VersionConflictException",
                    f"expectedVersion {expected} does not match the execution's version "
                    f"{ex.version}",
                    409,
                )
            if details is not None:
                ex.details = dict(details)
            ex.force_canceled = ex.status == "IN_PROGRESS"
            self._set_status(ex, "CANCELED", now, "control-plane")
            self._after_outcome(ex, now)
        self._flush()
        return {}

    def delete_job(self, params: Mapping[str, Any]) -> dict[str, Any]:
        force = bool(params.get("force"))
        with self._lock:
            now = self._now()
            self._process_due(now)
            job = self._job(params["jobId"])
            if job.status not in ("COMPLETED", "CANCELED") and not force:
                raise ServiceError(
                    "InvalidStateTransitionException",
                    f"Job {job.job_id} is {job.status}; cancel it first or delete with force=True",
                    409,
                )
            if not force and any(ex.status == "IN_PROGRESS" for ex in job.executions.values()):
                raise ServiceError(
                    "InvalidStateTransitionException",
                    f"Job {job.job_id} still has IN_PROGRESS executions; delete with force=True",
                    409,
                )
            for ex in job.executions.values():
                thing = self._things.get(ex.thing)
                if thing is not None and thing.executions.get(job.job_id) is ex:
                    del thing.executions[job.job_id]
            job.rollout = False
            del self._jobs[job.job_id]
            self._changed()
        self._flush()
        return {}

    # --------------------------------------------------------------- inspection
    def recount(self, job_id: str) -> dict[str, int]:
        """The job's status counts recomputed from its executions (for cross-checks)."""
        with self._lock:
            job = self._job(job_id)
            counts = dict.fromkeys(ALL_STATUSES, 0)
            for ex in job.executions.values():
                counts[ex.status] += 1
            return counts

    def counts(self, job_id: str) -> dict[str, int]:
        """The job's maintained status counters."""
        with self._lock:
            return dict(self._job(job_id).counts)

    def execution_history(
        self, *, job_id: str | None = None, thing_name: str | None = None
    ) -> list[dict[str, Any]]:
        """Executions with every status change and the way (`via`) it came in."""
        with self._lock:
            now = self._now()
            if job_id is not None:
                executions: Iterable[_Execution] = self._job(job_id).executions.values()
            elif thing_name is not None:
                executions = self._thing(thing_name).executions.values()
            else:
                executions = (ex for job in self._jobs.values() for ex in job.executions.values())
            out = []
            for ex in executions:
                if thing_name is not None and ex.thing != thing_name:
                    continue
                snap = self._snapshot(ex, now)
                out.append(
                    {
                        "jobId": ex.job.job_id,
                        "thingName": ex.thing,
                        "status": ex.status,
                        "versionNumber": ex.version,
                        "executionNumber": ex.execution_number,
                        "retryAttempt": ex.retry_attempt,
                        "statusDetails": dict(ex.details),
                        "approximateSecondsBeforeTimedOut": (
                            snap.approximate_seconds_before_timed_out
                        ),
                        "history": [
                            {
                                "status": h.status,
                                "via": h.via,
                                "at": h.at,
                                "versionNumber": h.version_number,
                                "executionNumber": h.execution_number,
                            }
                            for h in ex.history
                        ],
                    }
                )
            return out

    # -------------------------------------------------------------- persistence
    def export_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the engine, as JSON-ready data."""
        with self._lock:
            return {
                "format": 1,
                "region": self.region,
                "account_id": self.account_id,
                "things": [
                    {
                        "name": t.name,
                        "attributes": t.attributes,
                        "thing_id": t.thing_id,
                        "version": t.version,
                        "groups": t.groups,
                    }
                    for t in self._things.values()
                ],
                "groups": [
                    {
                        "name": g.name,
                        "parent": g.parent,
                        "created_at": g.created_at,
                        "group_id": g.group_id,
                        "description": g.description,
                    }
                    for g in self._groups.values()
                ],
                "jobs": [_export_job(j) for j in self._jobs.values()],
            }

    def import_state(self, state: Mapping[str, Any]) -> None:
        """Replace the engine's state with an `export_state()` result."""
        if state.get("format") != 1:
            raise ValueError(
                "sandbox state file has an unknown format; start with an empty --state-dir"
            )
        with self._lock:
            self._things.clear()
            self._groups.clear()
            self._jobs.clear()
            self._deadlines.clear()
            for g in state["groups"]:
                group = _Group(
                    g["name"],
                    self._arn("thinggroup", g["name"]),
                    g["parent"],
                    g["created_at"],
                    g["group_id"],
                )
                group.description = g["description"]
                self._groups[group.name] = group
            for group in self._groups.values():
                if group.parent is not None:
                    self._groups[group.parent].children.add(group.name)
            for t in state["things"]:
                thing = _Thing(
                    t["name"], self._arn("thing", t["name"]), t["attributes"], t["thing_id"]
                )
                thing.version = t["version"]
                thing.groups = list(t["groups"])
                for group_name in thing.groups:
                    self._groups[group_name].things.add(thing.name)
                self._things[thing.name] = thing
            for j in state["jobs"]:
                self._import_job(j)
            self._changed()
            self._wake.notify_all()

    def _import_job(self, j: Mapping[str, Any]) -> None:
        job = _Job(j["job_id"], self._arn("job", j["job_id"]), j["created_at"])
        for key in (
            "last_updated_at",
            "completed_at",
            "status",
            "force_canceled",
            "reason_code",
            "comment",
            "description",
            "document",
            "targets",
            "target_selection",
            "rollout_config",
            "abort_config",
            "timeout_config",
            "retry_config",
            "notified",
            "rate",
            "rate_baseline",
        ):
            setattr(job, key, j[key])
        job.scheduling_config = j.get("scheduling_config")
        job.start_at = j.get("start_at")
        job.end_at = j.get("end_at")
        windows = (job.scheduling_config or {}).get("maintenanceWindows")
        job.windows = MaintenanceWindows.parse(windows) if windows else None
        job.target_things = set(j["target_things"])
        job.target_groups = set(j["target_groups"])
        job.rollout_pending = deque(j["rollout_pending"])
        job.rollout_queued = set(job.rollout_pending)
        self._jobs[job.job_id] = job
        for e in j["executions"]:
            ex = _Execution(job, e["thing"], e["queued_at"], next(self._seq))
            for key in (
                "status",
                "details",
                "started_at",
                "last_updated_at",
                "version",
                "execution_number",
                "retry_attempt",
                "force_canceled",
                "in_progress_deadline",
                "timer_deadline",
            ):
                setattr(ex, key, e[key])
            ex.history = [HistoryEntry(**h) for h in e["history"]]
            ex.previous = [ExecutionSnapshot(**p) for p in e["previous"]]
            job.executions[ex.thing] = ex
            job.counts[ex.status] += 1
            thing = self._things.get(ex.thing)
            if thing is not None:
                thing.executions[job.job_id] = ex
            if ex.status == "IN_PROGRESS" and ex.timer_deadline is not None:
                self._push_deadline(ex.timer_deadline, "timeout", ex, ex.execution_number)
        if job.rollout_pending and job.status == "IN_PROGRESS":
            job.rollout = True
            job.next_rollout_at = j["next_rollout_at"] or job.created_at
            self._push_deadline(job.next_rollout_at, "rollout", job, 0)
        if job.status == "SCHEDULED" and job.start_at is not None:
            self._push_deadline(job.start_at, "start", job, 0)
        if job.status in ("SCHEDULED", "IN_PROGRESS") and job.end_at is not None:
            self._push_deadline(job.end_at, "end", job, 0)


def _export_job(job: _Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "created_at": job.created_at,
        "last_updated_at": job.last_updated_at,
        "completed_at": job.completed_at,
        "status": job.status,
        "force_canceled": job.force_canceled,
        "reason_code": job.reason_code,
        "comment": job.comment,
        "description": job.description,
        "document": job.document,
        "targets": job.targets,
        "target_things": sorted(job.target_things),
        "target_groups": sorted(job.target_groups),
        "target_selection": job.target_selection,
        "rollout_config": job.rollout_config,
        "abort_config": job.abort_config,
        "timeout_config": job.timeout_config,
        "retry_config": job.retry_config,
        "notified": job.notified,
        "rate": job.rate,
        "rate_baseline": job.rate_baseline,
        "rollout_pending": list(job.rollout_pending),
        "next_rollout_at": job.next_rollout_at,
        "scheduling_config": job.scheduling_config,
        "start_at": job.start_at,
        "end_at": job.end_at,
        "executions": [
            {
                "thing": ex.thing,
                "status": ex.status,
                "details": ex.details,
                "queued_at": ex.queued_at,
                "started_at": ex.started_at,
                "last_updated_at": ex.last_updated_at,
                "version": ex.version,
                "execution_number": ex.execution_number,
                "retry_attempt": ex.retry_attempt,
                "force_canceled": ex.force_canceled,
                "in_progress_deadline": ex.in_progress_deadline,
                "timer_deadline": ex.timer_deadline,
                "history": [
                    {
                        "status": h.status,
                        "via": h.via,
                        "at": h.at,
                        "version_number": h.version_number,
                        "execution_number": h.execution_number,
                    }
                    for h in ex.history
                ],
                "previous": [
                    {
                        "job_id": p.job_id,
                        "thing_name": p.thing_name,
                        "status": p.status,
                        "status_details": dict(p.status_details),
                        "queued_at": p.queued_at,
                        "started_at": p.started_at,
                        "last_updated_at": p.last_updated_at,
                        "version_number": p.version_number,
                        "execution_number": p.execution_number,
                        "approximate_seconds_before_timed_out": (
                            p.approximate_seconds_before_timed_out
                        ),
                        "job_document": p.job_document,
                    }
                    for p in ex.previous
                ],
            }
            for ex in job.executions.values()
        ],
    }


def _format_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M")


def _name_from_arn(arn: str | None, kind: str) -> str | None:
    if not arn:
        return None
    match = _ARN.fullmatch(arn)
    if match is None or match.group(4) != kind:
        raise invalid_request(f"{arn} is not a {kind} ARN")
    return match.group(5)


def _paginate(items: Sequence[Any], params: Mapping[str, Any]) -> tuple[list[Any], str | None]:
    """One page of `items` after the opaque `nextToken`, and the token of the next page."""
    token = params.get("nextToken")
    start = 0
    if token:
        prefix = "sandbox-offset-"
        if not token.startswith(prefix) or not token[len(prefix) :].isdigit():
            raise invalid_request("nextToken is not one this API returned; start without it")
        start = int(token[len(prefix) :])
    size = int(params.get("maxResults") or d.DEFAULT_PAGE_SIZE)
    page = list(items[start : start + size])
    end = start + size
    return page, (f"sandbox-offset-{end}" if end < len(items) else None)
