"""One rendering of job executions to the wire, for every front end.

The MQTT bridge, the `iot-jobs-data` HTTPS API and the `iot` control plane
all show an `ExecutionSnapshot`; the fields they share are rendered here once
(`execution_fields`), and each flavour adds what its API documents: the data
plane the thing name, statusDetails and (optionally) the document, as a JSON
object over MQTT and as a string over HTTPS; the control plane the thing's ARN,
forceCanceled and statusDetails as `detailsMap`.

Pure functions, no I/O. Times are integer epoch seconds; fields that do not
apply are left out (never null).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from infra.sandbox.dataplane import ExecutionSnapshot

__all__ = [
    "control_execution",
    "data_execution",
    "execution_fields",
    "execution_state",
    "summary",
]

DocumentForm = Literal["object", "string"]


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


def data_execution(
    snapshot: ExecutionSnapshot, *, document: DocumentForm | None, empty_details: bool
) -> dict[str, Any]:
    """A data-plane JobExecution (start-next, `{jobId}/get`, notify-next, HTTPS).

    `document` says whether and how `jobDocument` is included; `empty_details`
    whether an empty statusDetails is shown (HTTPS) or left out (MQTT).
    """
    out = execution_fields(snapshot)
    out["thingName"] = snapshot.thing_name
    if snapshot.status_details or empty_details:
        out["statusDetails"] = dict(snapshot.status_details)
    if document == "object":
        out["jobDocument"] = _document_object(snapshot.job_document)
    elif document == "string":
        out["jobDocument"] = snapshot.job_document
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
