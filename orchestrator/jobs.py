"""The seam between reconcile and AWS IoT Jobs: `JobsApi`, implemented by `orchestrator.aws`.

Reconcile talks only to this protocol, so unit tests and the fleet-size
benchmark drive it with in-memory fakes while the CLI wires in the boto3
adapter. Every method is one or a few bounded API calls; none enumerates the
fleet except `count_things` (used by `plan`, never by reconcile).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.planner import JobConfig, JobObservation

__all__ = ["FailureSample", "JobsApi", "WaveGroupsApi"]


@dataclass(frozen=True, slots=True)
class FailureSample:
    """One failed execution, to explain a halt (never used by gates)."""

    thing_name: str
    status: str
    details: Mapping[str, str] = field(default_factory=dict)


class JobsApi(Protocol):
    """The AWS IoT control-plane calls the orchestrator makes."""

    def resolve_endpoint(self) -> str:
        """The account's iot:Data-ATS host (DescribeEndpoint)."""
        ...

    def count_things(self, thing_group: str) -> int:
        """Things in a group, recursively (ListThingsInThingGroup; plan only)."""
        ...

    def create_job(self, job_id: str, document: str, config: JobConfig) -> None:
        """CreateJob; `JobExistsError` if the id is taken."""
        ...

    def describe_job(self, job_id: str) -> JobObservation:
        """DescribeJob counts; `exists=False` when there is no such job."""
        ...

    def get_job_document(self, job_id: str) -> str:
        """GetJobDocument."""
        ...

    def cancel_job(self, job_id: str, reason: str) -> None:
        """CancelJob without force (QUEUED executions only); no-op on a job already stopped."""
        ...

    def list_failures(self, job_id: str, limit: int) -> list[FailureSample]:
        """Up to `limit` failed, timed-out or rejected executions with their details."""
        ...


class WaveGroupsApi(Protocol):
    """The calls that make the thing groups of waves chosen by query or sample.

    Each is idempotent: a group of that name that is the campaign's own (same query,
    or same description) is adopted; one that is not raises `GroupConflictError`.
    """

    def ensure_dynamic_group(self, name: str, query: str, description: str) -> str:
        """CreateDynamicThingGroup (or adopt it); its status: ACTIVE once its members are built."""
        ...

    def ensure_static_group(self, name: str, description: str) -> list[str]:
        """CreateThingGroup (or adopt it); the things already in it."""
        ...

    def indexed_values(self, query: str, field: str) -> dict[str, str | None]:
        """Every thing matching `query` (SearchIndex) and its value of `field` (None: none)."""
        ...

    def add_things(self, group: str, things: Sequence[str]) -> list[str]:
        """AddThingToThingGroup for each thing (already a member: nothing happens).

        Returns the things AWS refused as invalid requests (already in ten groups):
        they are left out of the sample, not retried for ever.
        """
        ...
