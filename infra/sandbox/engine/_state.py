"""The engine's shared state and the few primitives every mechanism uses.

One `EngineState` holds the whole service behind one lock: the registry
(things, groups), the jobs, the heap of deadlines and the subscribers. The
mechanism modules (`_timers`, `_rollout`, `_policies`, `_registry`, `_control`,
`_devices`, `_inspection`, `_persistence`) are functions over it; `JobsEngine`
is the facade.

Invariants:
- `job.counts[status]` equals the number of the job's rolled-out executions in
  that status. Counters change only in `set_status`, `new_execution` and the
  retry policy.
- Subscribers are called outside the lock (`flush`), with the thing names whose
  pending list may have changed.
- `revision` rises on every change (`changed`); persistence watches it.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import math
import threading
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from infra.sandbox import decisions as d
from infra.sandbox.dataplane import ExecutionSnapshot
from infra.sandbox.engine._identity import CertificateIssuer, ConnectPolicy, _Certificate
from infra.sandbox.engine._records import HistoryEntry, _Execution, _Group, _Job, _Thing
from infra.sandbox.errors import not_found
from infra.sandbox.indexing import DEFAULT_CONFIGURATION
from infra.sandbox.shadows import ShadowTable
from job_documents.clock import Clock

log = structlog.get_logger(__name__)


class EngineState:
    """AWS IoT Jobs state for one account and region, and its lock."""

    def __init__(
        self,
        *,
        clock: Clock,
        region: str = d.DEFAULT_REGION,
        account_id: str = d.ACCOUNT_ID,
        time_scale: float = 1.0,
        cancel_delay: float = d.CANCEL_PROPAGATION_SECONDS,
        delete_delay: float = d.DELETION_SECONDS,
        default_per_minute: int | None = d.DEFAULT_PER_MINUTE,
    ) -> None:
        self.clock = clock
        self.cancel_delay = cancel_delay
        self.delete_delay = delete_delay
        # things a minute for a job without a rollout configuration; None: all at once
        self.default_per_minute = default_per_minute
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
        self.lock = threading.RLock()
        self.wake = threading.Condition(self.lock)
        self.things: dict[str, _Thing] = {}
        self.groups: dict[str, _Group] = {}
        self.jobs: dict[str, _Job] = {}
        self.deadlines: list[tuple[float, int, str, Any, int]] = []
        self.seq = itertools.count()
        self.subscribers: list[Callable[[str], None]] = []
        self.dirty: list[str] = []
        self.stopping = False
        self.revision = 0
        self.changes_event: threading.Event | None = None
        self.shadows = ShadowTable(lock=self.lock, on_change=self.indexed_data_changed)
        # Things whose indexed data (registry or shadows) changed since dynamic groups
        # were last brought up to date; None: every thing (`_dynamic.settle`).
        self.index_stale: set[str] | None = set()
        self.indexing: dict[str, Any] = copy.deepcopy(DEFAULT_CONFIGURATION)
        # Device identity (`_certificates`): registered certificates by id, each thing's
        # attached certificate ids, the CA certificates devices may be registered under
        # (id -> PEM), what issues CreateKeysAndCertificate's certificates, and who hears
        # of a certificate's registration, status change or deletion (outside the lock).
        self.certificates: dict[str, _Certificate] = {}
        self.thing_principals: dict[str, list[str]] = {}
        # Thing name -> sandbox time until which its last DetachThingPrincipal is still
        # propagating (DeleteThing refuses it meanwhile); transient, never persisted.
        self.detaching_until: dict[str, float] = {}
        self.ca_certificates: dict[str, str] = {}
        self.certificate_issuer: CertificateIssuer | None = None
        self.certificate_listeners: list[Callable[[str], None]] = []
        # Which AWS IoT policy a CONNECT is authorized by (`authorize_connection`).
        self.connect_policy = ConnectPolicy.THING_NAME

    # ------------------------------------------------------------------ basics
    def now(self) -> float:
        return self.clock.now().timestamp()

    def arn(self, kind: str, name: str) -> str:
        return f"arn:{self.partition}:iot:{self.region}:{self.account_id}:{kind}/{name}"

    def flush(self) -> None:
        """Tell subscribers about the things changed since the last flush (outside the lock)."""
        if not self.dirty:
            return
        with self.lock:
            if not self.dirty:
                return
            things = self.dirty
            self.dirty = []
            subscribers = list(self.subscribers)
        for thing in dict.fromkeys(things):
            for callback in subscribers:
                try:
                    callback(thing)
                except Exception:
                    log.exception("subscriber_failed", thing=thing)

    def push_deadline(self, when: float, kind: str, ref: Any, token: int) -> None:
        head = self.deadlines[0][0] if self.deadlines else None
        heapq.heappush(self.deadlines, (when, next(self.seq), kind, ref, token))
        if head is None or when < head:
            self.wake.notify_all()

    def changed(self) -> None:
        self.revision += 1
        if self.changes_event is not None:
            self.changes_event.set()

    def indexed_data_changed(self, thing: str | None = None) -> None:
        """A thing's indexed data changed (None: anything may have): dynamic groups follow.

        Under the lock. The scheduler thread is woken to settle dynamic group
        membership (`_dynamic.settle`), as every operation's prologue does.
        """
        self.changed()
        if not any(g.query is not None for g in self.groups.values()):
            return
        if thing is None:
            self.index_stale = None
        elif self.index_stale is not None:
            self.index_stale.add(thing)
        self.wake.notify_all()

    # --------------------------------------------------------------- lookups
    def thing(self, name: str) -> _Thing:
        thing = self.things.get(name)
        if thing is None:
            raise not_found(f"Thing {name} cannot be found.")
        return thing

    def group(self, name: str) -> _Group:
        group = self.groups.get(name)
        if group is None:
            raise not_found(f"Thing group {name} cannot be found.")
        return group

    def job(self, job_id: str) -> _Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise not_found(f"Job {job_id} cannot be found.")
        return job

    def covered(self, job: _Job, thing: _Thing) -> bool:
        if thing.name in job.target_things:
            return True
        return any(g in job.target_groups for g in self.ancestry(thing.groups))

    def ancestry(self, groups: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        for name in groups:
            current: str | None = name
            while current is not None and current not in seen:
                seen.add(current)
                current = self.groups[current].parent
        return seen

    def descendants(self, name: str) -> list[str]:
        out: list[str] = []
        stack = [name]
        while stack:
            current = stack.pop()
            out.append(current)
            stack.extend(sorted(self.groups[current].children, reverse=True))
        return out

    def group_things(self, name: str, *, recursive: bool) -> list[str]:
        groups = self.descendants(name) if recursive else [name]
        members: set[str] = set()
        for group in groups:
            members.update(self.groups[group].things)
        return sorted(members)

    # --------------------------------------------------------- executions
    def set_status(self, ex: _Execution, status: str, now: float, via: str) -> None:
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
        if self.subscribers:
            self.dirty.append(ex.thing)
        self.changed()

    def new_execution(self, job: _Job, thing: _Thing, now: float) -> _Execution:
        ex = _Execution(job, thing.name, now, next(self.seq))
        job.executions[thing.name] = ex
        thing.executions[job.job_id] = ex
        job.counts["QUEUED"] += 1
        job.notified += 1
        if self.subscribers:
            self.dirty.append(thing.name)
        self.changed()
        return ex

    def notifiable(self, job: _Job, name: str) -> bool:
        """Whether notifying `name` would give it an execution: none yet, or a REMOVED one."""
        ex = job.executions.get(name)
        return ex is None or ex.status == "REMOVED"

    def notify(self, job: _Job, thing: _Thing, now: float) -> _Execution:
        """A new execution for a thing, or a REMOVED one restarted (its thing came back)."""
        ex = job.executions.get(thing.name)
        if ex is None:
            return self.new_execution(job, thing, now)
        ex.previous.append(self.snapshot(ex, now))
        job.counts[ex.status] -= 1
        job.counts["QUEUED"] += 1
        job.notified += 1
        ex.status = "QUEUED"
        ex.execution_number += 1
        ex.version = 1
        ex.details = {}
        ex.queued_at = now
        ex.started_at = None
        ex.last_updated_at = now
        ex.force_canceled = False
        ex.history.append(HistoryEntry("QUEUED", "service", now, 1, ex.execution_number))
        thing.executions[job.job_id] = ex
        job.last_updated_at = now
        if self.subscribers:
            self.dirty.append(thing.name)
        self.changed()
        return ex

    def snapshot(self, ex: _Execution, now: float) -> ExecutionSnapshot:
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
