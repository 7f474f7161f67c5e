"""Conformance of the `iot-jobs-data` HTTPS API and the execution state machine (boto3)."""

from __future__ import annotations

import json

import pytest
from botocore.config import Config

ARN = "arn:aws:iot:us-east-1:123456789012"
DOCUMENT = json.dumps({"operation": "rotate"})


@pytest.fixture
def one_job(iot):
    iot.create_thing(thingName="dev")
    iot.create_job(jobId="j", targets=[f"{ARN}:thing/dev"], document=DOCUMENT)
    return "dev"


def test_pending_lists_in_progress_first_then_queued_oldest_first(clock, iot, jobs_data):
    iot.create_thing(thingName="dev")
    for job_id in ("first", "second", "third"):
        iot.create_job(jobId=job_id, targets=[f"{ARN}:thing/dev"], document=DOCUMENT)
        clock.advance(10)
    started = jobs_data.start_next_pending_job_execution(thingName="dev")["execution"]
    assert started["jobId"] == "first"
    pending = jobs_data.get_pending_job_executions(thingName="dev")
    assert [j["jobId"] for j in pending["inProgressJobs"]] == ["first"]
    assert [j["jobId"] for j in pending["queuedJobs"]] == ["second", "third"]
    summary = pending["queuedJobs"][0]
    assert summary["versionNumber"] == 1
    assert summary["executionNumber"] == 1
    assert isinstance(summary["queuedAt"], int)


def test_start_next_returns_the_in_progress_execution_again_unchanged(one_job, jobs_data):
    first = jobs_data.start_next_pending_job_execution(
        thingName=one_job, statusDetails={"step": "download"}, stepTimeoutInMinutes=5
    )["execution"]
    again = jobs_data.start_next_pending_job_execution(thingName=one_job)["execution"]
    assert first["status"] == again["status"] == "IN_PROGRESS"
    assert again["versionNumber"] == first["versionNumber"] == 2
    assert again["statusDetails"] == {"step": "download"}
    assert again["jobDocument"] == DOCUMENT
    assert again["approximateSecondsBeforeTimedOut"] == 300


def test_start_next_with_nothing_pending_has_no_execution(iot, jobs_data):
    iot.create_thing(thingName="idle")
    response = jobs_data.start_next_pending_job_execution(thingName="idle")
    assert "execution" not in response


def test_unknown_thing_is_resource_not_found(jobs_data):
    with pytest.raises(jobs_data.exceptions.ResourceNotFoundException, match="ghost"):
        jobs_data.get_pending_job_executions(thingName="ghost")


@pytest.mark.parametrize(
    ("path", "final"),
    [
        (["IN_PROGRESS", "SUCCEEDED"], "SUCCEEDED"),
        (["IN_PROGRESS", "IN_PROGRESS", "FAILED"], "FAILED"),
        (["IN_PROGRESS", "REJECTED"], "REJECTED"),
        (["SUCCEEDED"], "SUCCEEDED"),
        (["REJECTED"], "REJECTED"),
        (["FAILED"], "FAILED"),
    ],
)
def test_device_transitions_and_version_numbers(one_job, iot, jobs_data, path, final):
    for index, status in enumerate(path, start=1):
        state = jobs_data.update_job_execution(
            thingName=one_job,
            jobId="j",
            status=status,
            expectedVersion=index,
            includeJobExecutionState=True,
        )["executionState"]
        assert state["status"] == status
        assert state["versionNumber"] == index + 1
    execution = iot.describe_job_execution(jobId="j", thingName=one_job)["execution"]
    assert execution["status"] == final
    assert execution["versionNumber"] == len(path) + 1


@pytest.mark.parametrize("terminal", ["SUCCEEDED", "FAILED", "REJECTED"])
@pytest.mark.parametrize("attempt", ["IN_PROGRESS", "SUCCEEDED", "FAILED"])
def test_a_terminal_execution_cannot_be_updated(one_job, jobs_data, terminal, attempt):
    jobs_data.update_job_execution(thingName=one_job, jobId="j", status=terminal)
    with pytest.raises(
        jobs_data.exceptions.InvalidStateTransitionException,
        match=f"is {terminal}, a terminal status",
    ):
        jobs_data.update_job_execution(thingName=one_job, jobId="j", status=attempt)


@pytest.mark.parametrize("status", ["QUEUED", "CANCELED", "TIMED_OUT", "REMOVED"])
def test_a_device_cannot_set_service_statuses(one_job, jobs_data, status):
    with pytest.raises(jobs_data.exceptions.InvalidRequestException, match="cannot be set"):
        jobs_data.update_job_execution(thingName=one_job, jobId="j", status=status)


