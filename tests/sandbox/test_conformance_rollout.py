"""Conformance of the sandbox's rollout with AWS IoT Jobs: the default pace, isConcurrent and
the active-job limit.

Each test drives the sandbox through boto3 over HTTP (or the engine with a manual clock) and is
cited in the behaviour table of docs/sandbox.md beside the AWS page it follows; the other
conformance rows are in test_conformance.py.
"""

from __future__ import annotations

import pytest

from infra.sandbox import decisions as d
from infra.sandbox.engine import JobsEngine
from infra.sandbox.runtime import Sandbox
from job_documents.clock import ManualClock

from .conftest import START
from .test_conformance import ARN, DOCUMENT, fleet


# -- rollout: no jobExecutionsRolloutConfig means AWS's default pace ----------------------------
def _queued(iot, job_id: str) -> int:
    return iot.describe_job(jobId=job_id)["job"]["jobProcessDetails"]["numberOfQueuedThings"]


def test_a_job_without_a_rollout_config_is_paced_at_1000_things_a_minute(sandbox: Sandbox, iot):
    sandbox.provision(3000, [("fleet", 3000)])
    iot.create_job(jobId="default", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    job = iot.describe_job(jobId="default")["job"]
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == d.DEFAULT_PER_MINUTE == 1000
    assert job["isConcurrent"] is True
    assert "jobExecutionsRolloutConfig" not in job  # the default is not shown as a setting
    sandbox.engine.advance(59)
    assert _queued(iot, "default") == 1000
    sandbox.engine.advance(1)
    assert _queued(iot, "default") == 2000
    sandbox.engine.advance(60)
    assert _queued(iot, "default") == 3000
    assert iot.describe_job(jobId="default")["job"]["isConcurrent"] is False


def test_an_explicit_rollout_rate_is_followed_instead_of_the_default(sandbox: Sandbox, iot):
    sandbox.provision(1200, [("fleet", 1200)])
    iot.create_job(
        jobId="slow",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={"maximumPerMinute": 500},
    )
    assert _queued(iot, "slow") == 500
    sandbox.engine.advance(60)
    assert _queued(iot, "slow") == 1000
    sandbox.engine.advance(60)
    assert _queued(iot, "slow") == 1200


def _continuous(engine: JobsEngine, things: int) -> None:
    engine.create_things([f"t{i}" for i in range(things)])
    engine.create_thing_group({"thingGroupName": "fleet"})
    engine.add_things_to_group("fleet", [f"t{i}" for i in range(3)])
    engine.create_job(
        {
            "jobId": "cont",
            "targets": [f"{ARN}:thinggroup/fleet"],
            "document": DOCUMENT,
            "targetSelection": "CONTINUOUS",
        }
    )


def test_a_thing_joining_between_default_batches_uses_what_is_left_of_the_minute():
    """The default pace is a ceiling per minute: a late thing goes at once while it allows."""
    engine = JobsEngine(clock=ManualClock(START), default_per_minute=2)
    _continuous(engine, 5)
    assert engine.counts("cont")["QUEUED"] == 2  # the first minute's two
    engine.advance(60)
    assert engine.counts("cont")["QUEUED"] == 3  # one of this minute's two used
    engine.advance(10)
    engine.add_things_to_group("fleet", ["t3"])
    assert engine.counts("cont")["QUEUED"] == 4  # the minute's second: at once
    engine.add_things_to_group("fleet", ["t4"])
    assert engine.counts("cont")["QUEUED"] == 4  # the minute is used up: the next batch
    engine.advance(49)
    assert engine.counts("cont")["QUEUED"] == 4
    engine.advance(1)
    assert engine.counts("cont")["QUEUED"] == 5


def test_the_default_pace_can_be_turned_off_for_instant_fan_out():
    engine = JobsEngine(clock=ManualClock(START), default_per_minute=None)
    engine.create_things([f"t{i}" for i in range(1500)])
    engine.create_thing_group({"thingGroupName": "big"})
    engine.add_things_to_group("big", [f"t{i}" for i in range(1500)])
    engine.create_job({"jobId": "big", "targets": [f"{ARN}:thinggroup/big"], "document": DOCUMENT})
    assert engine.counts("big")["QUEUED"] == 1500
    for wrong in (0, d.MAX_PER_MINUTE + 1):
        with pytest.raises(ValueError, match="default_per_minute"):
            JobsEngine(clock=ManualClock(START), default_per_minute=wrong)


def test_is_concurrent_while_the_job_rolls_out(sandbox: Sandbox, iot):
    fleet(iot, 3)
    iot.create_job(
        jobId="paced",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        jobExecutionsRolloutConfig={"maximumPerMinute": 2},
    )
    assert iot.describe_job(jobId="paced")["job"]["isConcurrent"] is True
    assert iot.list_jobs()["jobs"][0]["isConcurrent"] is True
    sandbox.engine.advance(60)
    assert iot.describe_job(jobId="paced")["job"]["isConcurrent"] is False
    assert iot.list_jobs()["jobs"][0]["isConcurrent"] is False


def test_the_active_job_limit_counts_continuous_jobs_too(sandbox: Sandbox, iot):
    sandbox.engine.create_things(["busy"])
    for i in range(100):
        sandbox.engine.create_job(
            {
                "jobId": f"c{i}",
                "targets": [f"{ARN}:thing/busy"],
                "document": DOCUMENT,
                "targetSelection": "CONTINUOUS" if i % 2 else "SNAPSHOT",
            }
        )
    for selection in ("SNAPSHOT", "CONTINUOUS"):
        with pytest.raises(iot.exceptions.LimitExceededException, match="At most 100 jobs"):
            iot.create_job(
                jobId="one-too-many",
                targets=[f"{ARN}:thing/busy"],
                document=DOCUMENT,
                targetSelection=selection,
            )
    iot.cancel_job(jobId="c1")  # a continuous one
    iot.create_job(jobId="room-again", targets=[f"{ARN}:thing/busy"], document=DOCUMENT)
