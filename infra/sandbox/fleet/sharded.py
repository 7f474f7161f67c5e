"""The memory fleet on every core: its devices split over worker processes.

One Python process runs on one core, and a simulated device costs about a
millisecond of it (the real transaction: validator, journal writes, renames,
JSON). `ShardedFleet` splits the devices of a `MemoryFleet` over worker
processes, one per core by default. Each worker is a `MemoryFleet` of its
share: the real `Agent`, real files and journal, the same fault profiles. The
Jobs engine stays in the parent; a worker reaches it through a pipe with the
two data-plane calls a device makes (`describe_execution`,
`update_execution`), so every job status still comes from a device's own
transaction and the engine still decides what each call returns.

Protocol (pickled tuples over one `multiprocessing` pipe per worker):
- parent -> worker: ("start", now), ("run", now, [things with news]),
  ("query", method, args), ("close", remove_files);
- worker -> parent, while running: ("describe", thing, job_id, number) and
  ("update", thing, job_id, kwargs), answered ("ok", snapshot) or
  ("err", code, message); then ("done", activations, next_wakeup, outcomes),
  ("result", value) or ("failed", traceback).
A snapshot carries the job document only the first time a worker sees it.

Invariants:
- Devices are assigned to workers round-robin in fleet order, so each worker
  gets the same mix of groups and profiles; profile assignment happens in the
  parent, so it does not depend on the number of workers.
- `run_due()` returns only when every worker is idle and no device has news,
  as `MemoryFleet.run_due()` does; the engine is only ever called from the
  parent's driving thread (and the engine's own scheduler).
- Each worker's clock is set to the parent's simulated time before it runs.
- Workers are fresh interpreters, not forks: the parent runs threads (HTTP front end,
  scheduler) whose locks a fork would copy mid-use. A spawned process starts
  with no logging set-up: `worker_setup` (a picklable callable, e.g. the CLI's
  logging set-up) runs first in each worker; without one, a worker logs
  warnings and errors to stderr and nothing to stdout.
- `close()` stops every worker, terminating any that does not stop in time.
"""

from __future__ import annotations

import gc
import logging
import resource
import shutil
import socket
import subprocess
import sys
import threading
import traceback
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
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

__all__ = ["ShardedFleet"]

log = structlog.get_logger(__name__)

STOP_TIMEOUT: Final = 30.0
_STDERR_FD: Final = 2
GC_THRESHOLDS: Final = (50_000, 50, 1_000)
BATCH: Final = 64  # engine calls per message to the parent
IN_FLIGHT: Final = 512  # devices a worker runs at once (each parked on an engine call or running)


class FleetWorkerError(SandboxError):
    """A worker process failed; the message carries its traceback."""


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

        Batches of `BATCH` calls go out as soon as they fill, and the worker keeps
        running other devices while the parent answers them: the two overlap.
        """
        self._hub = greenlet.getcurrent()
        waiting = list(reversed(things))
        ready: deque[tuple[greenlet.greenlet, Any]] = deque()
        sent: deque[list[greenlet.greenlet]] = deque()  # batches awaiting answers, in order
        live = 0
        try:
            while waiting or ready or self._parked or sent:
                while waiting and live < IN_FLIGHT:
                    ready.append((greenlet.greenlet(activate), waiting.pop()))
                    live += 1
                while ready:
                    device, value = ready.popleft()
                    device.switch(value)
                    if device.dead:
                        live -= 1
                    if len(self._parked) >= BATCH:
                        self._send(sent)
                    if sent and self._conn.poll():
                        self._receive(sent, ready)
                if self._parked:
                    self._send(sent)
                if sent:
                    self._receive(sent, ready)
        finally:
            self._hub = None

    def _send(self, sent: deque[list[greenlet.greenlet]]) -> None:
        parked, self._parked = self._parked, []
        self._conn.send(("batch", [request for _, request in parked]))
        sent.append([device for device, _ in parked])

    def _receive(
        self, sent: deque[list[greenlet.greenlet]], ready: deque[tuple[greenlet.greenlet, Any]]
    ) -> None:
        answers = self._conn.recv()
        if not isinstance(answers, list):  # the parent gave up on this run and is closing
            raise _Closing
        ready.extend(zip(sent.popleft(), answers, strict=True))

    def _call(self, request: tuple[Any, ...]) -> _Snapshot:
        if self._hub is None:  # outside `run`: one round trip of its own
            self._conn.send(("batch", [request]))
            answers = self._conn.recv()  # nothing else is in flight outside `run`
            if not isinstance(answers, list):
                raise _Closing
            reply = answers[0]
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
                if message[1]:
                    fleet.remove_device_files()
                usage = resource.getrusage(resource.RUSAGE_SELF)
                conn.send(
                    (
                        "result",
                        {
                            "peak_rss_mib": usage.ru_maxrss / 1024,
                            "cpu_s": usage.ru_utime + usage.ru_stime,
                        },
                    )
                )
                return
            else:
                conn.send(("failed", f"unknown request {op!r}"))
        except _Closing:
            return
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it
            try:
                conn.send(("failed", traceback.format_exc()))
            except OSError:
                return  # the parent is gone


class _Shard:
    __slots__ = ("conn", "documents", "index", "next_wakeup", "outcomes", "process")

    def __init__(self, index: int, conn: Connection, process: subprocess.Popen[bytes]) -> None:
        self.index = index
        self.conn = conn
        self.process = process
        self.next_wakeup: float | None = None
        self.outcomes: dict[str, int] = {}
        self.documents: dict[str, str] = {}  # job id -> the document this worker holds


def _spawn(index: int, config: _ShardConfig) -> _Shard:
    """Start one worker: a fresh interpreter running this module, a socket pair between us.

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
    conn.send(list(sys.path))  # first, so that `config.setup` can be found when unpickled
    conn.send(config)
    return _Shard(index, conn, process)


