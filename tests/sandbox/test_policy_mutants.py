"""The sandbox's retry and abort bookkeeping, pinned field by field on a manual clock.

AWS IoT Jobs retries a FAILED or TIMED_OUT execution as the next executionNumber of the same
record, back in QUEUED with versionNumber 1 and retryAttempt + 1, and moves the job's counts
from the failed status to queued; an abort criterion is met when failures reach its threshold
percentage of the executed things, and cancels the job (not forced) with reason code
ABORT_CRITERIA_MET. See docs/sandbox.md.
"""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from infra.sandbox.engine import JobsEngine
from infra.sandbox.errors import ServiceError
from job_documents.clock import ManualClock

from .conftest import START

ARN = "arn:aws:iot:us-east-1:123456789012"
DOCUMENT = json.dumps({"operation": "rotate"})


def _fleet(sandbox, size: int) -> list[str]:
    return list(sandbox.provision(size, [("fleet", None)], prefix="fleet").things)


def test_a_retry_moves_the_counts_and_starts_a_new_execution_number(sandbox, iot, jobs_data):
    names = _fleet(sandbox, 3)
    iot.create_job(
        jobId="re",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "ALL", "numberOfRetries": 1}]},
    )
    jobs_data.start_next_pending_job_execution(thingName=names[0])
    sandbox.engine.advance(40)
    jobs_data.update_job_execution(thingName=names[0], jobId="re", status="FAILED")
    counts = iot.describe_job(jobId="re")["job"]["jobProcessDetails"]
    assert (counts["numberOfQueuedThings"], counts["numberOfFailedThings"]) == (3, 0)
    assert counts["numberOfInProgressThings"] == 0
    execution = iot.describe_job_execution(jobId="re", thingName=names[0])["execution"]
    assert (execution["status"], execution["executionNumber"]) == ("QUEUED", 2)
    assert (execution["versionNumber"], execution["forceCanceled"]) == (1, False)
    assert "startedAt" not in execution
    assert (execution["queuedAt"] - execution["lastUpdatedAt"]).total_seconds() == 0
    (record,) = sandbox.engine.execution_history(job_id="re", thing_name=names[0])
    assert record["retryAttempt"] == 1
    start = record["history"][0]["at"]
    assert record["history"][-1] == {
        "status": "QUEUED",
        "via": "service",
        "at": start + 40,
        "versionNumber": 1,
        "executionNumber": 2,
    }
    assert [h["status"] for h in record["history"]] == ["QUEUED", "IN_PROGRESS", "FAILED", "QUEUED"]
    # The second failure uses up the one retry: the counts stay failed.
    jobs_data.update_job_execution(thingName=names[0], jobId="re", status="FAILED")
    counts = iot.describe_job(jobId="re")["job"]["jobProcessDetails"]
    assert (counts["numberOfQueuedThings"], counts["numberOfFailedThings"]) == (2, 1)


def test_a_failure_type_without_a_criterion_and_without_all_is_not_retried(sandbox, iot, jobs_data):
    (name,) = _fleet(sandbox, 1)
    iot.create_job(
        jobId="no",
        targets=[f"{ARN}:thing/{name}"],
        document=DOCUMENT,
        timeoutConfig={"inProgressTimeoutInMinutes": 1},
        jobExecutionsRetryConfig={
            "criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 3}]
        },
    )
    jobs_data.update_job_execution(thingName=name, jobId="no", status="FAILED")
    execution = iot.describe_job_execution(jobId="no", thingName=name)["execution"]
    assert (execution["status"], execution["executionNumber"]) == ("FAILED", 1)


def test_an_abort_below_its_threshold_by_a_fraction_does_not_fire(sandbox, iot, jobs_data):
    names = _fleet(sandbox, 4)
    iot.create_job(
        jobId="ab",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        abortConfig={
            "criteriaList": [
                {"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 50.4,
                 "minNumberOfExecutedThings": 2},
            ]
        },
    )  # fmt: skip
    jobs_data.update_job_execution(thingName=names[0], jobId="ab", status="FAILED")
    jobs_data.update_job_execution(thingName=names[1], jobId="ab", status="SUCCEEDED")
    assert iot.describe_job(jobId="ab")["job"]["status"] == "IN_PROGRESS"  # 50% < 50.4%


