"""Gate math: when a wave's counts are good enough, and when they never will be.

Only `DescribeJob.jobProcessDetails` counts come in, so a verdict costs one API
call per wave whatever the fleet size.

Success rate is judged with the Wilson score interval at a one-sided
`confidence` (default 0.95, z = 1.645):

    p = s / n,   centre = p + z²/2n,   margin = z·sqrt(p(1-p)/n + z²/4n²)
    lower = (centre - margin) / (1 + z²/n),   upper = (centre + margin) / (1 + z²/n)

A gate passes only when `lower >= min_success_rate` (so 3 of 3 successes,
lower = 0.53, does not pass a 0.95 gate; 52 of 52 does), together with the
completed count and completed fraction, and only once the job's rollout is done
(DescribeJob lists no processingTargets): devices a rollout rate has not reached
yet are in no count, so a fraction taken earlier would flatter the wave.
A wave halts early once `upper < min_success_rate` (the gate can no longer be
met with that confidence), or once at least `min_executed` executions
completed and the plain failure rate reaches `max_failure_rate` (`>=`, the same
rule AWS applies through abortConfig; 1.0 turns the rule off, 0 halts on the
first failure).

Failures are FAILED + REJECTED + TIMED_OUT as DescribeJob reports them now; an
execution being retried is counted by its current status. Canceled and removed
executions count for nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from orchestrator.model import Counts, Gate, Halt, OfflinePolicy

__all__ = ["GateVerdict", "evaluate_gate", "failure_rate_reached", "wilson_bounds"]


def wilson_bounds(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score bounds of a success rate at a one-sided `confidence`; (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n ({n}), got {successes}")
    z = NormalDist().inv_cdf(confidence)
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # The bounds bracket p exactly; min/max only absorb floating-point rounding at p = 0 or 1.
    lower = max(0.0, min(p, (centre - margin) / denom))
    upper = min(1.0, max(p, (centre + margin) / denom))
    return lower, upper


def failure_rate_reached(halt: Halt, failures: int, completed: int) -> bool:
    """The halt rule AWS applies through abortConfig: the failure rate *reaches* the maximum.

    AbortCriteria.thresholdPercentage is "the minimum percentage of job execution
    failures that must occur", so the comparison is `>=`. `max_failure_rate` 1.0
    means no failure-rate halt (the planner sends no abortConfig either); 0 means
    zero tolerance: the first failure halts, once `min_executed` completed (a
    wave without failures never halts on this rule).
    """
    if halt.max_failure_rate >= 1.0 or failures == 0 or completed < halt.min_executed:
        return False
    return failures / completed >= halt.max_failure_rate


def canceled_job_reason(halt: Halt, counts: Counts) -> str:
    """Why a running wave's job is CANCELED when this campaign did not cancel it.

    AWS gives an abortConfig cancel no reason this campaign can read, so the counts decide:
    when they reach the halt rule the campaign sent as abortConfig, that rule canceled it.
    """
    if failure_rate_reached(halt, counts.failures, counts.completed):
        return (
            f"the job's abortConfig canceled it: {counts.failures} of {counts.completed} "
            f"finished executions failed, reaching max_failure_rate {halt.max_failure_rate:.1%}"
        )
    return "the job was canceled outside this campaign"


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """The gate's reading of one wave's counts."""

    passed: bool
    halt: bool
    reason: str
    lower: float
    upper: float
    completed_fraction: float


def evaluate_gate(
    gate: Gate,
    halt: Halt,
    counts: Counts,
    *,
    deadline_reached: bool = False,
    offline: OfflinePolicy = OfflinePolicy.IGNORE,
    rollout_done: bool = True,
) -> GateVerdict:
    """Judge a wave: pass, halt, or keep waiting (neither), with the reason in words."""
    n = counts.completed
    lower, upper = wilson_bounds(counts.succeeded, n, gate.confidence)
    denominator = counts.targeted
    if deadline_reached and offline is OfflinePolicy.IGNORE:
        denominator -= counts.queued
    fraction = n / denominator if denominator > 0 else 0.0
    figures = (
        f"{counts.succeeded}/{n} succeeded, success lower bound {lower:.3f} "
        f"upper {upper:.3f} (need {gate.min_success_rate:.3f}), "
        f"completed {fraction:.1%} of {denominator}"
    )
    if failure_rate_reached(halt, counts.failures, n):
        return GateVerdict(
            passed=False,
            halt=True,
            reason=f"failure rate {counts.failures / n:.1%} ({counts.failures}/{n}) reaches "
            f"max_failure_rate {halt.max_failure_rate:.1%}",
            lower=lower,
            upper=upper,
            completed_fraction=fraction,
        )
    if n > 0 and upper < gate.min_success_rate:
        return GateVerdict(
            passed=False,
            halt=True,
            reason=f"gate can no longer pass: {figures}",
            lower=lower,
            upper=upper,
            completed_fraction=fraction,
        )
    missing: list[str] = []
    if n < gate.min_completed:
        missing.append(f"{n} of {gate.min_completed} completed executions")
    if fraction < gate.min_completed_fraction:
        missing.append(f"completed fraction {fraction:.1%} < {gate.min_completed_fraction:.1%}")
    if lower < gate.min_success_rate:
        missing.append(f"success lower bound {lower:.3f} < {gate.min_success_rate:.3f}")
    if not rollout_done:
        # devices not yet notified are not counted at all: the fraction would flatter the wave
        missing.append("the job is still rolling out to its targets")
    if missing:
        return GateVerdict(
            passed=False,
            halt=False,
            reason=f"waiting: {'; '.join(missing)} ({figures})",
            lower=lower,
            upper=upper,
            completed_fraction=fraction,
        )
    return GateVerdict(
        passed=True,
        halt=False,
        reason=f"gate met: {figures}",
        lower=lower,
        upper=upper,
        completed_fraction=fraction,
    )
