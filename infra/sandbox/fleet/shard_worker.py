"""A `ShardedFleet` worker: its share of the fleet, run against the parent's engine.

The worker is a `MemoryFleet` of its share (the real `Agent`, real files and
journal, the same fault profiles) whose engine is `_RemoteEngine`: the two
data-plane calls a device makes, sent to the parent in batches
(`shard_messages`). See `infra.sandbox.fleet.sharded` for the whole design.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import resource
import sys
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, NamedTuple, assert_never

import greenlet

from infra.sandbox.fleet.gc_tuning import GC_THRESHOLDS
from infra.sandbox.fleet.memory import MemoryFleet
from infra.sandbox.fleet.profiles import Profile
from infra.sandbox.fleet.shard_messages import (
    Answers,
    Batch,
    Close,
    Describe,
    Done,
    Err,
    Failed,
    Query,
    Ready,
    Reply,
    Request,
    Result,
    Run,
    Start,
    Update,
    is_to_worker,
)
from infra.sandbox.fleet.timing import FleetTiming
from infra.sandbox.pki import SandboxPki
from job_documents import logs
from job_documents.clock import ManualClock

__all__ = ["IN_FLIGHT", "ShardConfig", "worker_main"]

IN_FLIGHT: Final = 512  # devices a worker runs at once (each parked on an engine call or running)


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """What a worker needs to build its share of the fleet (pickled to it once)."""

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
    verify_key: Path | None = None


class _Closing(BaseException):
    """The parent closed the fleet while this worker waited for answers: stop quietly."""

    def __init__(self, message: object) -> None:
        super().__init__("closing")
        self.message = message


class _RemoteError(Exception):
    """The engine refused a call; `code` is its Jobs error code (None: not a refusal)."""

    def __init__(self, code: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Execution(NamedTuple):
    """The fields of an execution a device reads (`device_handler.memory.ExecutionView`)."""

    job_id: str
    status: str
    status_details: Mapping[str, str]
    version_number: int
    execution_number: int
    job_document: str


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
        self._parked: list[tuple[greenlet.greenlet, Request]] = []
        self._hub: greenlet.greenlet | None = None

    def subscribe(self, callback: Any) -> None:
        del callback  # news arrives with each `Run` message

    def run(self, things: list[str], runner: Callable[[str], greenlet.greenlet | None]) -> None:
        """Let `things` act, up to `IN_FLIGHT` at a time, batching their engine calls.

        `runner(thing)` is the device's greenlet (`MemoryFleet.runner`: a new
        activation or a transaction resumed), or None when it has nothing to do now.
        In rounds: every runnable device runs until it parks on a call, waits for
        simulated time (the fleet keeps it) or ends, then the round's calls go to
        the parent as one batch and the answers come back in order. The rounds, and
        so the order in which the engine sees the calls, do not depend on timing:
        the same fleet gives the same outcome on every run.
        """
        self._hub = greenlet.getcurrent()
        waiting = list(reversed(things))
        ready: deque[tuple[greenlet.greenlet, tuple[Any, ...]]] = deque()  # and what to send
        live = 0
        try:
            while waiting or ready:
                while waiting and live < IN_FLIGHT:
                    device = runner(waiting.pop())
                    if device is not None:
                        ready.append((device, ()))
                        live += 1
                while ready:
                    device, sent = ready.popleft()
                    device.switch(*sent)
                    if not (self._parked and self._parked[-1][0] is device):
                        live -= 1  # ended, or waits for simulated time: no longer in flight
                if self._parked:
                    parked, self._parked = self._parked, []
                    answers = self._exchange([request for _, request in parked])
                    ready.extend(
                        (device, (answer,))
                        for (device, _), answer in zip(parked, answers, strict=True)
                    )
        finally:
            self._hub = None
            self._parked = []

    def _exchange(self, requests: list[Request]) -> list[Reply]:
        self._conn.send(Batch(requests))
        answers = self._conn.recv()
        if not isinstance(answers, Answers):  # the parent gave up on this run: it is closing
            raise _Closing(answers)
        return answers.replies

    def _call(self, request: Request) -> _Execution:
        reply: Reply
        if self._hub is None:  # outside `run`: one round trip of its own
            reply = self._exchange([request])[0]
        else:
            self._parked.append((greenlet.getcurrent(), request))
            reply = self._hub.switch()
        if isinstance(reply, Err):
            raise _RemoteError(reply.code, reply.message)
        snap = reply.snapshot
        document = snap.job_document
        if document is None:
            document = self._documents[snap.job_id]
        else:
            self._documents[snap.job_id] = document
        return _Execution(
            snap.job_id,
            snap.status,
            snap.status_details,
            snap.version_number,
            snap.execution_number,
            document,
        )

    def describe_execution(
        self, thing_name: str, job_id: str, *, execution_number: int | None
    ) -> _Execution:
        return self._call(Describe(thing_name, job_id, execution_number))

    def update_execution(self, thing_name: str, job_id: str, **kwargs: Any) -> _Execution:
        return self._call(Update(thing_name, job_id, kwargs))


def _build(conn: Connection, config: ShardConfig) -> tuple[ManualClock, _RemoteEngine, MemoryFleet]:
    if config.setup is not None:
        config.setup()
    else:  # a spawned process has no logging set-up: keep its stdout clean, warn on stderr
        logs.configure_logging(json=False, level=logging.WARNING)
    clock = ManualClock(datetime.fromtimestamp(config.start, UTC))
    engine = _RemoteEngine(conn, clock)
    pki = SandboxPki(config.pki_dir, region=config.region, endpoint_prefix=config.endpoint_prefix)
    fleet = MemoryFleet(
        engine,
        pki,
        {name: Profile(value) for name, value in config.profiles.items()},
        root=config.root,
        seed=config.seed,
        timing=config.timing,
        durable=config.durable,
        share_validation=config.share_validation,
        verify_key=config.verify_key,
    )
    return clock, engine, fleet


def _worker(conn: Connection, config: ShardConfig) -> None:
    """One worker's life: build its share of the fleet, then answer the parent until closed."""
    try:
        clock, engine, fleet = _build(conn, config)
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(Failed(traceback.format_exc()))
        return
    # A worker holds tens of thousands of long-lived device records and makes short-lived
    # objects by the million: collect the young often, rarely walk the old ones.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    conn.send(Ready())
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return  # the parent is gone
        try:
            if not _handle(conn, clock, engine, fleet, message):
                return
        except _Closing as closing:
            _close(conn, fleet, closing.message)
            return
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it
            # Devices may be parked mid-transaction and answers unread: this worker
            # cannot go on. The parent treats the fleet as broken; files stay as they are.
            with contextlib.suppress(OSError):
                conn.send(Failed(traceback.format_exc()))
            return


