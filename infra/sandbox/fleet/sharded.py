"""The memory fleet on every core: its devices split over worker processes.

One Python process runs on one core, and a simulated device costs about a
millisecond of it (the real transaction: validator, journal writes, renames,
JSON). `ShardedFleet` splits the devices of a `MemoryFleet` over worker
interpreters. Each worker is a `MemoryFleet` of its share: the real `Agent`,
real files and journal, the same fault profiles. The Jobs engine stays in the
parent; a worker reaches it with the two data-plane calls a device makes
(`describe_execution`, `update_execution`), so every job status still comes
from a device's own transaction and the engine decides what each call returns.

Protocol (pickled messages over one socket pair per worker):
- parent -> worker: ("start", now), ("run", now, [things with news]),
  ("query", method, args), ("close", remove_files); a list of answers to a batch;
- worker -> parent: ("batch", [("describe", thing, job_id, number) |
  ("update", thing, job_id, kwargs)]) while running, each answered ("ok", snapshot)
  or ("err", code, message); ("done", activations, next_wakeup, outcomes),
  ("result", value), ("ready",) or ("failed", traceback).
A snapshot carries the job document only when the worker does not hold it yet.

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

import contextlib
import gc
import logging
import pickle
import resource
import shutil
import socket
import subprocess
import sys
import threading
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, NamedTuple, Self

import greenlet
import structlog

from device_handler.agent import DevicePaths
from infra.sandbox.engine import JobsEngine
from infra.sandbox.errors import SandboxError
from infra.sandbox.fleet._base import DeviceView, FleetTiming, default_fleet_root, device_paths
from infra.sandbox.fleet.memory import MemoryFleet
from infra.sandbox.fleet.profiles import Profile
from infra.sandbox.pki import SandboxPki
from job_documents.clock import ManualClock

__all__ = ["GC_THRESHOLDS", "FleetWorkerError", "ShardedFleet", "WorkerProcesses", "simulation_gc"]

log = structlog.get_logger(__name__)

STOP_TIMEOUT: Final = 30.0
_STDERR_FD: Final = 2
#: Collector thresholds for a process that holds a large simulated fleet (or its engine):
#: collect the young generation every 50,000 allocations and almost never walk the old one,
#: which holds the long-lived things, executions and device records.
GC_THRESHOLDS: Final = (50_000, 50, 1_000)
IN_FLIGHT: Final = 512  # devices a worker runs at once (each parked on an engine call or running)


class FleetWorkerError(SandboxError):
    """A worker process failed; the message carries its traceback."""


@contextlib.contextmanager
def simulation_gc() -> Iterator[None]:
    """`GC_THRESHOLDS` for this process while the block runs; the previous ones after it.

    For programs that run large campaigns on the memory transport (the CLI, the
    benchmarks). With the default thresholds, the engine process of a 100k-device run
    spends about two seconds in a dozen full collections of a heap that is nearly all
    long-lived. Not for the MQTT fleet: its SDK clients hold native connections that a
    collection releases, and with these thresholds 1k devices took 162 s instead of 123.
    The collector is a process-wide setting, so the library never changes it: the
    program that owns the process does, like its logging. Workers set the same thresholds.
    """
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


@dataclass(frozen=True, slots=True)
class _ShardConfig:
    index: int
    pki_dir: Path
    region: str
    endpoint_prefix: str
    profiles: dict[str, str]
    root: Path
    seed: int
    timing: FleetTiming
    durable: bool
    share_validation: bool
    start: float
    setup: Callable[[], None] | None


class _Snapshot(NamedTuple):
    """The fields of an execution a device reads (`device_handler.memory.ExecutionView`)."""

    job_id: str
    status: str
    status_details: Mapping[str, str]
    version_number: int
    execution_number: int
    job_document: str


class _Closing(BaseException):
    """The parent closed the fleet while this worker waited for answers: stop quietly."""

    def __init__(self, message: Any) -> None:
        super().__init__("closing")
        self.message = message


class _RemoteError(Exception):
    """The engine refused a call; `code` is its Jobs error code (None: not a refusal)."""

    def __init__(self, code: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _RemoteEngine:
    """The worker's view of the parent's engine: a clock, and the two data-plane calls.

    Devices run as greenlets (`run`): a device that calls the engine parks its
    request and yields to the next device; parked requests go to the parent in
    batches and each device resumes with its own answer. One round trip per batch
    instead of one per call: a round trip between processes costs far more than
    the call itself.
    """

    def __init__(self, conn: Connection, clock: ManualClock) -> None:
        self._conn = conn
        self.clock = clock
        self._documents: dict[str, str] = {}
        self._parked: list[tuple[greenlet.greenlet, tuple[Any, ...]]] = []
        self._hub: greenlet.greenlet | None = None

    def subscribe(self, callback: Any) -> None:
        del callback  # news arrives with each "run" message

    def run(self, things: list[str], activate: Callable[[str], None]) -> None:
        """Activate `things`, up to `IN_FLIGHT` at a time, batching their engine calls.

        In rounds: every runnable device runs until it parks on a call or ends, then
        the round's calls go to the parent as one batch and the answers come back in
        order. The rounds, and so the order in which the engine sees the calls, do
        not depend on timing: the same fleet gives the same outcome on every run.
        """
        self._hub = greenlet.getcurrent()
        waiting = list(reversed(things))
        ready: deque[tuple[greenlet.greenlet, Any]] = deque()
        live = 0
        try:
            while waiting or ready:
                while waiting and live < IN_FLIGHT:
                    ready.append((greenlet.greenlet(activate), waiting.pop()))
                    live += 1
                while ready:
                    device, value = ready.popleft()
                    device.switch(value)
                    if device.dead:
                        live -= 1
                if self._parked:
                    parked, self._parked = self._parked, []
                    answers = self._exchange([request for _, request in parked])
                    ready.extend(zip([device for device, _ in parked], answers, strict=True))
        finally:
            self._hub = None
            self._parked = []

    def _exchange(self, requests: list[tuple[Any, ...]]) -> list[Any]:
        self._conn.send(("batch", requests))
        answers = self._conn.recv()
        if not isinstance(answers, list):  # the parent gave up on this run: it is closing
            raise _Closing(answers)
        return answers

    def _call(self, request: tuple[Any, ...]) -> _Snapshot:
        if self._hub is None:  # outside `run`: one round trip of its own
            reply = self._exchange([request])[0]
        else:
            self._parked.append((greenlet.getcurrent(), request))
            reply = self._hub.switch()
        if reply[0] == "err":
            raise _RemoteError(reply[1], reply[2])
        job_id, status, details, version, number, document = reply[1]
        if document is None:
            document = self._documents[job_id]
        else:
            self._documents[job_id] = document
        return _Snapshot(job_id, status, details, version, number, document)

    def describe_execution(
        self, thing_name: str, job_id: str, *, execution_number: int | None
    ) -> _Snapshot:
        return self._call(("describe", thing_name, job_id, execution_number))

    def update_execution(self, thing_name: str, job_id: str, **kwargs: Any) -> _Snapshot:
        return self._call(("update", thing_name, job_id, kwargs))


def _worker(conn: Connection, config: _ShardConfig) -> None:
    """One worker's life: build its share of the fleet, then answer the parent until closed."""
    try:
        if config.setup is not None:
            config.setup()
        else:  # a spawned process has no logging set-up: keep its stdout clean, warn on stderr
            structlog.configure(
                wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                logger_factory=structlog.WriteLoggerFactory(sys.stderr),
            )
        clock = ManualClock(datetime.fromtimestamp(config.start, UTC))
        engine = _RemoteEngine(conn, clock)
        pki = SandboxPki(
            config.pki_dir, region=config.region, endpoint_prefix=config.endpoint_prefix
        )
        fleet = MemoryFleet(
            engine,
            pki,
            {name: Profile(value) for name, value in config.profiles.items()},
            root=config.root,
            seed=config.seed,
            timing=config.timing,
            durable=config.durable,
            share_validation=config.share_validation,
        )
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("failed", traceback.format_exc()))
        return
    # A worker holds tens of thousands of long-lived device records and makes short-lived
    # objects by the million: collect the young often, rarely walk the old ones.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return  # the parent is gone
        try:
            op = message[0]
            if op in ("start", "run"):
                when = datetime.fromtimestamp(message[1], UTC)
                if when > clock.now():
                    clock.set(when)
                if op == "start":
                    fleet.start()
                    done = 0
                else:
                    fleet.notify(message[2])
                    things = fleet.take_due()
                    engine.run(things, fleet.activate)
                    done = len(things)
                conn.send(("done", done, fleet.next_wakeup(), dict(fleet.outcomes)))
            elif op == "query":
                conn.send(("result", getattr(fleet, message[1])(*message[2])))
            elif op == "close":
                _close(conn, fleet, message)
                return
            else:
                conn.send(("failed", f"unknown request {op!r}"))
                return
        except _Closing as closing:
            _close(conn, fleet, closing.message)
            return
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it
            # Devices may be parked mid-transaction and answers unread: this worker
            # cannot go on. The parent treats the fleet as broken; files stay as they are.
            with contextlib.suppress(OSError):
                conn.send(("failed", traceback.format_exc()))
            return


