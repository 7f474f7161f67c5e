"""The pure planner: all campaign policy, no I/O.

`decide(spec, state, observations, now)` reads what the last reconcile saw of
AWS (`Observations`, DescribeJob counts only) and returns the next state, the
AWS actions to perform and the events that explain why. `apply_command` does
the same for operator commands (approve, pause, resume, abort, rollback).

Invariants:
- Pure: same inputs, same outputs; no clock, no boto3, no store.
- Level-triggered: every action is derived from state plus observations, so a
  reconcile that crashed before performing an action emits it again next time
  (`CreateJob` while a LAUNCHING wave's job is absent, `CancelJob` while a job
  that must stop is still IN_PROGRESS). Actions are idempotent at the adapter.
- Waves run in order: a wave launches only after every earlier wave PASSED.
- Events are emitted once per transition (they are derived from the change).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from job_documents import Operation
from orchestrator.errors import UsageError
from orchestrator.gates import canceled_job_reason, evaluate_gate
from orchestrator.job_settings import (
    JobConfig,
    abort_threshold,
    job_config,
    job_id_for,
    operation_tag,
)
from orchestrator.model import (
    ACTIVE_PHASES,
    Approval,
    CampaignSpec,
    CampaignState,
    CampaignStatus,
    Counts,
    Event,
    EventKind,
    WavePhase,
    WaveState,
)
from orchestrator.schedule import wave_deadline
from orchestrator.targets import WaveTargets, wave_targets

__all__ = [
    "Abort",
    "Action",
    "Approve",
    "CancelJob",
    "Command",
    "CreateJob",
    "Decision",
    "ExplainFailures",
    "JobConfig",
    "JobObservation",
    "Observations",
    "Pause",
    "PrepareTargets",
    "Resume",
    "Rollback",
    "abort_threshold",
    "apply_command",
    "decide",
    "initial_state",
    "job_config",
    "job_id_for",
    "jobs_to_observe",
    "operation_tag",
]

TERMINAL_JOB_STATUSES = frozenset({"COMPLETED", "CANCELED", "DELETION_IN_PROGRESS"})
# A SCHEDULED job (startTime ahead) must be canceled too, or it starts rolling out later.
CANCELABLE_JOB_STATUSES = frozenset({"IN_PROGRESS", "SCHEDULED"})
EXPLAIN_LIMIT = 25


def initial_state(
    spec: CampaignSpec, documents: Mapping[str, tuple[str, str]], now: datetime
) -> CampaignState:
    """A new campaign; `documents` maps each wave to its migrate document (text, sha256)."""
    waves = []
    docs: dict[str, str] = {}
    for wave in spec.waves:
        text, sha = documents[wave.name]
        job_id = job_id_for(spec.name, wave.name, sha, Operation.MIGRATE)
        docs[job_id] = text
        waves.append(WaveState(name=wave.name, job_id=job_id))
    return CampaignState(
        name=spec.name,
        status=CampaignStatus.RUNNING,
        waves=tuple(waves),
        created_at=now,
        updated_at=now,
        documents=docs,
    )


# -- observations, actions, decisions -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobObservation:
    """One DescribeJob answer (or its absence)."""

    job_id: str
    exists: bool
    status: str | None = None
    counts: Counts = field(default_factory=Counts)
    rollout_done: bool = True
    reason_code: str | None = None
    #: The job's ARN as AWS gave it (its region is checked against the wave's).
    arn: str | None = None


@dataclass(frozen=True, slots=True)
class Observations:
    """What the reconcile read from AWS for the jobs `jobs_to_observe` named."""

    jobs: Mapping[str, JobObservation] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CreateJob:
    wave: str
    job_id: str
    operation: Operation
    config: JobConfig


@dataclass(frozen=True, slots=True)
class PrepareTargets:
    """Make the thing groups the wave's job targets (a dynamic group, a sample's group).

    Comes right before the wave's CreateJob, each time that CreateJob is asked for;
    idempotent at the adapter. When the groups are not ready (a dynamic group still
    BUILDING), the reconcile leaves the CreateJob for a later step.
    """

    wave: str
    job_id: str
    targets: WaveTargets


@dataclass(frozen=True, slots=True)
class CancelJob:
    wave: str
    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ExplainFailures:
    wave: str
    job_id: str
    limit: int = EXPLAIN_LIMIT


Action = PrepareTargets | CreateJob | CancelJob | ExplainFailures


@dataclass(frozen=True, slots=True)
class Decision:
    state: CampaignState
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()


def jobs_to_observe(state: CampaignState) -> tuple[str, ...]:
    """Job ids to DescribeJob this reconcile: launched jobs not yet terminal (one call each)."""
    ids: list[str] = []
    for wave in state.waves:
        if wave.phase in ACTIVE_PHASES or (
            wave.launched_at is not None and wave.job_status not in TERMINAL_JOB_STATUSES
        ):
            ids.append(wave.job_id)
        if wave.restore_job_id is not None and wave.restore_status not in TERMINAL_JOB_STATUSES:
            ids.append(wave.restore_job_id)
    return tuple(ids)


class _Step:
    """Mutable scratch for one decision; the result is frozen again at the end."""

    def __init__(self, state: CampaignState, now: datetime) -> None:
        self.state = state
        self.now = now
        self.actions: list[Action] = []
        self.events: list[Event] = []

    def wave(self, name: str) -> WaveState:
        return self.state.wave(name)

    def put(self, wave: WaveState) -> None:
        self.state = self.state.with_wave(wave)

    def event(self, kind: EventKind, reason: str, wave: str | None = None, **data: object) -> None:
        self.events.append(Event(kind=kind, reason=reason, wave=wave, data=data, at=self.now))

    def cancel(self, wave: WaveState, reason: str) -> None:
        if wave.job_status in CANCELABLE_JOB_STATUSES and not any(
            isinstance(a, CancelJob) and a.job_id == wave.job_id for a in self.actions
        ):
            self.actions.append(CancelJob(wave=wave.name, job_id=wave.job_id, reason=reason))


def _fold(step: _Step, obs: Observations) -> None:
    for wave in step.state.waves:
        seen = obs.jobs.get(wave.job_id)
        if seen is not None and seen.exists:
            updated = replace(
                wave, job_status=seen.status, counts=seen.counts, rollout_done=seen.rollout_done
            )
            if wave.phase is WavePhase.LAUNCHING:
                updated = replace(updated, phase=WavePhase.RUNNING)
                step.event(EventKind.JOB_OBSERVED, f"job {wave.job_id} is {seen.status}", wave.name)
            if seen.counts.tenths() != wave.counts.tenths():  # a report's timeline point
                c = seen.counts
                step.event(
                    EventKind.WAVE_PROGRESS,
                    f"{c.completed} of {c.targeted} completed, {c.failures} failed",
                    wave.name,
                    counts=c.as_dict(),
                )
            step.put(updated)
        restore = obs.jobs.get(wave.restore_job_id) if wave.restore_job_id else None
        if restore is not None and restore.exists:
            step.put(
                replace(
                    step.wave(wave.name),
                    restore_status=restore.status,
                    restore_counts=restore.counts,
                )
            )


def _halt_campaign(step: _Step, reason: str, *, cancel_all: bool) -> None:
    step.state = replace(
        step.state, status=CampaignStatus.HALTED, reason=reason, cancel_all=cancel_all
    )
    step.event(EventKind.CAMPAIGN_HALTED, reason)


def _halt_wave(step: _Step, wave: WaveState, reason: str) -> None:
    halted = replace(wave, phase=WavePhase.HALTED, finished_at=step.now, verdict=reason)
    step.put(halted)
    step.event(EventKind.WAVE_HALTED, reason, wave.name, counts=wave.counts.as_dict())
    if wave.counts.failures and not wave.explained:
        step.put(replace(halted, explained=True))
        step.actions.append(ExplainFailures(wave=wave.name, job_id=wave.job_id))
    _halt_campaign(step, f"wave {wave.name} halted: {reason}", cancel_all=False)


def _cancel_for_stop(step: _Step) -> None:
    """While halted or aborted: stop the jobs that must stop, until AWS shows them stopped."""
    for wave in step.state.waves:
        if step.state.cancel_all or wave.phase in (WavePhase.HALTED, WavePhase.CANCELED):
            step.cancel(wave, step.state.reason or "campaign stopped")


def _judge_running_wave(step: _Step, spec: CampaignSpec, wave: WaveState, *, paused: bool) -> None:
    wave_spec = spec.wave(wave.name)
    if wave.job_status == "CANCELED":
        _halt_wave(step, wave, canceled_job_reason(spec.halt_for(wave_spec), wave.counts))
        return
    deadline = wave_deadline(wave_spec, wave)
    deadline_reached = deadline is not None and step.now >= deadline
    if deadline_reached and wave.never_started is None:
        wave = replace(wave, never_started=wave.counts.queued)
        step.put(wave)
        step.event(
            EventKind.DEADLINE_REACHED,
            f"{wave.counts.queued} devices never started, {wave.counts.in_progress} still running",
            wave.name,
            never_started=wave.counts.queued,
            in_progress=wave.counts.in_progress,
        )
    verdict = evaluate_gate(
        wave_spec.gate,
        spec.halt_for(wave_spec),
        wave.counts,
        deadline_reached=deadline_reached,
        offline=wave_spec.offline,
        rollout_done=wave.rollout_done,
    )
    wave = replace(wave, verdict=verdict.reason)
    step.put(wave)
    if verdict.halt:
        _halt_wave(step, wave, verdict.reason)
        return
    if paused:
        return  # a paused campaign still halts, but promotes nothing
    if wave.phase is WavePhase.BAKING:
        if verdict.passed:
            if wave.bake_until is not None and step.now >= wave.bake_until:
                step.event(EventKind.BAKE_FINISHED, "bake time over, gate still met", wave.name)
                _pass_wave(step, wave)
            return
        # Back to RUNNING, and judged as such in this same step (a completed job or a
        # reached deadline halts now, not on the next reconcile): decide stays idempotent.
        wave = replace(wave, phase=WavePhase.RUNNING, bake_until=None)
        step.put(wave)
        step.event(EventKind.GATE_LOST, verdict.reason, wave.name, counts=wave.counts.as_dict())
    if verdict.passed:
        step.event(EventKind.GATE_PASSED, verdict.reason, wave.name, counts=wave.counts.as_dict())
        bake = timedelta(minutes=wave_spec.gate.bake_minutes)
        if bake > timedelta(0):
            step.put(replace(wave, phase=WavePhase.BAKING, bake_until=step.now + bake))
        else:
            _pass_wave(step, wave)
    elif deadline_reached:
        _halt_wave(step, wave, f"deadline reached and {verdict.reason}")
    elif wave.job_status == "COMPLETED":
        _halt_wave(step, wave, f"job completed and {verdict.reason}")


def _pass_wave(step: _Step, wave: WaveState) -> None:
    step.put(replace(wave, phase=WavePhase.PASSED, finished_at=step.now, bake_until=None))
    step.event(EventKind.WAVE_PASSED, wave.verdict, wave.name, counts=wave.counts.as_dict())


def _launch(step: _Step, spec: CampaignSpec, wave: WaveState) -> None:
    step.put(replace(wave, phase=WavePhase.LAUNCHING, launched_at=step.now))
    step.event(
        EventKind.WAVE_LAUNCHING, f"creating job {wave.job_id}", wave.name, job_id=wave.job_id
    )
    _create_migrate_job(step, spec, wave)


def _create_migrate_job(step: _Step, spec: CampaignSpec, wave: WaveState) -> None:
    """The wave's CreateJob, after the groups the campaign makes for it (if any)."""
    wave_spec = spec.wave(wave.name)
    targets = wave_targets(spec, wave_spec)
    if targets.made_by_campaign:
        step.actions.append(PrepareTargets(wave=wave.name, job_id=wave.job_id, targets=targets))
    step.actions.append(
        CreateJob(
            wave=wave.name,
            job_id=wave.job_id,
            operation=Operation.MIGRATE,
            config=job_config(spec, wave_spec, Operation.MIGRATE),
        )
    )


