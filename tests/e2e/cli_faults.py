"""Crash injection for the orchestrator's crash tests: the CLI killed after its Nth write.

`run_cli_forked(args, env)` runs `ca-migrate ARGS` as its own process. With
`CA_MIGRATE_KILL_AFTER_WRITES=N` in `env`, that process wraps its store and AWS
adapter (through the CLI's embedding seam, `orchestrator.cli.seams`) so that it
SIGKILLs itself right after its Nth write (a state-store commit, CreateJob or
CancelJob). Enumerating N = 1, 2, ... kills a reconcile at every step of a
campaign. Only this module reads the variable: the shipped CLI does not.

Each run is forked from a small server (`python -m tests.e2e.cli_faults`) that
imported the CLI, boto3 and the stores once: each run is still its own process
(own memory, own SQLite connection, SIGKILLed for real), but it does not pay
the interpreter start-up and imports again, which dominate a crash test that
starts dozens of processes. The server
is single-threaded, so a fork never copies a held lock, and it imports nothing
of the caller (unlike multiprocessing, which re-runs the parent's main module).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from orchestrator.cli import seams
from orchestrator.jobs import FailureSample, JobsApi
from orchestrator.model import CampaignState, Event
from orchestrator.planner import JobConfig, JobObservation
from orchestrator.store import StateStore, StoredCampaign, StoredEvent

__all__ = ["ENV", "CliRun", "KillSwitch", "run_cli_forked", "stop_cli_forkserver"]

ENV = "CA_MIGRATE_KILL_AFTER_WRITES"
_REPO = Path(__file__).resolve().parents[2]


class KillSwitch:
    """Counts writes; SIGKILLs this process after the configured one."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.writes = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KillSwitch | None:
        """The switch `env` asks for (one per process: store and adapter share it), or None."""
        raw = env.get(ENV, "")
        return cls(int(raw)) if raw.isdigit() and int(raw) > 0 else None

    def wrote(self) -> None:
        self.writes += 1
        if self.writes >= self.after:
            os.kill(os.getpid(), signal.SIGKILL)


class KillingStore:
    """A `StateStore` that counts its commits."""

    def __init__(self, inner: StateStore, switch: KillSwitch) -> None:
        self._inner = inner
        self._switch = switch

    def create(self, stored: StoredCampaign, events: Sequence[Event]) -> CampaignState:
        out = self._inner.create(stored, events)
        self._switch.wrote()
        return out

    def load(self, name: str) -> StoredCampaign:
        return self._inner.load(name)

    def commit(self, state: CampaignState, events: Sequence[Event]) -> CampaignState:
        out = self._inner.commit(state, events)
        self._switch.wrote()
        return out

    def events(self, name: str) -> list[StoredEvent]:
        return self._inner.events(name)

    def acquire_lease(
        self,
        name: str,
        owner: str,
        ttl: timedelta,
        now: datetime,
        *,
        take_over: str | None = None,
    ) -> None:
        self._inner.acquire_lease(name, owner, ttl, now, take_over=take_over)

    def lease_holder(self, name: str) -> str | None:
        return self._inner.lease_holder(name)

    def release_lease(self, name: str, owner: str) -> None:
        self._inner.release_lease(name, owner)

    def names(self) -> list[str]:
        return self._inner.names()


class KillingJobsApi:
    """A `JobsApi` that counts CreateJob and CancelJob."""

    def __init__(self, inner: JobsApi, switch: KillSwitch) -> None:
        self._inner = inner
        self._switch = switch

    def resolve_endpoint(self) -> str:
        return self._inner.resolve_endpoint()

    def count_things(self, thing_group: str) -> int:
        return self._inner.count_things(thing_group)

    def create_job(self, job_id: str, document: str, config: JobConfig) -> None:
        self._inner.create_job(job_id, document, config)
        self._switch.wrote()

    def describe_job(self, job_id: str) -> JobObservation:
        return self._inner.describe_job(job_id)

    def get_job_document(self, job_id: str) -> str:
        return self._inner.get_job_document(job_id)

    def cancel_job(self, job_id: str, reason: str) -> None:
        self._inner.cancel_job(job_id, reason)
        self._switch.wrote()

    def list_failures(self, job_id: str, limit: int) -> list[FailureSample]:
        return self._inner.list_failures(job_id, limit)


