"""Inspection: what tests and the admin API read that AWS does not expose.

Counters and their recount (to cross-check the maintained counters), and every
execution's status history with the way (`via`) each change came in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from infra.sandbox.engine._records import ALL_STATUSES, _Execution
from infra.sandbox.engine._state import EngineState


def recount(state: EngineState, job_id: str) -> dict[str, int]:
    """The job's status counts recomputed from its executions (for cross-checks)."""
    with state.lock:
        job = state.job(job_id)
        counts = dict.fromkeys(ALL_STATUSES, 0)
        for ex in job.executions.values():
            counts[ex.status] += 1
        return counts


def counts(state: EngineState, job_id: str) -> dict[str, int]:
    """The job's maintained status counters."""
    with state.lock:
        return dict(state.job(job_id).counts)


def execution_history(
    state: EngineState, *, job_id: str | None = None, thing_name: str | None = None
) -> list[dict[str, Any]]:
    """Executions with every status change and the way (`via`) it came in."""
    with state.lock:
        now = state.now()
        if job_id is not None:
            executions: Iterable[_Execution] = state.job(job_id).executions.values()
        elif thing_name is not None:
            executions = state.thing(thing_name).executions.values()
        else:
            executions = (ex for job in state.jobs.values() for ex in job.executions.values())
        out = []
        for ex in executions:
            if thing_name is not None and ex.thing != thing_name:
                continue
            snap = state.snapshot(ex, now)
            out.append(
                {
                    "jobId": ex.job.job_id,
                    "thingName": ex.thing,
                    "status": ex.status,
                    "versionNumber": ex.version,
                    "executionNumber": ex.execution_number,
                    "retryAttempt": ex.retry_attempt,
                    "statusDetails": dict(ex.details),
                    "approximateSecondsBeforeTimedOut": snap.approximate_seconds_before_timed_out,
                    "history": [
                        {
                            "status": h.status,
                            "via": h.via,
                            "at": h.at,
                            "versionNumber": h.version_number,
                            "executionNumber": h.execution_number,
                        }
                        for h in ex.history
                    ],
                }
            )
        return out
