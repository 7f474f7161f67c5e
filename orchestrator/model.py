"""The campaign's domain: the spec an operator wrote, the state the orchestrator keeps.

Plain frozen dataclasses and enums (pydantic stays at the file boundary, in
`orchestrator.spec`). Nothing here does I/O or reads a clock; every time is a
timezone-aware UTC `datetime` handed in by the caller.

Invariants:
- `CampaignState.waves` has one `WaveState` per `CampaignSpec.waves`, same order.
- A wave's `job_id` is fixed when the campaign starts (it is derived from the
  campaign, the wave and the document hash), so every reconcile, however often
  it crashes, aims at the same job.
- `state_to_dict`/`state_from_dict` round-trip exactly; stores persist that dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "ACTIVE_PHASES",
    "STOPPED_STATUSES",
    "Approval",
    "CampaignSpec",
    "CampaignState",
    "CampaignStatus",
    "Counts",
    "DeviceClientSettings",
    "DeviceRuntime",
    "Event",
    "EventKind",
    "ExecutionPolicy",
    "ExponentialRate",
    "Gate",
    "Halt",
    "MaintenanceWindow",
    "OfflinePolicy",
    "Rollout",
    "SampleSpec",
    "SigningSpec",
    "TrustSpec",
    "WavePhase",
    "WaveSpec",
    "WaveState",
    "state_from_dict",
    "state_to_dict",
]


class Approval(StrEnum):
    """Whether a wave launches by itself once the previous one passed."""

    AUTO = "auto"
    MANUAL = "manual"


class OfflinePolicy(StrEnum):
    """What devices that never started by the wave deadline do to promotion."""

    IGNORE = "ignore"  # reported, left out of the completed fraction
    BLOCK = "block"  # kept in the completed fraction: the wave halts at its deadline


@dataclass(frozen=True, slots=True)
class Gate:
    """When a wave counts as good enough to promote the next one."""

    min_success_rate: float
    min_completed: int = 1
    min_completed_fraction: float = 0.0
    bake_minutes: float = 0.0
    confidence: float = 0.95


@dataclass(frozen=True, slots=True)
class ExponentialRate:
    """CreateJob's jobExecutionsRolloutConfig.exponentialRate."""

    base_rate_per_minute: int
    increment_factor: float
    notified_things: int | None = None
    succeeded_things: int | None = None


@dataclass(frozen=True, slots=True)
class Rollout:
    """How fast a wave's job notifies devices."""

    maximum_per_minute: int | None = None
    exponential: ExponentialRate | None = None


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """CreateJob's schedulingConfig.maintenanceWindows entry (cron start, duration)."""

    start: str
    duration_minutes: int


@dataclass(frozen=True, slots=True)
class ExecutionPolicy:
    """Per-execution limits set on every job: timeout and retries."""

    in_progress_timeout_minutes: int | None = None
    retry_failed: int = 0
    retry_timed_out: int = 0


@dataclass(frozen=True, slots=True)
class Halt:
    """When to stop: a wave's failure rate, the campaign's failure budget."""

    max_failure_rate: float = 1.0
    fleet_failure_budget: int | None = None
    min_executed: int = 10


class DeviceRuntime(StrEnum):
    """What runs the job on a wave's devices: the Python agent, or AWS IoT Device Client."""

    AGENT = "agent"  # receives the ca-migration/1 document itself
    DEVICE_CLIENT = "device-client"  # receives a runHandler document that embeds it


@dataclass(frozen=True, slots=True)
class DeviceClientSettings:
    """Where a Device Client device keeps the handler and the files it is run with.

    Absolute paths on the device. `handler_path` is the handler script itself
    (`.../ca-migrate-handler.sh`); the runHandler step names its directory and file.
    """

    handler_path: str
    device_toml: str
    config_path: str
    allow_stderr: int = 0
    run_as_user: str = "root"


