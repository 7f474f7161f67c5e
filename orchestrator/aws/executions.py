"""A job's executions through boto3, for verification: one thing's status, or all of one status.

Every call is `self._iot.<operation>(...)` (the IAM policy test reads them) and
is counted (`calls`). DescribeJobExecution's ResourceNotFoundException means the
thing has no execution of that job (it joined the group later): `status` is
None. Other errors become `AwsError`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, cast

from orchestrator.aws._errors import pages, translated

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient
    from mypy_boto3_iot.literals import JobExecutionStatusType

__all__ = ["ExecutionReader"]

PAGE = 250  # ListJobExecutionsForJob maxResults' maximum in the service model


class _NoExecutionError(Exception):
    pass


def _translate(operation: str, job_id: str) -> AbstractContextManager[None]:
    def refine(code: str, _message: str) -> Exception | None:
        if operation == "DescribeJobExecution" and code == "ResourceNotFoundException":
            return _NoExecutionError()
        return None

    return translated(operation, where=f"job_id={job_id}", refine=refine)


class ExecutionReader:
    """Reads the executions of a campaign's jobs."""

    def __init__(self, iot: IoTClient) -> None:
        self._iot = iot
        self.calls = 0

    def _count(self) -> None:
        self.calls += 1

    def status(self, job_id: str, thing: str) -> str | None:
        """The thing's latest execution status for the job; None when it has none."""
        self.calls += 1
        try:
            with _translate("DescribeJobExecution", job_id):
                answer = self._iot.describe_job_execution(jobId=job_id, thingName=thing)
        except _NoExecutionError:
            return None
        status = answer.get("execution", {}).get("status")
        return str(status) if status else None

    def listed(self, job_id: str, status: str) -> set[str]:
        """The names of the things whose execution of the job has this status."""
        names: set[str] = set()
        for page in pages(
            self._iot.list_job_executions_for_job,
            lambda: _translate("ListJobExecutionsForJob", job_id),
            counted=self._count,
            jobId=job_id,
            status=cast("JobExecutionStatusType", status),
            maxResults=PAGE,
        ):
            for summary in page.get("executionSummaries", []):
                arn = str(summary.get("thingArn", ""))
                if arn:
                    names.add(arn.rsplit("/", 1)[-1])
        return names
