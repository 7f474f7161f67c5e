"""What a demo or rehearsal run takes and gives: settings, progress, result, live parts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from infra.sandbox.runtime import Sandbox
from orchestrator.model import CampaignSpec, CampaignState
from orchestrator.reconcile import Reconciler

__all__ = ["CampaignRun", "Progress", "RunResult", "RunSettings", "SimulatedFleet"]


class SimulatedFleet(Protocol):
    """What the driver needs of a simulated fleet (memory or MQTT)."""

    def start(self) -> Any: ...
    def close(self) -> None: ...
    def run_due(self) -> int: ...
    def next_wakeup(self) -> float | None: ...
    def endpoint_counts(self) -> dict[str, int]: ...
    def exposed(self, before: float | None = None) -> int: ...
    def profile_counts(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How to run: fleet transport, pacing, reconcile interval, bounds."""

    transport: str = "memory"
    time_scale: float = 0.0  # simulated seconds per real second; 0: as fast as possible
    interval_seconds: float = 30.0  # simulated seconds between reconciles
    throttle_rate: float = 0.0
    rollback_on_halt: bool = False
    auto_approve: bool = True
    max_simulated_hours: float = 48.0
    report: Path | None = None
    durable_device_files: bool = True
    # Worker processes for the memory fleet's devices; None: one per core for large fleets.
    workers: int | None = None
    # Runs first in each worker process (a spawned process has no logging set-up); picklable.
    worker_setup: Callable[[], None] | None = None
    # Sign every document with a demo key the devices pin (`orchestrator.demo.signed`).
    signed: bool = False
    # The AWS profile that opens a campaign's KMS signing key (`--profile`); None: the default.
    profile: str | None = None
    # Hears each set-up step in words ("provisioning 1000 things ..."), for live displays.
    on_setup: Callable[[str], None] | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """One tick of a run, for live displays."""

    state: CampaignState
    simulated_seconds: float
    devices: int
    # The campaign has stopped; devices still in flight finish their step before the end.
    settling: bool = False


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run ended with: campaign, waves, devices, costs."""

    campaign: str
    status: str
    reason: str
    devices: int
    waves: list[dict[str, Any]]
    endpoints: dict[str, int]
    exposure: int
    halted_after_minutes: float | None
    simulated_minutes: float
    wall_seconds: float
    api_calls: int
    http_requests: int
    profiles: dict[str, int]
    report: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    #: False when the run stopped at its simulated-time limit with the campaign still live
    #: (RUNNING, PAUSED, ROLLING_BACK): no final state, so no answer to "would it pass?".
    finished: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "status": self.status,
            "finished": self.finished,
            "reason": self.reason,
            "devices": self.devices,
            "waves": self.waves,
            "endpoints": self.endpoints,
            "exposure": self.exposure,
            "halted_after_minutes": self.halted_after_minutes,
            "simulated_minutes": self.simulated_minutes,
            "wall_seconds": self.wall_seconds,
            "api_calls": self.api_calls,
            "http_requests": self.http_requests,
            "profiles": self.profiles,
            "report": self.report,
            **self.extra,
        }


@dataclass(slots=True)
class CampaignRun:
    """The live parts of a run, handed to `inspect` before they are torn down (tests use it)."""

    sandbox: Sandbox
    fleet: SimulatedFleet
    reconciler: Reconciler
    spec: CampaignSpec
    work_dir: Path
