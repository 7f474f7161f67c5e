"""The memory fleet spread over worker processes: the same devices, the same real transaction,
the same outcomes as in one process; the engine stays in this process and answers the workers'
batched calls. Workers are real interpreters talking over a real socket pair."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from device_handler.transaction import Journal, Phase
from infra.sandbox.engine import JobsEngine
from infra.sandbox.fleet import Profile, ShardedFleet, WorkerProcesses
from infra.sandbox.fleet.sharded import FleetWorkerError
from infra.sandbox.pki import SandboxPki
from job_documents.clock import ManualClock

from .fleet_world import World

DETERMINISTIC = {
    **{f"ok-{i:02d}": Profile.OK for i in range(12)},
    **{f"rsa-{i}": Profile.TLS_NO_ECC for i in range(3)},
    **{f"fw-{i}": Profile.PROBE_FAILS for i in range(3)},
    **{f"pinned-{i}": Profile.REJECT for i in range(2)},
    **{f"unplugged-{i}": Profile.OFFLINE for i in range(2)},
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SandboxPki:
    return SandboxPki.create_or_load(tmp_path_factory.mktemp("sharded") / "pki")


def test_workers_reach_exactly_the_outcomes_of_one_process(pki, tmp_path) -> None:
    seen = {}
    for workers in (0, 3):
        world = World(pki, tmp_path / f"w{workers}", DETERMINISTIC, workers)
        try:
            world.job("ecc-only", ("amazon-root-ca-3",))
            world.fleet.run_due()
            seen[workers] = world.outcome("ecc-only")
            endpoints = world.fleet.endpoint_counts()
            assert world.fleet.exposed() == len(DETERMINISTIC) - 2
        finally:
            world.fleet.close()
        assert endpoints == {"ats": 12, "legacy": 10}
    assert seen[3] == seen[0]
    assert seen[3]["ok-00"] == ("SUCCEEDED", None, "ats")
    assert seen[3]["rsa-0"][:2] == ("FAILED", "tls-verify")
    assert seen[3]["fw-0"][:2] == ("FAILED", "connect")
    assert seen[3]["pinned-0"][0] == "REJECTED"
    assert seen[3]["unplugged-0"][0] == "QUEUED"


def test_device_files_written_by_workers_are_where_the_parent_looks(pki, tmp_path) -> None:
    world = World(pki, tmp_path, DETERMINISTIC, 2)
    try:
        world.job("j", ("amazon-root-ca-1", "amazon-root-ca-3"))
        world.fleet.run_due()
        for thing in ("ok-00", "ok-01", "rsa-0"):  # on both workers (round-robin)
            paths = world.fleet.paths(thing)
            assert world.fleet.endpoint_of(thing) == pki.hosts["ats"]
            assert Journal.from_bytes(paths.journal.read_bytes()).phase is Phase.IDLE
            assert paths.previous.exists()
        assert not world.fleet.paths("unplugged-0").endpoint_file.exists()
        assert world.fleet.profile_counts()["ok"] == 12
    finally:
        world.fleet.close()


def test_power_cuts_and_timers_in_workers_recover_to_a_complete_configuration(
    pki, tmp_path
) -> None:
    profiles = {f"cut-{i:02d}": Profile.POWER_CUT for i in range(16)}
    profiles |= {"late": Profile.LATE, "slow": Profile.SLOW, "wedged": Profile.HANG}
    world = World(pki, tmp_path, profiles, 2)
    try:
        world.job(
            "j",
            ("amazon-root-ca-1",),
            jobExecutionsRetryConfig={
                "criteriaList": [{"failureType": "FAILED", "numberOfRetries": 2}]
            },
            timeoutConfig={"inProgressTimeoutInMinutes": 10},
        )
        world.run_for(1500)
        statuses = world.outcome("j")
        assert Counter(s for s, _, _ in statuses.values()) == {"SUCCEEDED": 18, "TIMED_OUT": 1}
        assert statuses["wedged"][0] == "TIMED_OUT"
        assert world.fleet.outcomes["POWER_CUT"] == 16
        assert world.fleet.outcomes["HUNG"] == 1
        for thing in profiles:
            if thing.startswith("cut-"):
                view = world.fleet.view(thing)
                assert view.power_cuts == 1
                assert Journal.from_bytes(view.paths.journal.read_bytes()).phase is Phase.IDLE
                assert not view.paths.staged_bundle.exists()
        assert world.fleet.endpoint_of("wedged") == pki.hosts["legacy"]
    finally:
        world.fleet.close()


def test_close_stops_every_worker_and_removes_their_files_when_asked(pki, tmp_path) -> None:
    world = World(pki, tmp_path, DETERMINISTIC, 2)
    fleet = world.fleet
    assert isinstance(fleet, ShardedFleet)
    processes = [shard.process for shard in fleet._shards]
    world.job("j", ("amazon-root-ca-1",))
    fleet.run_due()
    assert (tmp_path / "ok-00").is_dir()
    fleet.close(remove_files=True)
    assert all(p.poll() is not None for p in processes)
    assert not any(tmp_path.iterdir())
    assert len(fleet.worker_usage) == 2
    assert all(u["peak_rss_mib"] > 0 for u in fleet.worker_usage)


def test_a_worker_that_dies_is_reported_not_waited_for(pki, tmp_path) -> None:
    world = World(pki, tmp_path, DETERMINISTIC, 2)
    fleet = world.fleet
    assert isinstance(fleet, ShardedFleet)
    try:
        _kill(fleet._shards[1].process)
        world.job("j", ("amazon-root-ca-1",))
        with pytest.raises(FleetWorkerError, match="fleet worker 1 stopped answering"):
            fleet.run_due()
    finally:
        fleet.close()


def test_a_worker_setup_that_fails_is_raised_with_its_traceback(pki, tmp_path) -> None:
    engine = JobsEngine(clock=ManualClock(datetime.now(UTC)))
    with pytest.raises(FleetWorkerError, match="ZeroDivisionError"):
        ShardedFleet(engine, pki, DETERMINISTIC, workers=1, root=tmp_path, worker_setup=_broken)


def _broken() -> None:
    _ = 1 / 0


def test_zero_workers_is_refused(pki, tmp_path) -> None:
    engine = JobsEngine(clock=ManualClock(datetime.now(UTC)))
    with pytest.raises(ValueError, match="at least one worker"):
        ShardedFleet(engine, pki, DETERMINISTIC, workers=0, root=tmp_path)


WAITING = {
    **{f"late-{i}": Profile.LATE for i in range(3)},
    **{f"slow-{i}": Profile.SLOW for i in range(3)},
    **{f"cut-{i}": Profile.POWER_CUT for i in range(8)},
}


def test_random_draws_do_not_depend_on_how_the_fleet_is_split(pki, tmp_path) -> None:
    seen = {}
    for workers in (0, 1, 3):
        world = World(pki, tmp_path / f"w{workers}", WAITING, workers)
        start = world.clock.now().timestamp()
        try:
            world.job("j", ("amazon-root-ca-1",), jobExecutionsRetryConfig={
                "criteriaList": [{"failureType": "FAILED", "numberOfRetries": 2}]
            })  # fmt: skip
            world.run_for(1500, step=10)
            views = {t: world.fleet.view(t) for t in WAITING}
            seen[workers] = (
                world.outcome("j"),
                {t: ((v.first_job_at or 0) - start, v.power_cuts) for t, v in views.items()},
            )
        finally:
            world.fleet.close()
    assert seen[1] == seen[0]
    assert seen[3] == seen[0]


def test_runs_are_repeatable_even_where_the_order_of_updates_matters(pki, tmp_path) -> None:
    # Half the devices fail with ECC-only roots and the job aborts at 30% failed: which
    # executions get canceled depends on the order the engine sees the updates in.
    profiles = {f"d-{i:03d}": Profile.TLS_NO_ECC if i % 2 else Profile.OK for i in range(120)}
    seen = []
    for run in range(2):
        world = World(pki, tmp_path / f"run{run}", profiles, 2)
        try:
            world.job("j", ("amazon-root-ca-3",), abortConfig={"criteriaList": [{
                "failureType": "FAILED", "action": "CANCEL",
                "thresholdPercentage": 30, "minNumberOfExecutedThings": 10,
            }]}, jobExecutionsRolloutConfig={"maximumPerMinute": 25})  # fmt: skip
            world.run_for(600)
            seen.append(world.outcome("j"))
            assert world.engine.describe_job({"jobId": "j"})["job"]["status"] == "CANCELED"
        finally:
            world.fleet.close()
    assert seen[0] == seen[1]


def on_call(engine: JobsEngine, method: str, nth: int, action: Callable[[], None]) -> None:
    """Run `action` when the engine's `method` is called for the `nth` time (then call it)."""
    real = getattr(engine, method)
    calls = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == nth:
            action()
        return real(*args, **kwargs)

    setattr(engine, method, wrapped)


