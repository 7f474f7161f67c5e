"""Time-driven behaviour on a manual clock: rollout pacing, timeouts, retries, abort."""

from __future__ import annotations

import json

import pytest

from infra.sandbox import decisions as d

ARN = "arn:aws:iot:us-east-1:123456789012"
DOCUMENT = json.dumps({"operation": "rotate"})


def fleet(sandbox, size: int, group: str = "fleet") -> list[str]:
    result = sandbox.provision(size, [(group, None)], prefix=group)
    return list(result.things)


def details(iot, job_id: str) -> dict:
    return iot.describe_job(jobId=job_id)["job"]["jobProcessDetails"]


def visible(jobs_data, names: list[str]) -> int:
    return sum(
        1 for name in names if jobs_data.get_pending_job_executions(thingName=name)["queuedJobs"]
    )


def test_maximum_per_minute_paces_notifications(sandbox, iot, jobs_data):
    names = fleet(sandbox, 5)
    iot.create_job(
        jobId="paced",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={"maximumPerMinute": 2},
    )
    first = details(iot, "paced")
    assert first["numberOfQueuedThings"] == 2
    assert first["processingTargets"] == [f"{ARN}:thinggroup/fleet"]
    assert visible(jobs_data, names) == 2
    sandbox.engine.advance(59)
    assert details(iot, "paced")["numberOfQueuedThings"] == 2
    sandbox.engine.advance(1)
    assert details(iot, "paced")["numberOfQueuedThings"] == 4
    sandbox.engine.advance(60)
    done = details(iot, "paced")
    assert done["numberOfQueuedThings"] == 5
    assert "processingTargets" not in done
    assert visible(jobs_data, names) == 5


def test_a_paced_continuous_job_keeps_its_pace_for_things_added_later(sandbox, iot, jobs_data):
    fleet(sandbox, 1)
    iot.create_job(
        jobId="cp",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        targetSelection="CONTINUOUS",
        jobExecutionsRolloutConfig={"maximumPerMinute": 1},
    )
    sandbox.engine.advance(10)
    iot.create_thing(thingName="late")
    iot.add_thing_to_thing_group(thingGroupName="fleet", thingName="late")
    assert jobs_data.get_pending_job_executions(thingName="late")["queuedJobs"] == []
    assert "processingTargets" in details(iot, "cp")
    sandbox.engine.advance(50)
    assert [
        j["jobId"] for j in jobs_data.get_pending_job_executions(thingName="late")["queuedJobs"]
    ] == ["cp"]
    sandbox.engine.advance(600)
    iot.create_thing(thingName="later")
    iot.add_thing_to_thing_group(thingGroupName="fleet", thingName="later")
    assert details(iot, "cp")["numberOfQueuedThings"] == 3


def test_a_paced_job_completes_only_after_the_last_batch(sandbox, iot, jobs_data):
    names = fleet(sandbox, 3)
    iot.create_job(
        jobId="slow",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={"maximumPerMinute": 2},
    )
    for name in names[:2]:
        jobs_data.update_job_execution(thingName=name, jobId="slow", status="SUCCEEDED")
    assert iot.describe_job(jobId="slow")["job"]["status"] == "IN_PROGRESS"
    sandbox.engine.advance(60)
    jobs_data.update_job_execution(thingName=names[2], jobId="slow", status="SUCCEEDED")
    assert iot.describe_job(jobId="slow")["job"]["status"] == "COMPLETED"


def test_exponential_rate_grows_with_notified_things(sandbox, iot):
    fleet(sandbox, 40)
    iot.create_job(
        jobId="exp",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={
            "exponentialRate": {
                "baseRatePerMinute": 2,
                "incrementFactor": 2.0,
                "rateIncreaseCriteria": {"numberOfNotifiedThings": 2},
            },
            "maximumPerMinute": 10,
        },
    )
    seen = [details(iot, "exp")["numberOfQueuedThings"]]
    for _ in range(4):
        sandbox.engine.advance(60)
        seen.append(details(iot, "exp")["numberOfQueuedThings"])
    # 2, then the rate doubles per 2 notified things, capped at maximumPerMinute 10.
    batches = [b - a for a, b in zip([0, *seen], seen, strict=False)]
    assert batches == [2, 4, 10, 10, 10]


