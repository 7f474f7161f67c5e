"""Persistence: the whole engine state as JSON-ready data, and back.

`export_state` and `import_state` are what `infra.sandbox.persistence` writes
and reads; an import rebuilds the indexes (group children, thing executions)
and re-arms every deadline (timeouts, rollout batches, scheduled start/end).

Invariants:
- `import_state(export_state())` yields an engine that answers every
  operation as the original did (named shadows and the indexing
  configuration and the certificates with their things included; a state file
  without them loads with none).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping
from typing import Any

from infra.sandbox.dataplane import ExecutionSnapshot
from infra.sandbox.engine import _certificates
from infra.sandbox.engine._records import HistoryEntry, _Execution, _Group, _Job, _Thing
from infra.sandbox.engine._state import EngineState
from infra.sandbox.indexing import DEFAULT_CONFIGURATION
from infra.sandbox.scheduling import MaintenanceWindows


def export_state(state: EngineState) -> dict[str, Any]:
    """Everything needed to rebuild the engine, as JSON-ready data."""
    with state.lock:
        return {
            "format": 1,
            "region": state.region,
            "account_id": state.account_id,
            "things": [
                {
                    "name": t.name,
                    "attributes": t.attributes,
                    "thing_id": t.thing_id,
                    "version": t.version,
                    "groups": t.groups,
                }
                for t in state.things.values()
            ],
            "groups": [
                {
                    "name": g.name,
                    "parent": g.parent,
                    "created_at": g.created_at,
                    "group_id": g.group_id,
                    "description": g.description,
                    "query": g.query,
                    "index_name": g.index_name,
                    "query_version": g.query_version,
                    "build_status": g.build_status,
                    "built_at": g.built_at,
                }
                for g in state.groups.values()
            ],
            "jobs": [_export_job(j) for j in state.jobs.values()],
            "shadows": state.shadows.export(),
            "indexing": copy.deepcopy(state.indexing),
            "certificates": _certificates.export_certificates(state),
        }


def import_state(state: EngineState, saved: Mapping[str, Any]) -> None:
    """Replace the engine's state with an `export_state()` result."""
    if saved.get("format") != 1:
        raise ValueError(
            "sandbox state file has an unknown format; start with an empty --state-dir"
        )
    with state.lock:
        state.things.clear()
        state.groups.clear()
        state.jobs.clear()
        state.deadlines.clear()
        for g in saved["groups"]:
            group = _Group(
                g["name"],
                state.arn("thinggroup", g["name"]),
                g["parent"],
                g["created_at"],
                g["group_id"],
            )
            group.description = g["description"]
            group.query = g.get("query")
            group.index_name = g.get("index_name")
            group.query_version = g.get("query_version")
            if g.get("built_at") is not None:
                group.build_status = g["build_status"]
                group.built_at = g["built_at"]
                state.push_deadline(g["built_at"], "group-built", group, 0)
            state.groups[group.name] = group
        for group in state.groups.values():
            if group.parent is not None:
                state.groups[group.parent].children.add(group.name)
        for t in saved["things"]:
            thing = _Thing(t["name"], state.arn("thing", t["name"]), t["attributes"], t["thing_id"])
            thing.version = t["version"]
            thing.groups = list(t["groups"])
            for group_name in thing.groups:
                state.groups[group_name].things.add(thing.name)
            state.things[thing.name] = thing
        for j in saved["jobs"]:
            _import_job(state, j)
        state.shadows.load(saved.get("shadows", []))
        state.indexing = copy.deepcopy(dict(saved.get("indexing") or DEFAULT_CONFIGURATION))
        _certificates.import_certificates(state, saved.get("certificates", []))
        state.changed()
        state.wake.notify_all()