def test_an_abort_cancels_without_force_at_its_time_and_says_why(sandbox, iot, jobs_data):
    names = _fleet(sandbox, 4)
    iot.create_job(
        jobId="ab",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        abortConfig={
            "criteriaList": [
                {"failureType": "ALL", "action": "CANCEL", "thresholdPercentage": 50,
                 "minNumberOfExecutedThings": 2},
            ]
        },
    )  # fmt: skip
    jobs_data.start_next_pending_job_execution(thingName=names[2])
    jobs_data.update_job_execution(thingName=names[0], jobId="ab", status="SUCCEEDED")
    sandbox.engine.advance(30)
    with capture_logs() as logs:
        jobs_data.update_job_execution(thingName=names[1], jobId="ab", status="FAILED")
    job = iot.describe_job(jobId="ab")["job"]
    assert (job["status"], job["forceCanceled"]) == ("CANCELED", False)
    assert job["comment"] == (
        "aborted: ALL executions are 50.00% of 2 executed, at or over the threshold 50%"
    )
    assert (job["lastUpdatedAt"] - job["createdAt"]).total_seconds() == 30
    running = iot.describe_job_execution(jobId="ab", thingName=names[2])["execution"]
    assert running["status"] == "IN_PROGRESS"  # not forced: a running execution runs on
    aborted = [e for e in logs if e["event"] == "job_aborted"]
    assert aborted == [
        {
            "event": "job_aborted",
            "log_level": "info",
            "job_id": "ab",
            "failure_type": "ALL",
            "percent": 50.0,
        }
    ]


def _notified(iot, job_id: str) -> list[str]:
    summaries = iot.list_job_executions_for_job(jobId=job_id)["executionSummaries"]
    return sorted(s["thingArn"].rsplit("/", 1)[-1] for s in summaries)


def test_a_rate_of_one_per_minute_notifies_one_thing_a_minute(sandbox, iot):
    names = _fleet(sandbox, 3)
    iot.create_job(
        jobId="one",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={"maximumPerMinute": 1},
    )
    assert len(_notified(iot, "one")) == 1
    sandbox.engine.advance(60)
    assert len(_notified(iot, "one")) == 2
    sandbox.engine.advance(60)
    assert _notified(iot, "one") == sorted(names)


def test_a_thing_deleted_while_it_waits_for_its_batch_is_skipped_not_counted(sandbox, iot):
    names = _fleet(sandbox, 5)
    iot.create_job(
        jobId="gone",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={"maximumPerMinute": 2},
    )
    first = _notified(iot, "gone")
    waiting = [name for name in names if name not in first]
    iot.delete_thing(thingName=waiting[0])
    sandbox.engine.advance(60)  # the batch of two skips the deleted thing: the other two
    assert _notified(iot, "gone") == sorted(first + waiting[1:])
    job = iot.describe_job(jobId="gone")["job"]
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 4
    assert "processingTargets" not in job["jobProcessDetails"]  # the rollout is over


def test_an_exponential_rate_rises_once_per_step_of_notified_things(sandbox, iot):
    _fleet(sandbox, 40)
    iot.create_job(
        jobId="exp",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={
            "exponentialRate": {
                "baseRatePerMinute": 2,
                "incrementFactor": 2.0,
                "rateIncreaseCriteria": {"numberOfNotifiedThings": 2},
            }
        },
    )
    seen = [len(_notified(iot, "exp"))]
    for _ in range(3):
        sandbox.engine.advance(60)
        seen.append(len(_notified(iot, "exp")))
    # 2 notified: 4/min; 6 notified: two more steps of 2 since then, 16/min; then the rest.
    assert seen == [2, 6, 22, 40]


def _engine(cancel_delay: float) -> JobsEngine:
    engine = JobsEngine(clock=ManualClock(START), cancel_delay=cancel_delay)
    engine.create_things(["t1", "t2"])
    targets = [f"{ARN}:thing/t1", f"{ARN}:thing/t2"]
    engine.create_job({"jobId": "j", "targets": targets, "document": DOCUMENT})
    return engine


def test_a_cancel_without_delay_ends_queued_executions_at_once_by_the_control_plane():
    engine = _engine(cancel_delay=0)
    engine.advance(5)
    engine.cancel_job({"jobId": "j"})
    assert (engine.counts("j")["CANCELED"], engine.counts("j")["QUEUED"]) == (2, 0)
    (record,) = engine.execution_history(job_id="j", thing_name="t1")
    created = record["history"][0]["at"]
    assert record["history"][-1] == {
        "status": "CANCELED",
        "via": "control-plane",
        "at": created + 5,
        "versionNumber": 2,
        "executionNumber": 1,
    }