def test_exponential_rate_can_follow_succeeded_things(sandbox, iot, jobs_data):
    names = fleet(sandbox, 20)
    iot.create_job(
        jobId="exp-s",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={
            "exponentialRate": {
                "baseRatePerMinute": 2,
                "incrementFactor": 3.0,
                "rateIncreaseCriteria": {"numberOfSucceededThings": 2},
            }
        },
    )
    sandbox.engine.advance(60)
    assert details(iot, "exp-s")["numberOfQueuedThings"] == 4  # nobody succeeded: still 2/min
    for name in names[:2]:
        jobs_data.update_job_execution(thingName=name, jobId="exp-s", status="SUCCEEDED")
    sandbox.engine.advance(60)
    assert details(iot, "exp-s")["numberOfQueuedThings"] == 2 + 6


def test_in_progress_timeout_times_the_execution_out(sandbox, iot, jobs_data):
    (name,) = fleet(sandbox, 1)
    iot.create_job(
        jobId="t",
        targets=[f"{ARN}:thing/{name}"],
        document=DOCUMENT,
        timeoutConfig={"inProgressTimeoutInMinutes": 2},
    )
    sandbox.engine.advance(600)  # QUEUED executions never time out
    started = jobs_data.start_next_pending_job_execution(thingName=name)["execution"]
    assert started["approximateSecondsBeforeTimedOut"] == 120
    sandbox.engine.advance(119)
    execution = iot.describe_job_execution(jobId="t", thingName=name)["execution"]
    assert execution["status"] == "IN_PROGRESS"
    assert execution["approximateSecondsBeforeTimedOut"] == 1
    sandbox.engine.advance(1)
    execution = iot.describe_job_execution(jobId="t", thingName=name)["execution"]
    assert execution["status"] == "TIMED_OUT"
    assert execution["versionNumber"] == 3
    assert details(iot, "t")["numberOfTimedOutThings"] == 1
    assert iot.describe_job(jobId="t")["job"]["status"] == "COMPLETED"
    with pytest.raises(jobs_data.exceptions.InvalidStateTransitionException, match="TIMED_OUT"):
        jobs_data.update_job_execution(thingName=name, jobId="t", status="SUCCEEDED")


def test_step_timeout_is_reset_by_updates_and_cleared_by_minus_one(sandbox, iot, jobs_data):
    (name,) = fleet(sandbox, 1)
    iot.create_job(
        jobId="s",
        targets=[f"{ARN}:thing/{name}"],
        document=DOCUMENT,
        timeoutConfig={"inProgressTimeoutInMinutes": 30},
    )
    jobs_data.start_next_pending_job_execution(thingName=name, stepTimeoutInMinutes=1)
    sandbox.engine.advance(50)
    jobs_data.update_job_execution(
        thingName=name, jobId="s", status="IN_PROGRESS", stepTimeoutInMinutes=2
    )
    sandbox.engine.advance(100)  # 150 s after start: the first step timer would have fired
    state = iot.describe_job_execution(jobId="s", thingName=name)["execution"]
    assert state["status"] == "IN_PROGRESS"
    assert state["approximateSecondsBeforeTimedOut"] == 20
    jobs_data.update_job_execution(
        thingName=name, jobId="s", status="IN_PROGRESS", stepTimeoutInMinutes=-1
    )
    state = iot.describe_job_execution(jobId="s", thingName=name)["execution"]
    assert state["approximateSecondsBeforeTimedOut"] == 30 * 60 - 150
    sandbox.engine.advance(30 * 60 - 150)
    assert iot.describe_job_execution(jobId="s", thingName=name)["execution"]["status"] == (
        "TIMED_OUT"
    )