def _import_job(state: EngineState, j: Mapping[str, Any]) -> None:
    job = _Job(j["job_id"], state.arn("job", j["job_id"]), j["created_at"])
    for key in (
        "last_updated_at",
        "completed_at",
        "status",
        "force_canceled",
        "reason_code",
        "comment",
        "description",
        "document",
        "targets",
        "target_selection",
        "rollout_config",
        "abort_config",
        "timeout_config",
        "retry_config",
        "notified",
        "rate",
        "rate_baseline",
    ):
        setattr(job, key, j[key])
    job.scheduling_config = j.get("scheduling_config")
    job.start_at = j.get("start_at")
    job.end_at = j.get("end_at")
    windows = (job.scheduling_config or {}).get("maintenanceWindows")
    job.windows = MaintenanceWindows.parse(windows) if windows else None
    job.target_things = set(j["target_things"])
    job.target_groups = set(j["target_groups"])
    job.period_released = j.get("period_released", 0)
    job.rollout_pending = deque(j["rollout_pending"])
    job.rollout_queued = set(job.rollout_pending)
    state.jobs[job.job_id] = job
    for e in j["executions"]:
        ex = _Execution(job, e["thing"], e["queued_at"], next(state.seq))
        for key in (
            "status",
            "details",
            "started_at",
            "last_updated_at",
            "version",
            "execution_number",
            "retry_attempt",
            "force_canceled",
            "in_progress_deadline",
            "timer_deadline",
        ):
            setattr(ex, key, e[key])
        ex.history = [HistoryEntry(**h) for h in e["history"]]
        ex.previous = [ExecutionSnapshot(**p) for p in e["previous"]]
        job.executions[ex.thing] = ex
        job.counts[ex.status] += 1
        thing = state.things.get(ex.thing)
        if thing is not None:
            thing.executions[job.job_id] = ex
        if ex.status == "IN_PROGRESS" and ex.timer_deadline is not None:
            state.push_deadline(ex.timer_deadline, "timeout", ex, ex.execution_number)
    job.cancel_due_at = j.get("cancel_due_at")
    if job.cancel_due_at is not None:
        state.push_deadline(job.cancel_due_at, "cancel", job, 0)
    job.delete_due_at = j.get("delete_due_at")
    if job.delete_due_at is not None:
        state.push_deadline(job.delete_due_at, "delete", job, 0)
    # A job paused between maintenance windows is SCHEDULED with its rollout running.
    paused = bool(j.get("rollout")) and job.status == "SCHEDULED"
    if job.rollout_pending and (job.status == "IN_PROGRESS" or paused):
        job.rollout = True
        job.next_rollout_at = j["next_rollout_at"] or job.created_at
        state.push_deadline(job.next_rollout_at, "rollout", job, 0)
    if job.status == "SCHEDULED" and job.start_at is not None and not paused:
        state.push_deadline(job.start_at, "start", job, 0)
    if job.status in ("SCHEDULED", "IN_PROGRESS") and job.end_at is not None:
        state.push_deadline(job.end_at, "end", job, 0)


def _export_job(job: _Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "created_at": job.created_at,
        "last_updated_at": job.last_updated_at,
        "completed_at": job.completed_at,
        "status": job.status,
        "force_canceled": job.force_canceled,
        "reason_code": job.reason_code,
        "comment": job.comment,
        "description": job.description,
        "document": job.document,
        "targets": job.targets,
        "target_things": sorted(job.target_things),
        "target_groups": sorted(job.target_groups),
        "target_selection": job.target_selection,
        "rollout_config": job.rollout_config,
        "abort_config": job.abort_config,
        "timeout_config": job.timeout_config,
        "retry_config": job.retry_config,
        "notified": job.notified,
        "rate": job.rate,
        "rate_baseline": job.rate_baseline,
        "period_released": job.period_released,
        "rollout_pending": list(job.rollout_pending),
        "next_rollout_at": job.next_rollout_at,
        "rollout": job.rollout,
        "cancel_due_at": job.cancel_due_at,
        "delete_due_at": job.delete_due_at,
        "scheduling_config": job.scheduling_config,
        "start_at": job.start_at,
        "end_at": job.end_at,
        "executions": [
            {
                "thing": ex.thing,
                "status": ex.status,
                "details": ex.details,
                "queued_at": ex.queued_at,
                "started_at": ex.started_at,
                "last_updated_at": ex.last_updated_at,
                "version": ex.version,
                "execution_number": ex.execution_number,
                "retry_attempt": ex.retry_attempt,
                "force_canceled": ex.force_canceled,
                "in_progress_deadline": ex.in_progress_deadline,
                "timer_deadline": ex.timer_deadline,
                "history": [
                    {
                        "status": h.status,
                        "via": h.via,
                        "at": h.at,
                        "version_number": h.version_number,
                        "execution_number": h.execution_number,
                    }
                    for h in ex.history
                ],
                "previous": [
                    {
                        "job_id": p.job_id,
                        "thing_name": p.thing_name,
                        "status": p.status,
                        "status_details": dict(p.status_details),
                        "queued_at": p.queued_at,
                        "started_at": p.started_at,
                        "last_updated_at": p.last_updated_at,
                        "version_number": p.version_number,
                        "execution_number": p.execution_number,
                        "approximate_seconds_before_timed_out": (
                            p.approximate_seconds_before_timed_out
                        ),
                        "job_document": p.job_document,
                    }
                    for p in ex.previous
                ],
            }
            for ex in job.executions.values()
        ],
    }
