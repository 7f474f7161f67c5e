"""Can this campaign succeed at all? The checks `plan` and `start` run before anything exists.

A campaign whose gates its fleet cannot reach halts even when every device
succeeds: ten successes out of ten give a Wilson lower bound of 0.787 at 95 %
confidence, so a 0.95 gate over a ten-device canary never passes. These checks
find that, and the other campaign files that cannot work, from the spec and
the membership of each wave's thing groups, before a job is created:

- a gate its wave's device count cannot reach (`min_devices_for_gate` uses the
  very `wilson_bounds` and comparison the gate uses, so "needs at least 52
  devices" is the count at which 52 successes of 52 pass, and 51 of 51 do not);
- a wave with fewer devices than the gate's `min_completed`;
- a thing two waves target (the migration would run on it twice and count in
  two waves' budgets);
- an empty wave.

Pure: spec and membership in, problems out. The CLI gathers the membership
through the AWS adapter.

Invariant: `min_devices_for_gate(gate) = n` means `n` successes of `n` pass the
gate's Wilson test and `n - 1` of `n - 1` do not (or `n == 1`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from statistics import NormalDist

from orchestrator.gates import wilson_bounds
from orchestrator.model import CampaignSpec, Gate, WaveSpec

__all__ = [
    "Problem",
    "check_campaign",
    "devices_needed",
    "max_confidence_for",
    "min_devices_for_gate",
    "wave_devices",
]

# Past this many devices a gate is unreachable for any real fleet (AWS IoT's default quota
# is far below): the search stops here rather than running away for rates near 1.
MAX_DEVICES = 10**12
_SAMPLE = 3  # things named in an overlap message


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason the campaign cannot succeed, in words that name the numbers and the fix."""

    code: str  # "gate-unreachable", "too-few-for-min-completed", "overlap", "empty-wave"
    wave: str
    message: str


def _all_succeed_passes(n: int, gate: Gate) -> bool:
    # The gate's own test (gates.evaluate_gate: `lower < min_success_rate` keeps it waiting).
    lower, _ = wilson_bounds(n, n, gate.confidence)
    return lower >= gate.min_success_rate


def min_devices_for_gate(gate: Gate) -> int | None:
    """The fewest devices whose all succeeding passes the gate's Wilson test, or None.

    With every device succeeding the lower bound is n / (n + z²), so the answer
    is near r·z² / (1 - r); the closed form is only the starting point, the
    result is settled with `wilson_bounds` itself. None when no fleet can pass
    (a rate of 1 at a confidence above one half, or more than `MAX_DEVICES`).
    """
    r = gate.min_success_rate
    if r >= 1.0:
        return None
    z = NormalDist().inv_cdf(gate.confidence)
    guess = max(1, math.ceil(r * z * z / (1.0 - r)))
    if guess > MAX_DEVICES:
        return None
    n = guess
    while n > 1 and _all_succeed_passes(n - 1, gate):
        n -= 1
    steps = 0
    while not _all_succeed_passes(n, gate):
        n += 1
        steps += 1
        if steps > 1000:  # noqa: PLR2004 - rounding moves the answer by one or two at most
            return None
    return n


def devices_needed(gate: Gate) -> int | None:
    """The fewest devices that can pass the gate: its Wilson minimum and its `min_completed`."""
    needed = min_devices_for_gate(gate)
    return None if needed is None else max(needed, gate.min_completed)


def max_confidence_for(gate: Gate, devices: int) -> float | None:
    """The highest confidence (to 0.001, above one half) at which `devices` successes pass."""
    r = gate.min_success_rate
    if devices <= 0 or r >= 1.0:
        return None
    z = math.sqrt(devices * (1.0 - r) / r) if r > 0 else math.inf
    if math.isinf(z):
        return 0.999
    confidence = min(0.999, math.floor(NormalDist().cdf(z) * 1000) / 1000)
    for _ in range(10):
        if confidence <= 0.5:  # noqa: PLR2004 - the spec's lowest confidence (exclusive)
            return None
        lower, _ = wilson_bounds(devices, devices, confidence)
        if lower >= r:
            return confidence
        confidence = round(confidence - 0.001, 3)
    return None


