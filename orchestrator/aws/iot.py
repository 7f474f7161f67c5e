"""AWS IoT Jobs through boto3: the production `JobsApi`.

Throttling and transient errors are retried by botocore's adaptive retry mode
(`make_client`); there is no retry loop here. Thing-group targets are turned
into ARNs with DescribeThingGroup, so the account id never has to be
configured and a missing group fails with a clear message before any job
exists.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from orchestrator.aws._errors import pages, translated
from orchestrator.errors import AwsError, JobExistsError, UnknownThingGroupError
from orchestrator.jobs import FailureSample
from orchestrator.model import Counts
from orchestrator.planner import JobConfig, JobObservation

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient

__all__ = ["IotJobsAdapter", "make_client", "preflight"]

log = structlog.get_logger(__name__)

RETRY_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 10},
    user_agent_extra="ca-migrate",
    connect_timeout=10,
    read_timeout=30,
)
# One quick call before plan/start: a wrong endpoint or missing credentials fail in seconds
# with the real cause, not after the adaptive mode's ten attempts.
PREFLIGHT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 2},
    user_agent_extra="ca-migrate",
    connect_timeout=3,
    read_timeout=10,
)
_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
REASON_CODE = "CA_MIGRATE_HALT"
DETAILED_FAILURES = 5
_NOT_PRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def make_client(
    *,
    region: str,
    endpoint_url: str | None = None,
    profile: str | None = None,
    config: Config = RETRY_CONFIG,
) -> IoTClient:
    """A boto3 "iot" client with adaptive retries (throttling is botocore's job)."""
    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except BotoCoreError as exc:  # ProfileNotFound and other configuration errors
        raise AwsError(f"{exc}; check --profile (or AWS_PROFILE) and ~/.aws/config") from exc
    return session.client("iot", endpoint_url=endpoint_url, config=config)


def preflight(*, region: str, endpoint_url: str | None = None, profile: str | None = None) -> None:
    """Fail within seconds, naming the cause, when the control plane cannot be used at all.

    One DescribeEndpoint with short timeouts and one retry: no credentials, an
    endpoint nobody listens on, or credentials AWS refuses each give their own
    message. Throttling proves the endpoint answers, so it passes.
    """
    iot = make_client(
        region=region, endpoint_url=endpoint_url, profile=profile, config=PREFLIGHT_CONFIG
    )
    where = iot.meta.endpoint_url
    try:
        iot.describe_endpoint(endpointType="iot:Data-ATS")
    except NoCredentialsError as exc:
        raise AwsError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            "AWS_PROFILE / --profile (for the sandbox, use the variables `sandbox up` prints)"
        ) from exc
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as exc:
        raise AwsError(
            f"cannot reach AWS IoT at {where}: {exc}; check --endpoint-url "
            "(or AWS_ENDPOINT_URL_IOT), --region, and that the endpoint is up"
        ) from exc
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _CREDENTIAL_CODES:
            message = exc.response.get("Error", {}).get("Message", "")
            raise AwsError(
                f"AWS IoT at {where} refused the credentials ({code}: {message}); check "
                "AWS_ACCESS_KEY_ID / AWS_PROFILE / --profile and the IAM policy",
                code=code,
            ) from exc
        # anything else (throttling, or a policy without iot:DescribeEndpoint) came from a
        # live endpoint that took the credentials: the real calls follow and speak for themselves
    except BotoCoreError as exc:
        raise AwsError(f"AWS IoT at {where} could not be used: {exc}") from exc


def _translate(operation: str, **context: str) -> AbstractContextManager[None]:
    def refine(code: str, _message: str) -> Exception | None:
        if operation == "CreateJob" and code == "ResourceAlreadyExistsException":
            return JobExistsError(f"job {context.get('job_id')} exists", code=code)
        if operation == "DescribeThingGroup" and code == "ResourceNotFoundException":
            return UnknownThingGroupError(
                f"thing group {context.get('thing_group')} does not exist in this account and "
                "region; fix thing_groups in the campaign file or create the group",
                code=code,
            )
        return None

    where = ", ".join(f"{k}={v}" for k, v in context.items())
    return translated(operation, where=where, refine=refine)


def _counts(details: Any) -> Counts:
    return Counts(
        queued=int(details.get("numberOfQueuedThings", 0)),
        in_progress=int(details.get("numberOfInProgressThings", 0)),
        succeeded=int(details.get("numberOfSucceededThings", 0)),
        failed=int(details.get("numberOfFailedThings", 0)),
        rejected=int(details.get("numberOfRejectedThings", 0)),
        timed_out=int(details.get("numberOfTimedOutThings", 0)),
        canceled=int(details.get("numberOfCanceledThings", 0)),
        removed=int(details.get("numberOfRemovedThings", 0)),
    )


