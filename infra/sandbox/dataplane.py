"""The seam between the sandbox's Jobs engine and its device-facing front ends.

Two front ends serve devices: the MQTT bridge (through mosquitto) and the
`iot-jobs-data` HTTPS API. Both talk to the engine only through
`JobsDataPlane`, get immutable `ExecutionSnapshot`s back, and render them in
their own wire shape (jobDocument as a JSON object over MQTT, as a string
over HTTPS; times as integer epoch seconds on both).

Invariants:
- Every method is safe to call from any thread.
- `via` names the way a request reached the sandbox ("legacy", "ats" for the
  two MQTT listeners, "https" for iot-jobs-data) and is recorded on the
  execution with each status change, so tests can prove over which
  connection a device acknowledged.
- Subscribers are called with a thing name after any change that may alter
  that thing's pending list or its next execution (new execution made
  visible by rollout, status change, timeout, cancel, removal). They are
  called outside the engine's lock, may be called spuriously, and compute
  what changed themselves (the bridge sends `notify` when the pending list
  differs from the last one it sent, `notify-next` when the head differs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from device_handler.memory import JobsBackend
from infra.sandbox.errors import SandboxError

__all__ = [
    "DataPlaneError",
    "ExecutionSnapshot",
    "JobsDataPlane",
    "PendingJobs",
]


@dataclass(frozen=True, slots=True)
class ExecutionSnapshot:
    """One job execution as a device may see it, at one instant."""

    job_id: str
    thing_name: str
    status: (
        str  # QUEUED | IN_PROGRESS | SUCCEEDED | FAILED | TIMED_OUT | REJECTED | REMOVED | CANCELED
    )
    status_details: Mapping[str, str]
    queued_at: int  # epoch seconds
    started_at: int | None
    last_updated_at: int
    version_number: int
    execution_number: int
    approximate_seconds_before_timed_out: int | None
    job_document: str  # the document exactly as given to CreateJob


@dataclass(frozen=True, slots=True)
class PendingJobs:
    """A thing's pending executions: IN_PROGRESS ones, then QUEUED, each oldest first.

    At most `decisions.MAX_PENDING_LISTED` in all, as GetPendingJobExecutions shows.
    """

    in_progress: tuple[ExecutionSnapshot, ...] = ()
    queued: tuple[ExecutionSnapshot, ...] = ()

    @property
    def next(self) -> ExecutionSnapshot | None:
        """What `$next` means: the oldest IN_PROGRESS, else the oldest QUEUED."""
        if self.in_progress:
            return self.in_progress[0]
        if self.queued:
            return self.queued[0]
        return None


@dataclass(slots=True)
class DataPlaneError(SandboxError):
    """A request the service rejects.

    `code` is the MQTT rejection code (InvalidTopic, InvalidJson,
    InvalidRequest, InvalidStateTransition, ResourceNotFound, VersionMismatch,
    InternalError, RequestThrottled, TerminalStateReached); the HTTPS front
    end maps it to the `iot-jobs-data` exception names.
    """

    code: str
    message: str
    execution_state: ExecutionSnapshot | None = field(default=None)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class JobsDataPlane(JobsBackend[ExecutionSnapshot], Protocol):
    """What a device can ask of AWS IoT Jobs, over MQTT or HTTPS.

    `describe_execution` and `update_execution` are the device's calls, declared
    once in `device_handler.memory.JobsBackend`; these add the rest.
    """

    def get_pending(self, thing_name: str) -> PendingJobs:
        """The `get` topic / GetPendingJobExecutions."""
        ...

    def start_next(
        self,
        thing_name: str,
        *,
        status_details: Mapping[str, str] | None,
        step_timeout_minutes: int | None,
        via: str,
    ) -> ExecutionSnapshot | None:
        """`start-next` / StartNextPendingJobExecution: None when nothing is pending."""
        ...

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call `callback(thing_name)` after changes that may alter that thing's pending jobs."""
        ...
