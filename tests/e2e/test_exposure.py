"""Exposure before a halt, as benchmarks/bench_demo_exposure.py measures it, on a small fleet:
a 200-device canary (its rollout notifies 50 in the first minute) whose devices notice their
job over two minutes and take up to a minute each lets the gates (and the wave job's own
abortConfig) see failures before even that first batch has all started. With devices that act
at once, as the simulated fleet's worker processes did before devices had timing, the whole
batch is exposed before the first observation."""

from __future__ import annotations

from typing import Any

import pytest

from infra.sandbox.fleet import FleetSpec, FleetTiming, GroupSpec, Profile
from orchestrator.demo.runner import RunSettings, run_campaign
from orchestrator.demo.scenarios import CAMPAIGN_FILE, GROUPS

pytestmark = pytest.mark.e2e

CANARY = 200
FIRST_BATCH = 50  # the bundled campaign's canary: 50 a minute at first


def _fleet(timing: FleetTiming) -> FleetSpec:
    canary, *rest = (name for name, _ in GROUPS)
    return FleetSpec(
        groups=(
            GroupSpec(canary, CANARY, {Profile.PROBE_FAILS: 0.3}),
            *(GroupSpec(name, 5) for name in rest),
        ),
        timing=timing,
    )


def _run(timing: FleetTiming) -> Any:
    return run_campaign(
        CAMPAIGN_FILE.read_text(),
        _fleet(timing),
        RunSettings(workers=2),  # in worker processes, where every device used to act at once
        source=str(CAMPAIGN_FILE),
    )


def test_gates_observe_failures_before_the_canary_is_all_exposed() -> None:
    result = _run(FleetTiming())
    assert result.status == "HALTED"
    canary = result.waves[0]
    assert canary["phase"] == "HALTED"
    assert canary["executions"]["failed"] > 0  # the halt was decided on observed failures
    assert 0 < result.exposure < FIRST_BATCH
    assert all(w["launched_after_minutes"] is None for w in result.waves[1:])


def test_devices_that_act_at_once_are_all_exposed_before_the_first_observation() -> None:
    result = _run(FleetTiming.immediate())
    assert result.status == "HALTED"
    assert result.exposure == FIRST_BATCH
