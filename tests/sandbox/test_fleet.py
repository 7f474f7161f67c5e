"""The simulated fleet: profile assignment, the simulated TLS stack, and each fault profile
driving the real device transaction against the Jobs engine (no HTTP, manual clock)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import structlog.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from device_handler.agent import DevicePaths
from device_handler.errors import ProbeFailed
from device_handler.fsops import RealFileOps
from device_handler.transaction import Journal, Phase
from device_handler.trust import EndpointConfig, TrustBundle
from infra.sandbox.fleet import (
    FleetSpec,
    FleetSpecError,
    FleetTiming,
    GroupSpec,
    Profile,
    SimulatedTls,
    assign_profiles,
    parse_fleet_spec,
)
from infra.sandbox.fleet._base import UNREADABLE, device_paths
from infra.sandbox.fleet.profiles import _counts
from infra.sandbox.pki import SandboxPki

from .fleet_world import World


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SandboxPki:
    return SandboxPki.create_or_load(tmp_path_factory.mktemp("fleet") / "pki")


# -- profiles ---------------------------------------------------------------------------------


@given(
    size=st.integers(0, 5000),
    shares=st.dictionaries(
        st.sampled_from([p for p in Profile if p is not Profile.OK]),
        st.floats(0, 0.2),
        max_size=5,
    ),
)
@settings(max_examples=200, deadline=None)
def test_profile_counts_add_up_to_the_group_and_follow_the_shares(size, shares) -> None:
    counts = _counts(size, shares)
    assert sum(counts.values()) == size
    for profile, share in shares.items():
        assert abs(counts.get(profile, 0) - size * share) < 1 + 1e-9


def test_assignment_is_repeatable_and_spreads_faults_through_the_group() -> None:
    spec = FleetSpec(groups=(GroupSpec("g", 200, {Profile.OFFLINE: 0.1}),), seed=3)
    names = [f"d-{i:03d}" for i in range(200)]
    first = assign_profiles(spec, {"g": names})
    assert first == assign_profiles(spec, {"g": names})
    offline = [i for i, n in enumerate(names) if first[n] is Profile.OFFLINE]
    assert len(offline) == 20
    assert min(offline) < 100 < max(offline)  # not bunched at one end
    other = assign_profiles(FleetSpec(groups=spec.groups, seed=4), {"g": names})
    assert other != first


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"groups": []}, "groups"),
        ({"groups": [{"name": "a", "size": 3, "profiles": {"offline": 0.7, "late": 0.5}}]},
         "add up to 1.2"),
        ({"groups": [{"name": "a", "size": 3, "profiles": {"sleepy": 0.1}}]}, "sleepy"),
        ({"groups": [{"name": "a", "size": 3}, {"name": "a", "size": 1}]}, "listed twice"),
        ({"groups": [{"name": "a b", "size": 3}]}, "name"),
    ],
)  # fmt: skip
def test_bad_fleet_files_are_refused_with_what_to_change(data, message) -> None:
    with pytest.raises(FleetSpecError, match=message):
        parse_fleet_spec(data, "fleet.yaml")


def test_assignment_refuses_a_group_whose_size_does_not_match() -> None:
    spec = parse_fleet_spec({"groups": [{"name": "a", "size": 3}]})
    with pytest.raises(FleetSpecError, match="has 2 things but the fleet says 3"):
        assign_profiles(spec, {"a": ["x", "y"]})


# -- simulated TLS ----------------------------------------------------------------------------


def _bundle(tmp_path: Path, *pems: Path) -> Path:
    path = tmp_path / "bundle.pem"
    path.write_bytes(b"".join(p.read_bytes() for p in pems))
    return path


def test_simulated_tls_decides_from_the_roots_in_the_bundle_file(pki, tmp_path) -> None:
    tls = SimulatedTls.from_pki(pki)
    ats = EndpointConfig(host=pki.hosts["ats"])
    legacy = EndpointConfig(host=pki.hosts["legacy"])
    rsa, ecc = pki.ats_root_pems["amazon-root-ca-1"], pki.ats_root_pems["amazon-root-ca-3"]
    tls.handshake(legacy, _bundle(tmp_path, pki.legacy_root_pem))
    with pytest.raises(ProbeFailed) as caught:
        tls.handshake(ats, _bundle(tmp_path, pki.legacy_root_pem))
    assert caught.value.reason == "tls-verify"
    tls.handshake(ats, _bundle(tmp_path, pki.legacy_root_pem, ecc))
    with pytest.raises(ProbeFailed, match="RSA-only"):
        tls.handshake(ats, _bundle(tmp_path, pki.legacy_root_pem, ecc), rsa_only=True)
    tls.handshake(ats, _bundle(tmp_path, rsa), rsa_only=True)
    with pytest.raises(ProbeFailed) as caught:
        tls.handshake(ats, _bundle(tmp_path, rsa), unreachable=frozenset({ats.host}))
    assert caught.value.reason == "connect"
    with pytest.raises(ProbeFailed) as caught:
        tls.handshake(EndpointConfig(host="elsewhere.example.com"), _bundle(tmp_path, rsa))
    assert caught.value.reason == "connect"


# -- the fleet against the engine -------------------------------------------------------------


def test_each_profile_ends_where_its_real_transaction_takes_it(pki, tmp_path) -> None:
    profiles = {
        "ok-1": Profile.OK,
        "rsa-only": Profile.TLS_NO_ECC,
        "firewalled": Profile.PROBE_FAILS,
        "pinned": Profile.REJECT,
        "unplugged": Profile.OFFLINE,
        "sleepy": Profile.SLOW,
    }
    world = World(pki, tmp_path, profiles)
    world.job("ecc-only", ("amazon-root-ca-3",))
    world.fleet.run_due()
    seen = world.statuses("ecc-only")
    assert seen["ok-1"]["status"] == "SUCCEEDED"
    assert seen["ok-1"]["history"][-1]["via"] == "ats"
    assert seen["rsa-only"]["status"] == "FAILED"
    assert seen["rsa-only"]["statusDetails"]["reason"] == "tls-verify"
    assert seen["firewalled"]["statusDetails"]["reason"] == "connect"
    assert seen["pinned"]["status"] == "REJECTED"
    assert seen["unplugged"]["status"] == "QUEUED"
    assert seen["sleepy"]["status"] == "QUEUED"  # acts minutes later, not now
    world.run_for(600)
    seen = world.statuses("ecc-only")
    assert seen["sleepy"]["status"] == "SUCCEEDED"
    assert seen["unplugged"]["status"] == "QUEUED"
    assert world.fleet.endpoint_of("ok-1") == pki.hosts["ats"]
    for thing in ("rsa-only", "firewalled", "pinned"):
        assert world.fleet.endpoint_of(thing) == pki.hosts["legacy"]
        paths = world.fleet.paths(thing)
        assert TrustBundle.parse(paths.trust_bundle.read_bytes()).fingerprints() == (
            TrustBundle.parse(pki.legacy_root_pem.read_bytes()).fingerprints()
        )
        if paths.journal.exists():  # a rejected document writes nothing at all
            assert Journal.from_bytes(paths.journal.read_bytes()).phase is Phase.IDLE
    assert not world.fleet.paths("pinned").journal.exists()
    assert not world.fleet.paths("unplugged").endpoint_file.exists()
    assert world.fleet.exposed() == 5


def test_rsa_only_devices_succeed_when_an_rsa_root_is_added(pki, tmp_path) -> None:
    world = World(pki, tmp_path, {"rsa-only": Profile.TLS_NO_ECC})
    world.job("both", ("amazon-root-ca-1", "amazon-root-ca-3"))
    world.fleet.run_due()
    assert world.statuses("both")["rsa-only"]["status"] == "SUCCEEDED"


def test_an_endpoint_file_that_is_not_one_is_counted_not_raised(pki, tmp_path) -> None:
    """The fleet's status line reads every endpoint file while devices run: a file that is
    empty or edited by hand is counted as unreadable, and the fleet keeps going."""
    world = World(pki, tmp_path, {"ok-1": Profile.OK, "ok-2": Profile.OK, "ok-3": Profile.OK})
    world.job("j", ("amazon-root-ca-1",))
    world.fleet.run_due()
    assert world.fleet.endpoint_counts() == {"ats": 3}
    world.fleet.paths("ok-2").endpoint_file.write_bytes(b"")
    world.fleet.paths("ok-3").endpoint_file.write_bytes(b'{"port": 8883}')
    assert world.fleet.endpoint_counts() == {"ats": 1, UNREADABLE: 2}
    assert world.fleet.endpoint_of("ok-2") == UNREADABLE


def test_a_device_leaves_the_factory_with_a_whole_endpoint_file(pki, tmp_path) -> None:
    """The factory files appear whole (written beside, then renamed): a reader that looks
    while a device boots never sees a half-written endpoint file."""
    world = World(pki, tmp_path, {"ok": Profile.OK})
    paths = world.fleet.paths("ok")
    seen: list[bytes | None] = []

    class HalfwayLooker(RealFileOps):
        def write(self, path, data: bytes) -> None:  # type: ignore[no-untyped-def]
            with open(path, "wb") as out:  # noqa: PTH123 - path may be a string
                out.write(data[: len(data) // 2])
                out.flush()
                live = paths.endpoint_file
                seen.append(live.read_bytes() if live.exists() else None)
                out.write(data[len(data) // 2 :])

    shutil.rmtree(paths.endpoint_file.parent, ignore_errors=True)  # booted or not yet
    device = world.fleet._devices["ok"]
    device.booted = False
    world.fleet._factory = HalfwayLooker()
    world.fleet._boot(device)
    assert seen, "the factory wrote nothing"
    for content in seen:
        assert content is None or EndpointConfig.parse(content).host == pki.hosts["legacy"]
    assert EndpointConfig.parse(paths.endpoint_file.read_bytes()).host == pki.hosts["legacy"]


def test_late_devices_act_only_once_they_connect(pki, tmp_path) -> None:
    world = World(pki, tmp_path, {"late": Profile.LATE, "ok": Profile.OK})
    world.job("j", ("amazon-root-ca-1",))
    world.run_for(300)
    assert world.statuses("j")["late"]["status"] == "QUEUED"
    assert world.statuses("j")["ok"]["status"] == "SUCCEEDED"
    world.run_for(400)
    assert world.statuses("j")["late"]["status"] == "SUCCEEDED"


def test_device_timers_fire_on_the_grid_and_devices_due_in_one_step_act_together(
    pki, tmp_path
) -> None:
    sleepy = {f"sleepy-{i}": Profile.SLOW for i in range(4)}
    timing = FleetTiming(slow=(100, 400), resolution=600, arrival=(0, 0), transaction=(0, 0))
    world = World(pki, tmp_path, sleepy, timing=timing)
    start = world.clock.now().timestamp()
    world.job("j", ("amazon-root-ca-1",))
    assert world.fleet.run_due() == 4  # each one arms its slow timer
    wake = world.fleet.next_wakeup()
    assert wake is not None
    assert (wake - start) % 600 == 0  # the grid starts with the fleet, not at the epoch
    assert start + 100 <= wake < start + 400 + 600
    world.engine.advance(wake - world.clock.now().timestamp())
    assert world.fleet.run_due() == 4  # four different delays, one step: one batch
    assert {h["status"] for h in world.statuses("j").values()} == {"SUCCEEDED"}
    assert world.fleet.next_wakeup() is None


def test_without_a_grid_each_timer_fires_at_its_own_time(pki, tmp_path) -> None:
    timing = FleetTiming(slow=(61, 61), resolution=0, arrival=(0, 0), transaction=(0, 0))
    world = World(pki, tmp_path, {"sleepy": Profile.SLOW}, timing=timing)
    world.job("j", ("amazon-root-ca-1",))
    start = world.clock.now().timestamp()
    world.fleet.run_due()
    assert world.fleet.next_wakeup() == start + 61


@pytest.mark.parametrize("resolution", [-1.0, float("nan")])
def test_a_negative_timer_grid_is_refused(resolution: float) -> None:
    with pytest.raises(ValueError, match="resolution must be >= 0"):
        FleetTiming(resolution=resolution)


def test_power_cuts_at_every_kind_of_step_end_on_a_complete_configuration(pki, tmp_path) -> None:
    names = {f"cut-{i:02d}": Profile.POWER_CUT for i in range(24)}
    world = World(pki, tmp_path, names)
    world.job("j", ("amazon-root-ca-1",), jobExecutionsRetryConfig={
        "criteriaList": [{"failureType": "FAILED", "numberOfRetries": 2}]
    })  # fmt: skip
    world.run_for(900)
    seen = world.statuses("j")
    assert world.fleet.outcomes["POWER_CUT"] == 24
    outcomes = Counter(h["status"] for h in seen.values())
    assert outcomes == {"SUCCEEDED": 24}, outcomes  # rolled-back ones succeed on retry
    for thing in names:
        view = world.fleet.view(thing)
        assert view.power_cuts == 1
        assert world.fleet.endpoint_of(thing) == pki.hosts["ats"]
        assert Journal.from_bytes(view.paths.journal.read_bytes()).phase is Phase.IDLE
        assert not view.paths.staged_bundle.exists()


def test_a_hanging_device_goes_silent_and_its_execution_times_out(pki, tmp_path) -> None:
    world = World(pki, tmp_path, {"wedged": Profile.HANG, "fine": Profile.OK})
    world.job("j", ("amazon-root-ca-1",), timeoutConfig={"inProgressTimeoutInMinutes": 10})
    world.fleet.run_due()
    seen = world.statuses("j")
    assert seen["wedged"]["status"] == "IN_PROGRESS"
    assert seen["fine"]["status"] == "SUCCEEDED"
    world.run_for(900)
    assert world.statuses("j")["wedged"]["status"] == "TIMED_OUT"
    assert world.fleet.endpoint_of("wedged") == pki.hosts["legacy"]  # never committed
    assert world.fleet.outcomes["HUNG"] == 1
    assert world.fleet.exposed() == 2


# -- clean-up ---------------------------------------------------------------------------------


def test_removing_device_files_leaves_other_files_and_follows_no_link(pki, tmp_path) -> None:
    world = World(pki, tmp_path, {"a": Profile.OK, "b": Profile.OK, "gone": Profile.OK})
    world.job("j", ("amazon-root-ca-1",))
    world.fleet.run_due()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the fleet's")
    (tmp_path / "a" / "state" / "nested").mkdir()
    (tmp_path / "a" / "state" / "nested" / "x").write_text("x")
    (tmp_path / "a" / "link").symlink_to(outside, target_is_directory=True)
    (tmp_path / "b").rename(tmp_path / "b-moved")
    (tmp_path / "b").symlink_to(outside, target_is_directory=True)  # a link where a device was
    for path in sorted((tmp_path / "gone").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (tmp_path / "gone").rmdir()
    (tmp_path / "other-fleet").mkdir()
    world.fleet.remove_device_files()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b-moved", "other-fleet"]
    assert (outside / "keep.txt").read_text() == "not the fleet's"


def test_device_files_that_cannot_be_removed_are_reported_not_raised(
    pki, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import infra.sandbox.fleet._base as base

    world = World(pki, tmp_path, {"a": Profile.OK, "b": Profile.OK})
    world.job("j", ("amazon-root-ca-1",))
    world.fleet.run_due()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    real_rmdir = base.os.rmdir

    def refuse_a(name: str, *, dir_fd: int | None = None) -> None:
        if name == "a":
            raise PermissionError(13, "Permission denied", name)
        real_rmdir(name, dir_fd=dir_fd)

    monkeypatch.setattr(base.os, "rmdir", refuse_a)
    with structlog.testing.capture_logs() as logs:
        world.fleet.remove_device_files()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert [entry["event"] for entry in logs] == ["device_files_left"]
    assert logs[0]["devices"] == 1
    assert logs[0]["first"] == "a"


@pytest.mark.parametrize("root", ["/srv/fleet", Path("/srv/fleet")])
def test_the_fleets_string_joins_match_pathlib(root: str | Path) -> None:
    base = Path("/srv/fleet") / "thing-7"
    expected = DevicePaths(base / "endpoint.json", base / "bundle.pem", base / "state")
    assert device_paths(root, "thing-7") == expected
