"""Device timing in the simulated fleet: each device notices its job after its arrival delay and
reports after its transaction's duration, drawn from the seed and its name, the same whatever the
number of worker processes; a fleet file's `timing:` section overrides the spans."""

from __future__ import annotations

import math

import pytest

from infra.sandbox.fleet import FleetSpecError, FleetTiming, Profile, parse_fleet_spec
from infra.sandbox.pki import SandboxPki

from .fleet_world import World

REAL = FleetTiming(late=(600, 600))  # the default arrival and transaction spans


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SandboxPki:
    return SandboxPki.create_or_load(tmp_path_factory.mktemp("timing") / "pki")


def test_a_devices_timing_comes_from_the_seed_and_its_name_within_the_spans() -> None:
    timing = FleetTiming()
    draws = {name: timing.device_timing(7, name) for name in (f"d-{i}" for i in range(200))}
    assert draws["d-0"] == FleetTiming().device_timing(7, "d-0")  # repeatable
    assert draws["d-0"] != timing.device_timing(8, "d-0")  # the seed matters
    assert len(set(draws.values())) == len(draws)  # each device its own
    arrivals = [a for a, _ in draws.values()]
    durations = [t for _, t in draws.values()]
    assert min(arrivals) >= 1
    assert max(arrivals) <= 120
    assert min(durations) >= 5
    assert max(durations) <= 60
    assert max(arrivals) - min(arrivals) > 90  # spread over the span, not bunched
    assert FleetTiming.immediate().device_timing(7, "d-0") == (0.0, 0.0)


@pytest.mark.parametrize(
    "spans",
    [{"arrival": (5.0, 1.0)}, {"transaction": (-1.0, 2.0)}, {"late": (0.0, math.inf)}],
)
def test_a_backwards_or_negative_span_is_refused(spans: dict) -> None:
    with pytest.raises(ValueError, match="0 <= low <= high"):
        FleetTiming(**spans)


def test_a_device_acts_after_its_arrival_and_reports_after_its_transaction(pki, tmp_path) -> None:
    world = World(pki, tmp_path, {"dev": Profile.OK}, timing=REAL)
    try:
        origin = world.clock.now().timestamp()
        arrival, duration = REAL.device_timing(7, "dev")
        acts = REAL.on_grid(origin + arrival, origin)
        reports = REAL.on_grid(acts + duration, origin)
        world.job("j", ("amazon-root-ca-1",))
        world.fleet.run_due()
        assert world.statuses("j")["dev"]["status"] == "QUEUED"  # not noticed yet
        assert world.fleet.next_wakeup() == acts
        world.engine.advance(acts - world.clock.now().timestamp())
        world.fleet.run_due()
        # it started (and is exposed) but its transaction has not ended
        assert world.statuses("j")["dev"]["status"] == "IN_PROGRESS"
        assert world.fleet.view("dev").first_job_at == acts
        assert world.fleet.exposed() == 1
        assert world.fleet.next_wakeup() == reports
        world.engine.advance(reports - 1 - world.clock.now().timestamp())
        world.fleet.run_due()
        assert world.statuses("j")["dev"]["status"] == "IN_PROGRESS"
        world.engine.advance(1)
        world.fleet.run_due()
        history = world.statuses("j")["dev"]
        assert history["status"] == "SUCCEEDED"
        assert history["history"][-1]["at"] == reports
        assert world.fleet.endpoint_counts() == {"ats": 1}
    finally:
        world.fleet.close()


def test_a_job_canceled_while_devices_wait_to_notice_it_exposes_none_of_them(pki, tmp_path) -> None:
    profiles = {f"d-{i}": Profile.OK for i in range(6)}
    world = World(pki, tmp_path, profiles, timing=REAL)
    try:
        world.job("j", ("amazon-root-ca-1",))
        world.fleet.run_due()
        world.engine.cancel_job({"jobId": "j"})
        world.run_for(600, step=10)
        assert {h["status"] for h in world.statuses("j").values()} == {"CANCELED"}
        assert world.fleet.exposed() == 0
    finally:
        world.fleet.close()


WAITING = {
    **{f"ok-{i:02d}": Profile.OK for i in range(10)},
    **{f"fw-{i}": Profile.PROBE_FAILS for i in range(3)},
    **{f"slow-{i}": Profile.SLOW for i in range(2)},
    **{f"cut-{i}": Profile.POWER_CUT for i in range(4)},
    **{f"hang-{i}": Profile.HANG for i in range(2)},
}


def test_device_timing_is_the_same_whatever_the_number_of_workers(pki, tmp_path) -> None:
    seen = {}
    for workers in (0, 2):
        world = World(pki, tmp_path / f"w{workers}", WAITING, workers, timing=REAL)
        start = world.clock.now().timestamp()
        try:
            world.job("j", ("amazon-root-ca-1",), timeoutConfig={"inProgressTimeoutInMinutes": 5})
            world.run_for(1200, step=10)
            seen[workers] = {
                thing: [(c["status"], c["at"] - start) for c in h["history"]]
                for thing, h in world.statuses("j").items()
            }
        finally:
            world.fleet.close()
    assert seen[2] == seen[0]
    # every device took time: none reported in the step it was notified
    assert all(changes[-1][1] >= 10 for changes in seen[0].values())
    assert {changes[-1][0] for changes in seen[0].values()} == {
        "SUCCEEDED",
        "FAILED",
        "TIMED_OUT",
    }


def test_a_fleet_files_timing_section_overrides_the_spans() -> None:
    spec = parse_fleet_spec(
        {
            "groups": [{"name": "g", "size": 1}],
            "timing": {"arrival_seconds": [0, 0], "transaction_seconds": [2, 3.5]},
        }
    )
    assert spec.timing.arrival == (0, 0)
    assert spec.timing.transaction == (2, 3.5)
    assert spec.timing.late == FleetTiming().late  # the rest keeps its default
    assert parse_fleet_spec({"groups": [{"name": "g", "size": 1}]}).timing == FleetTiming()


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        ({"arrival_seconds": [120, 1]}, "arrival_seconds is \\[low, high\\]"),
        ({"transaction_seconds": [-1, 5]}, "greater than or equal to 0"),
        ({"arrival_seconds": [1]}, "timing.arrival_seconds"),
        ({"arrival_seconds": [1, ".nan"]}, "timing.arrival_seconds"),
        ({"arrival_seconds": [1, 1e12]}, "less than or equal to 604800"),
        ({"resolution_seconds": -5}, "timing.resolution_seconds"),
        ({"arrivals": [1, 2]}, "timing.arrivals"),
        ("fast", "timing"),
    ],
)
def test_a_bad_timing_section_is_refused_with_what_to_change(timing: object, message: str) -> None:
    with pytest.raises(FleetSpecError, match=message) as caught:
        parse_fleet_spec({"groups": [{"name": "g", "size": 1}], "timing": timing}, "fleet.yaml")
    assert "arrival_seconds: [LOW, HIGH]" in str(caught.value)