def create_job_request(
    job_id: str, document: str, config: JobConfig, targets: list[str]
) -> dict[str, Any]:
    """CreateJob's parameters for a job config (pure; exposed for `plan`)."""
    request: dict[str, Any] = {
        "jobId": job_id,
        "targets": targets,
        "document": document,
        "description": config.description,
        "targetSelection": "SNAPSHOT",
    }
    rollout: dict[str, Any] = {}
    if config.maximum_per_minute is not None:
        rollout["maximumPerMinute"] = config.maximum_per_minute
    if config.exponential is not None:
        exp = config.exponential
        criteria = (
            {"numberOfNotifiedThings": exp.notified_things}
            if exp.notified_things is not None
            else {"numberOfSucceededThings": exp.succeeded_things}
        )
        rollout["exponentialRate"] = {
            "baseRatePerMinute": exp.base_rate_per_minute,
            "incrementFactor": exp.increment_factor,
            "rateIncreaseCriteria": criteria,
        }
    if rollout:
        request["jobExecutionsRolloutConfig"] = rollout
    if config.abort_threshold_percentage is not None:
        request["abortConfig"] = {
            "criteriaList": [
                {
                    "failureType": "ALL",
                    "action": "CANCEL",
                    "thresholdPercentage": config.abort_threshold_percentage,
                    "minNumberOfExecutedThings": config.abort_min_executed or 1,
                }
            ]
        }
    if config.in_progress_timeout_minutes is not None:
        request["timeoutConfig"] = {
            "inProgressTimeoutInMinutes": config.in_progress_timeout_minutes
        }
    retries = [
        {"failureType": kind, "numberOfRetries": count}
        for kind, count in (("FAILED", config.retry_failed), ("TIMED_OUT", config.retry_timed_out))
        if count > 0
    ]
    if retries:
        request["jobExecutionsRetryConfig"] = {"criteriaList": retries}
    if config.maintenance_windows:
        request["schedulingConfig"] = {
            "maintenanceWindows": [
                {"startTime": w.start, "durationInMinutes": w.duration_minutes}
                for w in config.maintenance_windows
            ]
        }
    return request


class IotJobsAdapter:
    """`JobsApi` over a boto3 "iot" client."""

    def __init__(self, iot: IoTClient) -> None:
        self._iot = iot

    def resolve_endpoint(self) -> str:
        with _translate("DescribeEndpoint"):
            answer = self._iot.describe_endpoint(endpointType="iot:Data-ATS")
        return answer["endpointAddress"]

    def group_arn(self, thing_group: str) -> str:
        with _translate("DescribeThingGroup", thing_group=thing_group):
            answer = self._iot.describe_thing_group(thingGroupName=thing_group)
        return answer["thingGroupArn"]

    def count_things(self, thing_group: str) -> int:
        return len(self.thing_names(thing_group))

    def thing_names(self, thing_group: str) -> list[str]:
        """The things in a group, recursively, as CreateJob targets them (plan only)."""
        names: list[str] = []
        for page in pages(
            self._iot.list_things_in_thing_group,
            lambda: _translate("ListThingsInThingGroup", thing_group=thing_group),
            thingGroupName=thing_group,
            recursive=True,
            maxResults=250,
        ):
            names.extend(page.get("things", []))
        return names

    def create_job(self, job_id: str, document: str, config: JobConfig) -> None:
        targets = [self.group_arn(group) for group in config.thing_groups]
        request = create_job_request(job_id, document, config, targets)
        with _translate("CreateJob", job_id=job_id):
            self._iot.create_job(**request)
        log.info("create-job-sent", job_id=job_id, targets=len(targets))

    def describe_job(self, job_id: str) -> JobObservation:
        try:
            with _translate("DescribeJob", job_id=job_id):
                answer = self._iot.describe_job(jobId=job_id)
        except AwsError as exc:
            if exc.code == "ResourceNotFoundException":
                return JobObservation(job_id=job_id, exists=False)
            raise
        job: Any = answer["job"]
        details = job.get("jobProcessDetails", {})
        return JobObservation(
            job_id=job_id,
            exists=True,
            status=job.get("status"),
            counts=_counts(details),
            # A SCHEDULED job (startTime ahead) has rolled out nothing yet, whatever it lists.
            rollout_done=not details.get("processingTargets") and job.get("status") != "SCHEDULED",
            reason_code=job.get("reasonCode"),
            arn=job.get("jobArn"),
        )

    def get_job_document(self, job_id: str) -> str:
        with _translate("GetJobDocument", job_id=job_id):
            answer = self._iot.get_job_document(jobId=job_id)
        return answer.get("document", "")

    def cancel_job(self, job_id: str, reason: str) -> None:
        comment = _NOT_PRINTABLE.sub(" ", reason)[:2000] or "stopped by ca-migrate"
        try:
            with _translate("CancelJob", job_id=job_id):
                self._iot.cancel_job(jobId=job_id, reasonCode=REASON_CODE, comment=comment)
        except AwsError as exc:
            if exc.code != "InvalidRequestException":
                raise
            seen = self.describe_job(job_id)
            if seen.status in ("IN_PROGRESS", "SCHEDULED"):
                raise
            log.info("job-already-stopped", job_id=job_id, status=seen.status)
            return
        log.info("job-cancel-requested", job_id=job_id)

    def list_failures(self, job_id: str, limit: int) -> list[FailureSample]:
        found: list[tuple[str, str]] = []
        for status in ("FAILED", "TIMED_OUT", "REJECTED"):
            if len(found) >= limit:
                break
            with _translate("ListJobExecutionsForJob", job_id=job_id):
                page = self._iot.list_job_executions_for_job(
                    jobId=job_id, status=status, maxResults=min(250, limit - len(found))
                )
            for summary in page.get("executionSummaries", []):
                thing = summary.get("thingArn", "").rsplit("/", 1)[-1]
                found.append((thing, status))
        samples = []
        for index, (thing, status) in enumerate(found[:limit]):
            details: dict[str, str] = {}
            if index < DETAILED_FAILURES:
                with _translate("DescribeJobExecution", job_id=job_id, thing=thing):
                    answer = self._iot.describe_job_execution(jobId=job_id, thingName=thing)
                raw = answer.get("execution", {}).get("statusDetails", {}).get("detailsMap", {})
                details = {str(k): str(v) for k, v in raw.items()}
            samples.append(FailureSample(thing_name=thing, status=status, details=details))
        return samples