@dataclass(frozen=True, slots=True)
class TrustSpec:
    """Roots (catalog names or fingerprints) to add on the devices."""

    add: tuple[str, ...]
    keep_existing: bool = True


@dataclass(frozen=True, slots=True)
class SampleSpec:
    """A stratified sample: `count` devices in proportion to each value of `stratify_by`.

    Drawn from the things `query` matches (all indexed things when None), less the
    devices of earlier waves (`orchestrator.targets`).
    """

    count: int
    stratify_by: str
    query: str | None = None


@dataclass(frozen=True, slots=True)
class WaveSpec:
    """One wave: thing groups and/or a query or a sample, rollout, gate, approval, deadline."""

    name: str
    thing_groups: tuple[str, ...]
    gate: Gate
    rollout: Rollout = Rollout()
    approval: Approval = Approval.AUTO
    deadline_minutes: float | None = None
    offline: OfflinePolicy = OfflinePolicy.IGNORE
    execution: ExecutionPolicy | None = None
    max_failure_rate: float | None = None
    maintenance_windows: tuple[MaintenanceWindow, ...] = ()
    device_runtime: DeviceRuntime | None = None  # None: the campaign's
    device_client: DeviceClientSettings | None = None  # None: the campaign's
    #: The AWS region of the wave's thing groups and job; None: the campaign's region.
    region: str | None = None
    query: str | None = None  # fleet-indexing query: a dynamic group the campaign creates
    sample: SampleSpec | None = None  # a stratified sample: a static group it fills


@dataclass(frozen=True, slots=True)
class SigningSpec:
    """How the campaign's documents are signed: a key file, or an AWS KMS key (exactly one).

    `key_file` is an absolute path once the spec is loaded from a file.
    """

    key_id: str
    key_file: str | None = None
    kms_key: str | None = None

    @property
    def source(self) -> str:
        """What signs, for plans and logs: the KMS key, or the file's path (never its content)."""
        return f"kms {self.kms_key}" if self.kms_key is not None else f"key file {self.key_file}"


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """A validated campaign file."""

    name: str
    region: str
    endpoint: str  # "auto" or an explicit iot:Data-ATS host
    trust: TrustSpec
    waves: tuple[WaveSpec, ...]
    execution: ExecutionPolicy = ExecutionPolicy()
    halt: Halt = Halt()
    catalog: str | None = None
    signing: SigningSpec | None = None
    endpoint_port: int = 8883  # 8883, or 443 with ALPN x-amzn-mqtt-ca
    device_runtime: DeviceRuntime = DeviceRuntime.AGENT
    device_client: DeviceClientSettings | None = None

    def wave(self, name: str) -> WaveSpec:
        for wave in self.waves:
            if wave.name == name:
                return wave
        known = ", ".join(w.name for w in self.waves)
        raise KeyError(f"no wave named {name!r}; the campaign has: {known}")

    def region_of(self, wave: WaveSpec | str) -> str:
        """The region a wave runs in: its own `region`, else the campaign's."""
        chosen = self.wave(wave) if isinstance(wave, str) else wave
        return chosen.region or self.region

    @property
    def regions(self) -> tuple[str, ...]:
        """Every region the campaign's waves run in, in the order the waves first name them."""
        return tuple(dict.fromkeys(self.region_of(w) for w in self.waves))

    def execution_for(self, wave: WaveSpec) -> ExecutionPolicy:
        return wave.execution if wave.execution is not None else self.execution

    def runtime_for(self, wave: WaveSpec) -> DeviceRuntime:
        return wave.device_runtime if wave.device_runtime is not None else self.device_runtime

    def device_client_for(self, wave: WaveSpec) -> DeviceClientSettings | None:
        """The Device Client settings of a wave that runs Device Client, else None."""
        if self.runtime_for(wave) is not DeviceRuntime.DEVICE_CLIENT:
            return None
        return wave.device_client if wave.device_client is not None else self.device_client

    def halt_for(self, wave: WaveSpec) -> Halt:
        if wave.max_failure_rate is None:
            return self.halt
        return replace(self.halt, max_failure_rate=wave.max_failure_rate)


