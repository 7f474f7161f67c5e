"""The sandbox's abort and timeout policies at their edges, on a manual clock.

AWS IoT Jobs counts FAILED, REJECTED and TIMED_OUT for an abort criterion of failure type
ALL (the type the orchestrator sends), and times an execution out when its in-progress
timer runs out: at the instant, not a tick later. See docs/sandbox.md.
"""

from __future__ import annotations

import json

import pytest

from infra.sandbox.decisions import CANCEL_PROPAGATION_SECONDS

ARN = "arn:aws:iot:us-east-1:123456789012"
DOCUMENT = json.dumps({"operation": "rotate"})


def _fleet(sandbox, size: int) -> list[str]:
    return list(sandbox.provision(size, [("fleet", None)], prefix="fleet").things)


def _create(iot, failure_type: str, threshold: float, minimum: int, timeout: int = 1) -> None:
    iot.create_job(
        jobId="ab",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        timeoutConfig={"inProgressTimeoutInMinutes": timeout},
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


def test_a_timed_out_execution_counts_toward_an_all_abort(sandbox, iot, jobs_data):
    names = _fleet(sandbox, 4)
    _create(iot, "ALL", 40, 2)
    jobs_data.update_job_execution(thingName=names[0], jobId="ab", status="SUCCEEDED")
    jobs_data.start_next_pending_job_execution(thingName=names[1])
    assert iot.describe_job(jobId="ab")["job"]["status"] == "IN_PROGRESS"
    sandbox.engine.advance(60)  # names[1] times out: 1 of 2 executed failed, 50% > 40%
    job = iot.describe_job(jobId="ab")["job"]
    assert job["jobProcessDetails"]["numberOfTimedOutThings"] == 1
    assert job["status"] == "CANCELED"
    assert job["reasonCode"] == "ABORT_CRITERIA_MET"
    sandbox.engine.advance(CANCEL_PROPAGATION_SECONDS)  # AWS cancels executions after the job
    job = iot.describe_job(jobId="ab")["job"]
    assert job["jobProcessDetails"]["numberOfCanceledThings"] == 2


@pytest.mark.parametrize(("failure_type", "aborts"), [("FAILED", False), ("TIMED_OUT", True)])
def test_a_named_failure_type_counts_only_its_own_status(
    sandbox, iot, jobs_data, failure_type, aborts
):
    names = _fleet(sandbox, 4)
    _create(iot, failure_type, 40, 2)
    jobs_data.update_job_execution(thingName=names[0], jobId="ab", status="SUCCEEDED")
    jobs_data.start_next_pending_job_execution(thingName=names[1])
    sandbox.engine.advance(60)
    status = iot.describe_job(jobId="ab")["job"]["status"]
    assert status == ("CANCELED" if aborts else "IN_PROGRESS")


def test_all_counts_failed_rejected_and_timed_out_together(sandbox, iot, jobs_data):
    names = _fleet(sandbox, 8)
    _create(iot, "ALL", 70, 4)
    jobs_data.update_job_execution(thingName=names[0], jobId="ab", status="FAILED")
    jobs_data.update_job_execution(thingName=names[1], jobId="ab", status="REJECTED")
    jobs_data.update_job_execution(thingName=names[2], jobId="ab", status="SUCCEEDED")
    jobs_data.start_next_pending_job_execution(thingName=names[3])
    assert iot.describe_job(jobId="ab")["job"]["status"] == "IN_PROGRESS"  # 3 executed: < 4
    sandbox.engine.advance(60)  # 3 failures of 4 executed: 75% > 70%, only with TIMED_OUT
    assert iot.describe_job(jobId="ab")["job"]["status"] == "CANCELED"


def test_an_execution_times_out_at_the_exact_instant_its_timer_ends(sandbox, iot, jobs_data):
    (name,) = _fleet(sandbox, 1)
    iot.create_job(
        jobId="t",
        targets=[f"{ARN}:thing/{name}"],
        document=DOCUMENT,
        timeoutConfig={"inProgressTimeoutInMinutes": 3},
    )
    jobs_data.start_next_pending_job_execution(thingName=name)
    sandbox.engine.advance(179)
    assert iot.describe_job_execution(jobId="t", thingName=name)["execution"]["status"] == (
        "IN_PROGRESS"
    )
    sandbox.engine.advance(1)
    assert iot.describe_job_execution(jobId="t", thingName=name)["execution"]["status"] == (
        "TIMED_OUT"
    )


def test_an_abort_fires_when_failures_reach_the_threshold_exactly(sandbox, iot, jobs_data):
    names = _fleet(sandbox, 4)
    _create(iot, "ALL", 50, 2)
    jobs_data.update_job_execution(thingName=names[0], jobId="ab", status="REJECTED")
    assert iot.describe_job(jobId="ab")["job"]["status"] == "IN_PROGRESS"  # 1 executed: < 2
    jobs_data.update_job_execution(thingName=names[1], jobId="ab", status="SUCCEEDED")
    job = iot.describe_job(jobId="ab")["job"]
    assert job["status"] == "CANCELED"  # 1 of 2 = 50%: reaches 50
    assert job["reasonCode"] == "ABORT_CRITERIA_MET"
    assert job["comment"].startswith("aborted: ALL executions are 50.00% of 2 executed, at or over")
    sandbox.engine.advance(CANCEL_PROPAGATION_SECONDS)  # AWS cancels executions after the job
    job = iot.describe_job(jobId="ab")["job"]
    assert job["jobProcessDetails"]["numberOfCanceledThings"] == 2
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 0


def test_a_criterion_not_yet_met_does_not_hide_the_next_one(sandbox, iot, jobs_data):
    names = _fleet(sandbox, 4)
    iot.create_job(
        jobId="two",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        abortConfig={
            "criteriaList": [
                {"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 10,
                 "minNumberOfExecutedThings": 3},
                {"failureType": "REJECTED", "action": "CANCEL", "thresholdPercentage": 10,
                 "minNumberOfExecutedThings": 1},
            ]
        },
    )  # fmt: skip
    jobs_data.update_job_execution(thingName=names[0], jobId="two", status="REJECTED")
    job = iot.describe_job(jobId="two")["job"]
    assert job["status"] == "CANCELED"
    assert job["comment"].startswith("aborted: REJECTED executions are 100.00% of 1 executed")


@pytest.mark.parametrize(
    ("criteria", "retried"),
    [
        ([{"failureType": "ALL", "numberOfRetries": 1}], True),
        ([{"failureType": "TIMED_OUT", "numberOfRetries": 0},
          {"failureType": "ALL", "numberOfRetries": 2}], True),
        ([{"failureType": "FAILED", "numberOfRetries": 0},
          {"failureType": "ALL", "numberOfRetries": 2}], False),
        ([{"failureType": "TIMED_OUT", "numberOfRetries": 3}], False),
    ],
)  # fmt: skip
def test_a_failure_is_retried_by_its_own_criterion_else_by_all(
    sandbox, iot, jobs_data, criteria, retried
):
    (name,) = _fleet(sandbox, 1)
    iot.create_job(
        jobId="re",
        targets=[f"{ARN}:thing/{name}"],
        document=DOCUMENT,
        timeoutConfig={"inProgressTimeoutInMinutes": 1},
        jobExecutionsRetryConfig={"criteriaList": criteria},
    )
    jobs_data.update_job_execution(thingName=name, jobId="re", status="FAILED")
    counts = iot.describe_job(jobId="re")["job"]["jobProcessDetails"]
    summary = iot.list_job_executions_for_job(jobId="re")["executionSummaries"][0]
    if retried:
        assert (counts["numberOfQueuedThings"], counts["numberOfFailedThings"]) == (1, 0)
        assert summary["jobExecutionSummary"]["retryAttempt"] == 1
        assert summary["jobExecutionSummary"]["status"] == "QUEUED"
        assert iot.describe_job(jobId="re")["job"]["status"] == "IN_PROGRESS"
    else:
        assert (counts["numberOfQueuedThings"], counts["numberOfFailedThings"]) == (0, 1)
        assert summary["jobExecutionSummary"]["retryAttempt"] == 0
        assert iot.describe_job(jobId="re")["job"]["status"] == "COMPLETED"


def test_a_completed_job_records_when_it_completed(sandbox, iot, jobs_data, clock):
    (name,) = _fleet(sandbox, 1)
    iot.create_job(jobId="c", targets=[f"{ARN}:thing/{name}"], document=DOCUMENT)
    sandbox.engine.advance(90)
    jobs_data.update_job_execution(thingName=name, jobId="c", status="SUCCEEDED")
    job = iot.describe_job(jobId="c")["job"]
    assert job["status"] == "COMPLETED"
    assert job["completedAt"] == job["lastUpdatedAt"]
    assert (job["completedAt"] - job["createdAt"]).total_seconds() == 90


def test_a_forced_cancel_stops_running_executions_and_stays_forced(sandbox, iot, jobs_data):
    names = _fleet(sandbox, 2)
    iot.create_job(jobId="f", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    jobs_data.start_next_pending_job_execution(thingName=names[0])
    sandbox.engine.advance(30)
    iot.cancel_job(jobId="f", force=True, reasonCode="STOP", comment="stop now")
    job = iot.describe_job(jobId="f")["job"]
    assert (job["status"], job["forceCanceled"], job["reasonCode"]) == ("CANCELED", True, "STOP")
    assert (job["lastUpdatedAt"] - job["createdAt"]).total_seconds() == 30
    sandbox.engine.advance(CANCEL_PROPAGATION_SECONDS)  # AWS cancels executions after the job
    running = iot.describe_job_execution(jobId="f", thingName=names[0])["execution"]
    queued = iot.describe_job_execution(jobId="f", thingName=names[1])["execution"]
    assert (running["status"], running["forceCanceled"]) == ("CANCELED", True)
    assert queued["status"] == "CANCELED"
    assert queued.get("forceCanceled", False) is False
    iot.cancel_job(jobId="f", comment="again, without force")
    again = iot.describe_job(jobId="f")["job"]
    assert again["forceCanceled"] is True
    assert (again["reasonCode"], again["comment"]) == ("STOP", "stop now")


def test_a_cancel_without_force_lets_running_executions_finish(sandbox, iot, jobs_data):
    names = _fleet(sandbox, 2)
    iot.create_job(jobId="n", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    jobs_data.start_next_pending_job_execution(thingName=names[0])
    iot.cancel_job(jobId="n")
    job = iot.describe_job(jobId="n")["job"]
    assert (job["status"], job["forceCanceled"]) == ("CANCELED", False)
    running = iot.describe_job_execution(jobId="n", thingName=names[0])["execution"]
    assert running["status"] == "IN_PROGRESS"
    jobs_data.update_job_execution(thingName=names[0], jobId="n", status="SUCCEEDED")
    assert iot.describe_job_execution(jobId="n", thingName=names[0])["execution"]["status"] == (
        "SUCCEEDED"
    )
