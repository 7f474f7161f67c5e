"""What a run ended with, as the sandbox and the campaign state say: the summary's rows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from infra.sandbox.errors import ServiceError
from infra.sandbox.runtime import Sandbox
from orchestrator.model import CampaignState, WavePhase

__all__ = ["counting", "minutes", "unfinished_reason", "wave_rows"]

#: The phases of a wave that has not decided yet (it waits for a gate, a bake or approval).
_UNDECIDED = frozenset(
    {WavePhase.AWAITING_APPROVAL, WavePhase.LAUNCHING, WavePhase.RUNNING, WavePhase.BAKING}
)


def unfinished_reason(state: CampaignState, limit_hours: float) -> str:
    """Why a run ended without a final campaign state: the time limit, and who was waiting."""
    text = (
        f"stopped at the simulated-time limit ({limit_hours:g} h) with the campaign still "
        f"{state.status.value}, not finished"
    )
    waiting = [w.name for w in state.waves if w.phase in _UNDECIDED]
    if waiting:
        text += f"; undecided: {', '.join(waiting)}"
    if state.reason:
        text += f"; {state.reason}"
    return text


@contextmanager
def counting(*adapter_clients: Any) -> Iterator[dict[str, int]]:
    counts = {"api_calls": 0, "http_requests": 0}

    def on_call(**_: Any) -> None:
        counts["api_calls"] += 1

    def on_send(**_: Any) -> None:
        counts["http_requests"] += 1

    for client in adapter_clients:
        client.meta.events.register("before-call.iot", on_call)
        client.meta.events.register("before-send.iot", on_send)
    yield counts


def minutes(state: CampaignState, when: datetime | None) -> float | None:
    if when is None:
        return None
    return round((when - state.created_at).total_seconds() / 60, 2)


def _sandbox_counts(sandbox: Sandbox, job_id: str | None) -> dict[str, int] | None:
    """The job's execution counts as the sandbox holds them now (None: no such job)."""
    if job_id is None:
        return None
    for engine in sandbox.engines.values():  # a job lives in its wave's region
        try:
            counts = engine.counts(job_id)
        except ServiceError:
            continue
        return {status.lower(): n for status, n in counts.items()}
    return None


def wave_rows(state: CampaignState, sandbox: Sandbox) -> list[dict[str, Any]]:
    return [
        {
            "name": wave.name,
            "phase": wave.phase.value,
            "job_id": wave.job_id,
            "launched_after_minutes": minutes(state, wave.launched_at),
            "finished_after_minutes": minutes(state, wave.finished_at),
            "executions": _sandbox_counts(sandbox, wave.job_id),
            "restore_executions": _sandbox_counts(sandbox, wave.restore_job_id),
            "gate_counts": wave.counts.as_dict(),
            "never_started": wave.never_started,
            "verdict": wave.verdict,
        }
        for wave in state.waves
    ]
