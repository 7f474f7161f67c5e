from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.gates import evaluate_gate, wilson_bounds
from orchestrator.model import Counts, Gate, Halt, OfflinePolicy

GATE95 = Gate(min_success_rate=0.95, min_completed=1)
NO_HALT = Halt()


@pytest.mark.parametrize(
    ("succeeded", "failed", "passed"),
    [
        (3, 0, False),  # 3 of 3 is not evidence of 95%
        (10, 0, False),
        (51, 0, False),
        (52, 0, True),  # n / (n + z^2) >= 0.95 from n = 52 at z = 1.645
        (200, 2, True),
        (100, 4, False),
    ],
)
def test_small_samples_need_the_wilson_lower_bound(succeeded, failed, passed) -> None:
    verdict = evaluate_gate(GATE95, NO_HALT, Counts(succeeded=succeeded, failed=failed))
    assert verdict.passed is passed
    assert not verdict.halt


@pytest.mark.parametrize(
    ("counts", "halt", "expect_halt", "reason"),
    [
        (Counts(failed=1), NO_HALT, True, "can no longer pass"),  # upper 0.73 < 0.95
        (Counts(succeeded=9, failed=1), NO_HALT, False, "waiting"),  # upper 0.97
        (Counts(succeeded=8, failed=2), NO_HALT, True, "can no longer pass"),
        (Counts(succeeded=94, failed=6), Halt(max_failure_rate=0.05), True, "failure rate 6.0%"),
        # AWS's abort rule: the failure rate *reaches* the maximum (>=)
        (Counts(succeeded=95, rejected=5), Halt(max_failure_rate=0.05), True, "reaches"),
        (Counts(succeeded=96, rejected=4), Halt(max_failure_rate=0.05), False, "waiting"),
        # 0 is zero tolerance: the first failure halts, no failure never does
        (Counts(succeeded=199, failed=1), Halt(max_failure_rate=0.0), True, "reaches"),
        (Counts(succeeded=200), Halt(max_failure_rate=0.0), False, "gate met"),
        (
            Counts(succeeded=3, timed_out=1),
            Halt(max_failure_rate=0.05, min_executed=10),
            True,
            "can no longer",
        ),
    ],
)
def test_early_halt(counts, halt, expect_halt, reason) -> None:
    verdict = evaluate_gate(GATE95, halt, counts)
    assert verdict.halt is expect_halt
    assert reason in verdict.reason


@pytest.mark.parametrize(
    ("gate", "counts", "deadline", "offline", "passed"),
    [
        (Gate(0.5, min_completed=10), Counts(succeeded=9), False, OfflinePolicy.IGNORE, False),
        (Gate(0.5, min_completed=10), Counts(succeeded=10), False, OfflinePolicy.IGNORE, True),
        (
            Gate(0.5, min_completed_fraction=0.9),
            Counts(succeeded=80, queued=20),
            False,
            OfflinePolicy.IGNORE,
            False,
        ),
        # at the deadline never-started devices leave the denominator unless they block
        (
            Gate(0.5, min_completed_fraction=0.9),
            Counts(succeeded=80, queued=20),
            True,
            OfflinePolicy.IGNORE,
            True,
        ),
        (
            Gate(0.5, min_completed_fraction=0.9),
            Counts(succeeded=80, queued=20),
            True,
            OfflinePolicy.BLOCK,
            False,
        ),
        # devices still running at the deadline always count
        (
            Gate(0.5, min_completed_fraction=0.9),
            Counts(succeeded=80, in_progress=20),
            True,
            OfflinePolicy.IGNORE,
            False,
        ),
        # canceled and removed executions count for nothing
        (
            Gate(0.5, min_completed_fraction=1.0),
            Counts(succeeded=80, canceled=5, removed=3),
            False,
            OfflinePolicy.IGNORE,
            True,
        ),
    ],
)
def test_completed_count_fraction_and_deadline(gate, counts, deadline, offline, passed) -> None:
    verdict = evaluate_gate(gate, NO_HALT, counts, deadline_reached=deadline, offline=offline)
    assert verdict.passed is passed


def test_a_wave_still_rolling_out_does_not_pass_but_can_halt() -> None:
    gate = Gate(0.5, min_completed_fraction=0.9)
    rolling = evaluate_gate(gate, NO_HALT, Counts(succeeded=100), rollout_done=False)
    assert not rolling.passed
    assert "rolling out" in rolling.reason
    assert evaluate_gate(gate, NO_HALT, Counts(succeeded=100), rollout_done=True).passed
    failing = evaluate_gate(GATE95, NO_HALT, Counts(failed=3), rollout_done=False)
    assert failing.halt


def test_no_executions_is_neither_pass_nor_halt() -> None:
    verdict = evaluate_gate(GATE95, NO_HALT, Counts(queued=5))
    assert (verdict.passed, verdict.halt) == (False, False)
    assert wilson_bounds(0, 0, 0.95) == (0.0, 1.0)


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="between 0 and n"):
        wilson_bounds(4, 3, 0.95)


@given(st.integers(0, 500), st.integers(0, 500), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_bounds_bracket_the_point_estimate(s, f, conf) -> None:
    n = s + f
    lo, hi = wilson_bounds(s, n, conf)
    if n:
        assert 0.0 <= lo <= s / n <= hi <= 1.0
        wider_lo, wider_hi = wilson_bounds(s, n, 0.999)
        assert wider_lo <= lo + 1e-12
        assert wider_hi >= hi - 1e-12


def test_max_failure_rate_one_turns_the_failure_rate_halt_off() -> None:
    """1.0 means no failure-rate halt (and no abortConfig), even when every execution failed."""
    anything = Gate(min_success_rate=0.0, min_completed=1)
    verdict = evaluate_gate(anything, Halt(max_failure_rate=1.0, min_executed=1), Counts(failed=20))
    assert not verdict.halt