def wave_devices(members: Mapping[str, Collection[str]]) -> frozenset[str]:
    """The distinct things a wave's groups hold (a thing in two of its groups runs once)."""
    found: set[str] = set()
    for things in members.values():
        found.update(things)
    return frozenset(found)


def _gate_problems(wave: WaveSpec, devices: int) -> list[Problem]:
    gate = wave.gate
    problems: list[Problem] = []
    if gate.min_completed > devices:
        problems.append(
            Problem(
                "too-few-for-min-completed",
                wave.name,
                f"wave {wave.name}: its gate needs min_completed {gate.min_completed} completed "
                f"executions; the wave has {devices} devices. Fix: a larger group, or "
                f"min_completed {devices} or less.",
            )
        )
    needed = min_devices_for_gate(gate)
    if needed is not None and needed <= devices:
        return problems
    best, _ = wilson_bounds(devices, devices, gate.confidence)
    head = (
        f"wave {wave.name}: its gate (min_success_rate {gate.min_success_rate:g} at confidence "
        f"{gate.confidence:g}) "
    )
    if needed is None:
        head += "cannot be met by any number of devices"
    else:
        head += f"needs at least {needed} devices; the wave has {devices}"
    fixes = [] if needed is None else ["a larger group"]
    fixes.append(
        f"a lower min_success_rate ({devices} successes of {devices} give a lower bound of "
        f"{math.floor(best * 1000) / 1000:.3f})"
    )
    confidence = max_confidence_for(gate, devices)
    if confidence is not None:
        fixes.append(f"or a lower confidence ({confidence:.3f} or less), knowingly")
    problems.append(
        Problem(
            "gate-unreachable",
            wave.name,
            f"{head}, so it halts even when every device succeeds. Fix: {', '.join(fixes)}.",
        )
    )
    return problems


def _overlaps(
    spec: CampaignSpec, members: Mapping[str, Mapping[str, Collection[str]]]
) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, tuple[str, str]] = {}  # thing -> (first wave, its group)
    shared: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for wave in spec.waves:
        # Every group of the wave: its own, and the ones the campaign makes for a query or
        # a sample (what they would hold now).
        for group, held in members.get(wave.name, {}).items():
            for thing in held:
                first = seen.get(thing)
                if first is None:
                    seen[thing] = (wave.name, group)
                elif first[0] != wave.name:
                    shared.setdefault((first[0], wave.name), []).append((thing, first[1], group))
    for (a, b), things in shared.items():
        names = sorted(t for t, _, _ in things)
        sample = ", ".join(names[:_SAMPLE]) + (", ..." if len(names) > _SAMPLE else "")
        via = sorted({f"{ga} and {gb}" for _, ga, gb in things})
        problems.append(
            Problem(
                "overlap",
                b,
                f"waves {a} and {b} both target {len(names)} "
                f"{'thing' if len(names) == 1 else 'things'} ({sample}) through groups "
                f"{'; '.join(via)}: the migration would run twice on them and count in both "
                "waves' budgets. Fix: put each thing in the groups of one wave only.",
            )
        )
    return problems


def check_campaign(
    spec: CampaignSpec, members: Mapping[str, Mapping[str, Collection[str]]]
) -> list[Problem]:
    """Every reason the campaign cannot succeed; empty when it can.

    `members` maps each wave's name to its thing groups, each to the things it
    holds (recursively, as CreateJob targets them).
    """
    problems: list[Problem] = []
    for wave in spec.waves:
        devices = len(wave_devices(members.get(wave.name, {})))
        if devices == 0:
            groups = ", ".join(members.get(wave.name, {})) or ", ".join(wave.thing_groups)
            problems.append(
                Problem(
                    "empty-wave",
                    wave.name,
                    f"wave {wave.name}: its groups ({groups}) hold no things, so its gate can "
                    "never pass. Fix: add things to the groups (or widen the query), or "
                    "remove the wave.",
                )
            )
            continue
        problems.extend(_gate_problems(wave, devices))
    problems.extend(_overlaps(spec, members))
    return problems