def test_a_failure_mid_run_stops_the_fleet_and_close_still_removes_the_files(pki, tmp_path) -> None:
    world = World(pki, tmp_path, DETERMINISTIC, 2)
    fleet = world.fleet
    assert isinstance(fleet, ShardedFleet)
    world.job("j", ("amazon-root-ca-1",))

    def ctrl_c() -> None:
        raise KeyboardInterrupt  # the operator's Ctrl-C, in the middle of serving a batch

    on_call(world.engine, "update_execution", 5, ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        fleet.run_due()
    with pytest.raises(FleetWorkerError, match="stopped on an error"):
        fleet.run_due()
    fleet.close(remove_files=True)
    assert not any(tmp_path.iterdir())
    assert len(fleet.worker_usage) == 2


def test_a_worker_that_dies_mid_run_is_reported_as_such(pki, tmp_path) -> None:
    world = World(pki, tmp_path, DETERMINISTIC, 2)
    fleet = world.fleet
    assert isinstance(fleet, ShardedFleet)
    world.job("j", ("amazon-root-ca-1",))

    on_call(world.engine, "describe_execution", 3, lambda: _kill(fleet._shards[0].process))
    try:
        with pytest.raises(FleetWorkerError, match="fleet worker 0 stopped answering"):
            fleet.run_due()
    finally:
        fleet.close()


def test_an_unpicklable_worker_setup_starts_no_worker(pki, tmp_path) -> None:
    engine = JobsEngine(clock=ManualClock(datetime.now(UTC)))
    with pytest.raises((pickle.PicklingError, AttributeError)):
        ShardedFleet(
            engine, pki, DETERMINISTIC, workers=2, root=tmp_path, worker_setup=lambda: None
        )
    assert _worker_children() == b""
    with WorkerProcesses(2) as processes:
        with pytest.raises((pickle.PicklingError, AttributeError)):
            ShardedFleet(
                engine,
                pki,
                DETERMINISTIC,
                workers=2,
                root=tmp_path,
                worker_setup=lambda: None,
                processes=processes,
            )
        assert len(processes) == 2  # not taken: still the caller's to stop
    assert _worker_children() == b""


def _kill(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


def _worker_children() -> bytes:
    return subprocess.run(
        ["pgrep", "-P", str(os.getpid()), "-f", "infra.sandbox.fleet.worker"],
        capture_output=True,
        check=False,
    ).stdout


def test_workers_started_ahead_are_the_ones_the_fleet_runs_on(pki, tmp_path) -> None:
    processes = WorkerProcesses(2)
    pids = [process.pid for _, process in processes._started]
    world = World(pki, tmp_path, DETERMINISTIC, 2, processes=processes)
    fleet = world.fleet
    assert isinstance(fleet, ShardedFleet)
    try:
        assert [shard.process.pid for shard in fleet._shards] == pids
        assert len(processes) == 0  # handed over: closing it now stops nothing
        processes.close()
        assert all(shard.process.poll() is None for shard in fleet._shards)
        world.job("j", ("amazon-root-ca-1",))
        fleet.run_due()
        assert fleet.endpoint_counts()["ats"] == 12 + 3  # ok, and rsa-only with an RSA root
    finally:
        fleet.close(remove_files=True)
    assert _worker_children() == b""


def test_workers_started_ahead_and_never_used_are_stopped() -> None:
    with WorkerProcesses(2) as processes:
        assert len(processes) == 2
        assert _worker_children() != b""
    assert _worker_children() == b""


def test_a_worker_never_given_its_share_exits_quietly_when_the_parent_lets_go(capfd) -> None:
    [(conn, process)] = WorkerProcesses(1).take()
    conn.close()  # as when the parent dies, or stops before provisioning is done
    assert process.wait(30) == 0
    assert "Traceback" not in capfd.readouterr().err


def test_started_workers_are_stopped_when_the_fleet_cannot_be_built(pki, tmp_path) -> None:
    engine = JobsEngine(clock=ManualClock(datetime.now(UTC)))
    with WorkerProcesses(2) as processes:
        with pytest.raises(FleetWorkerError, match="ZeroDivisionError"):
            ShardedFleet(
                engine,
                pki,
                DETERMINISTIC,
                workers=2,
                root=tmp_path,
                worker_setup=_broken,
                processes=processes,
            )
        assert _worker_children() == b""  # the fleet took them, and stopped them


def test_a_fleet_refuses_a_different_number_of_started_workers(pki, tmp_path) -> None:
    engine = JobsEngine(clock=ManualClock(datetime.now(UTC)))
    with WorkerProcesses(1) as processes, pytest.raises(ValueError, match="1 worker processes"):
        ShardedFleet(engine, pki, DETERMINISTIC, workers=2, root=tmp_path, processes=processes)


def test_a_worker_reports_its_own_peak_memory_not_its_parents(pki, tmp_path) -> None:
    ballast = bytearray(256 << 20)  # this process grows by 256 MiB before the workers start
    ballast[:: 1 << 12] = b"\x01" * len(ballast[:: 1 << 12])
    world = World(pki, tmp_path, DETERMINISTIC, 2)
    fleet = world.fleet
    assert isinstance(fleet, ShardedFleet)
    world.job("j", ("amazon-root-ca-1",))
    fleet.run_due()
    fleet.close()
    usage = fleet.worker_usage
    assert len(usage) == 2
    # Linux carries ru_maxrss over exec: a worker would report this process's 256 MiB.
    assert all(0 < u["peak_rss_mib"] < 200 for u in usage), usage
    del ballast


def test_simulation_gc_sets_the_thresholds_for_the_block_and_restores_them() -> None:
    import gc

    from infra.sandbox.fleet import simulation_gc
    from infra.sandbox.fleet.sharded import GC_THRESHOLDS

    before = gc.get_threshold()
    assert before != GC_THRESHOLDS
    with simulation_gc():
        assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), simulation_gc():
        raise RuntimeError("a failed run")
    assert gc.get_threshold() == before
