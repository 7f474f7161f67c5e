"""Test helpers shipped with the package: an in-memory `JobsApi` for unit tests and benchmarks.

`FakeJobs` keeps jobs as counts, not executions, so a simulated fleet of a
million devices costs nothing; it counts every call by operation name, which
is what the fleet-size benchmark reports. It is never used against AWS or the
sandbox: end-to-end tests use the real boto3 adapter.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from orchestrator.errors import AwsError, JobExistsError
from orchestrator.jobs import FailureSample
from orchestrator.model import Counts
from orchestrator.planner import JobConfig, JobObservation

__all__ = ["FakeJob", "FakeJobs"]


@dataclass
class FakeJob:
    job_id: str
    document: str
    config: JobConfig
    status: str = "IN_PROGRESS"
    counts: Counts = field(default_factory=Counts)


class FakeJobs:
    """An in-memory `JobsApi`: groups are sizes, jobs are counts."""

    def __init__(self, groups: dict[str, int] | None = None, endpoint: str = "") -> None:
        self.groups = dict(groups or {})
        self.endpoint = endpoint or "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
        self.jobs: dict[str, FakeJob] = {}
        self.calls: Counter[str] = Counter()

    # -- driving the fake --------------------------------------------------------------------

    def set_counts(self, job_id: str, status: str | None = None, **counts: int) -> None:
        job = self.jobs[job_id]
        job.counts = Counts(**counts)
        if status is not None:
            job.status = status

    def finish(self, job_id: str, *, failed: int = 0) -> None:
        """Every device of the job reports: `failed` of them FAILED, the rest SUCCEEDED."""
        job = self.jobs[job_id]
        total = sum(self.groups.get(g, 0) for g in job.config.thing_groups)
        job.counts = Counts(succeeded=total - failed, failed=failed)
        job.status = "COMPLETED"

    # -- JobsApi -----------------------------------------------------------------------------

    def resolve_endpoint(self) -> str:
        self.calls["DescribeEndpoint"] += 1
        return self.endpoint

    def count_things(self, thing_group: str) -> int:
        self.calls["ListThingsInThingGroup"] += max(1, -(-self.groups.get(thing_group, 0) // 250))
        return self.groups.get(thing_group, 0)

    def create_job(self, job_id: str, document: str, config: JobConfig) -> None:
        self.calls["DescribeThingGroup"] += len(config.thing_groups)
        self.calls["CreateJob"] += 1
        for group in config.thing_groups:
            if group not in self.groups:
                raise AwsError(f"thing group {group} does not exist", code="ResourceNotFound")
        if job_id in self.jobs:
            raise JobExistsError(f"job {job_id} exists", code="ResourceAlreadyExistsException")
        total = sum(self.groups[g] for g in config.thing_groups)
        self.jobs[job_id] = FakeJob(job_id, document, config, counts=Counts(queued=total))

    def describe_job(self, job_id: str) -> JobObservation:
        self.calls["DescribeJob"] += 1
        job = self.jobs.get(job_id)
        if job is None:
            return JobObservation(job_id=job_id, exists=False)
        return JobObservation(job_id=job_id, exists=True, status=job.status, counts=job.counts)

    def get_job_document(self, job_id: str) -> str:
        self.calls["GetJobDocument"] += 1
        return self.jobs[job_id].document

    def cancel_job(self, job_id: str, reason: str) -> None:
        self.calls["CancelJob"] += 1
        job = self.jobs[job_id]
        if job.status == "IN_PROGRESS":
            job.status = "CANCELED"
            job.counts = replace(
                job.counts, canceled=job.counts.canceled + job.counts.queued, queued=0
            )
        _ = reason

    def list_failures(self, job_id: str, limit: int) -> list[FailureSample]:
        self.calls["ListJobExecutionsForJob"] += 3
        job = self.jobs[job_id]
        count = min(limit, job.counts.failed)
        self.calls["DescribeJobExecution"] += min(count, 5)
        return [
            FailureSample(f"thing-{i}", "FAILED", {"reason": "probe-failed"}) for i in range(count)
        ]