def test_a_cancel_delay_of_one_second_cancels_the_executions_a_second_later():
    engine = _engine(cancel_delay=1)
    engine.cancel_job({"jobId": "j"})
    assert (engine.counts("j")["CANCELED"], engine.counts("j")["QUEUED"]) == (0, 2)
    engine.advance(1)
    assert (engine.counts("j")["CANCELED"], engine.counts("j")["QUEUED"]) == (2, 0)


def test_a_forced_cancel_after_a_plain_one_still_cancels_running_executions():
    engine = _engine(cancel_delay=2)
    engine.start_next("t1", status_details=None, step_timeout_minutes=None, via="https")
    engine.cancel_job({"jobId": "j"})
    engine.advance(2)
    assert (engine.counts("j")["CANCELED"], engine.counts("j")["IN_PROGRESS"]) == (1, 1)
    engine.cancel_job({"jobId": "j", "force": True})
    engine.advance(2)
    assert (engine.counts("j")["CANCELED"], engine.counts("j")["IN_PROGRESS"]) == (2, 0)


def _windowed_continuous_job(sandbox, iot) -> None:
    _fleet(sandbox, 1)
    # START is Sunday 12:00 UTC; the window opens daily at 14:00 for two minutes.
    iot.create_job(
        jobId="w",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        targetSelection="CONTINUOUS",
        schedulingConfig={
            "maintenanceWindows": [{"startTime": "cron(0 14 ? * * *)", "durationInMinutes": 2}]
        },
        jobExecutionsRolloutConfig={"maximumPerMinute": 1},
    )
    sandbox.engine.advance(2 * 3600)  # 14:00: the window opens, the one thing is notified


def _add_thing(iot, name: str) -> None:
    iot.create_thing(thingName=name)
    iot.add_thing_to_thing_group(thingGroupName="fleet", thingName=name)


def _since_start(moment) -> float:
    return (moment - START).total_seconds()


def test_a_job_resumed_by_its_window_and_paused_at_its_end_records_both_times(sandbox, iot):
    _windowed_continuous_job(sandbox, iot)
    job = iot.describe_job(jobId="w")["job"]
    assert (job["status"], _since_start(job["lastUpdatedAt"])) == ("IN_PROGRESS", 7200)
    sandbox.engine.advance(90)  # 14:01:30, off the minute: a batch now, the next at 14:02:30
    for name in ("late-1", "late-2", "late-3"):
        _add_thing(iot, name)
    assert len(_notified(iot, "w")) == 2
    sandbox.engine.advance(30)  # 14:02: the window closes between two batches
    job = iot.describe_job(jobId="w")["job"]
    assert (job["status"], _since_start(job["lastUpdatedAt"])) == ("SCHEDULED", 7320)
    sandbox.engine.advance(30)
    assert len(_notified(iot, "w")) == 2  # the 14:02:30 batch waits for the next window


def test_a_thing_added_outside_the_window_pauses_a_finished_continuous_rollout(sandbox, iot):
    _windowed_continuous_job(sandbox, iot)
    sandbox.engine.advance(300)  # 14:05: closed; the rollout had nothing left, still IN_PROGRESS
    assert iot.describe_job(jobId="w")["job"]["status"] == "IN_PROGRESS"
    _add_thing(iot, "late")
    job = iot.describe_job(jobId="w")["job"]
    assert (job["status"], _since_start(job["lastUpdatedAt"])) == ("SCHEDULED", 7500)
    assert len(_notified(iot, "w")) == 1


def test_a_thing_removed_and_added_back_is_paced_in_again(sandbox, iot):
    (name,) = _fleet(sandbox, 1)
    iot.create_job(
        jobId="back",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        targetSelection="CONTINUOUS",
        jobExecutionsRolloutConfig={"maximumPerMinute": 1},
    )
    iot.remove_thing_from_thing_group(thingGroupName="fleet", thingName=name)
    execution = iot.describe_job_execution(jobId="back", thingName=name)["execution"]
    assert execution["status"] == "REMOVED"
    iot.add_thing_to_thing_group(thingGroupName="fleet", thingName=name)
    sandbox.engine.advance(60)
    execution = iot.describe_job_execution(jobId="back", thingName=name)["execution"]
    assert (execution["status"], execution["executionNumber"]) == ("QUEUED", 2)


