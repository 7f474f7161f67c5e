"""Every AWS IoT call the adapter makes, checked by botocore's Stubber against the service model."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import ANY, Stubber

from orchestrator.aws.iot import IotJobsAdapter, create_job_request, make_client
from orchestrator.errors import AwsError, JobExistsError, UnknownThingGroupError
from orchestrator.model import Counts, ExponentialRate, MaintenanceWindow
from orchestrator.planner import JobConfig

JOB = "ats-2026-canary-m0123456789ab"
GROUP_ARN = "arn:aws:iot:us-east-1:123456789012:thinggroup/canary"
CONFIG = JobConfig(
    thing_groups=("canary",),
    description="ca-migrate ats-2026/canary migrate",
    maximum_per_minute=100,
    exponential=ExponentialRate(5, 2.0, notified_things=50),
    abort_threshold_percentage=5.0,
    abort_min_executed=10,
    in_progress_timeout_minutes=30,
    retry_failed=1,
    retry_timed_out=2,
    maintenance_windows=(MaintenanceWindow("cron(0 2 ? * * *)", 120),),
)


@pytest.fixture
def stubbed() -> Iterator[tuple[IotJobsAdapter, Stubber]]:
    client = boto3.client(
        "iot", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stub:
        yield IotJobsAdapter(client), stub
        stub.assert_no_pending_responses()


def test_make_client_uses_adaptive_retries() -> None:
    client = make_client(region="us-east-1", endpoint_url="http://127.0.0.1:9")
    assert client.meta.config.retries["mode"] == "adaptive"
    assert client.meta.endpoint_url == "http://127.0.0.1:9"


def test_resolve_endpoint_asks_for_ats(stubbed) -> None:
    adapter, stub = stubbed
    stub.add_response(
        "describe_endpoint",
        {"endpointAddress": "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"},
        {"endpointType": "iot:Data-ATS"},
    )
    assert adapter.resolve_endpoint() == "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"


def test_create_job_sends_every_setting(stubbed) -> None:
    adapter, stub = stubbed
    stub.add_response(
        "describe_thing_group", {"thingGroupArn": GROUP_ARN}, {"thingGroupName": "canary"}
    )
    expected = {
        "jobId": JOB,
        "targets": [GROUP_ARN],
        "document": '{"schema":"ca-migration/1"}',
        "description": "ca-migrate ats-2026/canary migrate",
        "targetSelection": "SNAPSHOT",
        "jobExecutionsRolloutConfig": {
            "maximumPerMinute": 100,
            "exponentialRate": {
                "baseRatePerMinute": 5,
                "incrementFactor": 2.0,
                "rateIncreaseCriteria": {"numberOfNotifiedThings": 50},
            },
        },
        "abortConfig": {
            "criteriaList": [
                {
                    "failureType": "ALL",
                    "action": "CANCEL",
                    "thresholdPercentage": 5.0,
                    "minNumberOfExecutedThings": 10,
                }
            ]
        },
        "timeoutConfig": {"inProgressTimeoutInMinutes": 30},
        "jobExecutionsRetryConfig": {
            "criteriaList": [
                {"failureType": "FAILED", "numberOfRetries": 1},
                {"failureType": "TIMED_OUT", "numberOfRetries": 2},
            ]
        },
        "schedulingConfig": {
            "maintenanceWindows": [{"startTime": "cron(0 2 ? * * *)", "durationInMinutes": 120}]
        },
    }
    stub.add_response("create_job", {"jobId": JOB, "jobArn": "arn"}, expected)
    adapter.create_job(JOB, '{"schema":"ca-migration/1"}', CONFIG)


def test_minimal_job_leaves_optional_settings_out() -> None:
    request = create_job_request(JOB, "{}", JobConfig(("g",), "d"), ["arn"])
    assert set(request) == {"jobId", "targets", "document", "description", "targetSelection"}


def test_create_job_on_a_taken_id_raises_job_exists(stubbed) -> None:
    adapter, stub = stubbed
    stub.add_response("describe_thing_group", {"thingGroupArn": GROUP_ARN}, {"thingGroupName": ANY})
    stub.add_client_error("create_job", "ResourceAlreadyExistsException", "exists", 409)
    with pytest.raises(JobExistsError):
        adapter.create_job(JOB, "{}", JobConfig(("canary",), "d"))


def test_missing_thing_group_is_a_clear_error(stubbed) -> None:
    adapter, stub = stubbed
    stub.add_client_error("describe_thing_group", "ResourceNotFoundException", "no group", 404)
    with pytest.raises(UnknownThingGroupError, match="thing group canary does not exist"):
        adapter.create_job(JOB, "{}", JobConfig(("canary",), "d"))


def test_describe_job_reads_counts_only(stubbed) -> None:
    adapter, stub = stubbed
    stub.add_response(
        "describe_job",
        {
            "job": {
                "jobId": JOB,
                "status": "IN_PROGRESS",
                "jobProcessDetails": {
                    "processingTargets": [GROUP_ARN],
                    "numberOfQueuedThings": 1,
                    "numberOfInProgressThings": 2,
                    "numberOfSucceededThings": 3,
                    "numberOfFailedThings": 4,
                    "numberOfRejectedThings": 5,
                    "numberOfTimedOutThings": 6,
                    "numberOfCanceledThings": 7,
                    "numberOfRemovedThings": 8,
                },
            }
        },
        {"jobId": JOB},
    )
    seen = adapter.describe_job(JOB)
    assert seen.exists
    assert seen.status == "IN_PROGRESS"
    assert seen.counts == Counts(1, 2, 3, 4, 5, 6, 7, 8)
    assert not seen.rollout_done


def test_a_scheduled_job_has_not_rolled_out(stubbed) -> None:
    adapter, stub = stubbed
    stub.add_response(
        "describe_job",
        {"job": {"jobId": JOB, "status": "SCHEDULED", "jobProcessDetails": {}}},
        {"jobId": JOB},
    )
    seen = adapter.describe_job(JOB)
    assert seen.status == "SCHEDULED"
    assert not seen.rollout_done


def test_describe_job_absent_is_an_observation_not_an_error(stubbed) -> None:
    adapter, stub = stubbed
    stub.add_client_error("describe_job", "ResourceNotFoundException", "nope", 404)
    assert not adapter.describe_job(JOB).exists
    stub.add_client_error("describe_job", "AccessDeniedException", "denied", 403)
    with pytest.raises(AwsError, match="AccessDenied"):
        adapter.describe_job(JOB)


def test_get_job_document(stubbed) -> None:
    adapter, stub = stubbed
    stub.add_response("get_job_document", {"document": "{}"}, {"jobId": JOB})
    assert adapter.get_job_document(JOB) == "{}"


def test_cancel_job_and_cancel_of_a_stopped_job(stubbed) -> None:
    adapter, stub = stubbed
    stub.add_response(
        "cancel_job",
        {"jobId": JOB},
        {"jobId": JOB, "reasonCode": "CA_MIGRATE_HALT", "comment": "wave halted: rate 10%"},
    )
    adapter.cancel_job(JOB, "wave halted: rate 10%")
    stub.add_client_error("cancel_job", "InvalidRequestException", "already canceled", 400)
    stub.add_response("describe_job", {"job": {"jobId": JOB, "status": "CANCELED"}}, {"jobId": JOB})
    adapter.cancel_job(JOB, "again\nwith a newline")
    stub.add_client_error("cancel_job", "InvalidRequestException", "bad", 400)
    stub.add_response(
        "describe_job", {"job": {"jobId": JOB, "status": "IN_PROGRESS"}}, {"jobId": JOB}
    )
    with pytest.raises(AwsError, match="CancelJob"):
        adapter.cancel_job(JOB, "x")


def test_list_failures_is_capped_and_details_few(stubbed) -> None:
    adapter, stub = stubbed
    summaries = [
        {"thingArn": f"arn:aws:iot:us-east-1:123456789012:thing/t{i}", "jobExecutionSummary": {}}
        for i in range(6)
    ]
    stub.add_response(
        "list_job_executions_for_job",
        {"executionSummaries": summaries},
        {"jobId": JOB, "status": "FAILED", "maxResults": 7},
    )
    stub.add_response(
        "list_job_executions_for_job",
        {"executionSummaries": summaries[:1]},
        {"jobId": JOB, "status": "TIMED_OUT", "maxResults": 1},
    )
    for i in range(5):
        stub.add_response(
            "describe_job_execution",
            {"execution": {"statusDetails": {"detailsMap": {"reason": f"probe-{i}"}}}},
            {"jobId": JOB, "thingName": f"t{i}"},
        )
    samples = adapter.list_failures(JOB, 7)
    assert len(samples) == 7
    assert samples[0].details == {"reason": "probe-0"}
    assert samples[5].details == {}
    assert samples[6].status == "TIMED_OUT"


def test_count_things_pages_through_the_group(stubbed) -> None:
    adapter, stub = stubbed
    stub.add_response(
        "list_things_in_thing_group",
        {"things": ["a", "b"], "nextToken": "t"},
        {"thingGroupName": "canary", "recursive": True, "maxResults": 250},
    )
    stub.add_response(
        "list_things_in_thing_group",
        {"things": ["c"]},
        {"thingGroupName": "canary", "recursive": True, "maxResults": 250, "nextToken": "t"},
    )
    assert adapter.count_things("canary") == 3
