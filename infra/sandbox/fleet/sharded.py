"""The memory fleet on every core: its devices split over worker processes.

One Python process runs on one core, and a simulated device costs about a
millisecond of it (the real transaction: validator, journal writes, renames,
JSON). `ShardedFleet` splits the devices of a `MemoryFleet` over worker
interpreters. Each worker is a `MemoryFleet` of its share: the real `Agent`,
real files and journal, the same fault profiles. The Jobs engine stays in the
parent; a worker reaches it with the two data-plane calls a device makes
(`describe_execution`, `update_execution`), so every job status still comes
from a device's own transaction and the engine decides what each call returns.

Modules, by mechanism: this one (the parent), `shard_worker` (a worker and its
view of the engine), `shard_messages` (the typed messages between them, pickled
over one socket pair per worker), `shard_processes` (starting and stopping the
interpreters) and `gc_tuning` (the collector's thresholds for a large fleet).

How it differs from one `MemoryFleet`: a worker runs up to `IN_FLIGHT` devices
at once (greenlets that park on engine calls), as a real fleet's devices act at
once, where one process runs each device's whole transaction before the next.
Per-device outcomes do not change (the tests compare them), but decisions the
service takes from the order of updates across devices, such as a job's native
abortConfig threshold or an exponential rollout's step, can.

Invariants:
- Deterministic: devices are assigned round-robin in fleet order; profiles and
  every device's random draws (`FleetBase._random`) come from the seed and the
  device's name; workers run in rounds and the parent takes their batches in
  worker order. The same fleet and worker count give the same run every time.
- `run_due()` returns only when every worker is idle and no device has news,
  as `MemoryFleet.run_due()` does; the engine is only ever called from the
  parent's driving thread (and the engine's own scheduler).
- Each worker's clock is set to the parent's simulated time before it runs.
- Workers are fresh interpreters, not forks (`WorkerProcesses` starts them
  ahead of the fleet, so that they import while the caller provisions): the
  parent runs threads (HTTP front end, scheduler) whose locks a fork would copy
  mid-use, and multiprocessing's spawn re-runs the caller's main module. A new
  interpreter has no logging set-up: `worker_setup` (a picklable callable,
  e.g. the CLI's) runs first in each worker; without one, a worker logs
  warnings and errors to stderr. A worker's stdout goes to stderr: stdout is
  the caller's.
- A failure in a run (a worker's or the parent's) leaves the fleet unusable but
  for `close()`, which stops every worker (killing any that does not stop in
  time) and removes their files when asked.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Self, TypeVar

import structlog

from device_handler.agent import DevicePaths
from infra.sandbox.engine import JobsEngine
from infra.sandbox.errors import SandboxError
from infra.sandbox.fleet._base import DeviceView, FleetTiming, default_fleet_root, device_paths
from infra.sandbox.fleet.gc_tuning import GC_THRESHOLDS, simulation_gc
from infra.sandbox.fleet.profiles import Profile
from infra.sandbox.fleet.shard_messages import (
    Answers,
    Batch,
    Close,
    Describe,
    Done,
    Err,
    Failed,
    Ok,
    Query,
    Ready,
    Reply,
    Request,
    Result,
    Run,
    Snapshot,
    Start,
    ToParent,
    ToWorker,
    Update,
    is_to_parent,
)
from infra.sandbox.fleet.shard_processes import (
    STOP_TIMEOUT,
    WorkerProcesses,
    start_interpreter,
    stop_interpreter,
)
from infra.sandbox.fleet.shard_worker import ShardConfig
from infra.sandbox.pki import SandboxPki

__all__ = ["GC_THRESHOLDS", "FleetWorkerError", "ShardedFleet", "WorkerProcesses", "simulation_gc"]

log = structlog.get_logger(__name__)

_M = TypeVar("_M", Done, Result, Ready)


class FleetWorkerError(SandboxError):
    """A worker process failed; the message carries its traceback."""


class _Shard:
    __slots__ = ("conn", "documents", "index", "next_wakeup", "outcomes", "process")

    def __init__(self, index: int, conn: Connection, process: subprocess.Popen[bytes]) -> None:
        self.index = index
        self.conn = conn
        self.process = process
        self.next_wakeup: float | None = None
        self.outcomes: dict[str, int] = {}
        self.documents: dict[str, str] = {}  # job id -> the document this worker holds


class ShardedFleet:
    """A `MemoryFleet` whose devices run in `workers` processes against one engine."""

    def __init__(
        self,
        engine: JobsEngine,
        pki: SandboxPki,
        profiles: Mapping[str, Profile],
        *,
        workers: int,
        root: Path | None = None,
        seed: int = 7,
        timing: FleetTiming | None = None,
        durable: bool = True,
        share_validation: bool = True,
        worker_setup: Callable[[], None] | None = None,
        processes: WorkerProcesses | None = None,
        verify_key: Path | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("a sharded fleet needs at least one worker process")
        if processes is not None and len(processes) != workers:
            raise ValueError(
                f"{len(processes)} worker processes were started for a fleet of {workers} workers"
            )
        self.engine = engine
        self.clock = engine.clock
        self._owns_root = root is None
        self.root = root if root is not None else default_fleet_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.workers = workers
        self._profiles = dict(profiles)
        self._owner: dict[str, int] = {}
        shares: list[dict[str, str]] = [{} for _ in range(workers)]
        for i, (name, profile) in enumerate(self._profiles.items()):
            self._owner[name] = i % workers
            shares[i % workers][name] = profile.value
        start = self.clock.now().timestamp()
        self._shards: list[_Shard] = []
        self._news: list[dict[str, None]] = [{} for _ in range(workers)]
        self._lock = threading.Lock()
        self._serving: str | None = None
        self._runner: int | None = None
        self._started = False
        self.worker_usage: list[dict[str, float]] = []  # per worker, once closed
        self._broken: str | None = None  # why the fleet can no longer run
        started: list[tuple[Connection, subprocess.Popen[bytes]]] = []
        try:
            # Before taking or starting any process: an unpicklable setup fails here.
            payloads = [
                pickle.dumps(
                    ShardConfig(
                        index=index,
                        pki_dir=pki.directory,
                        region=pki.region,
                        endpoint_prefix=pki.endpoint_prefix,
                        profiles=share,
                        root=self.root,
                        seed=seed,
                        timing=timing or FleetTiming(),
                        durable=durable,
                        share_validation=share_validation,
                        start=start,
                        setup=worker_setup,
                        verify_key=verify_key,
                    )
                )
                for index, share in enumerate(shares)
            ]
            started = processes.take() if processes is not None else []
            while len(started) < workers:
                started.append(start_interpreter())
            for index, (conn, process) in enumerate(started):
                shard = _Shard(index, conn, process)
                self._shards.append(shard)
                self._send_bytes(shard, payloads[index])
            for shard in self._shards:
                self._expect(shard, Ready)
        except BaseException:
            for conn, process in started[len(self._shards) :]:
                stop_interpreter(conn, process)
            self.close()
            raise
        self._vias = {pki.hosts["legacy"]: "legacy", pki.hosts["ats"]: "ats"}
        log.info("sharded_fleet_ready", devices=len(self._profiles), workers=workers)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Start every worker's share and subscribe to the engine."""
        if self._started:
            return self
        self._started = True
        now = self.clock.now().timestamp()
        for shard in self._shards:
            self._send(shard, Start(now))
        for shard in self._shards:
            self._finish(shard, self._expect(shard, Done))
        self.engine.subscribe(self._on_change)
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self, *, remove_files: bool | None = None) -> None:
        """Stop the workers; each removes its devices' files when asked (default: root is ours)."""
        remove = self._owns_root if remove_files is None else remove_files
        for shard in self._shards:
            if shard.process.poll() is None:
                try:
                    shard.conn.send(Close(remove))
                except OSError:
                    continue
        for shard in self._shards:
            try:
                # Every worker answers a close with its usage, mid-run or not (unless it
                # died); a worker stopped mid-run may first send the batch it had ready.
                while shard.process.returncode is None and shard.conn.poll(STOP_TIMEOUT):
                    reply = shard.conn.recv()
                    if isinstance(reply, Result) and isinstance(reply.value, dict):
                        self.worker_usage.append(reply.value)
                        break
            except (OSError, EOFError):
                pass
            shard.conn.close()  # a worker still waiting on the pipe sees it end and exits
            try:
                shard.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                shard.process.kill()
                shard.process.wait(STOP_TIMEOUT)
        self._shards = []
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
            self._owns_root = False

    # ------------------------------------------------------------------ pipe
    def _expect(self, shard: _Shard, kind: type[_M]) -> _M:
        """The next message of `kind` from `shard`, serving its engine calls meanwhile."""
        while True:
            message = self._recv(shard)
            if isinstance(message, kind):
                return message
            self._serve(shard, message)

    def _send(self, shard: _Shard, message: ToWorker) -> None:
        try:
            shard.conn.send(message)
        except OSError as exc:
            raise self._gone(shard) from exc

    def _send_bytes(self, shard: _Shard, payload: bytes) -> None:
        try:
            shard.conn.send_bytes(payload)
        except OSError as exc:
            raise self._gone(shard) from exc

    def _gone(self, shard: _Shard) -> FleetWorkerError:
        code = shard.process.poll()
        return FleetWorkerError(
            f"fleet worker {shard.index} stopped answering (exit code {code}); "
            "its devices' files are left as they were, see the log above for why"
        )

    def _recv(self, shard: _Shard) -> ToParent:
        """The next message from `shard`: the parent's one decode place."""
        try:
            message = shard.conn.recv()
        except (EOFError, OSError) as exc:
            raise self._gone(shard) from exc
        if not is_to_parent(message):
            raise FleetWorkerError(f"fleet worker {shard.index} sent {message!r:.200}")
        if isinstance(message, Failed):
            raise FleetWorkerError(f"fleet worker {shard.index} failed:\n{message.trace}")
        return message

    def _serve(self, shard: _Shard, message: ToParent) -> None:
        if not isinstance(message, Batch):
            raise FleetWorkerError(f"fleet worker {shard.index} sent {type(message).__name__}")
        self._send(shard, Answers([self._answer(shard, request) for request in message.requests]))

    def _answer(self, shard: _Shard, request: Request) -> Reply:
        if not isinstance(request, Describe | Update):
            raise FleetWorkerError(f"fleet worker {shard.index} asked for {request!r:.200}")
        self._serving = request.thing
        try:
            if isinstance(request, Describe):
                snap = self.engine.describe_execution(
                    request.thing, request.job_id, execution_number=request.execution_number
                )
            else:
                snap = self.engine.update_execution(request.thing, request.job_id, **request.fields)
        except Exception as exc:  # noqa: BLE001 - the refusal goes back to the device
            code = getattr(exc, "code", None)
            text = getattr(exc, "message", None) or str(exc)
            return Err(code if isinstance(code, str) else None, text)
        finally:
            self._serving = None
        document: str | None = snap.job_document
        if shard.documents.get(snap.job_id) == document:
            document = None
        else:
            shard.documents[snap.job_id] = snap.job_document
        return Ok(
            Snapshot(
                snap.job_id,
                snap.status,
                dict(snap.status_details),
                snap.version_number,
                snap.execution_number,
                document,
            )
        )

    def _finish(self, shard: _Shard, message: Done) -> int:
        shard.next_wakeup = message.next_wakeup
        shard.outcomes = message.outcomes
        return message.activations

    def _ask(self, shards: list[_Shard], method: str, *args: Any) -> list[Any]:
        self._usable()
        for shard in shards:
            self._send(shard, Query(method, args))
        return [self._expect(shard, Result).value for shard in shards]

    # ------------------------------------------------------------------ events
    def _on_change(self, thing: str) -> None:
        if thing == self._serving and threading.get_ident() == self._runner:
            return  # the device's own update: its worker keeps polling it until it is idle
        index = self._owner.get(thing)
        if index is None:
            return
        with self._lock:
            self._news[index][thing] = None

    def next_wakeup(self) -> float | None:
        """The simulated epoch time of the next device timer in any worker, if any."""
        times = [s.next_wakeup for s in self._shards if s.next_wakeup is not None]
        return min(times) if times else None

    def pending(self) -> int:
        with self._lock:
            return sum(len(n) for n in self._news)

    def run_due(self, max_activations: int | None = None) -> int:
        """Let every device with news, or whose timer is due, act, in all workers at once.

        In rounds: each busy worker sends one message per round (a batch of calls,
        or "done"), and the parent takes them in worker order, so the engine sees the
        calls in the same order on every run.
        """
        del max_activations  # each worker bounds its own activations per run
        self._usable()
        self._runner = threading.get_ident()
        now = self.clock.now().timestamp()
        busy: list[_Shard] = []
        woken: set[int] = set()
        total = 0

        def dispatch() -> None:
            for shard in self._shards:
                if shard in busy:
                    continue
                with self._lock:
                    news = list(self._news[shard.index])
                    self._news[shard.index].clear()
                due = (
                    shard.index not in woken
                    and shard.next_wakeup is not None
                    and shard.next_wakeup <= now
                )
                if news or due:
                    woken.add(shard.index)
                    self._send(shard, Run(now, news))
                    busy.append(shard)
            busy.sort(key=lambda shard: shard.index)

        try:
            dispatch()
            while busy:
                for shard in list(busy):
                    message = self._recv(shard)
                    if isinstance(message, Done):
                        total += self._finish(shard, message)
                        busy.remove(shard)
                    else:
                        self._serve(shard, message)
                dispatch()
        except BaseException as exc:
            # Workers may be parked mid-run with answers unread: nothing but close() is safe.
            self._broken = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise
        return total

    def _usable(self) -> None:
        if self._broken is not None:
            raise FleetWorkerError(
                f"this fleet stopped on an error ({self._broken}); close it and start a new one"
            )

    # ------------------------------------------------------------------ results
    @property
    def outcomes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for shard in self._shards:
            total.update(shard.outcomes)
        return total

    def things(self) -> list[str]:
        return list(self._profiles)

    def profile(self, thing: str) -> Profile:
        return self._profiles[thing]

    def paths(self, thing: str) -> DevicePaths:
        return device_paths(self.root, thing)

    def view(self, thing: str) -> DeviceView:
        view: DeviceView = self._ask([self._shards[self._owner[thing]]], "view", thing)[0]
        return view

    def endpoint_of(self, thing: str) -> str:
        host: str = self._ask([self._shards[self._owner[thing]]], "endpoint_of", thing)[0]
        return host

    def endpoint_counts(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for counts in self._ask(self._shards, "endpoint_counts"):
            total.update(counts)
        return dict(total)

    def exposed(self, before: float | None = None) -> int:
        return sum(self._ask(self._shards, "exposed", before))

    def profile_counts(self) -> dict[str, int]:
        return dict(Counter(p.value for p in self._profiles.values()))
