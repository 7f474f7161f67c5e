"""Conformance of the sandbox with AWS IoT Jobs where it used to be kinder than AWS.

Each test drives the sandbox through boto3 over HTTP, as a user would, and is
cited in the behaviour table of docs/sandbox.md beside the AWS page it follows.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.sandbox import decisions as d
from infra.sandbox.engine import JobsEngine
from infra.sandbox.runtime import Sandbox
from job_documents.clock import ManualClock
from orchestrator.gates import failure_rate_reached
from orchestrator.model import Halt
from orchestrator.planner import abort_threshold

from .conftest import START

ARN = "arn:aws:iot:us-east-1:123456789012"
DOCUMENT = json.dumps({"operation": "rotate"})


def fleet(iot, size: int, group: str = "fleet") -> list[str]:
    iot.create_thing_group(thingGroupName=group)
    names = [f"{group}-{i:03d}" for i in range(size)]
    for name in names:
        iot.create_thing(thingName=name)
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=name)
    return names


def abort_config(threshold: float, minimum: int, failure_type: str = "ALL") -> dict:
    return {
        "criteriaList": [
            {
                "failureType": failure_type,
                "action": "CANCEL",
                "thresholdPercentage": threshold,
                "minNumberOfExecutedThings": minimum,
            }
        ]
    }


# -- abortConfig: the threshold is a minimum (>=) --------------------------------------------
def test_abort_fires_when_failures_reach_the_threshold_exactly(iot, jobs_data):
    names = fleet(iot, 4)
    iot.create_job(
        jobId="ab",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        abortConfig=abort_config(50, 2),
    )
    jobs_data.update_job_execution(thingName=names[0], jobId="ab", status="SUCCEEDED")
    assert iot.describe_job(jobId="ab")["job"]["status"] == "IN_PROGRESS"  # 1 executed < 2
    jobs_data.update_job_execution(thingName=names[1], jobId="ab", status="REJECTED")
    job = iot.describe_job(jobId="ab")["job"]  # 1 failure of 2 executed: exactly 50 %
    assert job["status"] == "CANCELED"
    assert job["reasonCode"] == "ABORT_CRITERIA_MET"


def test_abort_stays_quiet_just_under_the_threshold(iot, jobs_data):
    names = fleet(iot, 4)
    iot.create_job(
        jobId="ab",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        abortConfig=abort_config(50.01, 2),
    )
    jobs_data.update_job_execution(thingName=names[0], jobId="ab", status="SUCCEEDED")
    jobs_data.update_job_execution(thingName=names[1], jobId="ab", status="FAILED")
    assert iot.describe_job(jobId="ab")["job"]["status"] == "IN_PROGRESS"


@pytest.mark.parametrize(
    ("rate", "minimum", "outcomes"),
    [
        (0.5, 2, ["SUCCEEDED", "FAILED"]),  # 1 of 2 at 50 %: halts and aborts
        (0.34, 3, ["FAILED", "SUCCEEDED", "SUCCEEDED"]),  # 33.3 % < 34 %: neither
        (0.0, 2, ["SUCCEEDED", "SUCCEEDED", "FAILED"]),  # zero tolerance: the first failure
        (0.0, 2, ["SUCCEEDED", "SUCCEEDED", "SUCCEEDED"]),  # no failure: neither
    ],
)
def test_the_orchestrator_halt_rule_and_the_abort_it_sends_agree(
    iot, jobs_data, rate, minimum, outcomes
):
    """The gate's halt (gates.failure_rate_reached) fires exactly when AWS's abort would."""
    names = fleet(iot, len(outcomes) + 1)
    iot.create_job(
        jobId="agree",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        abortConfig=abort_config(abort_threshold(rate), minimum),
    )
    for name, outcome in zip(names, outcomes, strict=False):
        jobs_data.update_job_execution(thingName=name, jobId="agree", status=outcome)
    failures = outcomes.count("FAILED")
    halted = failure_rate_reached(
        Halt(max_failure_rate=rate, min_executed=minimum), failures, len(outcomes)
    )
    aborted = iot.describe_job(jobId="agree")["job"]["status"] == "CANCELED"
    assert halted is aborted
    assert halted is (failures > 0 and failures / len(outcomes) >= rate)


# -- unimplemented operations, UpdateJob ------------------------------------------------------
def test_an_unimplemented_operation_is_unknown_operation_naming_it(iot):
    iot.create_thing(thingName="t")
    iot.create_job(jobId="j", targets=[f"{ARN}:thing/t"], document=DOCUMENT)
    # AssociateTargetsWithJob is POST /jobs/{jobId}/targets: a path of a served
    # operation's family, which used to answer 405 InvalidRequestException.
    with pytest.raises(ClientError) as caught:
        iot.associate_targets_with_job(jobId="j", targets=[f"{ARN}:thing/t"])
    error = caught.value.response
    assert error["Error"]["Code"] == "UnknownOperationException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "AssociateTargetsWithJob" in error["Error"]["Message"]


def test_the_aws_cli_shows_unknown_operation(sandbox: Sandbox, tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "sandbox",
        "AWS_SECRET_ACCESS_KEY": "sandbox",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_IOT": sandbox.control_plane_url,
        "AWS_MAX_ATTEMPTS": "1",
    }
    run = subprocess.run(
        ["aws", "iot", "list-job-templates"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode != 0
    assert "(UnknownOperationException) when calling the ListJobTemplates operation" in run.stderr


def test_update_job_changes_the_rollout_rate_from_the_next_batch(sandbox: Sandbox, iot, jobs_data):
    fleet(iot, 10)
    iot.create_job(
        jobId="rate",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={"maximumPerMinute": 1},
        description="slow",
    )
    assert sandbox.engine.counts("rate")["QUEUED"] == 1
    iot.update_job(
        jobId="rate", jobExecutionsRolloutConfig={"maximumPerMinute": 4}, description="faster"
    )
    assert sandbox.engine.counts("rate")["QUEUED"] == 1  # the next batch, not at once
    sandbox.engine.advance(60)
    assert sandbox.engine.counts("rate")["QUEUED"] == 5
    job = iot.describe_job(jobId="rate")["job"]
    assert job["jobExecutionsRolloutConfig"] == {"maximumPerMinute": 4}
    assert job["description"] == "faster"


def test_update_job_timeout_applies_to_executions_started_afterwards(
    sandbox: Sandbox, iot, jobs_data
):
    names = fleet(iot, 2)
    iot.create_job(jobId="to", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    jobs_data.start_next_pending_job_execution(thingName=names[0])
    iot.update_job(jobId="to", timeoutConfig={"inProgressTimeoutInMinutes": 5})
    started = jobs_data.start_next_pending_job_execution(thingName=names[1])["execution"]
    assert started["approximateSecondsBeforeTimedOut"] == 300
    sandbox.engine.advance(301)
    statuses = {
        n: iot.describe_job_execution(jobId="to", thingName=n)["execution"]["status"] for n in names
    }
    assert statuses == {names[0]: "IN_PROGRESS", names[1]: "TIMED_OUT"}


def test_update_job_abort_criteria_are_checked_at_once(iot, jobs_data):
    names = fleet(iot, 4)
    iot.create_job(jobId="ab", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    jobs_data.update_job_execution(thingName=names[0], jobId="ab", status="FAILED")
    jobs_data.update_job_execution(thingName=names[1], jobId="ab", status="SUCCEEDED")
    iot.update_job(jobId="ab", abortConfig=abort_config(50, 2))
    job = iot.describe_job(jobId="ab")["job"]
    assert (job["status"], job["reasonCode"]) == ("CANCELED", "ABORT_CRITERIA_MET")


def test_update_job_refuses_a_finished_job_and_bad_settings(iot):
    iot.create_thing(thingName="t")
    iot.create_job(jobId="done", targets=[f"{ARN}:thing/t"], document=DOCUMENT)
    with pytest.raises(iot.exceptions.InvalidRequestException, match="maximumPerMinute"):
        iot.update_job(jobId="done", jobExecutionsRolloutConfig={"maximumPerMinute": 5000})
    with pytest.raises(iot.exceptions.InvalidRequestException, match="needs a timeoutConfig"):
        iot.update_job(
            jobId="done",
            jobExecutionsRetryConfig={
                "criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 1}]
            },
        )
    iot.cancel_job(jobId="done")
    with pytest.raises(iot.exceptions.InvalidRequestException, match="is CANCELED"):
        iot.update_job(jobId="done", description="late")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.update_job(jobId="nope", description="x")


def test_more_than_ten_retries_combined_are_refused(iot):
    iot.create_thing(thingName="t")
    retry = {
        "criteriaList": [
            {"failureType": "FAILED", "numberOfRetries": 6},
            {"failureType": "TIMED_OUT", "numberOfRetries": 5},
        ]
    }
    with pytest.raises(iot.exceptions.InvalidRequestException, match="11 retries in all"):
        iot.create_job(
            jobId="r",
            targets=[f"{ARN}:thing/t"],
            document=DOCUMENT,
            timeoutConfig={"inProgressTimeoutInMinutes": 5},
            jobExecutionsRetryConfig=retry,
        )
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job(jobId="r")  # nothing created
    retry["criteriaList"][1]["numberOfRetries"] = 4
    iot.create_job(
        jobId="r",
        targets=[f"{ARN}:thing/t"],
        document=DOCUMENT,
        timeoutConfig={"inProgressTimeoutInMinutes": 5},
        jobExecutionsRetryConfig=retry,
    )


def test_a_document_nested_too_deeply_is_an_invalid_request_not_an_internal_failure(iot):
    iot.create_thing(thingName="t")
    deep = '{"a":' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(iot.exceptions.InvalidRequestException, match="nested too deeply"):
        iot.create_job(jobId="deep", targets=[f"{ARN}:thing/t"], document=deep)


# -- smaller differences: pending list, document by default, throttling, limits ---------------
def test_get_pending_job_executions_lists_at_most_ten(sandbox: Sandbox, jobs_data):
    sandbox.engine.create_things(["busy"])
    for i in range(12):
        sandbox.engine.create_job(
            {"jobId": f"j{i:02d}", "targets": [f"{ARN}:thing/busy"], "document": DOCUMENT}
        )
        sandbox.engine.advance(1)  # distinct queuedAt: the order is well defined
    jobs_data.start_next_pending_job_execution(thingName="busy")
    pending = jobs_data.get_pending_job_executions(thingName="busy")
    assert [j["jobId"] for j in pending["inProgressJobs"]] == ["j00"]
    assert [j["jobId"] for j in pending["queuedJobs"]] == [f"j{i:02d}" for i in range(1, 10)]


def test_https_describe_job_execution_includes_the_document_unless_told_not_to(iot, jobs_data):
    iot.create_thing(thingName="t")
    iot.create_job(jobId="doc", targets=[f"{ARN}:thing/t"], document=DOCUMENT)
    described = jobs_data.describe_job_execution(thingName="t", jobId="doc")["execution"]
    assert described["jobDocument"] == DOCUMENT
    assert described["thingName"] == "t"
    without = jobs_data.describe_job_execution(
        thingName="t", jobId="doc", includeJobDocument=False
    )["execution"]
    assert "jobDocument" not in without


def test_control_plane_throttling_is_400_and_botocore_retries_it(sandbox: Sandbox, iot):
    assert sandbox.faults is not None
    faults = sandbox.faults
    faults.update(throttle_rate=1.0)
    with pytest.raises(iot.exceptions.ThrottlingException) as caught:
        iot.list_things()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    retrying = sandbox.iot_client(config=Config(retries={"mode": "standard", "max_attempts": 3}))
    seen: list[int] = []

    def lift_throttling(response, **_: object) -> None:
        if response is not None:
            seen.append(response[0].status_code)
        faults.update(throttle_rate=0.0)

    retrying.meta.events.register("needs-retry.iot.ListThings", lift_throttling)
    answer = retrying.list_things()
    assert seen[0] == 400
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1  # botocore chose to retry the 400


def test_jobs_data_throttling_stays_429_as_its_model_says(sandbox: Sandbox, iot, jobs_data):
    assert sandbox.faults is not None
    iot.create_thing(thingName="t")
    sandbox.faults.update(throttle_rate=1.0)
    with pytest.raises(jobs_data.exceptions.ThrottlingException) as caught:
        jobs_data.get_pending_job_executions(thingName="t")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


# -- membership changes -------------------------------------------------------------------------
def test_a_thing_removed_from_a_snapshot_jobs_group_is_removed(iot, jobs_data):
    names = fleet(iot, 3)
    iot.create_job(jobId="snap", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    jobs_data.start_next_pending_job_execution(thingName=names[0])
    for name in names[:2]:
        iot.remove_thing_from_thing_group(thingGroupName="fleet", thingName=name)
    details = iot.describe_job(jobId="snap")["job"]["jobProcessDetails"]
    assert details["numberOfRemovedThings"] == 1
    assert details["numberOfInProgressThings"] == 1  # the device already runs it
    assert details["numberOfQueuedThings"] == 1
    removed = iot.describe_job_execution(jobId="snap", thingName=names[1])["execution"]
    assert removed["status"] == "REMOVED"
    assert jobs_data.get_pending_job_executions(thingName=names[1])["queuedJobs"] == []
    for name in (names[0], names[2]):
        jobs_data.update_job_execution(thingName=name, jobId="snap", status="SUCCEEDED")
    assert iot.describe_job(jobId="snap")["job"]["status"] == "COMPLETED"


def test_a_paced_snapshot_job_drops_a_thing_that_left_before_its_turn(sandbox: Sandbox, iot):
    names = fleet(iot, 3)
    iot.create_job(
        jobId="paced",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={"maximumPerMinute": 1},
    )
    iot.remove_thing_from_thing_group(thingGroupName="fleet", thingName=names[2])
    sandbox.engine.advance(180)
    notified = iot.list_job_executions_for_job(jobId="paced")["executionSummaries"]
    assert sorted(e["thingArn"].rsplit("/", 1)[1] for e in notified) == names[:2]


def test_a_continuous_jobs_thing_that_comes_back_gets_the_job_again(iot, jobs_data):
    names = fleet(iot, 2)
    iot.create_job(
        jobId="cont",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        targetSelection="CONTINUOUS",
    )
    iot.remove_thing_from_thing_group(thingGroupName="fleet", thingName=names[0])
    details = iot.describe_job(jobId="cont")["job"]["jobProcessDetails"]
    assert (details["numberOfRemovedThings"], details["numberOfQueuedThings"]) == (1, 1)
    iot.add_thing_to_thing_group(thingGroupName="fleet", thingName=names[0])
    details = iot.describe_job(jobId="cont")["job"]["jobProcessDetails"]
    assert (details["numberOfRemovedThings"], details["numberOfQueuedThings"]) == (0, 2)
    again = jobs_data.start_next_pending_job_execution(thingName=names[0])["execution"]
    assert (again["jobId"], again["executionNumber"], again["versionNumber"]) == ("cont", 2, 2)
    earlier = iot.describe_job_execution(jobId="cont", thingName=names[0], executionNumber=1)
    assert earlier["execution"]["status"] == "REMOVED"


@pytest.mark.parametrize(
    ("first", "second"),
    [("eu", "us"), ("all", "eu"), ("eu-west", "all"), ("eu", "eu-west")],
    ids=["siblings", "parent-then-child", "grandchild-then-root", "child-then-grandchild"],
)
def test_a_thing_cannot_be_in_two_groups_of_one_hierarchy(iot, first, second):
    iot.create_thing_group(thingGroupName="all")
    iot.create_thing_group(thingGroupName="eu", parentGroupName="all")
    iot.create_thing_group(thingGroupName="us", parentGroupName="all")
    iot.create_thing_group(thingGroupName="eu-west", parentGroupName="eu")
    iot.create_thing_group(thingGroupName="elsewhere")
    iot.create_thing(thingName="t")
    iot.add_thing_to_thing_group(thingGroupName=first, thingName="t")
    with pytest.raises(iot.exceptions.InvalidRequestException, match="same hierarchy"):
        iot.add_thing_to_thing_group(thingGroupName=second, thingName="t")
    assert iot.list_things_in_thing_group(thingGroupName=second)["things"] == []
    iot.add_thing_to_thing_group(thingGroupName=first, thingName="t")  # again: no change
    iot.add_thing_to_thing_group(thingGroupName="elsewhere", thingName="t")  # another tree
    iot.remove_thing_from_thing_group(thingGroupName=first, thingName="t")
    iot.add_thing_to_thing_group(thingGroupName=second, thingName="t")


# -- maintenance windows ---------------------------------------------------------------------
def test_a_job_whose_window_closes_is_scheduled_until_the_next_window(
    sandbox: Sandbox, iot, jobs_data
):
    """Windows open at :00, :10, :20 ... for 2 minutes; the clock starts at 12:00 UTC."""
    names = fleet(iot, 5)
    iot.create_job(
        jobId="win",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={"maximumPerMinute": 1},
        schedulingConfig={
            "maintenanceWindows": [{"startTime": "cron(0/10 * ? * * *)", "durationInMinutes": 2}]
        },
    )
    sandbox.engine.advance(60)
    assert iot.describe_job(jobId="win")["job"]["status"] == "IN_PROGRESS"
    sandbox.engine.advance(60)  # 12:02: the window closes with three things to go
    job = iot.describe_job(jobId="win")["job"]
    assert job["status"] == "SCHEDULED"
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 2
    assert job["jobProcessDetails"]["processingTargets"]
    assert [j["jobId"] for j in iot.list_jobs(status="SCHEDULED")["jobs"]] == ["win"]
    # devices notified in the window still run their executions
    jobs_data.update_job_execution(thingName=names[0], jobId="win", status="SUCCEEDED")
    sandbox.engine.advance(7 * 60)  # 12:09: still between windows
    assert sandbox.engine.counts("win")["QUEUED"] == 1
    sandbox.engine.advance(60)  # 12:10: the next window opens, the rollout resumes
    job = iot.describe_job(jobId="win")["job"]
    assert job["status"] == "IN_PROGRESS"
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 2


def test_a_job_whose_rollout_is_done_stays_in_progress_after_its_window(sandbox: Sandbox, iot):
    fleet(iot, 2)
    iot.create_job(
        jobId="done",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        schedulingConfig={
            "maintenanceWindows": [{"startTime": "cron(0/10 * ? * * *)", "durationInMinutes": 2}]
        },
    )
    sandbox.engine.advance(180)
    job = iot.describe_job(jobId="done")["job"]
    assert job["status"] == "IN_PROGRESS"
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 2


# -- CancelJob and DeleteJob are eventually consistent ------------------------------------------
def test_cancel_job_cancels_the_executions_a_moment_later(clock, iot, jobs_data):
    names = fleet(iot, 3)
    iot.create_job(jobId="c", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    iot.cancel_job(jobId="c", reasonCode="OPERATOR")
    job = iot.describe_job(jobId="c")["job"]
    assert (job["status"], job["isConcurrent"]) == ("CANCELED", True)
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 3
    # meanwhile a device may still start its execution, as against AWS
    started = jobs_data.start_next_pending_job_execution(thingName=names[0])["execution"]
    assert started["status"] == "IN_PROGRESS"
    clock.advance(d.CANCEL_PROPAGATION_SECONDS)
    job = iot.describe_job(jobId="c")["job"]
    assert job["isConcurrent"] is False
    details = job["jobProcessDetails"]
    assert (details["numberOfCanceledThings"], details["numberOfInProgressThings"]) == (2, 1)
    assert iot.list_jobs()["jobs"][0]["isConcurrent"] is False


def test_delete_job_is_in_progress_until_the_id_can_be_reused(clock, iot, jobs_data):
    iot.create_thing(thingName="t")
    iot.create_job(jobId="gone", targets=[f"{ARN}:thing/t"], document=DOCUMENT)
    iot.cancel_job(jobId="gone")
    iot.delete_job(jobId="gone")
    assert iot.describe_job(jobId="gone")["job"]["status"] == "DELETION_IN_PROGRESS"
    assert [j["status"] for j in iot.list_jobs()["jobs"]] == ["DELETION_IN_PROGRESS"]
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException, match="being deleted"):
        iot.create_job(jobId="gone", targets=[f"{ARN}:thing/t"], document=DOCUMENT)
    with pytest.raises(iot.exceptions.InvalidStateTransitionException, match="being deleted"):
        iot.cancel_job(jobId="gone")
    with pytest.raises(iot.exceptions.InvalidStateTransitionException, match="being deleted"):
        iot.delete_job(jobId="gone")
    clock.advance(d.DELETION_SECONDS)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job(jobId="gone")
    assert jobs_data.get_pending_job_executions(thingName="t")["queuedJobs"] == []
    iot.create_job(jobId="gone", targets=[f"{ARN}:thing/t"], document=DOCUMENT)


def test_at_most_ten_deletions_in_progress(sandbox: Sandbox, clock, iot):
    sandbox.engine.create_things(["t"])
    for i in range(11):
        sandbox.engine.create_job(
            {"jobId": f"j{i}", "targets": [f"{ARN}:thing/t"], "document": DOCUMENT}
        )
        iot.cancel_job(jobId=f"j{i}")
    for i in range(10):
        iot.delete_job(jobId=f"j{i}")
    with pytest.raises(iot.exceptions.LimitExceededException, match="At most 10 jobs"):
        iot.delete_job(jobId="j10")
    clock.advance(d.DELETION_SECONDS)
    iot.delete_job(jobId="j10")


def test_the_delays_are_options_and_zero_is_immediate():
    engine = JobsEngine(clock=ManualClock(START), cancel_delay=0, delete_delay=0)
    engine.create_things(["t"])
    engine.create_job({"jobId": "j", "targets": [f"{ARN}:thing/t"], "document": DOCUMENT})
    engine.cancel_job({"jobId": "j"})
    assert engine.counts("j")["CANCELED"] == 1
    engine.delete_job({"jobId": "j"})
    assert engine.list_jobs({})["jobs"] == []
    with pytest.raises(ValueError, match="zero or more"):
        JobsEngine(clock=ManualClock(START), cancel_delay=-1)