def test_a_stale_expected_version_is_refused_with_the_current_state(one_job, jobs_data):
    jobs_data.update_job_execution(thingName=one_job, jobId="j", status="IN_PROGRESS")
    with pytest.raises(
        jobs_data.exceptions.InvalidStateTransitionException,
        match="expectedVersion 1 does not match the current version 2",
    ):
        jobs_data.update_job_execution(
            thingName=one_job, jobId="j", status="SUCCEEDED", expectedVersion=1
        )
    current = jobs_data.describe_job_execution(thingName=one_job, jobId="j")["execution"]
    assert (current["status"], current["versionNumber"]) == ("IN_PROGRESS", 2)


def test_status_details_replace_when_given_and_stay_when_omitted(one_job, jobs_data):
    jobs_data.update_job_execution(
        thingName=one_job, jobId="j", status="IN_PROGRESS", statusDetails={"a": "1", "b": "2"}
    )
    jobs_data.update_job_execution(thingName=one_job, jobId="j", status="IN_PROGRESS")
    kept = jobs_data.describe_job_execution(thingName=one_job, jobId="j")["execution"]
    assert kept["statusDetails"] == {"a": "1", "b": "2"}
    jobs_data.update_job_execution(
        thingName=one_job, jobId="j", status="IN_PROGRESS", statusDetails={"c": "3"}
    )
    replaced = jobs_data.describe_job_execution(thingName=one_job, jobId="j")["execution"]
    assert replaced["statusDetails"] == {"c": "3"}


@pytest.mark.parametrize(
    ("details", "match"),
    [
        ({f"k{i}": "v" for i in range(11)}, "at most 10"),
        ({"bad key!": "v"}, "'statusDetails.key' failed .* regular expression pattern"),
        ({"k" * 129: "v"}, "'statusDetails.key' failed .* less than or equal to 128"),
        ({"k": "v" * 1025}, "1-1024 characters"),
        ({"k": "line\nbreak"}, "'statusDetails.value' failed .* regular expression pattern"),
        ({"k": ""}, "'statusDetails.value' failed .* greater than or equal to 1"),
    ],
)
def test_status_details_limits(sandbox, one_job, details, match):
    loose = sandbox.jobs_data_client(
        config=Config(parameter_validation=False, retries={"max_attempts": 1})
    )
    with pytest.raises(loose.exceptions.InvalidRequestException, match=match):
        loose.update_job_execution(
            thingName=one_job, jobId="j", status="IN_PROGRESS", statusDetails=details
        )


def test_update_can_return_the_document(one_job, jobs_data):
    response = jobs_data.update_job_execution(
        thingName=one_job, jobId="j", status="IN_PROGRESS", includeJobDocument=True
    )
    assert response["jobDocument"] == DOCUMENT
    assert "executionState" not in response


def test_update_of_unknown_job_is_not_found(one_job, jobs_data):
    with pytest.raises(jobs_data.exceptions.ResourceNotFoundException, match="nope"):
        jobs_data.update_job_execution(thingName=one_job, jobId="nope", status="IN_PROGRESS")


@pytest.mark.parametrize("step", [0, 10081])
def test_step_timeout_range(sandbox, one_job, step):
    loose = sandbox.jobs_data_client(
        config=Config(parameter_validation=False, retries={"max_attempts": 1})
    )
    with pytest.raises(loose.exceptions.InvalidRequestException, match="stepTimeoutInMinutes"):
        loose.start_next_pending_job_execution(thingName=one_job, stepTimeoutInMinutes=step)


def test_status_changes_record_the_way_they_came_in(one_job, jobs_data, http_call):
    jobs_data.start_next_pending_job_execution(thingName=one_job)
    jobs_data.update_job_execution(thingName=one_job, jobId="j", status="SUCCEEDED")
    status, _, body = http_call("GET", f"/_sandbox/executions?jobId=j&thingName={one_job}")
    assert status == 200
    (execution,) = body["executions"]
    history = [(h["status"], h["via"], h["versionNumber"]) for h in execution["history"]]
    assert history == [
        ("QUEUED", "service", 1),
        ("IN_PROGRESS", "https", 2),
        ("SUCCEEDED", "https", 3),
    ]


def test_describe_next_over_https(iot, jobs_data):
    iot.create_thing(thingName="n")
    with pytest.raises(jobs_data.exceptions.ResourceNotFoundException, match="No pending job"):
        jobs_data.describe_job_execution(thingName="n", jobId="$next")
    iot.create_job(jobId="nx", targets=[f"{ARN}:thing/n"], document=DOCUMENT)
    execution = jobs_data.describe_job_execution(thingName="n", jobId="$next")["execution"]
    assert (execution["jobId"], execution["status"]) == ("nx", "QUEUED")