class CampaignStatus(StrEnum):
    """Where the whole campaign stands."""

    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    HALTED = "HALTED"
    ABORTED = "ABORTED"
    COMPLETED = "COMPLETED"
    ROLLING_BACK = "ROLLING_BACK"
    ROLLED_BACK = "ROLLED_BACK"


class WavePhase(StrEnum):
    """Where one wave stands (see docs/orchestrator.md for the state machine)."""

    PENDING = "PENDING"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    LAUNCHING = "LAUNCHING"
    RUNNING = "RUNNING"
    BAKING = "BAKING"
    PASSED = "PASSED"
    HALTED = "HALTED"
    CANCELED = "CANCELED"


ACTIVE_PHASES = frozenset({WavePhase.LAUNCHING, WavePhase.RUNNING, WavePhase.BAKING})
#: Where a campaign stops on its own: nothing more happens without an operator's command.
STOPPED_STATUSES = frozenset(
    {
        CampaignStatus.COMPLETED,
        CampaignStatus.HALTED,
        CampaignStatus.ABORTED,
        CampaignStatus.ROLLED_BACK,
    }
)


@dataclass(frozen=True, slots=True)
class Counts:
    """DescribeJob.jobProcessDetails, the only numbers gates read."""

    queued: int = 0
    in_progress: int = 0
    succeeded: int = 0
    failed: int = 0
    rejected: int = 0
    timed_out: int = 0
    canceled: int = 0
    removed: int = 0

    @property
    def failures(self) -> int:
        return self.failed + self.rejected + self.timed_out

    @property
    def completed(self) -> int:
        return self.succeeded + self.failures

    @property
    def targeted(self) -> int:
        """Executions that count: everything but canceled and removed ones."""
        return self.queued + self.in_progress + self.completed

    def as_dict(self) -> dict[str, int]:
        """Every count by its field name (the stored state, event data, summaries)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def tenths(self) -> tuple[int, int]:
        """Tenths of the targeted executions completed, and failed (rounded up).

        The planner records a `wave-progress` event each time one moves: a
        report's timeline, at most about twenty points per wave whatever its size.
        """
        if self.targeted <= 0:
            return 0, 0
        return self.completed * 10 // self.targeted, -(-self.failures * 10 // self.targeted)


@dataclass(frozen=True, slots=True)
class WaveState:
    """What the orchestrator knows about one wave."""

    name: str
    job_id: str
    phase: WavePhase = WavePhase.PENDING
    approved: bool = False
    launched_at: datetime | None = None
    bake_until: datetime | None = None
    finished_at: datetime | None = None
    job_status: str | None = None
    rollout_done: bool = False
    counts: Counts = Counts()
    verdict: str = ""
    never_started: int | None = None
    explained: bool = False
    restore_job_id: str | None = None
    restore_status: str | None = None
    restore_counts: Counts = Counts()


@dataclass(frozen=True, slots=True)
class CampaignState:
    """What the orchestrator knows about one campaign; stores persist it whole."""

    name: str
    status: CampaignStatus
    waves: tuple[WaveState, ...]
    created_at: datetime
    updated_at: datetime
    reason: str = ""
    cancel_all: bool = False
    version: int = 0
    documents: Mapping[str, str] = field(default_factory=dict)  # job id -> document text

    def wave(self, name: str) -> WaveState:
        for wave in self.waves:
            if wave.name == name:
                return wave
        known = ", ".join(w.name for w in self.waves)
        raise KeyError(f"no wave named {name!r}; the campaign has: {known}")

    def with_wave(self, wave: WaveState) -> CampaignState:
        return replace(self, waves=tuple(wave if w.name == wave.name else w for w in self.waves))


class EventKind(StrEnum):
    """What an `Event` records; its value is the name in the event log and the logs."""

    CAMPAIGN_STARTED = "campaign-started"
    ENDPOINT_CHECKED = "endpoint-checked"
    ENDPOINT_CHECK_SKIPPED = "endpoint-check-skipped"
    WAVE_AWAITING_APPROVAL = "wave-awaiting-approval"
    WAVE_APPROVED = "wave-approved"
    WAVE_LAUNCHING = "wave-launching"
    WAVE_TARGETS_READY = "wave-targets-ready"
    JOB_CREATED = "job-created"
    JOB_ADOPTED = "job-adopted"
    JOB_OBSERVED = "job-observed"
    GATE_PASSED = "gate-passed"
    GATE_LOST = "gate-lost"
    BAKE_FINISHED = "bake-finished"
    WAVE_PASSED = "wave-passed"
    WAVE_PROGRESS = "wave-progress"
    WAVE_HALTED = "wave-halted"
    DEADLINE_REACHED = "deadline-reached"
    CAMPAIGN_COMPLETED = "campaign-completed"
    CAMPAIGN_HALTED = "campaign-halted"
    CAMPAIGN_PAUSED = "campaign-paused"
    CAMPAIGN_RESUMED = "campaign-resumed"
    CAMPAIGN_ABORTED = "campaign-aborted"
    JOB_CANCEL_REQUESTED = "job-cancel-requested"
    ROLLBACK_STARTED = "rollback-started"
    RESTORE_JOB_CREATED = "restore-job-created"
    RESTORE_JOB_ADOPTED = "restore-job-adopted"
    ROLLBACK_FINISHED = "rollback-finished"
    FAILURES_EXPLAINED = "failures-explained"
    ACTION_FAILED = "action-failed"
    DRIFT_FOUND = "drift-found"


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the append-only event log: what happened and why."""

    kind: EventKind
    reason: str
    wave: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    at: datetime | None = None