def test_a_step_timer_never_extends_past_the_in_progress_timeout(sandbox, iot, jobs_data):
    (name,) = fleet(sandbox, 1)
    iot.create_job(
        jobId="cap",
        targets=[f"{ARN}:thing/{name}"],
        document=DOCUMENT,
        timeoutConfig={"inProgressTimeoutInMinutes": 1},
    )
    started = jobs_data.start_next_pending_job_execution(thingName=name, stepTimeoutInMinutes=10)
    assert started["execution"]["approximateSecondsBeforeTimedOut"] == 60
    sandbox.engine.advance(60)
    assert iot.describe_job_execution(jobId="cap", thingName=name)["execution"]["status"] == (
        "TIMED_OUT"
    )


def test_step_timeout_without_job_timeout(sandbox, iot, jobs_data):
    (name,) = fleet(sandbox, 1)
    iot.create_job(jobId="st", targets=[f"{ARN}:thing/{name}"], document=DOCUMENT)
    jobs_data.start_next_pending_job_execution(thingName=name, stepTimeoutInMinutes=3)
    sandbox.engine.advance(180)
    assert iot.describe_job_execution(jobId="st", thingName=name)["execution"]["status"] == (
        "TIMED_OUT"
    )


def test_failed_executions_are_retried_as_new_execution_numbers(sandbox, iot, jobs_data):
    (name,) = fleet(sandbox, 1)
    iot.create_job(
        jobId="r",
        targets=[f"{ARN}:thing/{name}"],
        document=DOCUMENT,
        jobExecutionsRetryConfig={
            "criteriaList": [{"failureType": "FAILED", "numberOfRetries": 2}]
        },
    )
    for attempt in range(3):
        execution = jobs_data.start_next_pending_job_execution(thingName=name)["execution"]
        assert execution["executionNumber"] == attempt + 1
        assert execution["versionNumber"] == 2
        jobs_data.update_job_execution(
            thingName=name, jobId="r", status="FAILED", statusDetails={"try": str(attempt)}
        )
    summary = iot.list_job_executions_for_job(jobId="r")["executionSummaries"][0]
    assert summary["jobExecutionSummary"]["status"] == "FAILED"
    assert summary["jobExecutionSummary"]["retryAttempt"] == 2
    assert summary["jobExecutionSummary"]["executionNumber"] == 3
    assert iot.describe_job(jobId="r")["job"]["status"] == "COMPLETED"
    first = iot.describe_job_execution(jobId="r", thingName=name, executionNumber=1)["execution"]
    assert first["status"] == "FAILED"
    assert first["statusDetails"]["detailsMap"] == {"try": "0"}
    with pytest.raises(jobs_data.exceptions.InvalidStateTransitionException, match="has ended"):
        jobs_data.update_job_execution(
            thingName=name, jobId="r", status="SUCCEEDED", executionNumber=1
        )


def test_rejected_executions_are_never_retried(sandbox, iot, jobs_data):
    (name,) = fleet(sandbox, 1)
    iot.create_job(
        jobId="rej",
        targets=[f"{ARN}:thing/{name}"],
        document=DOCUMENT,
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "ALL", "numberOfRetries": 5}]},
    )
    jobs_data.update_job_execution(thingName=name, jobId="rej", status="REJECTED")
    summary = iot.list_job_executions_for_job(jobId="rej")["executionSummaries"][0]
    assert summary["jobExecutionSummary"]["status"] == "REJECTED"
    assert summary["jobExecutionSummary"]["retryAttempt"] == 0


def test_timed_out_executions_are_retried_by_their_criterion(sandbox, iot, jobs_data):
    (name,) = fleet(sandbox, 1)
    iot.create_job(
        jobId="rt",
        targets=[f"{ARN}:thing/{name}"],
        document=DOCUMENT,
        timeoutConfig={"inProgressTimeoutInMinutes": 1},
        jobExecutionsRetryConfig={
            "criteriaList": [
                {"failureType": "TIMED_OUT", "numberOfRetries": 1},
                {"failureType": "FAILED", "numberOfRetries": 0},
            ]
        },
    )
    jobs_data.start_next_pending_job_execution(thingName=name)
    sandbox.engine.advance(60)
    pending = jobs_data.get_pending_job_executions(thingName=name)["queuedJobs"]
    assert [(p["jobId"], p["executionNumber"]) for p in pending] == [("rt", 2)]
    jobs_data.update_job_execution(thingName=name, jobId="rt", status="FAILED")
    assert iot.describe_job(jobId="rt")["job"]["status"] == "COMPLETED"