def _close(conn: Connection, fleet: MemoryFleet, message: Any) -> None:
    """Remove this worker's device files when asked; tell the parent what the worker used."""
    if isinstance(message, tuple) and message[:1] == ("close",) and message[1]:
        fleet.remove_device_files()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with contextlib.suppress(OSError):
        conn.send(
            ("result", {"peak_rss_mib": _peak_rss_mib(), "cpu_s": usage.ru_utime + usage.ru_stime})
        )


def _peak_rss_mib() -> float:
    """This interpreter's own peak RSS.

    Not `ru_maxrss`: Linux carries it over exec, so a worker started by a big parent
    would report the parent's size at the time it was started. VmHWM belongs to the
    new address space.
    """
    try:
        with Path("/proc/self/status").open(encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Shard:
    __slots__ = ("conn", "documents", "index", "next_wakeup", "outcomes", "process")

    def __init__(self, index: int, conn: Connection, process: subprocess.Popen[bytes]) -> None:
        self.index = index
        self.conn = conn
        self.process = process
        self.next_wakeup: float | None = None
        self.outcomes: dict[str, int] = {}
        self.documents: dict[str, str] = {}  # job id -> the document this worker holds


def _start_interpreter() -> tuple[Connection, subprocess.Popen[bytes]]:
    """Start one worker interpreter, a socket pair between us; it imports, then waits.

    A fresh interpreter, not `multiprocessing`'s spawn: that one re-runs the caller's
    main module in every worker, which a script without a main guard cannot survive.
    """
    ours, theirs = socket.socketpair()
    with theirs:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.sandbox.fleet.worker", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=_STDERR_FD,  # stdout is the caller's (one JSON line); a worker never writes it
        )
    conn = Connection(ours.detach())
    try:
        conn.send(list(sys.path))  # first, so that `config.setup` can be found when unpickled
    except OSError:
        _stop(conn, process)
        raise
    return conn, process