def _advance(step: _Step, spec: CampaignSpec, obs: Observations, *, paused: bool) -> None:
    budget = spec.halt.fleet_failure_budget
    failures = sum(w.counts.failures for w in step.state.waves)
    if budget is not None and failures > budget:
        for wave in step.state.waves:
            if wave.phase in ACTIVE_PHASES:
                step.put(replace(wave, phase=WavePhase.CANCELED, finished_at=step.now))
        _halt_campaign(
            step,
            f"fleet failure budget exhausted: {failures} failed devices > {budget}",
            cancel_all=True,
        )
        _cancel_for_stop(step)
        return
    for wave in step.state.waves:
        if wave.phase in (WavePhase.RUNNING, WavePhase.BAKING):
            _judge_running_wave(step, spec, wave, paused=paused)
            if step.state.status is CampaignStatus.HALTED:
                _cancel_for_stop(step)
                return
        elif wave.phase is WavePhase.LAUNCHING and not paused:
            seen = obs.jobs.get(wave.job_id)
            if seen is None or not seen.exists:
                _create_migrate_job(step, spec, wave)
    if paused:
        return
    for wave in step.state.waves:
        if wave.phase is WavePhase.PASSED:
            continue
        if wave.phase in (WavePhase.PENDING, WavePhase.AWAITING_APPROVAL):
            manual = spec.wave(wave.name).approval is Approval.MANUAL
            if manual and not wave.approved:
                if wave.phase is WavePhase.PENDING:
                    step.put(replace(wave, phase=WavePhase.AWAITING_APPROVAL))
                    step.event(
                        EventKind.WAVE_AWAITING_APPROVAL,
                        f"run `ca-migrate approve {spec.name} {wave.name}` to launch it",
                        wave.name,
                    )
            else:
                _launch(step, spec, wave)
        break
    if all(w.phase is WavePhase.PASSED for w in step.state.waves):
        step.state = replace(
            step.state, status=CampaignStatus.COMPLETED, reason="every wave passed"
        )
        step.event(EventKind.CAMPAIGN_COMPLETED, "every wave passed")