def test_a_rollout_whose_last_batch_notifies_nobody_completes_at_that_batch(
    sandbox, iot, jobs_data
):
    names = _fleet(sandbox, 3)
    iot.create_job(
        jobId="last",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={"maximumPerMinute": 2},
    )
    notified = _notified(iot, "last")
    for name in notified:
        jobs_data.update_job_execution(thingName=name, jobId="last", status="SUCCEEDED")
    (waiting,) = (name for name in names if name not in notified)
    iot.delete_thing(thingName=waiting)
    assert iot.describe_job(jobId="last")["job"]["status"] == "IN_PROGRESS"
    sandbox.engine.advance(60)  # the last batch: its one thing is gone
    job = iot.describe_job(jobId="last")["job"]
    assert job["status"] == "COMPLETED"
    assert _since_start(job["completedAt"]) == 60


def test_a_failure_between_two_windows_is_still_retried(sandbox, iot, jobs_data):
    names = _fleet(sandbox, 3)
    iot.create_job(
        jobId="between",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        schedulingConfig={
            "maintenanceWindows": [{"startTime": "cron(0 14 ? * * *)", "durationInMinutes": 2}]
        },
        jobExecutionsRolloutConfig={"maximumPerMinute": 1},
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "ALL", "numberOfRetries": 1}]},
    )
    sandbox.engine.advance(2 * 3600 + 300)  # 14:05: two notified in the window, now paused
    assert iot.describe_job(jobId="between")["job"]["status"] == "SCHEDULED"
    (first, *_) = _notified(iot, "between")
    assert first in names
    jobs_data.update_job_execution(thingName=first, jobId="between", status="FAILED")
    execution = iot.describe_job_execution(jobId="between", thingName=first)["execution"]
    assert (execution["status"], execution["executionNumber"]) == ("QUEUED", 2)


def _deletable(delete_delay: float) -> JobsEngine:
    engine = JobsEngine(clock=ManualClock(START), cancel_delay=0, delete_delay=delete_delay)
    engine.create_things(["t1", "t2", "t3"])
    targets = [f"{ARN}:thing/{name}" for name in ("t1", "t2", "t3")]
    engine.create_job({"jobId": "j", "targets": targets, "document": DOCUMENT})
    engine.delete_thing({"thingName": "t3"})  # a thing gone before its job: nothing to clean
    engine.advance(5)
    return engine


def _jobs_of(engine: JobsEngine, thing: str) -> list[str]:
    summaries = engine.list_job_executions_for_thing({"thingName": thing})["executionSummaries"]
    return [s["jobId"] for s in summaries]


def test_a_job_deleted_without_delay_leaves_at_once_with_its_executions():
    engine = _deletable(delete_delay=0)
    told: list[str] = []
    engine.subscribe(told.append)
    engine.delete_job({"jobId": "j", "force": True})
    with pytest.raises(ServiceError, match="cannot be found"):
        engine.counts("j")  # gone within the DeleteJob call itself
    assert engine.list_jobs({})["jobs"] == []
    assert (_jobs_of(engine, "t1"), _jobs_of(engine, "t2")) == ([], [])
    assert sorted(told) == ["t1", "t2"]  # their pending jobs changed


def test_a_job_being_deleted_shows_its_status_until_the_delay_ends():
    engine = _deletable(delete_delay=1)
    engine.delete_job({"jobId": "j", "force": True})
    job = engine.describe_job({"jobId": "j"})["job"]
    assert job["status"] == "DELETION_IN_PROGRESS"
    assert job["lastUpdatedAt"] - job["createdAt"] == 5
    assert _jobs_of(engine, "t1") == ["j"]
    engine.advance(0.5)
    assert [j["jobId"] for j in engine.list_jobs({})["jobs"]] == ["j"]
    engine.advance(0.5)
    assert engine.list_jobs({})["jobs"] == []
    assert (_jobs_of(engine, "t1"), _jobs_of(engine, "t2")) == ([], [])
    engine.create_job({"jobId": "j", "targets": [f"{ARN}:thing/t1"], "document": DOCUMENT})
    assert _jobs_of(engine, "t1") == ["j"]  # the id is free again


def test_executions_timing_out_at_the_same_instant_all_time_out():
    engine = JobsEngine(clock=ManualClock(START))
    engine.create_things(["t1", "t2"])
    engine.create_job(
        {
            "jobId": "j",
            "targets": [f"{ARN}:thing/t1", f"{ARN}:thing/t2"],
            "document": DOCUMENT,
            "timeoutConfig": {"inProgressTimeoutInMinutes": 1},
        }
    )
    for name in ("t1", "t2"):
        engine.start_next(name, status_details=None, step_timeout_minutes=None, via="https")
    engine.advance(60)
    assert engine.counts("j")["TIMED_OUT"] == 2
