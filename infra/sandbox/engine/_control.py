"""The jobs control plane: CreateJob, DescribeJob, ListJobs, executions, cancel, delete.

Each operation takes botocore-validated request parameters (member names of
the `iot` service model) and returns the response members; the HTTP front end
renders them.

Invariants:
- CreateJob validates the whole request before the job exists: nothing is
  created for a request that is refused.
- A job id names at most one job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import structlog

from infra.sandbox import decisions as d
from infra.sandbox import render
from infra.sandbox.dataplane import DataPlaneError
from infra.sandbox.engine import _devices, _policies, _schedule
from infra.sandbox.engine._records import (
    ARN,
    COUNT_FIELDS,
    TERMINAL,
    _Execution,
    _Job,
    format_time,
    paginate,
)
from infra.sandbox.engine._state import EngineState
from infra.sandbox.engine._timers import op
from infra.sandbox.errors import ServiceError, already_exists, invalid_request, not_found

log = structlog.get_logger(__name__)

_PERCENT_TWO_DECIMALS: Final = re.compile(r"\d{1,3}(\.\d{1,2})?")


def validate_job_config(params: Mapping[str, Any]) -> None:
    """CreateJob's checks beyond the model: the documented limits, then the document."""
    targets = params["targets"]
    if len(targets) > d.MAX_TARGETS_PER_JOB:
        raise invalid_request(
            f"A job can have at most {d.MAX_TARGETS_PER_JOB} targets; got {len(targets)}. "
            "Put the things in a thing group and target the group"
        )
    timeout = (params.get("timeoutConfig") or {}).get("inProgressTimeoutInMinutes")
    validate_settings(params, timeout=timeout)
    _validate_document(params)


def validate_settings(params: Mapping[str, Any], *, timeout: int | None) -> None:
    """Rollout, abort, timeout and retry settings (CreateJob and UpdateJob).

    `timeout` is the inProgressTimeoutInMinutes the job will have (retrying
    TIMED_OUT executions needs one).
    """
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
    given = (params.get("timeoutConfig") or {}).get("inProgressTimeoutInMinutes")
    if given is not None and not 1 <= given <= d.MAX_IN_PROGRESS_TIMEOUT_MINUTES:
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
        total = sum(int(c["numberOfRetries"]) for c in retry["criteriaList"])
        if total > d.MAX_RETRIES_PER_DEVICE:
            raise invalid_request(
                f"The retry criteria allow {total} retries in all; a job execution can be "
                f"retried at most {d.MAX_RETRIES_PER_DEVICE} times, whatever the failure type"
            )


def _validate_document(params: Mapping[str, Any]) -> None:
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
    except RecursionError as exc:
        raise invalid_request("The job document is nested too deeply to parse") from exc
    if not isinstance(parsed, dict):
        raise invalid_request("The job document must be a JSON object")


def _resolve_targets(state: EngineState, targets: Sequence[str]) -> tuple[set[str], set[str]]:
    things: set[str] = set()
    groups: set[str] = set()
    for arn in targets:
        match = ARN.fullmatch(arn)
        if match is None:
            raise invalid_request(
                f"Target {arn} is not a thing or thing group ARN "
                "(arn:aws:iot:<region>:<account>:thing/<name> or .../thinggroup/<name>)"
            )
        partition, region, account, kind, name = match.groups()
        if (partition, region, account) != (state.partition, state.region, state.account_id):
            raise invalid_request(
                f"Target {arn} is not in this partition, account and region "
                f"({state.partition}, {state.account_id}, {state.region})"
            )
        if kind == "thing":
            state.thing(name)
            things.add(name)
        else:
            state.group(name)
            groups.add(name)
    return things, groups