def _stop(conn: Connection, process: subprocess.Popen[bytes]) -> None:
    """Stop a worker that holds no devices yet: end its pipe, kill it, reap it."""
    conn.close()
    if process.poll() is None:
        process.kill()
    process.wait(STOP_TIMEOUT)


class WorkerProcesses:
    """Worker interpreters started ahead of their fleet.

    Starting a worker is mostly importing the device code (about a second of CPU
    each). Started before the caller provisions its things, that happens meanwhile;
    a `ShardedFleet` given these processes then only sends each its share. A
    context manager: closing it stops the processes no fleet took (a fleet that
    took them stops them itself).
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("a sharded fleet needs at least one worker process")
        self._started: list[tuple[Connection, subprocess.Popen[bytes]]] = []
        try:
            for _ in range(count):
                self._started.append(_start_interpreter())
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self._started)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def take(self) -> list[tuple[Connection, subprocess.Popen[bytes]]]:
        """Hand the processes over (to a fleet, which stops them); this object is then empty."""
        started, self._started = self._started, []
        return started

    def close(self) -> None:
        for conn, process in self.take():
            _stop(conn, process)


def worker_main(argv: list[str]) -> None:
    """Entry point of a worker interpreter (`python -m infra.sandbox.fleet.worker FD`)."""
    conn = Connection(int(argv[1]))
    try:
        path = conn.recv()
        sys.path[:] = [*path, *(p for p in sys.path if p not in path)]
        config = conn.recv()
    except EOFError:
        return  # started ahead (`WorkerProcesses`) and never used: the parent let it go
    _worker(conn, config)


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
        self.activations = 0
        self.worker_usage: list[dict[str, float]] = []  # per worker, once closed
        self._broken: str | None = None  # why the fleet can no longer run
        started: list[tuple[Connection, subprocess.Popen[bytes]]] = []
        try:
            # Before taking or starting any process: an unpicklable setup fails here.
            payloads = [
                pickle.dumps(
                    _ShardConfig(
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
                    )
                )
                for index, share in enumerate(shares)
            ]
            started = processes.take() if processes is not None else []
            while len(started) < workers:
                started.append(_start_interpreter())
            for index, (conn, process) in enumerate(started):
                shard = _Shard(index, conn, process)
                self._shards.append(shard)
                self._send_bytes(shard, payloads[index])
            for shard in self._shards:
                self._expect(shard, "ready")
        except BaseException:
            for conn, process in started[len(self._shards) :]:
                _stop(conn, process)
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
            self._send(shard, ("start", now))
        for shard in self._shards:
            self._finish(shard, self._expect(shard, "done"))
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
                    shard.conn.send(("close", remove))
                except OSError:
                    continue
        for shard in self._shards:
            try:
                # Every worker answers a close with its usage, mid-run or not (unless it
                # died); a worker stopped mid-run may first send the batch it had ready.
                while shard.process.returncode is None and shard.conn.poll(STOP_TIMEOUT):
                    reply = shard.conn.recv()
                    if reply[0] == "result" and isinstance(reply[1], dict):
                        self.worker_usage.append(reply[1])
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
    def _expect(self, shard: _Shard, kind: str) -> tuple[Any, ...]:
        """The next message from `shard`, serving its engine calls meanwhile."""
        while True:
            message = self._recv(shard)
            if message[0] == kind:
                return tuple(message)
            if message[0] == "failed":
                raise FleetWorkerError(f"fleet worker {shard.index} failed:\n{message[1]}")
            self._serve(shard, message)

    def _send(self, shard: _Shard, message: Any) -> None:
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

    def _recv(self, shard: _Shard) -> Any:
        try:
            return shard.conn.recv()
        except (EOFError, OSError) as exc:
            raise self._gone(shard) from exc

    def _serve(self, shard: _Shard, message: tuple[Any, ...]) -> None:
        if message[0] == "failed":
            raise FleetWorkerError(f"fleet worker {shard.index} failed:\n{message[1]}")
        if message[0] != "batch":
            raise FleetWorkerError(f"fleet worker {shard.index} sent {message[0]!r}")
        self._send(shard, [self._answer(shard, request) for request in message[1]])

    def _answer(self, shard: _Shard, request: tuple[Any, ...]) -> tuple[Any, ...]:
        op, thing, job_id = request[0], request[1], request[2]
        if op not in ("describe", "update"):
            raise FleetWorkerError(f"fleet worker {shard.index} asked for {op!r}")
        self._serving = thing
        try:
            if op == "describe":
                snap = self.engine.describe_execution(thing, job_id, execution_number=request[3])
            else:
                snap = self.engine.update_execution(thing, job_id, **request[3])
        except Exception as exc:  # noqa: BLE001 - the refusal goes back to the device
            code = getattr(exc, "code", None)
            text = getattr(exc, "message", None) or str(exc)
            return ("err", code if isinstance(code, str) else None, text)
        finally:
            self._serving = None
        document: str | None = snap.job_document
        if shard.documents.get(snap.job_id) == document:
            document = None
        else:
            shard.documents[snap.job_id] = snap.job_document
        return (
            "ok",
            (
                snap.job_id,
                snap.status,
                dict(snap.status_details),
                snap.version_number,
                snap.execution_number,
                document,
            ),
        )

    def _finish(self, shard: _Shard, message: tuple[Any, ...]) -> int:
        _, done, wakeup, outcomes = message
        shard.next_wakeup = wakeup
        shard.outcomes = outcomes
        return int(done)

    def _ask(self, shards: list[_Shard], method: str, *args: Any) -> list[Any]:
        self._usable()
        for shard in shards:
            self._send(shard, ("query", method, args))
        return [self._expect(shard, "result")[1] for shard in shards]

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
                    self._send(shard, ("run", now, news))
                    busy.append(shard)
            busy.sort(key=lambda shard: shard.index)

        try:
            dispatch()
            while busy:
                for shard in list(busy):
                    message = self._recv(shard)
                    if message[0] == "done":
                        total += self._finish(shard, message)
                        busy.remove(shard)
                    else:
                        self._serve(shard, message)
                dispatch()
        except BaseException as exc:
            # Workers may be parked mid-run with answers unread: nothing but close() is safe.
            self._broken = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise
        self.activations += total
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
