"""The seam between reconcile and AWS IoT Jobs: `JobsApi`, implemented by `orchestrator.aws`.

Reconcile talks only to this protocol, so unit tests and the fleet-size
benchmark drive it with in-memory fakes while the CLI wires in the boto3
adapter. Every method is one or a few bounded API calls; none enumerates the
fleet except `count_things` (used by `plan`, never by reconcile).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.planner import JobConfig, JobObservation

__all__ = ["FailureSample", "JobsApi"]


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
