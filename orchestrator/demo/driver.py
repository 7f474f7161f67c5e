"""The driving loop: reconcile, let devices act, move the clock, until the campaign stops.

The planner says when its next time-based decision falls due
(`orchestrator.schedule.next_decision_at`); the loop never copies its rules.

A sandbox of several regions has one engine per region on one clock: the loop
watches every engine's changes and deadlines, and moves the clock once for all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

import structlog

from infra.sandbox.runtime import Sandbox
from job_documents.clock import ManualClock
from orchestrator.demo.run_types import Progress, RunSettings, SimulatedFleet
from orchestrator.errors import AwsError
from orchestrator.model import (
    STOPPED_STATUSES,
    CampaignSpec,
    CampaignState,
    CampaignStatus,
    WavePhase,
)
from orchestrator.planner import Approve
from orchestrator.reconcile import Reconciler
from orchestrator.schedule import next_decision_at

__all__ = ["drive"]

log = structlog.get_logger(__name__)

SETTLE_SECONDS: Final = 3600.0
QUIET_SECONDS: Final = 900.0
MIN_REAL_INTERVAL: Final = 0.25


def _decision_time(spec: CampaignSpec, state: CampaignState) -> float | None:
    when = next_decision_at(spec, state)
    return None if when is None else when.timestamp()


class _Engines:
    """Every region's engine of the sandbox, seen as one: changes, deadlines, the clock."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.first = sandbox.engine
        self.others = [e for e in sandbox.engines.values() if e is not self.first]
        self.time_scale = self.first.time_scale

    @property
    def revision(self) -> int:
        return self.first.revision + sum(e.revision for e in self.others)

    def next_deadline(self) -> float | None:
        due = [d for d in (e.next_deadline() for e in (self.first, *self.others)) if d is not None]
        return min(due) if due else None

    def advance(self, seconds: float) -> None:
        self.first.advance(seconds)  # the one clock; then what fell due in every other region
        for engine in self.others:
            engine.advance(0)


def drive(
    rec: Reconciler,
    spec: CampaignSpec,
    name: str,
    fleet: SimulatedFleet,
    sandbox: Sandbox,
    settings: RunSettings,
    on_progress: Callable[[Progress], None] | None,
) -> datetime | None:
    """Reconcile, let devices act, move the clock; until the campaign stops and devices settle."""
    engine = _Engines(sandbox)
    clock = sandbox.engine.clock
    manual = isinstance(clock, ManualClock)
    start = clock.now()
    limit = start + timedelta(hours=settings.max_simulated_hours)
    wall0 = time.monotonic()
    halted_at: datetime | None = None
    devices = sum(fleet.profile_counts().values())
    settle_until: datetime | None = None
    interval = timedelta(seconds=settings.interval_seconds)
    quiet = timedelta(seconds=max(settings.interval_seconds, QUIET_SECONDS))
    last_reconcile = start - quiet
    revision_seen = -1  # the engine's revision at the last reconcile
    state = rec.store.load(name).state
    while clock.now() < limit:
        now = clock.now()
        # Reconcile every interval while executions change; when nothing changed since the
        # last reconcile, only for a time-based decision (bake end, deadline) or rarely.
        changed = engine.revision != revision_seen
        planner_due = _decision_time(spec, state)
        due = (
            (changed and now >= last_reconcile + interval)
            or (planner_due is not None and now.timestamp() >= planner_due)
            or now >= last_reconcile + quiet
        )
        if due and (state.status not in STOPPED_STATUSES or state.status is CampaignStatus.HALTED):
            revision_seen = engine.revision
            state = _reconcile(rec, name, state)
            last_reconcile = now
        fleet.run_due()
        state = _operator(rec, spec, name, state, settings)
        if state.status in (CampaignStatus.HALTED, CampaignStatus.ROLLING_BACK) and (
            halted_at is None
        ):
            halted_at = now
        if on_progress is not None:
            elapsed = (now - start).total_seconds()
            on_progress(Progress(state, elapsed, devices, settling=settle_until is not None))
        if state.status in STOPPED_STATUSES and not (
            state.status is CampaignStatus.HALTED and settings.rollback_on_halt
        ):
            settle_until = settle_until or now + timedelta(seconds=SETTLE_SECONDS)
            wake = fleet.next_wakeup()
            if wake is None or now >= settle_until:
                break
        if not manual:  # the clock runs by itself: wait one reconcile interval in real time
            time.sleep(max(MIN_REAL_INTERVAL, settings.interval_seconds / engine.time_scale))
            continue
        changed = engine.revision != revision_seen
        next_reconcile = last_reconcile + (interval if changed else quiet)
        wakeups = [fleet.next_wakeup(), engine.next_deadline(), _decision_time(spec, state)]
        target = min([next_reconcile.timestamp(), *(w for w in wakeups if w is not None)])
        engine.advance(max(1.0, target - now.timestamp()))
        _pace(wall0, (clock.now() - start).total_seconds(), settings.time_scale)
    # Devices keep finishing after the last gate passed (a wave promotes at 95%): one more
    # observation, so that the summary and the report show where every execution ended.
    # On a stopped campaign the planner only records the counts.
    _reconcile(rec, name, state)
    return halted_at


def _reconcile(rec: Reconciler, name: str, state: CampaignState) -> CampaignState:
    try:
        return rec.step(name).state
    except AwsError as exc:
        log.warning("reconcile_failed", campaign=name, error=str(exc))
        return state


def _approval(wave: str) -> Callable[[CampaignSpec, CampaignState], Approve]:
    def make(_spec: CampaignSpec, _state: CampaignState) -> Approve:
        return Approve(wave)

    return make


def _operator(
    rec: Reconciler, spec: CampaignSpec, name: str, state: CampaignState, settings: RunSettings
) -> CampaignState:
    """What the demo's operator does: approve waiting waves, roll back a halted campaign."""
    try:
        if settings.auto_approve:
            for wave in state.waves:
                if wave.phase is WavePhase.AWAITING_APPROVAL:
                    state = rec.command(name, _approval(wave.name)).state
        if settings.rollback_on_halt and state.status is CampaignStatus.HALTED:
            state = rec.rollback(name).state
    except AwsError as exc:
        log.warning("operator_command_failed", campaign=name, error=str(exc))
    del spec
    return state


def _pace(wall0: float, simulated: float, time_scale: float) -> None:
    if time_scale <= 0:
        return
    ahead = simulated / time_scale - (time.monotonic() - wall0)
    if ahead > 0:
        time.sleep(min(ahead, 5.0))
