"""Records: the engine's things, groups, jobs and executions, and their vocabulary.

Plain mutable records with `__slots__` (a fleet of 100k executions must stay
small); only the engine's mechanism modules change them, under the engine's lock.

Invariants:
- A thing's `executions` and a job's `executions` hold the same `_Execution`
  objects: the current execution of that thing for that job.
- `HistoryEntry` rows are appended, never changed.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from infra.sandbox import decisions as d
from infra.sandbox.dataplane import ExecutionSnapshot
from infra.sandbox.errors import invalid_request
from infra.sandbox.scheduling import MaintenanceWindows

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
COUNT_FIELDS: Final = {
    "CANCELED": "numberOfCanceledThings",
    "SUCCEEDED": "numberOfSucceededThings",
    "FAILED": "numberOfFailedThings",
    "REJECTED": "numberOfRejectedThings",
    "QUEUED": "numberOfQueuedThings",
    "IN_PROGRESS": "numberOfInProgressThings",
    "REMOVED": "numberOfRemovedThings",
    "TIMED_OUT": "numberOfTimedOutThings",
}
ARN: Final = re.compile(r"arn:(aws[a-z-]*):iot:([a-z0-9-]+):(\d{12}):(thing|thinggroup)/(.+)")


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
        "build_status",
        "built_at",
        "children",
        "created_at",
        "description",
        "group_id",
        "index_name",
        "name",
        "parent",
        "query",
        "query_version",
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
        # A dynamic group's fleet-indexing query (None: a static group).
        self.query: str | None = None
        self.index_name: str | None = None
        self.query_version: str | None = None
        # A dynamic group's backfill (`_membership.finish_build`): ACTIVE, or BUILDING /
        # REBUILDING until `built_at` (sandbox time).
        self.build_status = "ACTIVE"
        self.built_at: float | None = None

    @property
    def dynamic(self) -> bool:
        return self.query is not None


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
        "cancel_due_at",
        "comment",
        "completed_at",
        "counts",
        "created_at",
        "delete_due_at",
        "description",
        "document",
        "end_at",
        "executions",
        "force_canceled",
        "job_id",
        "last_updated_at",
        "next_rollout_at",
        "notified",
        "period_released",
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
        "window_end_at",
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
        self.period_released = 0  # things notified since the batch at next_rollout_at - 60 s
        self.notified = 0
        self.rate = 0.0
        self.rate_baseline = 0
        self.scheduling_config: dict[str, Any] | None = None
        self.start_at: float | None = None
        self.end_at: float | None = None
        self.windows: MaintenanceWindows | None = None
        self.window_end_at: float | None = None  # the open window's end, while it is armed
        self.cancel_due_at: float | None = None  # executions still to cancel by then
        self.delete_due_at: float | None = None  # DELETION_IN_PROGRESS until then


def format_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M")


def name_from_arn(arn: str | None, kind: str) -> str | None:
    if not arn:
        return None
    match = ARN.fullmatch(arn)
    if match is None or match.group(4) != kind:
        raise invalid_request(f"{arn} is not a {kind} ARN")
    return match.group(5)


def paginate(items: Sequence[Any], params: Mapping[str, Any]) -> tuple[list[Any], str | None]:
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
