"""Job identity and CreateJob settings for a wave: pure, no I/O.

A job id is derived from the campaign, the wave, the document hash and the operation,
so a retried create finds (and adopts) its own job and two documents never share an id.
`job_config` maps a wave's rollout, halt rule, timeout and retries onto CreateJob.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import assert_never

from job_documents import Operation
from orchestrator.model import CampaignSpec, ExponentialRate, MaintenanceWindow, WaveSpec
from orchestrator.targets import wave_groups

__all__ = [
    "MAX_JOB_ID",
    "JobConfig",
    "abort_threshold",
    "job_config",
    "job_id_for",
    "operation_tag",
]

MAX_JOB_ID = 64


# -- job identity and configuration -------------------------------------------------------


def job_id_for(campaign: str, wave: str, document_sha256: str, operation: Operation) -> str:
    """The deterministic job id: campaign, wave, operation, document hash; 1-64 of [A-Za-z0-9_-].

    Long names are shortened with a digest of the full pair, so two campaigns never share an id.
    """
    tag = operation_tag(operation)
    ident = f"{campaign}-{wave}-{tag}{document_sha256[:12]}"
    if len(ident) <= MAX_JOB_ID:
        return ident
    pair = hashlib.sha256(f"{campaign}\0{wave}".encode()).hexdigest()[:10]
    return f"{campaign[:18]}-{wave[:18]}-{pair}-{tag}{document_sha256[:12]}"


def operation_tag(operation: Operation) -> str:
    """The one letter a job id carries for its operation (ids stay distinct per operation)."""
    match operation:
        case Operation.MIGRATE:
            return "m"
        case Operation.RESTORE:
            return "r"
        case Operation.PRUNE:
            return "p"
        case _:
            assert_never(operation)


@dataclass(frozen=True, slots=True)
class JobConfig:
    """Everything CreateJob gets besides the id and the document."""

    thing_groups: tuple[str, ...]
    description: str
    maximum_per_minute: int | None = None
    exponential: ExponentialRate | None = None
    abort_threshold_percentage: float | None = None
    abort_min_executed: int | None = None
    in_progress_timeout_minutes: int | None = None
    retry_failed: int = 0
    retry_timed_out: int = 0
    maintenance_windows: tuple[MaintenanceWindow, ...] = ()


def abort_threshold(max_failure_rate: float) -> float:
    """AbortConfig's thresholdPercentage for a halt rate below 1.0 (1.0 sends no abortConfig).

    AWS aborts when the failure percentage reaches the threshold (`>=`) and takes
    two decimals, so a zero-tolerance rate (0, or one that rounds to 0.00 %) is
    sent as 0.01 %: the first failure aborts, while a threshold of 0 would abort
    a wave without any failure. `gates.failure_rate_reached` is the same rule.
    """
    return max(round(max_failure_rate * 100, 2), 0.01)


def job_config(spec: CampaignSpec, wave: WaveSpec, operation: Operation) -> JobConfig:
    """Map a wave's rollout, halt rule, timeout and retries onto CreateJob's settings."""
    execution = spec.execution_for(wave)
    halt = spec.halt_for(wave)
    abort = operation is Operation.MIGRATE and halt.max_failure_rate < 1.0
    return JobConfig(
        thing_groups=wave_groups(spec, wave),
        description=f"ca-migrate {spec.name}/{wave.name} {operation}",
        maximum_per_minute=wave.rollout.maximum_per_minute,
        exponential=wave.rollout.exponential,
        abort_threshold_percentage=abort_threshold(halt.max_failure_rate) if abort else None,
        abort_min_executed=halt.min_executed if abort else None,
        in_progress_timeout_minutes=execution.in_progress_timeout_minutes,
        retry_failed=execution.retry_failed,
        retry_timed_out=execution.retry_timed_out,
        maintenance_windows=wave.maintenance_windows if operation is Operation.MIGRATE else (),
    )
