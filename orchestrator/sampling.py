"""Stratified samples for canary waves: which devices, and how many of each stratum (pure).

A canary of 200 devices drawn at random from a fleet of many hardware models may
miss a small model entirely, and the migration then meets that model first in a
large wave. `sample: {count, stratify_by}` draws the canary per stratum (each value
of the field, e.g. `attributes.model`) in proportion to its size:

- `allocate`: proportional allocation by largest remainder (Hamilton's method);
  when `count` is at least the number of non-empty strata, every one of them gets
  at least one device (taken from the stratum whose share is furthest above its
  exact quota, the larger on a tie); no stratum gets more devices than it has;
- `select`: within a stratum, devices are ranked by a hash of the seed and the
  thing name, so the same seed picks the same devices from the same fleet, and a
  device that joins or leaves the fleet moves no other device's rank.

Invariants (tests/orchestrator/test_sampling.py, with hypothesis):
- the allocation sums to `min(count, population)`;
- `0 <= allocation[s] <= size[s]` for every stratum;
- `count >= non-empty strata` implies `allocation[s] >= 1` for each non-empty one;
- without that floor, every stratum is within one device of its exact quota;
- same inputs, same outputs (no randomness besides the seed).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["MISSING", "Sample", "Stratum", "allocate", "select"]

#: The stratum of things that do not have the field at all.
MISSING = "(missing)"


@dataclass(frozen=True, slots=True)
class Stratum:
    """One value of the stratifying field: how many devices have it, how many were picked."""

    value: str
    size: int
    picked: int


@dataclass(frozen=True, slots=True)
class Sample:
    """The chosen devices (sorted) and the strata they were drawn from (by value)."""

    things: tuple[str, ...]
    strata: tuple[Stratum, ...]

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Per stratum value: its size and how many were picked (events, plan output)."""
        return {s.value: {"size": s.size, "picked": s.picked} for s in self.strata}


def allocate(sizes: Mapping[str, int], count: int) -> dict[str, int]:
    """How many devices to take from each stratum: proportional, largest remainder, floor 1."""
    total = sum(sizes.values())
    if count >= total:
        return dict(sizes)
    if count <= 0:
        return dict.fromkeys(sizes, 0)
    quota = {k: Fraction(count * n, total) for k, n in sizes.items()}
    taken = {k: math.floor(q) for k, q in quota.items()}
    order = sorted(sizes)  # ties break by stratum value: deterministic
    # Largest remainder: the strata whose quota lost the most to rounding get one more.
    by_remainder = sorted(order, key=lambda k: (-(quota[k] - taken[k]), k))
    # Fewer than `count` devices were taken by as much as the remainders add up to, and
    # each remainder is below one: the first `short` strata by remainder all have one, so
    # each has room for one more (its quota is below its size, as count < total).
    short = count - sum(taken.values())
    for key in by_remainder[:short]:
        taken[key] += 1
    non_empty = [k for k in order if sizes[k] > 0]
    if count >= len(non_empty):
        for key in non_empty:
            if taken[key] == 0:
                # One for the empty-handed stratum, from the one furthest above its quota
                # that can give one and keep one (on a tie, the larger stratum gives).
                donor = max(
                    (k for k in order if taken[k] > 1),
                    key=lambda k: (taken[k] - quota[k], sizes[k], k),
                )
                taken[donor] -= 1
                taken[key] = 1
    return taken


def _rank(seed: str, thing: str) -> str:
    return hashlib.sha256(f"{seed}\0{thing}".encode()).hexdigest()


def select(values: Mapping[str, str | None], count: int, seed: str) -> Sample:
    """Pick `count` things from `values` (thing name -> its stratum value, None if missing)."""
    by_stratum: dict[str, list[str]] = {}
    for thing, value in values.items():
        by_stratum.setdefault(MISSING if value is None else value, []).append(thing)
    sizes = {k: len(v) for k, v in by_stratum.items()}
    wanted = allocate(sizes, count)
    chosen: list[str] = []
    strata: list[Stratum] = []
    for key in sorted(by_stratum):
        ranked = sorted(by_stratum[key], key=lambda t: (_rank(seed, t), t))
        chosen.extend(ranked[: wanted[key]])
        strata.append(Stratum(value=key, size=sizes[key], picked=wanted[key]))
    return Sample(things=tuple(sorted(chosen)), strata=tuple(strata))
