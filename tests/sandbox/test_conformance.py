"""Conformance of the sandbox with AWS IoT Jobs where it used to be kinder than AWS.

Each test drives the sandbox through boto3 over HTTP, as a user would, and is
cited in the behaviour table of docs/sandbox.md beside the AWS page it follows.
"""

from __future__ import annotations

import json

import pytest

from orchestrator.gates import failure_rate_reached
from orchestrator.model import Halt
from orchestrator.planner import abort_threshold

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
    assert job["jobProcessDetails"]["numberOfCanceledThings"] == 2


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
