"""Worker interpreters for a `ShardedFleet`: starting, handing over and stopping them."""

from __future__ import annotations

import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Final, Self

__all__ = ["STOP_TIMEOUT", "WorkerProcesses", "start_interpreter", "stop_interpreter"]

STOP_TIMEOUT: Final = 30.0
_STDERR_FD: Final = 2


def start_interpreter() -> tuple[Connection, subprocess.Popen[bytes]]:
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
        stop_interpreter(conn, process)
        raise
    return conn, process


def stop_interpreter(conn: Connection, process: subprocess.Popen[bytes]) -> None:
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
                self._started.append(start_interpreter())
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
            stop_interpreter(conn, process)