# -- the CLI in forked processes ----------------------------------------------------------------

_PRELOAD = (
    "boto3",
    "botocore.session",
    "orchestrator.cli",
    "orchestrator.cli.campaign",
    "orchestrator.aws.iot",
    "orchestrator.store.sqlite",
    "orchestrator.jobdocs",
    "orchestrator.report",
)


@dataclass(frozen=True, slots=True)
class CliRun:
    """How one CLI process ended: its exit code (-9 when SIGKILLed) and its output."""

    returncode: int
    stdout: str
    stderr: str


class CliForkServer:
    """The fork server: one interpreter with the CLI imported; `run` forks a child per call."""

    def __init__(self) -> None:
        self._server = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.cli_faults"],
            cwd=_REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _read(self, timeout: float) -> dict[str, Any]:
        stdout = self._server.stdout
        if stdout is None:  # pragma: no cover - Popen was given PIPE
            raise RuntimeError("the fork server has no stdout")
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TimeoutError(f"the fork server did not answer within {timeout} s")
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server exited ({self._server.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, args: Sequence[str], env: Mapping[str, str], *, timeout: float) -> CliRun:
        """Run `ca-migrate ARGS` with exactly `env` as its environment; wait for it to end."""
        stdin: IO[str] | None = self._server.stdin
        if stdin is None:  # pragma: no cover - Popen was given PIPE
            raise RuntimeError("the fork server has no stdin")
        with tempfile.TemporaryDirectory(prefix="ca-migrate-cli-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"args": list(args), "env": dict(env), "stdout": str(out), "stderr": str(err)}
            stdin.write(json.dumps(request) + "\n")
            stdin.flush()
            pid = int(self._read(30.0)["pid"])
            try:
                code = int(self._read(timeout)["code"])
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._read(30.0)
                raise TimeoutError(
                    f"ca-migrate {' '.join(args)} did not end within {timeout} s"
                ) from None
            return CliRun(
                code,
                out.read_text(errors="replace") if out.exists() else "",
                err.read_text(errors="replace") if err.exists() else "",
            )

    def close(self) -> None:
        """Stop the server (it exits when its input ends)."""
        if self._server.stdin is not None:
            self._server.stdin.close()
        try:
            self._server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()
        if self._server.stdout is not None:
            self._server.stdout.close()


@functools.cache
def _server() -> CliForkServer:
    return CliForkServer()


def run_cli_forked(
    args: Sequence[str], env: Mapping[str, str], *, timeout: float = 120.0
) -> CliRun:
    """Run `ca-migrate ARGS` in a fresh process forked from the shared fork server."""
    return _server().run(args, env, timeout=timeout)


def stop_cli_forkserver() -> None:
    """Stop the fork server `run_cli_forked` started (the next run starts a new one)."""
    if _server.cache_info().currsize:
        _server().close()
        _server.cache_clear()


def _serve() -> None:
    """The server's loop: one JSON request per line; answers {"pid"} then {"code"}."""
    for name in _PRELOAD:
        importlib.import_module(name)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _cli_child(request["args"], request["env"], request["stdout"], request["stderr"])
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
        sys.stdout.flush()


def _cli_child(args: list[str], env: dict[str, str], out: str, err: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    switch = KillSwitch.from_env(env)
    if switch is not None:
        seams.wrap_adapters(
            store=lambda store: KillingStore(store, switch),
            jobs_api=lambda api: KillingJobsApi(api, switch),
        )
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.argv = ["ca-migrate", *args]
    from orchestrator.cli import main

    code = 1
    try:
        main()
        code = 0
    except SystemExit as exc:
        if isinstance(exc.code, int):
            code = exc.code
        elif exc.code is not None:
            sys.stderr.write(f"{exc.code}\n")
    except Exception:  # noqa: BLE001 - a crashed CLI is exit 1 with its traceback, as unforked
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    _serve()