def _enc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Counts):
        return value.as_dict()
    if isinstance(value, StrEnum):
        return value.value
    return value


def state_to_dict(state: CampaignState) -> dict[str, Any]:
    """A JSON-ready dict of `state` (the version travels beside it, not inside)."""
    return {
        "name": state.name,
        "status": state.status.value,
        "created_at": state.created_at.isoformat(),
        "updated_at": state.updated_at.isoformat(),
        "reason": state.reason,
        "cancel_all": state.cancel_all,
        "documents": dict(state.documents),
        "waves": [
            {f.name: _enc(getattr(w, f.name)) for f in fields(WaveState)} for w in state.waves
        ],
    }


_TIME_FIELDS = ("launched_at", "bake_until", "finished_at")
#: Fields that older releases stored and nothing reads any more: dropped when loading.
_RETIRED_WAVE_FIELDS = ("gate_passed_at",)


def _wave_from_dict(raw: Mapping[str, Any]) -> WaveState:
    values: dict[str, Any] = {k: v for k, v in raw.items() if k not in _RETIRED_WAVE_FIELDS}
    for name in _TIME_FIELDS:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    values["phase"] = WavePhase(values["phase"])
    values["counts"] = Counts(**values["counts"])
    values["restore_counts"] = Counts(**values["restore_counts"])
    return WaveState(**values)


def state_from_dict(raw: Mapping[str, Any], version: int) -> CampaignState:
    """The inverse of `state_to_dict`."""
    return CampaignState(
        name=raw["name"],
        status=CampaignStatus(raw["status"]),
        waves=tuple(_wave_from_dict(w) for w in raw["waves"]),
        created_at=datetime.fromisoformat(raw["created_at"]),
        updated_at=datetime.fromisoformat(raw["updated_at"]),
        reason=raw.get("reason", ""),
        cancel_all=bool(raw.get("cancel_all", False)),
        version=version,
        documents=dict(raw.get("documents", {})),
    )
