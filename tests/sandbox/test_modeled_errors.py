"""Every error the registry, group, identity and Jobs calls answer is one AWS's model lists.

A caller that handles an exception the service never raises for an operation (or
misses one it does) would pass a rehearsal here and fail on AWS. Each case drives
the sandbox through boto3 and checks the code and HTTP status against botocore's
`iot` or `iot-jobs-data` model for that operation (`errors` of the operation,
`httpStatusCode` of the shape).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError

from infra.sandbox.runtime import Sandbox
from job_documents.clock import ManualClock

from .conftest import NO_RETRY

ARN = "arn:aws:iot:us-east-1:123456789012"
UNKNOWN_CERT = f"{ARN}:cert/{'a' * 64}"
SESSION = botocore.session.get_session()
DOCUMENT = json.dumps({"operation": "rotate"})

# Where the sandbox answers outside the model, knowingly (infra/sandbox/decisions.py):
# CreateThingGroup under a parent that does not exist is ResourceNotFoundException,
# which the model does not list for CreateThingGroup; AWS's answer is unconfirmed.
UNMODELED = {("CreateThingGroup", "ResourceNotFoundException")}


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    with Sandbox(mqtt=False, clock=ManualClock(datetime(2026, 3, 1, tzinfo=UTC))) as sandbox:
        iot = sandbox.iot_client(config=NO_RETRY)
        for name in ("t1", "t2"):
            iot.create_thing(thingName=name)
        active = iot.create_keys_and_certificate(setAsActive=True)
        iot.update_indexing_configuration(
            thingIndexingConfiguration={"thingIndexingMode": "REGISTRY"}
        )
        iot.create_dynamic_thing_group(thingGroupName="dyn", queryString="thingName:t*")
        iot.create_thing_group(thingGroupName="g")
        iot.attach_thing_principal(thingName="t2", principal=active["certificateArn"])
        jobs_data = sandbox.jobs_data_client(config=NO_RETRY)
        for job_id, thing in (("queued", "t1"), ("running", "t2"), ("done", "t1")):
            iot.create_job(jobId=job_id, targets=[f"{ARN}:thing/{thing}"], document=DOCUMENT)
        jobs_data.start_next_pending_job_execution(thingName="t2")
        jobs_data.update_job_execution(thingName="t1", jobId="done", status="SUCCEEDED")
        yield {"iot": iot, "iot-jobs-data": jobs_data, "active": active}


CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("CreateThingGroup", "ResourceAlreadyExistsException", {"thingGroupName": "dyn"}),
    (
        "CreateThingGroup",
        "InvalidRequestException",
        {"thingGroupName": "c", "parentGroupName": "dyn"},
    ),
    (
        "CreateThingGroup",
        "ResourceNotFoundException",
        {"thingGroupName": "c", "parentGroupName": "no"},
    ),
    (
        "AddThingToThingGroup",
        "ResourceNotFoundException",
        {"thingGroupName": "no", "thingName": "t1"},
    ),
    (
        "AddThingToThingGroup",
        "ResourceNotFoundException",
        {"thingGroupName": "g", "thingName": "no"},
    ),
    (
        "AddThingToThingGroup",
        "InvalidRequestException",
        {"thingGroupName": "dyn", "thingName": "t1"},
    ),
    ("AddThingToThingGroup", "InvalidRequestException", {"thingName": "t1"}),
    (
        "RemoveThingFromThingGroup",
        "ResourceNotFoundException",
        {"thingGroupName": "no", "thingName": "t1"},
    ),
    (
        "RemoveThingFromThingGroup",
        "InvalidRequestException",
        {"thingGroupName": "dyn", "thingName": "t1"},
    ),
    ("ListThingsInThingGroup", "ResourceNotFoundException", {"thingGroupName": "no"}),
    ("DescribeThingGroup", "ResourceNotFoundException", {"thingGroupName": "no"}),
    (
        "CreateDynamicThingGroup",
        "ResourceAlreadyExistsException",
        {"thingGroupName": "g", "queryString": "thingName:t1"},
    ),
    (
        "CreateDynamicThingGroup",
        "InvalidQueryException",
        {"thingGroupName": "d", "queryString": "thingName:("},
    ),
    (
        "CreateDynamicThingGroup",
        "ResourceNotFoundException",
        {"thingGroupName": "d", "queryString": "thingName:t1", "indexName": "no"},
    ),
    (
        "UpdateDynamicThingGroup",
        "ResourceNotFoundException",
        {"thingGroupName": "no", "thingGroupProperties": {}},
    ),
    (
        "UpdateDynamicThingGroup",
        "InvalidRequestException",
        {"thingGroupName": "g", "thingGroupProperties": {}},
    ),
    (
        "UpdateDynamicThingGroup",
        "VersionConflictException",
        {"thingGroupName": "dyn", "thingGroupProperties": {}, "expectedVersion": 9},
    ),
    ("DeleteDynamicThingGroup", "InvalidRequestException", {"thingGroupName": "g"}),
    (
        "DeleteDynamicThingGroup",
        "VersionConflictException",
        {"thingGroupName": "dyn", "expectedVersion": 9},
    ),
    (
        "AttachThingPrincipal",
        "ResourceNotFoundException",
        {"thingName": "no", "principal": "$active"},
    ),
    (
        "AttachThingPrincipal",
        "ResourceNotFoundException",
        {"thingName": "t1", "principal": UNKNOWN_CERT},
    ),
    (
        "AttachThingPrincipal",
        "InvalidRequestException",
        {"thingName": "t1", "principal": "not-an-arn"},
    ),
    (
        "DetachThingPrincipal",
        "ResourceNotFoundException",
        {"thingName": "no", "principal": "$active"},
    ),
    (
        "DetachThingPrincipal",
        "ResourceNotFoundException",
        {"thingName": "t1", "principal": UNKNOWN_CERT},
    ),
    ("ListThingPrincipals", "ResourceNotFoundException", {"thingName": "no"}),
    ("ListThingPrincipalsV2", "ResourceNotFoundException", {"thingName": "no"}),
    ("ListPrincipalThings", "ResourceNotFoundException", {"principal": UNKNOWN_CERT}),
    ("DescribeCertificate", "ResourceNotFoundException", {"certificateId": "a" * 64}),
    (
        "UpdateCertificate",
        "ResourceNotFoundException",
        {"certificateId": "a" * 64, "newStatus": "INACTIVE"},
    ),
    (
        "UpdateCertificate",
        "InvalidRequestException",
        {"certificateId": "$active_id", "newStatus": "PENDING_TRANSFER"},
    ),
    ("DeleteCertificate", "ResourceNotFoundException", {"certificateId": "a" * 64}),
    ("DeleteCertificate", "CertificateStateException", {"certificateId": "$active_id"}),
    ("RegisterCertificate", "CertificateValidationException", {"certificatePem": "junk"}),
    ("RegisterCertificate", "ResourceAlreadyExistsException", {"certificatePem": "$active_pem"}),
    ("RegisterCertificateWithoutCA", "CertificateValidationException", {"certificatePem": "junk"}),
    (
        "RegisterCertificateWithoutCA",
        "ResourceAlreadyExistsException",
        {"certificatePem": "$active_pem"},
    ),
    ("ListCertificates", "InvalidRequestException", {"marker": "zzz"}),
    (
        "CreateThing",
        "ResourceAlreadyExistsException",
        {"thingName": "t1", "attributePayload": {"attributes": {"a": "b"}}},
    ),
    ("DescribeThing", "ResourceNotFoundException", {"thingName": "no"}),
    ("UpdateThing", "ResourceNotFoundException", {"thingName": "no", "attributePayload": {}}),
    (
        "UpdateThing",
        "VersionConflictException",
        {"thingName": "t1", "attributePayload": {}, "expectedVersion": 9},
    ),
    ("DeleteThing", "VersionConflictException", {"thingName": "t1", "expectedVersion": 9}),
    ("DeleteThing", "InvalidRequestException", {"thingName": "t2"}),
    ("ListThings", "InvalidRequestException", {"nextToken": "zzz"}),
]


JOBS_CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("iot", "CreateJob", "ResourceAlreadyExistsException", {"jobId": "queued"}),
    ("iot", "CreateJob", "ResourceNotFoundException", {"jobId": "x", "thing": "no"}),
    ("iot", "CreateJob", "InvalidRequestException", {"jobId": "x", "document": "not json"}),
    ("iot", "DescribeJob", "ResourceNotFoundException", {"jobId": "no"}),
    ("iot", "UpdateJob", "ResourceNotFoundException", {"jobId": "no", "description": "d"}),
    ("iot", "UpdateJob", "InvalidRequestException", {"jobId": "done", "description": "d"}),
    ("iot", "CancelJob", "ResourceNotFoundException", {"jobId": "no"}),
    ("iot", "CancelJob", "InvalidRequestException", {"jobId": "done"}),
    ("iot", "DeleteJob", "ResourceNotFoundException", {"jobId": "no"}),
    ("iot", "DeleteJob", "InvalidStateTransitionException", {"jobId": "queued"}),
    ("iot", "GetJobDocument", "ResourceNotFoundException", {"jobId": "no"}),
    (
        "iot",
        "DescribeJobExecution",
        "ResourceNotFoundException",
        {"jobId": "queued", "thingName": "t2"},
    ),
    (
        "iot",
        "CancelJobExecution",
        "InvalidStateTransitionException",
        {"jobId": "running", "thingName": "t2"},
    ),
    (
        "iot",
        "CancelJobExecution",
        "VersionConflictException",
        {"jobId": "queued", "thingName": "t1", "expectedVersion": 9},
    ),
    ("iot", "CancelJobExecution", "ResourceNotFoundException", {"jobId": "no", "thingName": "t1"}),
    ("iot", "ListJobExecutionsForJob", "ResourceNotFoundException", {"jobId": "no"}),
    ("iot", "ListJobExecutionsForThing", "ResourceNotFoundException", {"thingName": "no"}),
    ("iot", "ListJobs", "InvalidRequestException", {"nextToken": "zzz"}),
    ("iot-jobs-data", "GetPendingJobExecutions", "ResourceNotFoundException", {"thingName": "no"}),
    (
        "iot-jobs-data",
        "StartNextPendingJobExecution",
        "ResourceNotFoundException",
        {"thingName": "no"},
    ),
    (
        "iot-jobs-data",
        "DescribeJobExecution",
        "ResourceNotFoundException",
        {"thingName": "t1", "jobId": "no"},
    ),
    (
        "iot-jobs-data",
        "UpdateJobExecution",
        "InvalidStateTransitionException",
        {"thingName": "t1", "jobId": "done", "status": "SUCCEEDED"},
    ),
    (
        "iot-jobs-data",
        "UpdateJobExecution",
        "InvalidStateTransitionException",
        {"thingName": "t2", "jobId": "running", "status": "SUCCEEDED", "expectedVersion": 9},
    ),
    (
        "iot-jobs-data",
        "UpdateJobExecution",
        "ResourceNotFoundException",
        {"thingName": "t1", "jobId": "no", "status": "SUCCEEDED"},
    ),
    (
        "iot-jobs-data",
        "UpdateJobExecution",
        "InvalidRequestException",
        {"thingName": "t1", "jobId": "queued", "status": "QUEUED"},
    ),
    (
        "iot-jobs-data",
        "UpdateJobExecution",
        "InvalidRequestException",
        {
            "thingName": "t1",
            "jobId": "queued",
            "status": "IN_PROGRESS",
            "statusDetails": {"bad key!": "v"},
        },
    ),
]


def _method(operation: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", operation.replace("CA", "Ca")).lower()


def _params(world: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    active = world["active"]
    named = {
        "$active": active["certificateArn"],
        "$active_id": active["certificateId"],
        "$active_pem": active["certificatePem"],
    }
    out = {k: named.get(v, v) if isinstance(v, str) else v for k, v in params.items()}
    if "thing" in out:  # CreateJob: its one target
        out["targets"] = [f"{ARN}:thing/{out.pop('thing')}"]
    return out


def _check(world: dict[str, Any], service: str, operation: str, code: str, params: Any) -> None:
    call = getattr(world[service], _method(operation))
    with pytest.raises(ClientError) as caught:
        call(**_params(world, params))
    error = caught.value.response
    assert error["Error"]["Code"] == code
    if (operation, code) in UNMODELED:
        return
    modeled = {
        shape.name: shape.metadata["error"]["httpStatusCode"]
        for shape in SESSION.get_service_model(service).operation_model(operation).error_shapes
    }
    assert code in modeled, f"{operation} never raises {code} on AWS (model: {sorted(modeled)})"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == modeled[code]


@pytest.mark.parametrize(
    ("operation", "code", "params"),
    CASES,
    ids=[f"{op}-{code}-{i}" for i, (op, code, _) in enumerate(CASES)],
)
def test_each_error_is_one_the_model_lists_for_the_operation(world, operation, code, params):
    _check(world, "iot", operation, code, params)


@pytest.mark.parametrize(
    ("service", "operation", "code", "params"),
    JOBS_CASES,
    ids=[f"{op}-{code}-{i}" for i, (_, op, code, _) in enumerate(JOBS_CASES)],
)
def test_each_jobs_error_is_one_the_model_lists_for_the_operation(
    world, service, operation, code, params
):
    defaults = {"CreateJob": {"document": DOCUMENT, "thing": "t1"}}.get(operation, {})
    _check(world, service, operation, code, defaults | params)
