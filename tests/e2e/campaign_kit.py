"""Shared by the campaign tests: the sandbox's fleet, the campaign, the CLI as a process.

Helpers only; the fixtures (`sandbox`, the fork server's lifetime) are in conftest.py.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import structlog
from botocore.config import Config

from job_documents import SystemClock
from orchestrator.aws.groups import ThingGroupsAdapter
from orchestrator.aws.iot import IotJobsAdapter
from orchestrator.cli._preflight import CONNECT_TO_ENV
from orchestrator.model import CampaignStatus, WavePhase
from orchestrator.planner import Approve
from orchestrator.reconcile import Reconciler
from orchestrator.store.sqlite import SqliteStateStore

from .cli_faults import CliRun, run_cli_forked

GROUPS = [("canary", 4), ("fleet-a", 4), ("fleet-b", 4)]
THINGS = [f"device-{i:05d}" for i in range(1, 13)]
CAMPAIGN = """\
name: e2e
region: us-east-1
endpoint: auto
trust: {add: [amazon-root-ca-1, amazon-root-ca-3]}
execution: {in_progress_timeout_minutes: 30, retries: {failed: 0, timed_out: 0}}
halt: {max_failure_rate: 0.5, fleet_failure_budget: 5, min_executed: 2}
waves:
  - name: canary
    thing_groups: [canary]
    gate: {min_success_rate: 0.5, min_completed: 4, confidence: 0.6}
  - name: wave-1
    thing_groups: [fleet-a]
    rollout: {maximum_per_minute: 100}
    gate: {min_success_rate: 0.5, min_completed_fraction: 1.0, confidence: 0.6}
    approval: APPROVAL
  - name: wave-2
    thing_groups: [fleet-b]
    gate: {min_success_rate: 0.5, min_completed_fraction: 1.0, confidence: 0.6}
"""
RETRIES = Config(retries={"mode": "adaptive", "max_attempts": 20})
DEVICE_RETRIES = Config(retries={"mode": "standard", "max_attempts": 20})


class Fleet:
    """Simulated devices: answer every pending execution over iot-jobs-data."""

    def __init__(
        self,
        sandbox,
        failing: frozenset[str] = frozenset(),
        offline: frozenset[str] = frozenset(),
        *,
        restore_only: bool = False,
    ) -> None:
        self._client = sandbox.jobs_data_client(config=DEVICE_RETRIES)
        self._failing = failing
        self._restore_only = restore_only
        self._online = [t for t in THINGS if t not in offline]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.acks = 0

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            for thing in self._online:
                pending = self._client.get_pending_job_executions(thingName=thing)
                for job in pending.get("queuedJobs", []) + pending.get("inProgressJobs", []):
                    if self._restore_only and "-r" not in job["jobId"]:
                        continue
                    fail = thing in self._failing and "-r" not in job["jobId"]
                    self._client.update_job_execution(
                        thingName=thing,
                        jobId=job["jobId"],
                        status="FAILED" if fail else "SUCCEEDED",
                        statusDetails={"reason": "probe-failed" if fail else "committed"},
                    )
                    self.acks += 1


def campaign_text(approval: str = "auto") -> str:
    return CAMPAIGN.replace("APPROVAL", approval)


def reconciler(sandbox, tmp_path: Path) -> Reconciler:
    client = sandbox.iot_client(config=RETRIES)
    return Reconciler(
        SqliteStateStore(tmp_path / "state.sqlite"),
        IotJobsAdapter(client),
        SystemClock(),
        groups=lambda _region: ThingGroupsAdapter(client),
    )


def drive(rec: Reconciler, name: str, *, approve: str | None = None, steps: int = 200):
    state = rec.store.load(name).state
    for _ in range(steps):
        state = rec.step(name).state
        if approve and state.wave(approve).phase is WavePhase.AWAITING_APPROVAL:
            state = rec.command(name, lambda _s, _st: Approve(approve)).state
        if state.status not in (CampaignStatus.RUNNING, CampaignStatus.ROLLING_BACK):
            return state
        waiting = any(w.phase is WavePhase.AWAITING_APPROVAL for w in state.waves)
        if approve is None and waiting and state.status is CampaignStatus.RUNNING:
            return state
        threading.Event().wait(0.05)
    return state


def jobs_in_sandbox(sandbox) -> list[str]:
    client = sandbox.iot_client(config=RETRIES)
    return sorted(j["jobId"] for j in client.list_jobs(maxResults=100)["jobs"])


# -- the CLI as a process ---------------------------------------------------------------------


def without_listener(sandbox, args: tuple[str, ...]) -> tuple[str, ...]:
    """`args` with `--skip-endpoint-check` for plan/start when the sandbox has no MQTT listener.

    A sandbox started with `mqtt=False` serves no ATS endpoint, so the endpoint check could
    only find it unreachable; with listeners, the check runs (through `connect_to`).
    """
    if sandbox.endpoints or not {"plan", "start"} & set(args):
        return args
    return (*args, "--skip-endpoint-check")


def endpoint_env(sandbox) -> dict[str, str]:
    """What `sandbox up` exports for the endpoint check: where its listeners are (if any)."""
    exported = sandbox.describe()["env"]
    return {k: v for k, v in exported.items() if k == CONNECT_TO_ENV}


def cli(sandbox, state: Path, *args: str, kill_after: int | None = None) -> CliRun:
    """`ca-migrate ARGS` as its own process: forked from a server that imported the CLI once
    (no interpreter start-up per run), SIGKILLed for real when `kill_after` says so."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="sandbox", AWS_SECRET_ACCESS_KEY="sandbox")
    env.pop("AWS_PROFILE", None)
    env.pop(CONNECT_TO_ENV, None)
    env.update(endpoint_env(sandbox))
    env.pop("CA_MIGRATE_KILL_AFTER_WRITES", None)
    if kill_after is not None:
        env["CA_MIGRATE_KILL_AFTER_WRITES"] = str(kill_after)
    return run_cli_forked(
        [
            "--endpoint-url",
            sandbox.control_plane_url,
            "--state",
            str(state),
            "--log-format",
            "json",
            *without_listener(sandbox, args),
        ],
        env,
    )


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def in_process(sandbox, state: Path, *args: str) -> Ran:
    """The CLI in this process (typer's runner): same commands, no interpreter start-up."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    result = CliRunner().invoke(
        app,
        [
            "--endpoint-url",
            sandbox.control_plane_url,
            "--state",
            str(state),
            "--log-format",
            "json",
            *without_listener(sandbox, args),
        ],
        env=endpoint_env(sandbox),
    )
    structlog.reset_defaults()  # the CLI configured logging for its run; undo it for others
    return Ran(result.exit_code, result.stdout, result.stderr)