def create_job(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    job_id = params["jobId"]
    validate_job_config(params)
    with op(state) as now:
        existing = state.jobs.get(job_id)
        if existing is not None and existing.status == "DELETION_IN_PROGRESS":
            raise already_exists(
                f"Job {job_id} is being deleted (DELETION_IN_PROGRESS); its id can be used "
                "again once the deletion completes"
            )
        if existing is not None:
            raise already_exists(f"Job {job_id} already exists.")
        selection = params.get("targetSelection") or "SNAPSHOT"
        active = sum(1 for j in state.jobs.values() if j.status == "IN_PROGRESS")
        if active >= d.MAX_ACTIVE_JOBS:
            raise ServiceError(
                "LimitExceededException",
                f"At most {d.MAX_ACTIVE_JOBS} jobs, snapshot and continuous, may be in "
                "progress; wait for some to complete or cancel them",
                410,
            )
        things, groups = _resolve_targets(state, params["targets"])
        start_at, end_at, windows = _schedule.parse_schedule(params.get("schedulingConfig"), now)
        job = _Job(job_id, state.arn("job", job_id), now)
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
            job.rate = _initial_rate(job.rollout_config)
        state.jobs[job_id] = job
        state.changed()
        if end_at is not None:
            state.push_deadline(end_at, "end", job, 0)
        if start_at is not None:
            job.status = "SCHEDULED"
            state.push_deadline(start_at, "start", job, 0)
            log.info("job_scheduled", job_id=job_id, start_at=start_at, selection=selection)
        else:
            _schedule.start_job(state, job, now)
            log.info("job_created", job_id=job_id, selection=selection)
        out: dict[str, Any] = {"jobArn": job.arn, "jobId": job_id}
        if job.description is not None:
            out["description"] = job.description
    return out


def update_job(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    """UpdateJob: description, rollout, abort, timeout and retry settings of a running job.

    A member left out is unchanged. A new rollout rate applies from the next
    batch (an exponential rate starts again at its base rate, counting from
    now); a new timeout applies to executions that start afterwards; new abort
    criteria are checked at once. presignedUrlConfig and namespaceId are
    accepted and ignored (the sandbox has no S3 and no namespaces).
    """
    with op(state) as now:
        job = state.job(params["jobId"])
        if job.status not in d.UPDATABLE_JOB_STATUSES:
            raise invalid_request(
                f"Job {job.job_id} is {job.status}; only a job that is "
                f"{' or '.join(sorted(d.UPDATABLE_JOB_STATUSES))} can be updated"
            )
        timeout_config = params.get("timeoutConfig") or job.timeout_config or {}
        validate_settings(params, timeout=timeout_config.get("inProgressTimeoutInMinutes"))
        if params.get("description") is not None:
            job.description = params["description"]
        rollout = params.get("jobExecutionsRolloutConfig")
        if rollout is not None:
            job.rollout_config = rollout or None
            if job.rollout_config:
                job.rate = _initial_rate(job.rollout_config)
                criteria = (job.rollout_config.get("exponentialRate") or {}).get(
                    "rateIncreaseCriteria", {}
                )
                job.rate_baseline = (
                    job.counts["SUCCEEDED"]
                    if "numberOfSucceededThings" in criteria
                    else job.notified
                )
        for member, attribute in (
            ("abortConfig", "abort_config"),
            ("timeoutConfig", "timeout_config"),
            ("jobExecutionsRetryConfig", "retry_config"),
        ):
            if params.get(member) is not None:
                setattr(job, attribute, params[member])
        job.last_updated_at = now
        state.changed()
        log.info(
            "job_updated", job_id=job.job_id, members=sorted(k for k in params if k != "jobId")
        )
        if params.get("abortConfig") is not None:
            _policies.maybe_abort(state, job, now)
    return {}


def _initial_rate(rollout: Mapping[str, Any]) -> float:
    """The executions per minute a rollout configuration starts at."""
    exponential = rollout.get("exponentialRate")
    per_minute = rollout.get("maximumPerMinute", d.MAX_PER_MINUTE)
    return float(min(exponential["baseRatePerMinute"], per_minute) if exponential else per_minute)


def _is_concurrent(job: _Job) -> bool:
    """AWS: a job is concurrent while it rolls out new executions or cancels earlier ones."""
    rolling_out = job.status == "IN_PROGRESS" and bool(job.rollout_pending)
    return rolling_out or job.cancel_due_at is not None


def _process_details(job: _Job) -> dict[str, Any]:
    details: dict[str, Any] = {field: job.counts[s] for s, field in COUNT_FIELDS.items()}
    if job.rollout_pending:
        details["processingTargets"] = list(job.targets)
    return details


def describe_job(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with op(state) as now:
        job = state.job(params["jobId"])
        out: dict[str, Any] = {
            "jobArn": job.arn,
            "jobId": job.job_id,
            "targetSelection": job.target_selection,
            "status": job.status,
            "forceCanceled": job.force_canceled,
            "targets": list(job.targets),
            "createdAt": job.created_at,
            "lastUpdatedAt": job.last_updated_at,
            "jobProcessDetails": _process_details(job),
            "isConcurrent": _is_concurrent(job),
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
                {"startTime": format_time(t)}
                for t in job.windows.upcoming(after, d.SCHEDULED_ROLLOUTS_SHOWN)
            ]
    return {"job": out}


def get_job_document(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        return {"document": state.job(params["jobId"]).document}


def list_jobs(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with op(state):
        jobs = sorted(state.jobs.values(), key=lambda j: (j.created_at, j.job_id))
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
        page, token = paginate(selected, params)
        summaries = []
        for job in page:
            summary: dict[str, Any] = {
                "jobArn": job.arn,
                "jobId": job.job_id,
                "targetSelection": job.target_selection,
                "status": job.status,
                "isConcurrent": _is_concurrent(job),
                "createdAt": job.created_at,
                "lastUpdatedAt": job.last_updated_at,
            }
            if job.completed_at is not None:
                summary["completedAt"] = job.completed_at
            summaries.append(summary)
        out: dict[str, Any] = {"jobs": summaries}
        if token:
            out["nextToken"] = token
    return out


def _execution_summary(ex: _Execution) -> dict[str, Any]:
    """The control plane's JobExecutionSummary (times as epoch seconds with fractions)."""
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


def list_job_executions_for_job(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with op(state):
        job = state.job(params["jobId"])
        status = params.get("status")
        executions = [ex for ex in job.executions.values() if status is None or ex.status == status]
        page, token = paginate(executions, params)
        out: dict[str, Any] = {
            "executionSummaries": [
                {
                    "thingArn": state.arn("thing", ex.thing),
                    "jobExecutionSummary": _execution_summary(ex),
                }
                for ex in page
            ]
        }
        if token:
            out["nextToken"] = token
    return out


def list_job_executions_for_thing(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with op(state):
        thing = state.thing(params["thingName"])
        status = params.get("status")
        job_id = params.get("jobId")
        executions = [
            ex
            for ex in thing.executions.values()
            if (status is None or ex.status == status)
            and (job_id is None or ex.job.job_id == job_id)
        ]
        page, token = paginate(executions, params)
        out: dict[str, Any] = {
            "executionSummaries": [
                {"jobId": ex.job.job_id, "jobExecutionSummary": _execution_summary(ex)}
                for ex in page
            ]
        }
        if token:
            out["nextToken"] = token
    return out


def describe_job_execution(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    """The control plane's DescribeJobExecution (iot service shape)."""
    thing_name = params["thingName"]
    job_id = params["jobId"]
    with op(state) as now:
        state.job(job_id)
        state.thing(thing_name)
        try:
            snap, ex = _devices.describe_locked(
                state, thing_name, job_id, params.get("executionNumber"), now
            )
        except DataPlaneError as exc:
            raise not_found(
                f"Job execution {job_id} for thing {thing_name} cannot be found."
            ) from exc
        force_canceled = ex.force_canceled and snap.execution_number == ex.execution_number
    execution = render.control_execution(
        snap, thing_arn=state.arn("thing", thing_name), force_canceled=force_canceled
    )
    return {"execution": execution}


def cancel_job(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    force = bool(params.get("force"))
    with op(state) as now:
        job = state.job(params["jobId"])
        if job.status == "DELETION_IN_PROGRESS":
            raise ServiceError(
                "InvalidStateTransitionException",
                f"Job {job.job_id} is being deleted (DELETION_IN_PROGRESS); it cannot be canceled",
                409,
            )
        if job.status == "COMPLETED":
            raise invalid_request(
                f"Job {job.job_id} is COMPLETED; a completed job cannot be canceled"
            )
        _policies.cancel(
            state,
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
    return out


def cancel_job_execution(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    force = bool(params.get("force"))
    job_id = params["jobId"]
    thing_name = params["thingName"]
    details = params.get("statusDetails")
    with op(state) as now:
        job = state.job(job_id)
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
                f"expectedVersion {expected} does not match the execution's version {ex.version}",
                409,
            )
        if details is not None:
            ex.details = dict(details)
        ex.force_canceled = ex.status == "IN_PROGRESS"
        state.set_status(ex, "CANCELED", now, "control-plane")
        _policies.after_outcome(state, ex, now)
    return {}


def delete_job(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    force = bool(params.get("force"))
    with op(state) as now:
        job = state.job(params["jobId"])
        if job.status == "DELETION_IN_PROGRESS":
            raise ServiceError(
                "InvalidStateTransitionException",
                f"Job {job.job_id} is already being deleted (DELETION_IN_PROGRESS)",
                409,
            )
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
        deleting = sum(1 for j in state.jobs.values() if j.status == "DELETION_IN_PROGRESS")
        if state.delete_delay > 0 and deleting >= d.MAX_DELETIONS_IN_PROGRESS:
            raise ServiceError(
                "LimitExceededException",
                f"At most {d.MAX_DELETIONS_IN_PROGRESS} jobs may be DELETION_IN_PROGRESS at "
                "once; retry when one of them is gone",
                410,
            )
        _policies.delete(state, job, now)
        log.info("job_deleted", job_id=job.job_id, force=force, status=job.status)
    return {}