def _abort_job(iot, failure_type: str, threshold: float, minimum: int) -> None:
    iot.create_job(
        jobId="ab",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        abortConfig={
            "criteriaList": [
                {
                    "failureType": failure_type,
                    "action": "CANCEL",
                    "thresholdPercentage": threshold,
                    "minNumberOfExecutedThings": minimum,
                }
            ]
        },
    )


def test_abort_cancels_the_job_once_failures_pass_the_threshold(sandbox, iot, jobs_data):
    names = fleet(sandbox, 10)
    _abort_job(iot, "FAILED", 50, 4)
    jobs_data.start_next_pending_job_execution(thingName=names[9])
    for name, status in zip(names, ["FAILED", "FAILED", "FAILED"], strict=False):
        jobs_data.update_job_execution(thingName=name, jobId="ab", status=status)
    # 3 executed: below minNumberOfExecutedThings, no abort yet even at 100%.
    assert iot.describe_job(jobId="ab")["job"]["status"] == "IN_PROGRESS"
    jobs_data.update_job_execution(thingName=names[3], jobId="ab", status="SUCCEEDED")
    sandbox.engine.advance(d.CANCEL_PROPAGATION_SECONDS)
    job = iot.describe_job(jobId="ab")["job"]
    assert job["status"] == "CANCELED"
    assert job["reasonCode"] == "ABORT_CRITERIA_MET"
    counts = job["jobProcessDetails"]
    assert counts["numberOfCanceledThings"] == 5  # the QUEUED ones
    assert counts["numberOfInProgressThings"] == 1  # runs on


def test_abort_counts_timeouts(sandbox, iot, jobs_data):
    names = fleet(sandbox, 3)
    iot.create_job(
        jobId="abt",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        timeoutConfig={"inProgressTimeoutInMinutes": 1},
        abortConfig={
            "criteriaList": [
                {
                    "failureType": "TIMED_OUT",
                    "action": "CANCEL",
                    "thresholdPercentage": 10,
                    "minNumberOfExecutedThings": 1,
                }
            ]
        },
    )
    jobs_data.start_next_pending_job_execution(thingName=names[0])
    sandbox.engine.advance(60 + d.CANCEL_PROPAGATION_SECONDS)
    job = iot.describe_job(jobId="abt")["job"]
    assert job["status"] == "CANCELED"
    assert job["jobProcessDetails"]["numberOfCanceledThings"] == 2


def test_cancel_drops_things_not_yet_rolled_out(sandbox, iot, jobs_data):
    names = fleet(sandbox, 5)
    iot.create_job(
        jobId="c",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={"maximumPerMinute": 2},
    )
    iot.cancel_job(jobId="c")
    sandbox.engine.advance(600)
    counts = details(iot, "c")
    assert counts["numberOfCanceledThings"] == 2
    assert counts["numberOfQueuedThings"] == 0
    assert "processingTargets" not in counts
    assert visible(jobs_data, names) == 0


def test_admin_clock_advance_applies_timeouts(sandbox, iot, jobs_data, http_call):
    (name,) = fleet(sandbox, 1)
    iot.create_job(
        jobId="adm",
        targets=[f"{ARN}:thing/{name}"],
        document=DOCUMENT,
        timeoutConfig={"inProgressTimeoutInMinutes": 1},
    )
    jobs_data.start_next_pending_job_execution(thingName=name)
    before = http_call("GET", "/_sandbox/clock")[2]["now"]
    status, _, body = http_call("POST", "/_sandbox/clock", {"advanceSeconds": 61})
    assert status == 200
    assert body["now"] == before + 61
    assert iot.describe_job_execution(jobId="adm", thingName=name)["execution"]["status"] == (
        "TIMED_OUT"
    )
