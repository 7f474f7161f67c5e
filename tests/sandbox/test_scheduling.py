"""CreateJob's schedulingConfig on a manual clock: scheduled start, end behaviours, maintenance
windows, the documented validation errors, and the cron subset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from infra.sandbox import decisions as d
from infra.sandbox.engine import JobsEngine
from infra.sandbox.errors import ServiceError
from infra.sandbox.scheduling import MaintenanceWindows, parse_cron
from job_documents.clock import ManualClock

from .conftest import START

ARN = "arn:aws:iot:us-east-1:123456789012"
GROUP = f"{ARN}:thinggroup/fleet"
DOCUMENT = json.dumps({"operation": "rotate"})


def at(**delta: float) -> str:
    return (START + timedelta(**delta)).strftime("%Y-%m-%dT%H:%M")


def fleet(sandbox, size: int) -> list[str]:
    return list(sandbox.provision(size, [("fleet", None)], prefix="fleet").things)


def job(iot, job_id: str) -> dict:
    return iot.describe_job(jobId=job_id)["job"]


def notified(iot, job_id: str) -> int:
    counts = job(iot, job_id)["jobProcessDetails"]
    return sum(v for k, v in counts.items() if k.startswith("numberOf"))


def finish(jobs_data, names: list[str], status: str = "SUCCEEDED") -> int:
    done = 0
    for name in names:
        for pending in jobs_data.get_pending_job_executions(thingName=name)["queuedJobs"]:
            jobs_data.update_job_execution(thingName=name, jobId=pending["jobId"], status=status)
            done += 1
    return done


def test_a_job_with_a_start_time_is_scheduled_until_then_and_rolls_out_nothing(
    sandbox, iot, jobs_data
):
    names = fleet(sandbox, 3)
    iot.create_job(
        jobId="later",
        targets=[GROUP],
        document=DOCUMENT,
        schedulingConfig={"startTime": at(hours=1)},
    )
    scheduled = job(iot, "later")
    assert scheduled["status"] == "SCHEDULED"
    assert scheduled["schedulingConfig"] == {"startTime": at(hours=1)}
    assert notified(iot, "later") == 0
    assert [j["jobId"] for j in iot.list_jobs(status="SCHEDULED")["jobs"]] == ["later"]
    assert finish(jobs_data, names) == 0
    sandbox.engine.advance(59 * 60)
    assert job(iot, "later")["status"] == "SCHEDULED"
    sandbox.engine.advance(60)
    started = job(iot, "later")
    assert started["status"] == "IN_PROGRESS"
    assert started["jobProcessDetails"]["numberOfQueuedThings"] == 3
    assert finish(jobs_data, names) == 3
    assert job(iot, "later")["status"] == "COMPLETED"


def test_a_scheduled_job_takes_the_group_members_of_its_start_time(sandbox, iot):
    fleet(sandbox, 2)
    iot.create_job(
        jobId="later",
        targets=[GROUP],
        document=DOCUMENT,
        schedulingConfig={"startTime": at(hours=1)},
    )
    iot.create_thing(thingName="late")
    iot.add_thing_to_thing_group(thingGroupName="fleet", thingName="late")
    sandbox.engine.advance(3600)
    assert job(iot, "later")["jobProcessDetails"]["numberOfQueuedThings"] == 3


def test_canceling_a_scheduled_job_means_it_never_starts(sandbox, iot):
    fleet(sandbox, 2)
    iot.create_job(
        jobId="later",
        targets=[GROUP],
        document=DOCUMENT,
        schedulingConfig={"startTime": at(hours=1)},
    )
    iot.cancel_job(jobId="later")
    sandbox.engine.advance(7200)
    assert job(iot, "later")["status"] == "CANCELED"
    assert notified(iot, "later") == 0


@pytest.mark.parametrize(
    ("behavior", "status", "canceled", "in_progress", "queued"),
    [
        (None, "IN_PROGRESS", 0, 1, 28),
        ("STOP_ROLLOUT", "IN_PROGRESS", 0, 1, 28),
        ("CANCEL", "CANCELED", 28, 1, 0),
        ("FORCE_CANCEL", "CANCELED", 29, 0, 0),
    ],
)
def test_end_time_applies_the_end_behavior(
    sandbox, iot, jobs_data, behavior, status, canceled, in_progress, queued
):
    fleet(sandbox, 40)
    config = {"endTime": at(minutes=30)}
    if behavior:
        config["endBehavior"] = behavior
    iot.create_job(
        jobId="ends",
        targets=[GROUP],
        document=DOCUMENT,
        schedulingConfig=config,
        jobExecutionsRolloutConfig={"maximumPerMinute": 1},
    )
    sandbox.engine.advance(120)  # one thing a minute: three notified
    things = [
        s["thingArn"].rsplit("/", 1)[1]
        for s in iot.list_job_executions_for_job(jobId="ends")["executionSummaries"]
    ]
    assert len(things) == 3
    jobs_data.update_job_execution(thingName=things[0], jobId="ends", status="IN_PROGRESS")
    jobs_data.update_job_execution(thingName=things[1], jobId="ends", status="SUCCEEDED")
    sandbox.engine.advance(28 * 60 - 1)  # 12:29:59, thirty notified
    assert notified(iot, "ends") == 30
    assert job(iot, "ends")["status"] == "IN_PROGRESS"
    sandbox.engine.advance(1)  # 12:30: endTime, before the batch due at the same moment
    assert job(iot, "ends")["status"] == status
    sandbox.engine.advance(d.CANCEL_PROPAGATION_SECONDS)  # executions are canceled after
    ended = job(iot, "ends")
    counts = ended["jobProcessDetails"]
    assert ended["status"] == status
    assert counts["numberOfCanceledThings"] == canceled
    assert counts["numberOfInProgressThings"] == in_progress
    assert counts["numberOfQueuedThings"] == queued
    assert counts["numberOfSucceededThings"] == 1
    assert "processingTargets" not in counts
    assert ended.get("reasonCode") == (
        "SCHEDULED_END_TIME" if behavior in ("CANCEL", "FORCE_CANCEL") else None
    )
    sandbox.engine.advance(3600)  # the other ten are never notified
    assert notified(iot, "ends") == 30
    if behavior in (None, "STOP_ROLLOUT"):
        jobs_data.update_job_execution(thingName=things[0], jobId="ends", status="SUCCEEDED")
        assert finish(jobs_data, [f"fleet-{i:05d}" for i in range(1, 41)]) == 28
        assert job(iot, "ends")["status"] == "COMPLETED"


def test_executions_are_notified_only_inside_a_maintenance_window(sandbox, iot, jobs_data):
    names = fleet(sandbox, 5)
    # START is Sunday 12:00 UTC; the window opens daily at 14:00 for two minutes
    iot.create_job(
        jobId="windowed",
        targets=[GROUP],
        document=DOCUMENT,
        schedulingConfig={
            "maintenanceWindows": [{"startTime": "cron(0 14 ? * * *)", "durationInMinutes": 2}]
        },
        jobExecutionsRolloutConfig={"maximumPerMinute": 1},
    )
    described = job(iot, "windowed")
    assert described["status"] == "SCHEDULED"  # created outside its window
    assert notified(iot, "windowed") == 0
    assert described["jobProcessDetails"]["processingTargets"] == [GROUP]
    assert [r["startTime"] for r in described["scheduledJobRollouts"]] == [
        at(hours=2, days=day) for day in range(7)
    ]
    sandbox.engine.advance(2 * 3600 - 1)
    assert notified(iot, "windowed") == 0
    sandbox.engine.advance(1)  # 14:00: the window opens
    assert notified(iot, "windowed") == 1
    assert job(iot, "windowed")["status"] == "IN_PROGRESS"
    sandbox.engine.advance(60)  # 14:01
    assert notified(iot, "windowed") == 2
    sandbox.engine.advance(60)  # 14:02: closed
    assert notified(iot, "windowed") == 2
    assert job(iot, "windowed")["status"] == "SCHEDULED"
    assert finish(jobs_data, names) == 2  # devices still run what they were given
    sandbox.engine.advance(24 * 3600 - 121)  # next day 13:59:59
    assert notified(iot, "windowed") == 2
    sandbox.engine.advance(1 + 60)  # next day 14:00 and 14:01
    assert notified(iot, "windowed") == 4
    sandbox.engine.advance(24 * 3600)
    assert notified(iot, "windowed") == 5
    assert finish(jobs_data, names) == 3
    assert job(iot, "windowed")["status"] == "COMPLETED"


def test_without_a_rollout_rate_a_window_notifies_every_thing_when_it_opens(sandbox, iot):
    fleet(sandbox, 4)
    iot.create_job(
        jobId="w",
        targets=[GROUP],
        document=DOCUMENT,
        schedulingConfig={
            "startTime": at(hours=1),
            "maintenanceWindows": [{"startTime": "cron(30 13 ? * SUN *)", "durationInMinutes": 60}],
        },
    )
    assert job(iot, "w")["status"] == "SCHEDULED"
    assert job(iot, "w")["scheduledJobRollouts"][1]["startTime"] == at(days=7, hours=1, minutes=30)
    sandbox.engine.advance(3600)  # 13:00 started, but outside the window
    assert job(iot, "w")["status"] == "SCHEDULED"
    assert notified(iot, "w") == 0
    sandbox.engine.advance(45 * 60)  # 13:45: inside the window that opened at 13:30
    assert notified(iot, "w") == 4
    assert job(iot, "w")["status"] == "IN_PROGRESS"


def test_a_scheduled_windowed_job_survives_a_state_export_and_import():
    clock = ManualClock(START)
    engine = JobsEngine(clock=clock)
    engine.create_things(["a", "b"])
    engine.create_thing_group({"thingGroupName": "fleet"})
    engine.add_things_to_group("fleet", ["a", "b"])
    engine.create_job(
        {
            "jobId": "j",
            "targets": [GROUP],
            "document": DOCUMENT,
            "schedulingConfig": {
                "startTime": at(hours=1),
                "endTime": at(days=3),
                "endBehavior": "CANCEL",
                "maintenanceWindows": [{"startTime": "cron(0 14 ? * * *)", "durationInMinutes": 5}],
            },
        }
    )
    restored = JobsEngine(clock=clock)
    restored.import_state(json.loads(json.dumps(engine.export_state())))
    assert restored.describe_job({"jobId": "j"})["job"]["status"] == "SCHEDULED"
    restored.advance(2 * 3600)
    assert restored.counts("j")["QUEUED"] == 2
    restored.advance(3 * 86400)
    assert restored.describe_job({"jobId": "j"})["job"]["status"] == "CANCELED"


def test_a_job_paused_between_windows_resumes_after_a_state_export_and_import():
    clock = ManualClock(START)
    engine = JobsEngine(clock=clock)
    engine.create_things(["a", "b", "c"])
    engine.create_thing_group({"thingGroupName": "fleet"})
    engine.add_things_to_group("fleet", ["a", "b", "c"])
    engine.create_job(
        {
            "jobId": "j",
            "targets": [GROUP],
            "document": DOCUMENT,
            "jobExecutionsRolloutConfig": {"maximumPerMinute": 1},
            "schedulingConfig": {
                "maintenanceWindows": [
                    {"startTime": "cron(0/10 * ? * * *)", "durationInMinutes": 1}
                ],
            },
        }
    )
    engine.advance(60)  # 12:01: the window closed after one thing
    assert engine.describe_job({"jobId": "j"})["job"]["status"] == "SCHEDULED"
    restored = JobsEngine(clock=clock)
    restored.import_state(json.loads(json.dumps(engine.export_state())))
    assert restored.describe_job({"jobId": "j"})["job"]["status"] == "SCHEDULED"
    assert restored.counts("j")["QUEUED"] == 1
    restored.advance(9 * 60)  # 12:10: the next window
    assert restored.describe_job({"jobId": "j"})["job"]["status"] == "IN_PROGRESS"
    assert restored.counts("j")["QUEUED"] == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"startTime": at(minutes=10)}, "at least 30 minutes from now"),
        ({"startTime": at(days=63)}, "more than 62 days ahead"),
        ({"startTime": at(hours=1), "endTime": at(hours=1, minutes=20)}, "30 minutes after"),
        ({"endTime": at(minutes=20)}, "30 minutes after the current time"),
        ({"endTime": at(days=800)}, "more than two years"),
        ({"startTime": "next tuesday"}, "is not a date and time"),
        (
            {"maintenanceWindows": [{"startTime": "cron(0 2 * * *)", "durationInMinutes": 60}]},
            "six-field",
        ),
        (
            {"maintenanceWindows": [{"startTime": "cron(0 2 1 * MON *)", "durationInMinutes": 60}]},
            "exactly one of",
        ),
        (
            {"maintenanceWindows": [{"startTime": "cron(0 2 L * ? *)", "durationInMinutes": 60}]},
            "L, W or #",
        ),
        (
            {"maintenanceWindows": [{"startTime": "cron(0 25 ? * * *)", "durationInMinutes": 60}]},
            "outside 0-23",
        ),
        (
            {"maintenanceWindows": [{"startTime": "0 2 ? * * *", "durationInMinutes": 60}]},
            "six-field",
        ),
        (
            {"maintenanceWindows": [{"startTime": "cron(0 2 ? * * *)", "durationInMinutes": 1431}]},
            "less than or equal to 1430",
        ),
        ({"endBehavior": "EXPLODE"}, "enum value set"),
    ],
)
def test_invalid_scheduling_configs_are_refused_with_the_reason(sandbox, iot, config, message):
    fleet(sandbox, 1)
    with pytest.raises(ClientError) as caught:
        iot.create_job(jobId="bad", targets=[GROUP], document=DOCUMENT, schedulingConfig=config)
    error = caught.value.response["Error"]
    assert error["Code"] == "InvalidRequestException"
    assert message in error["Message"]
    assert iot.list_jobs()["jobs"] == []


def test_end_behavior_without_end_time_does_not_apply(sandbox, iot, jobs_data):
    names = fleet(sandbox, 2)
    iot.create_job(
        jobId="j", targets=[GROUP], document=DOCUMENT, schedulingConfig={"endBehavior": "CANCEL"}
    )
    sandbox.engine.advance(10 * 86400)
    assert job(iot, "j")["status"] == "IN_PROGRESS"
    assert finish(jobs_data, names) == 2
    assert job(iot, "j")["status"] == "COMPLETED"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("cron(0 2 ? * * *)", utc(2026, 3, 1, 12, 0), utc(2026, 3, 2, 2, 0)),
        ("cron(0 2 ? * * *)", utc(2026, 3, 1, 2, 0), utc(2026, 3, 1, 2, 0)),
        ("cron(30 22 ? * SAT *)", utc(2026, 3, 1, 12, 0), utc(2026, 3, 7, 22, 30)),
        ("cron(0 0 ? * MON-FRI *)", utc(2026, 3, 7, 1, 0), utc(2026, 3, 9, 0, 0)),
        ("cron(0 3 1 * ? *)", utc(2026, 3, 1, 4, 0), utc(2026, 4, 1, 3, 0)),
        ("cron(15 9 15 JAN,JUL ? *)", utc(2026, 3, 1, 0, 0), utc(2026, 7, 15, 9, 15)),
        ("cron(0/20 8-9 ? * 2 *)", utc(2026, 3, 2, 8, 41), utc(2026, 3, 2, 9, 0)),
        ("cron(0 12 31 * ? *)", utc(2026, 4, 1, 0, 0), utc(2026, 5, 31, 12, 0)),
        ("cron(0 12 1 1 ? 2025)", utc(2026, 1, 1, 0, 0), None),
    ],
)
def test_cron_next_start(expression, after, expected):
    assert parse_cron(expression).next_start(after) == expected


def test_window_is_open_from_its_start_for_its_duration():
    windows = MaintenanceWindows.parse(
        [{"startTime": "cron(50 23 ? * * *)", "durationInMinutes": 20}]
    )
    opened = utc(2026, 3, 1, 23, 50).timestamp()
    assert windows.open_until(opened - 1) is None
    assert windows.open_until(opened) == opened + 1200
    assert windows.open_until(opened + 1199) == opened + 1200  # across midnight
    assert windows.open_until(opened + 1200) is None
    assert windows.next_open(opened + 1) == opened + 86400


def test_refusals_are_service_errors():
    with pytest.raises(ServiceError):
        parse_cron("cron(0 2 ? * MON#2 *)")


def test_the_aws_cli_schedules_a_job_with_a_window(sandbox):
    fleet(sandbox, 1)
    env = os.environ | {
        "AWS_ACCESS_KEY_ID": "dummy",
        "AWS_SECRET_ACCESS_KEY": "dummy",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    config = {
        "startTime": at(hours=1),
        "endTime": at(days=2),
        "endBehavior": "CANCEL",
        "maintenanceWindows": [{"startTime": "cron(0 14 ? * * *)", "durationInMinutes": 30}],
    }
    created = subprocess.run(
        [
            str(Path(sys.executable).parent / "aws"),
            "iot",
            "create-job",
            "--job-id",
            "from-cli",
            "--targets",
            GROUP,
            "--document",
            DOCUMENT,
            "--scheduling-config",
            json.dumps(config),
            "--endpoint-url",
            sandbox.control_plane_url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    described = sandbox.iot_client().describe_job(jobId="from-cli")["job"]
    assert described["status"] == "SCHEDULED"
    assert described["schedulingConfig"] == config