def _handle(
    conn: Connection, clock: ManualClock, engine: _RemoteEngine, fleet: MemoryFleet, message: object
) -> bool:
    """Answer one message from the parent; False when the worker is to stop."""
    if not is_to_worker(message) or isinstance(message, Answers):
        conn.send(Failed(f"unknown request {message!r:.200}"))
        return False
    match message:
        case Start(now) | Run(now, _):
            when = datetime.fromtimestamp(now, UTC)
            if when > clock.now():
                clock.set(when)
            done = 0
            if isinstance(message, Start):
                fleet.start()
            else:
                fleet.notify(message.news)
                things = fleet.take_due()
                engine.run(things, fleet.runner)
                done = len(things)
            conn.send(Done(done, fleet.next_wakeup(), dict(fleet.outcomes)))
        case Query(method, args):
            conn.send(Result(getattr(fleet, method)(*args)))
        case Close():
            _close(conn, fleet, message)
            return False
        case _:
            assert_never(message)
    return True


def _close(conn: Connection, fleet: MemoryFleet, message: object) -> None:
    """Remove this worker's device files when asked; tell the parent what the worker used."""
    if isinstance(message, Close) and message.remove_files:
        fleet.remove_device_files()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with contextlib.suppress(OSError):
        conn.send(
            Result({"peak_rss_mib": _peak_rss_mib(), "cpu_s": usage.ru_utime + usage.ru_stime})
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
