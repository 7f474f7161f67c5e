"""One rendering of job executions to the wire, for every front end.

The MQTT bridge, the `iot-jobs-data` HTTPS API and the `iot` control plane
all show an `ExecutionSnapshot`; the fields they share are rendered here once
(`execution_fields`), and each flavour adds what its API sends: over HTTPS the
thing name, statusDetails and (optionally) the document as a string; over MQTT
only `decisions.MQTT_EXECUTION_FIELDS` (no thing name: AWS sends none there),
the document as a JSON object; the control plane the thing's ARN, forceCanceled
and statusDetails as `detailsMap`.

Pure functions, no I/O. Times are integer epoch seconds; fields that do not
apply are left out (never null).
"""

from __future__ import annotations

import json
from typing import Any

from infra.sandbox import decisions as d
from infra.sandbox.dataplane import ExecutionSnapshot

__all__ = [
    "control_execution",
    "data_execution",
    "execution_fields",
    "execution_state",
    "mqtt_execution",
    "summary",
]


def _document_object(text: str) -> Any:
    # Over MQTT the document travels as a JSON object. CreateJob only takes
    # JSON, so a document that does not parse is passed on as the string.
    try:
        return json.loads(text)
    except ValueError:
        return text


def execution_fields(snapshot: ExecutionSnapshot) -> dict[str, Any]:
    """The fields every rendering of an execution shares."""
    out: dict[str, Any] = {
        "jobId": snapshot.job_id,
        "status": snapshot.status,
        "queuedAt": snapshot.queued_at,
        "lastUpdatedAt": snapshot.last_updated_at,
        "versionNumber": snapshot.version_number,
        "executionNumber": snapshot.execution_number,
    }
    if snapshot.started_at is not None:
        out["startedAt"] = snapshot.started_at
    if snapshot.approximate_seconds_before_timed_out is not None:
        out["approximateSecondsBeforeTimedOut"] = snapshot.approximate_seconds_before_timed_out
    return out


def data_execution(snapshot: ExecutionSnapshot, *, include_document: bool) -> dict[str, Any]:
    """An HTTPS (`iot-jobs-data`) JobExecution: StartNextPendingJobExecution, DescribeJobExecution.

    The thing name and statusDetails (empty too) are shown; the document, when asked,
    as a string.
    """
    out = execution_fields(snapshot)
    out["thingName"] = snapshot.thing_name
    out["statusDetails"] = dict(snapshot.status_details)
    if include_document:
        out["jobDocument"] = snapshot.job_document
    return out


def mqtt_execution(snapshot: ExecutionSnapshot, *, include_document: bool) -> dict[str, Any]:
    """The MQTT JobExecution: start-next, `{jobId}/get` and notify-next.

    Only `decisions.MQTT_EXECUTION_FIELDS`: no thingName, no
    approximateSecondsBeforeTimedOut, an empty statusDetails left out; the document,
    when asked, as a JSON object.
    """
    out = {k: v for k, v in execution_fields(snapshot).items() if k in d.MQTT_EXECUTION_FIELDS}
    if snapshot.status_details:
        out["statusDetails"] = dict(snapshot.status_details)
    if include_document:
        out["jobDocument"] = _document_object(snapshot.job_document)
    return out


def summary(snapshot: ExecutionSnapshot) -> dict[str, Any]:
    """A data-plane JobExecutionSummary, as in `get`, `notify` and GetPendingJobExecutions."""
    out: dict[str, Any] = {
        "jobId": snapshot.job_id,
        "queuedAt": snapshot.queued_at,
        "lastUpdatedAt": snapshot.last_updated_at,
        "versionNumber": snapshot.version_number,
        "executionNumber": snapshot.execution_number,
    }
    if snapshot.started_at is not None:
        out["startedAt"] = snapshot.started_at
    return out


def execution_state(snapshot: ExecutionSnapshot, *, empty_details: bool) -> dict[str, Any]:
    """A JobExecutionState: an update's `executionState` and some rejections'."""
    out: dict[str, Any] = {"status": snapshot.status, "versionNumber": snapshot.version_number}
    if snapshot.status_details or empty_details:
        out["statusDetails"] = dict(snapshot.status_details)
    return out


def control_execution(
    snapshot: ExecutionSnapshot, *, thing_arn: str, force_canceled: bool
) -> dict[str, Any]:
    """The control plane's JobExecution (`iot` DescribeJobExecution)."""
    out = execution_fields(snapshot)
    out["thingArn"] = thing_arn
    out["forceCanceled"] = force_canceled
    out["statusDetails"] = {"detailsMap": dict(snapshot.status_details)}
    return out
