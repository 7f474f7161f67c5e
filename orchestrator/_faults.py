"""Crash injection for the orchestrator's crash tests (hidden; never set in production).

With `CA_MIGRATE_KILL_AFTER_WRITES=N` in the environment, the CLI wraps its
store and AWS adapter so that the process SIGKILLs itself right after its Nth
write (a state-store commit, CreateJob or CancelJob). Enumerating N = 1, 2, ...
kills a reconcile at every step of a campaign.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Sequence
from datetime import datetime, timedelta

from orchestrator.jobs import FailureSample, JobsApi
from orchestrator.model import CampaignState, Event
from orchestrator.planner import JobConfig, JobObservation
from orchestrator.store import StateStore, StoredCampaign, StoredEvent

__all__ = ["ENV", "KillSwitch"]

ENV = "CA_MIGRATE_KILL_AFTER_WRITES"


class KillSwitch:
    """Counts writes; SIGKILLs this process after the configured one."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.writes = 0

    @classmethod
    def from_env(cls) -> KillSwitch | None:
        """The process's one switch (shared by store and adapter), or None when not asked for."""
        return _process_switch()

    def wrote(self) -> None:
        self.writes += 1
        if self.writes >= self.after:
            os.kill(os.getpid(), signal.SIGKILL)


@functools.cache
def _process_switch() -> KillSwitch | None:
    raw = os.environ.get(ENV, "")
    return KillSwitch(int(raw)) if raw.isdigit() and int(raw) > 0 else None


class KillingStore:
    """A `StateStore` that counts its commits."""

    def __init__(self, inner: StateStore, switch: KillSwitch) -> None:
        self._inner = inner
        self._switch = switch

    def create(self, stored: StoredCampaign, events: Sequence[Event]) -> CampaignState:
        out = self._inner.create(stored, events)
        self._switch.wrote()
        return out

    def load(self, name: str) -> StoredCampaign:
        return self._inner.load(name)

    def commit(self, state: CampaignState, events: Sequence[Event]) -> CampaignState:
        out = self._inner.commit(state, events)
        self._switch.wrote()
        return out

    def events(self, name: str) -> list[StoredEvent]:
        return self._inner.events(name)

    def acquire_lease(
        self,
        name: str,
        owner: str,
        ttl: timedelta,
        now: datetime,
        *,
        take_over: str | None = None,
    ) -> None:
        self._inner.acquire_lease(name, owner, ttl, now, take_over=take_over)

    def lease_holder(self, name: str) -> str | None:
        return self._inner.lease_holder(name)

    def release_lease(self, name: str, owner: str) -> None:
        self._inner.release_lease(name, owner)

    def names(self) -> list[str]:
        return self._inner.names()


class KillingJobsApi:
    """A `JobsApi` that counts CreateJob and CancelJob."""

    def __init__(self, inner: JobsApi, switch: KillSwitch) -> None:
        self._inner = inner
        self._switch = switch

    def resolve_endpoint(self) -> str:
        return self._inner.resolve_endpoint()

    def count_things(self, thing_group: str) -> int:
        return self._inner.count_things(thing_group)

    def create_job(self, job_id: str, document: str, config: JobConfig) -> None:
        self._inner.create_job(job_id, document, config)
        self._switch.wrote()

    def describe_job(self, job_id: str) -> JobObservation:
        return self._inner.describe_job(job_id)

    def get_job_document(self, job_id: str) -> str:
        return self._inner.get_job_document(job_id)

    def cancel_job(self, job_id: str, reason: str) -> None:
        self._inner.cancel_job(job_id, reason)
        self._switch.wrote()

    def list_failures(self, job_id: str, limit: int) -> list[FailureSample]:
        return self._inner.list_failures(job_id, limit)
