"""Scheduling: a job's startTime, endTime and maintenance windows (schedulingConfig).

A job with a startTime is SCHEDULED until then and resolves its targets when
it starts; at its endTime the rollout stops or the job is canceled, per
endBehavior. Maintenance windows gate notification (see `_rollout`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from infra.sandbox import decisions as d
from infra.sandbox.engine import _policies, _rollout
from infra.sandbox.engine._records import _Job
from infra.sandbox.engine._state import EngineState
from infra.sandbox.errors import invalid_request
from infra.sandbox.scheduling import MaintenanceWindows, parse_datetime

log = structlog.get_logger(__name__)


def parse_schedule(
    config: Mapping[str, Any] | None, now: float
) -> tuple[float | None, float | None, MaintenanceWindows | None]:
    """Start, end and windows from a schedulingConfig, within the documented limits."""
    if not config:
        return None, None, None
    start = end = None
    if config.get("startTime") is not None:
        start = parse_datetime(config["startTime"], "startTime").timestamp()
        if start < now + d.SCHEDULE_MIN_LEAD_SECONDS:
            raise invalid_request(
                f"schedulingConfig.startTime {config['startTime']} must be at least "
                f"{d.SCHEDULE_MIN_LEAD_SECONDS / 60:.0f} minutes from now; "
                "omit it to start at once"
            )
        if start > now + d.SCHEDULE_MAX_START_AHEAD_SECONDS:
            raise invalid_request(
                f"schedulingConfig.startTime {config['startTime']} is more than "
                f"{d.SCHEDULE_MAX_START_AHEAD_SECONDS / 86400:.0f} days ahead; "
                "schedule the job nearer the time"
            )
    if config.get("endTime") is not None:
        end = parse_datetime(config["endTime"], "endTime").timestamp()
        begins = now if start is None else start
        if end < begins + d.SCHEDULE_MIN_DURATION_SECONDS:
            raise invalid_request(
                f"schedulingConfig.endTime {config['endTime']} must be at least "
                f"{d.SCHEDULE_MIN_DURATION_SECONDS / 60:.0f} minutes after the "
                + ("startTime" if start is not None else "current time")
            )
        if end > now + d.SCHEDULE_MAX_END_SECONDS:
            raise invalid_request(
                f"schedulingConfig.endTime {config['endTime']} is more than two years from now"
            )
    windows_config = config.get("maintenanceWindows")
    windows = MaintenanceWindows.parse(windows_config) if windows_config else None
    return start, end, windows


def start_job(state: EngineState, job: _Job, now: float) -> None:
    """A SCHEDULED job reached its startTime: resolve its targets and roll out."""
    job.status = "IN_PROGRESS"
    job.last_updated_at = now
    state.changed()
    members: set[str] = {t for t in job.target_things if t in state.things}
    for group in job.target_groups:
        if group in state.groups:
            members.update(state.group_things(group, recursive=True))
    _rollout.enqueue_targets(state, job, sorted(members), now)
    _policies.maybe_complete(state, job, now)
    log.info("job_started", job_id=job.job_id, things=len(members))


def end_job(state: EngineState, job: _Job, now: float) -> None:
    """The job reached its endTime: stop the rollout, or cancel, per endBehavior."""
    behavior = (job.scheduling_config or {}).get("endBehavior") or d.SCHEDULE_DEFAULT_END_BEHAVIOR
    log.info("job_end_time", job_id=job.job_id, behavior=behavior)
    job.status = "IN_PROGRESS"  # a job paused between windows ends like a running one
    job.window_end_at = None
    if behavior == "STOP_ROLLOUT":
        job.rollout_pending.clear()
        job.rollout_queued.clear()
        job.rollout = False
        job.last_updated_at = now
        state.changed()
        _policies.maybe_complete(state, job, now)
        return
    _policies.cancel(
        state,
        job,
        now,
        force=behavior == "FORCE_CANCEL",
        reason_code=d.SCHEDULE_END_REASON_CODE,
        comment=f"the job reached its scheduled endTime ({behavior})",
    )