def worker_main(argv: list[str]) -> None:
    """Entry point of a worker interpreter (`python -m infra.sandbox.fleet.worker FD`)."""
    conn = Connection(int(argv[1]))
    path = conn.recv()
    sys.path[:] = [*path, *(p for p in sys.path if p not in path)]
    _worker(conn, conn.recv())


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
    ) -> None:
        if workers < 1:
            raise ValueError("a sharded fleet needs at least one worker process")
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
        try:
            for index, share in enumerate(shares):
                config = _ShardConfig(
                    index=index,
                    pki_dir=pki.directory,
                    region=pki.region,
                    endpoint_prefix=pki.endpoint_prefix,
                    profiles=share,
                    root=self.root,
                    seed=seed * 1_000_003 + index,
                    timing=timing or FleetTiming(),
                    durable=durable,
                    share_validation=share_validation,
                    start=start,
                    setup=worker_setup,
                )
                self._shards.append(_spawn(index, config))
            for shard in self._shards:
                self._expect(shard, "ready")
        except BaseException:
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
                # a worker that is mid-run answers "failed"; only a clean close reports usage
                if shard.process.returncode is None and shard.conn.poll(STOP_TIMEOUT):
                    reply = shard.conn.recv()
                    if reply[0] == "result" and isinstance(reply[1], dict):
                        self.worker_usage.append(reply[1])
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

    def _send(self, shard: _Shard, message: tuple[Any, ...]) -> None:
        try:
            shard.conn.send(message)
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
        if message[0] != "batch":
            raise FleetWorkerError(f"fleet worker {shard.index} sent {message[0]!r}")
        shard.conn.send([self._answer(shard, request) for request in message[1]])

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
        """Let every device with news, or whose timer is due, act, in all workers at once."""
        del max_activations  # each worker bounds its own activations per run
        self._runner = threading.get_ident()
        now = self.clock.now().timestamp()
        busy: dict[Connection, _Shard] = {}
        woken: set[int] = set()
        total = 0

        def dispatch() -> None:
            for shard in self._shards:
                if shard.conn in busy:
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
                    busy[shard.conn] = shard

        dispatch()
        while busy:
            for conn in wait(list(busy)):
                assert isinstance(conn, Connection)  # noqa: S101 - wait returns what it was given
                shard = busy[conn]
                message = self._recv(shard)
                if message[0] == "done":
                    total += self._finish(shard, message)
                    del busy[conn]
                elif message[0] == "failed":
                    raise FleetWorkerError(f"fleet worker {shard.index} failed:\n{message[1]}")
                else:
                    self._serve(shard, message)
            dispatch()
        self.activations += total
        return total

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