def _roll_back(step: _Step, spec: CampaignSpec, obs: Observations) -> None:
    for wave in step.state.waves:
        step.cancel(wave, "rolling back")
    done = True
    for wave in step.state.waves:
        if wave.restore_job_id is None:
            continue
        seen = obs.jobs.get(wave.restore_job_id)
        if wave.restore_status is None and (seen is None or not seen.exists):
            step.actions.append(
                CreateJob(
                    wave=wave.name,
                    job_id=wave.restore_job_id,
                    operation=Operation.RESTORE,
                    config=job_config(spec, spec.wave(wave.name), Operation.RESTORE),
                )
            )
        if wave.restore_status not in TERMINAL_JOB_STATUSES:
            done = False
    if done:
        step.state = replace(
            step.state, status=CampaignStatus.ROLLED_BACK, reason="every restore job completed"
        )
        step.event(EventKind.ROLLBACK_FINISHED, "every restore job completed")


def decide(
    spec: CampaignSpec, state: CampaignState, observations: Observations, now: datetime
) -> Decision:
    """The next state, the actions to perform and the events that explain them."""
    step = _Step(state, now)
    _fold(step, observations)
    status = step.state.status
    if status in (CampaignStatus.RUNNING, CampaignStatus.PAUSED):
        _advance(step, spec, observations, paused=status is CampaignStatus.PAUSED)
    elif status in (CampaignStatus.HALTED, CampaignStatus.ABORTED):
        _cancel_for_stop(step)
    elif status is CampaignStatus.ROLLING_BACK:
        _roll_back(step, spec, observations)
    new_state = step.state
    if new_state != state:
        new_state = replace(new_state, updated_at=now)
    return Decision(state=new_state, actions=tuple(step.actions), events=tuple(step.events))


