"""`sandbox provision` under the sandbox's own throttling fault: retried, not given up.

The command's boto3 client retries as the orchestrator's does (botocore's adaptive mode,
10 attempts). The fault's dice are seeded so that one call is throttled six times in a
row: more than botocore's default of 5 attempts allows, well within 10.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from botocore.retries.bucket import TokenBucket
from typer.testing import CliRunner

from infra.sandbox.cli import sandbox_app
from infra.sandbox.runtime import PROVISION_RETRIES, Sandbox

#: With this seed and a throttle rate of 0.6, the eleven calls of `--things 5 --group g`
#: are throttled [6, 0, 0, 6, 0, 0, 0, 2, 0, 0, 0] times before they pass.
SEED = 4
RATE = 0.6


@pytest.fixture
def throttled() -> Iterator[Sandbox]:
    with Sandbox(mqtt=False, throttle_rate=RATE) as sandbox:
        assert sandbox.faults is not None
        sandbox.faults._random.seed(SEED)  # fix the fault's dice for the test
        yield sandbox


def test_provision_waits_out_the_sandboxs_throttling(
    throttled: Sandbox, monkeypatch: pytest.MonkeyPatch
):
    waits: list[float] = []
    paced: list[float] = []
    # botocore sleeps between attempts in its endpoint, and adaptive mode's rate limiter
    # waits for tokens after throttling: record both instead of waiting them out.
    monkeypatch.setattr("botocore.endpoint.time.sleep", waits.append)

    def no_wait(bucket: TokenBucket, amount: float) -> float:
        paced.append(amount)
        return 0.0

    monkeypatch.setattr(TokenBucket, "_sleep_amount", no_wait)
    result = CliRunner().invoke(
        sandbox_app,
        [
            "provision",
            "--things",
            "5",
            "--group",
            "g",
            "--endpoint-url",
            throttled.control_plane_url,
            "--output",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    provisioned = json.loads(result.stdout.strip().splitlines()[-1])
    assert provisioned["things"] == [f"device-{i:05d}" for i in range(1, 6)]
    members = throttled.engine.list_things_in_thing_group({"thingGroupName": "g"})
    assert len(members["things"]) == 5
    assert len(waits) >= 12  # the throttled attempts were retried


def test_provision_retries_as_the_orchestrator_does():
    from orchestrator.aws.iot import RETRY_CONFIG

    assert PROVISION_RETRIES.retries is not None
    assert RETRY_CONFIG.retries is not None
    assert PROVISION_RETRIES.retries["mode"] == RETRY_CONFIG.retries["mode"] == "adaptive"
    # botocore rewrites max_attempts (retries) as total_max_attempts (first call included)
    # in the Config it is given; compare the totals.
    totals = [
        c.get("total_max_attempts", c.get("max_attempts", 0) + 1)
        for c in (PROVISION_RETRIES.retries, RETRY_CONFIG.retries)
    ]
    assert totals[0] == totals[1] >= 10
