from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.feasibility import (
    check_campaign,
    devices_needed,
    max_confidence_for,
    min_devices_for_gate,
)
from orchestrator.gates import evaluate_gate, wilson_bounds
from orchestrator.model import Counts, Gate, Halt
from orchestrator.spec import parse_spec

rates = st.floats(min_value=0.0, max_value=0.9999, allow_nan=False)
confidences = st.floats(min_value=0.5001, max_value=0.9999, allow_nan=False)


@pytest.mark.parametrize(
    ("rate", "confidence", "needed"),
    [
        (0.95, 0.95, 52),  # the gate docstring's example: 52 of 52 pass, 51 of 51 do not
        (0.98, 0.95, 133),
        (0.5, 0.6, 1),
        (0.0, 0.95, 1),
        (0.9, 0.99, 49),
    ],
)
def test_min_devices_at_known_points(rate: float, confidence: float, needed: int) -> None:
    assert min_devices_for_gate(Gate(min_success_rate=rate, confidence=confidence)) == needed


def test_devices_needed_counts_min_completed_too() -> None:
    assert devices_needed(Gate(min_success_rate=0.75, min_completed=10)) == 10
    assert devices_needed(Gate(min_success_rate=0.95, min_completed=10)) == 52
    assert devices_needed(Gate(min_success_rate=1.0)) is None


def test_a_rate_of_one_cannot_be_proven_by_any_fleet() -> None:
    assert min_devices_for_gate(Gate(min_success_rate=1.0)) is None


@given(rate=rates, confidence=confidences)
def test_the_minimum_passes_the_gate_and_one_less_does_not(rate: float, confidence: float) -> None:
    gate = Gate(min_success_rate=rate, confidence=confidence)
    n = min_devices_for_gate(gate)
    if n is None:  # only for rates so close to 1 that no fleet reaches them
        assert wilson_bounds(10**12, 10**12, confidence)[0] < rate
        return
    # the same verdict the gate gives when every device succeeds
    assert evaluate_gate(gate, Halt(), Counts(succeeded=n)).passed
    if n > 1:
        assert not evaluate_gate(gate, Halt(), Counts(succeeded=n - 1)).passed
        assert wilson_bounds(n - 1, n - 1, confidence)[0] < rate


@given(rate=st.floats(min_value=0.01, max_value=0.999), devices=st.integers(1, 10_000))
def test_the_suggested_confidence_lets_that_many_devices_pass(rate: float, devices: int) -> None:
    confidence = max_confidence_for(Gate(min_success_rate=rate), devices)
    if confidence is None:
        assert wilson_bounds(devices, devices, 0.501)[0] < rate
        return
    assert 0.5 < confidence <= 0.999
    assert wilson_bounds(devices, devices, confidence)[0] >= rate
    if confidence < 0.999:
        assert wilson_bounds(devices, devices, round(confidence + 0.001, 3))[0] < rate


CAMPAIGN = """\
name: c
region: us-east-1
endpoint: auto
trust: {add: [amazon-root-ca-1]}
waves:
  - name: canary
    thing_groups: [canary]
    gate: {min_success_rate: 0.95, min_completed: 10}
  - name: wave-1
    thing_groups: [fleet-a, fleet-b]
    gate: {min_success_rate: 0.9, confidence: 0.6}
"""


def _things(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def test_an_unreachable_gate_names_the_numbers_and_the_fixes() -> None:
    spec = parse_spec(CAMPAIGN)
    members = {
        "canary": {"canary": _things("c", 10)},
        "wave-1": {"fleet-a": _things("a", 20), "fleet-b": _things("b", 20)},
    }
    problems = check_campaign(spec, members)
    assert [p.code for p in problems] == ["gate-unreachable"]
    message = problems[0].message
    assert problems[0].wave == "canary"
    assert "needs at least 52 devices; the wave has 10" in message
    assert "10 successes of 10 give a lower bound of 0.787" in message
    assert "a larger group" in message
    assert "lower confidence (0.765 or less)" in message


def test_the_minimum_count_of_devices_plans_cleanly_and_one_less_does_not() -> None:
    spec = parse_spec(CAMPAIGN)
    wave1 = {"fleet-a": _things("a", 5)}
    assert check_campaign(spec, {"canary": {"canary": _things("c", 52)}, "wave-1": wave1}) == []
    assert check_campaign(spec, {"canary": {"canary": _things("c", 51)}, "wave-1": wave1})


def test_min_completed_beyond_the_wave_is_refused() -> None:
    spec = parse_spec(CAMPAIGN.replace("0.95, min_completed: 10", "0.5, min_completed: 10"))
    members = {"canary": {"canary": _things("c", 9)}, "wave-1": {"fleet-a": ["a"]}}
    problems = check_campaign(spec, members)
    assert [p.code for p in problems] == ["too-few-for-min-completed"]
    assert "min_completed 10" in problems[0].message
    assert "has 9 devices" in problems[0].message


def test_a_thing_two_waves_target_is_refused_with_the_groups() -> None:
    spec = parse_spec(CAMPAIGN)
    members = {
        "canary": {"canary": [*_things("c", 60), "shared-1", "shared-2"]},
        "wave-1": {"fleet-a": ["shared-1", "a-1"], "fleet-b": ["shared-2", "b-1"]},
    }
    problems = check_campaign(spec, members)
    assert [p.code for p in problems] == ["overlap"]
    message = problems[0].message
    assert "waves canary and wave-1 both target 2 things (shared-1, shared-2)" in message
    assert "canary and fleet-a" in message
    assert "canary and fleet-b" in message


def test_a_thing_in_two_groups_of_one_wave_counts_once_and_is_no_overlap() -> None:
    spec = parse_spec(CAMPAIGN)
    members = {
        "canary": {"canary": _things("c", 52)},
        "wave-1": {"fleet-a": ["x"], "fleet-b": ["x"]},
    }
    assert check_campaign(spec, members) == []


def test_an_empty_wave_is_refused() -> None:
    spec = parse_spec(CAMPAIGN)
    members = {"canary": {"canary": _things("c", 52)}, "wave-1": {"fleet-a": [], "fleet-b": []}}
    problems = check_campaign(spec, members)
    assert [p.code for p in problems] == ["empty-wave"]
    assert "fleet-a, fleet-b" in problems[0].message