# -- operator commands --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Approve:
    wave: str


@dataclass(frozen=True, slots=True)
class Pause:
    reason: str = "paused by operator"


@dataclass(frozen=True, slots=True)
class Resume:
    reason: str = "resumed by operator"


@dataclass(frozen=True, slots=True)
class Abort:
    reason: str = "aborted by operator"


@dataclass(frozen=True, slots=True)
class Rollback:
    """Restore jobs for `waves`: wave name -> (restore document text, its sha256)."""

    documents: Mapping[str, tuple[str, str]]
    reason: str = "rollback requested by operator"


Command = Approve | Pause | Resume | Abort | Rollback


def rollback_waves(state: CampaignState, names: Sequence[str] = ()) -> tuple[str, ...]:
    """The waves a rollback covers: the named ones, else every wave that launched."""
    if names:
        for name in names:
            wave = state.wave(name)
            if wave.launched_at is None:
                raise UsageError(f"wave {name} never launched: there is nothing to roll back")
        return tuple(names)
    launched = tuple(w.name for w in state.waves if w.launched_at is not None)
    if not launched:
        raise UsageError("no wave has launched yet: there is nothing to roll back")
    return launched


def apply_command(
    spec: CampaignSpec, state: CampaignState, command: Command, now: datetime
) -> Decision:
    """Apply an operator command; raises `UsageError` when it does not apply now."""
    step = _Step(state, now)
    status = state.status
    if isinstance(command, Approve):
        try:
            wave = state.wave(command.wave)
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from exc
        if wave.phase not in (WavePhase.PENDING, WavePhase.AWAITING_APPROVAL):
            raise UsageError(
                f"wave {wave.name} is {wave.phase.value}: only a waiting wave is approved"
            )
        if wave.approved:
            return Decision(state=state)
        step.put(replace(wave, approved=True))
        step.event(EventKind.WAVE_APPROVED, "approved by operator", wave.name)
    elif isinstance(command, Pause):
        if status is not CampaignStatus.RUNNING:
            raise UsageError(f"campaign {state.name} is {status.value}: only a RUNNING one pauses")
        step.state = replace(state, status=CampaignStatus.PAUSED, reason=command.reason)
        step.event(EventKind.CAMPAIGN_PAUSED, command.reason)
    elif isinstance(command, Resume):
        if status is not CampaignStatus.PAUSED:
            raise UsageError(f"campaign {state.name} is {status.value}: only a PAUSED one resumes")
        step.state = replace(state, status=CampaignStatus.RUNNING, reason=command.reason)
        step.event(EventKind.CAMPAIGN_RESUMED, command.reason)
    elif isinstance(command, Abort):
        if status in (CampaignStatus.COMPLETED, CampaignStatus.ROLLED_BACK, CampaignStatus.ABORTED):
            raise UsageError(f"campaign {state.name} is {status.value}: nothing to abort")
        for wave in state.waves:
            if wave.phase in ACTIVE_PHASES:
                step.put(replace(wave, phase=WavePhase.CANCELED, finished_at=now))
        step.state = replace(
            step.state, status=CampaignStatus.ABORTED, reason=command.reason, cancel_all=True
        )
        step.event(EventKind.CAMPAIGN_ABORTED, command.reason)
        _cancel_for_stop(step)
    else:
        if status in (CampaignStatus.ROLLING_BACK, CampaignStatus.ROLLED_BACK):
            raise UsageError(f"campaign {state.name} is {status.value} already")
        docs = dict(state.documents)
        for name, (text, sha) in command.documents.items():
            wave = step.wave(name)
            job_id = job_id_for(spec.name, name, sha, Operation.RESTORE)
            docs[job_id] = text
            if wave.phase in ACTIVE_PHASES:
                wave = replace(wave, phase=WavePhase.CANCELED, finished_at=now)
            step.put(replace(wave, restore_job_id=job_id))
        step.state = replace(
            step.state,
            status=CampaignStatus.ROLLING_BACK,
            reason=command.reason,
            documents=docs,
            cancel_all=True,
        )
        step.event(EventKind.ROLLBACK_STARTED, command.reason, waves=sorted(command.documents))
    return Decision(
        state=replace(step.state, updated_at=now),
        actions=tuple(step.actions),
        events=tuple(step.events),
    )
