"""Stratified samples: proportional allocation by largest remainder, a floor of one, seeds."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.sampling import MISSING, allocate, select

sizes_strategy = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=3), st.integers(0, 400), min_size=1, max_size=8
)


@pytest.mark.parametrize(
    ("sizes", "count", "expected"),
    [
        # exact proportions
        ({"m1": 600, "m2": 300, "m3": 100}, 200, {"m1": 120, "m2": 60, "m3": 20}),
        # largest remainder: quotas 3.33, 3.33, 3.33 -> one more for the first by value
        ({"a": 10, "b": 10, "c": 10}, 10, {"a": 4, "b": 3, "c": 3}),
        # quotas 6.6, 2.7, 0.7 -> floors 6, 2, 0; remainders .6, .7, .7 -> b and c get one
        ({"a": 660, "b": 270, "c": 70}, 10, {"a": 6, "b": 3, "c": 1}),
        # tiny strata (quotas 0.02, 0.08) still get one each; the largest stratum gives them
        ({"big": 990, "tiny": 2, "mid": 8}, 10, {"big": 8, "tiny": 1, "mid": 1}),
        # fewer devices asked than strata: the largest quotas win, no floor
        ({"a": 50, "b": 30, "c": 20}, 2, {"a": 1, "b": 1, "c": 0}),
        # more asked than there are: everything
        ({"a": 3, "b": 1}, 10, {"a": 3, "b": 1}),
        # as many as there are strata: one each, the largest giving two of its three
        ({"a": 98, "b": 1, "c": 1}, 3, {"a": 1, "b": 1, "c": 1}),
        # the donor is the stratum furthest above its quota (b: 2 for 1.9), not the largest
        ({"a": 60, "b": 38, "c": 1, "d": 1}, 5, {"a": 2, "b": 1, "c": 1, "d": 1}),
        # one device: the largest quota
        ({"a": 5, "b": 3}, 1, {"a": 1, "b": 0}),
    ],
    ids=[
        "exact",
        "tie-by-value",
        "largest-remainder",
        "floor-of-one",
        "no-floor",
        "everything",
        "one-per-stratum",
        "donor-above-quota",
        "one",
    ],
)
def test_allocation_is_proportional_with_largest_remainder_and_a_floor_of_one(
    sizes: dict[str, int], count: int, expected: dict[str, int]
) -> None:
    assert allocate(sizes, count) == expected


@given(sizes_strategy, st.integers(0, 2000))
def test_allocation_invariants(sizes: dict[str, int], count: int) -> None:
    taken = allocate(sizes, count)
    total = sum(sizes.values())
    assert sum(taken.values()) == min(count, total)
    assert all(0 <= taken[k] <= sizes[k] for k in sizes)
    non_empty = [k for k, n in sizes.items() if n > 0]
    if count >= len(non_empty):
        assert all(taken[k] >= 1 for k in non_empty)
    elif total > 0:
        for key, size in sizes.items():
            assert abs(taken[key] - Fraction(count * size, total)) < 1


@given(sizes_strategy, st.integers(0, 500))
def test_allocation_is_deterministic(sizes: dict[str, int], count: int) -> None:
    assert allocate(sizes, count) == allocate(dict(reversed(list(sizes.items()))), count)


def _fleet() -> dict[str, str | None]:
    values: dict[str, str | None] = {f"a-{i:03d}": "m1" for i in range(60)}
    values.update({f"b-{i:03d}": "m2" for i in range(30)})
    values.update({f"c-{i:03d}": "m3" for i in range(9)})
    values["nomodel"] = None
    return values


def test_select_covers_every_stratum_and_reports_it() -> None:
    sample = select(_fleet(), 10, seed="campaign/canary")
    assert len(sample.things) == 10
    assert sample.as_dict() == {
        MISSING: {"size": 1, "picked": 1},
        "m1": {"size": 60, "picked": 5},
        "m2": {"size": 30, "picked": 3},
        "m3": {"size": 9, "picked": 1},
    }
    assert "nomodel" in sample.things
    assert sum(t.startswith("c-") for t in sample.things) == 1


def test_the_same_seed_picks_the_same_devices_and_another_seed_others() -> None:
    fleet = _fleet()
    first = select(fleet, 20, seed="one")
    assert select(dict(reversed(list(fleet.items()))), 20, seed="one") == first
    assert select(fleet, 20, seed="two").things != first.things


def test_a_device_joining_the_fleet_moves_no_other_choice_of_its_stratum() -> None:
    fleet = _fleet()
    before = set(select(fleet, 10, seed="s").things)
    fleet["a-new"] = "m1"
    after = set(select(fleet, 10, seed="s").things)
    assert len(before ^ after) <= 2  # at most the newcomer in, one other out
