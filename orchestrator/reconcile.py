"""The reconcile step: read state and AWS, let the planner decide, act, record.

`Reconciler.step(name)` is safe to run at any moment and any number of times
(from `run --follow`, cron or a Lambda):

1. take the campaign's lease (one reconcile per campaign at a time);
2. DescribeJob for the jobs the state names (one call per active job: the
   number of calls never depends on the fleet size);
3. `planner.decide` -> next state, actions, events;
4. commit state and events (before any AWS write);
5. perform the actions, each idempotent, committing an event after each.

A kill between any two lines leaves a state the next step resumes from: a
LAUNCHING wave whose job is absent is created again; a CreateJob that finds its
deterministic id taken adopts the job after checking its document
(GetJobDocument, compared by canonical hash); a LAUNCHING wave whose job
exists although the log records neither its creation nor its adoption (the
process died between CreateJob and the commit of `job-created`) is adopted the
same way before the planner moves it on; a cancel that did not land is asked
for again while the job is still IN_PROGRESS.

Every call about a wave goes to the `JobsApi` of the wave's region
(`orchestrator.regional.RegionalJobs`), and every job observed must carry an ARN of
that region (`WrongRegionError` otherwise, before anything is written).

A CreateJob that AWS refuses as an invalid request (InvalidRequestException:
retrying the same request cannot help) halts the campaign with the reason
instead of leaving its wave LAUNCHING, and raises `JobRefusedError`.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import structlog

from job_documents import Catalog, Clock, Operation, PrivateKey, Signer, document_hash
from orchestrator.errors import (
    AwsError,
    CampaignNotFoundError,
    JobConflictError,
    JobExistsError,
    JobRefusedError,
    LeaseHeldError,
    UsageError,
)
from orchestrator.jobs import JobsApi, WaveGroupsApi
from orchestrator.model import (
    CampaignSpec,
    CampaignState,
    CampaignStatus,
    Event,
    EventKind,
    SigningSpec,
    WavePhase,
)
from orchestrator.planner import (
    Action,
    CancelJob,
    Command,
    CreateJob,
    Decision,
    ExplainFailures,
    JobObservation,
    Observations,
    PrepareTargets,
    Rollback,
    apply_command,
    decide,
    initial_state,
    jobs_to_observe,
    rollback_waves,
)
from orchestrator.regional import RegionalJobs, check_job_region, resolve_endpoints
from orchestrator.spec import parse_spec
from orchestrator.store import StateStore, StoredCampaign
from orchestrator.wave_groups import WaveGroupMaker

__all__ = [
    "DocumentKey",
    "EndpointPreflight",
    "Reconciler",
    "SignerOpener",
    "StepResult",
    "default_owner",
]

#: What signs a campaign's documents: a private key here, or a signer whose key is in KMS.
DocumentKey = PrivateKey | Signer
#: Opens the signer of a campaign's `signing` in its region (the CLI: `orchestrator.signing`).
SignerOpener = Callable[[SigningSpec, str], DocumentKey]
#: Checks the campaign's endpoints (each region's resolved host) with the roots it pushes
#: (from its catalog) before the campaign is stored; returns the event that records the
#: check (the CLI's: `orchestrator.endpoint_check`), or raises to leave nothing started.
EndpointPreflight = Callable[[CampaignSpec, Mapping[str, str], Catalog], Event]

log = structlog.get_logger(__name__)

#: The events that record a job of the campaign, and whether it is a restore job.
_JOB_RECORDS: dict[str, bool] = {
    EventKind.JOB_CREATED: False,
    EventKind.JOB_ADOPTED: False,
    EventKind.RESTORE_JOB_CREATED: True,
    EventKind.RESTORE_JOB_ADOPTED: True,
}

LEASE_TTL = timedelta(minutes=2)
#: AWS's answer to a request that is wrong in itself; the same request would fail again.
_REFUSED = "InvalidRequestException"


def default_owner() -> str:
    """A lease owner id: host, process, and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_local_holder(owner: str | None) -> bool:
    """True when `owner` is a process on this host that no longer runs (a killed reconcile)."""
    if owner is None:
        return False
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():  # noqa: PLR2004
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one reconcile step did."""

    state: CampaignState
    actions: tuple[Action, ...]
    events: tuple[Event, ...]


class Reconciler:
    """Runs reconcile steps and operator commands for the campaigns of one store."""

    def __init__(
        self,
        store: StateStore,
        api: JobsApi | RegionalJobs,
        clock: Clock,
        *,
        owner: str | None = None,
        lease_ttl: timedelta = LEASE_TTL,
        signer: SignerOpener | None = None,
        groups: Callable[[str], WaveGroupsApi] | None = None,
    ) -> None:
        self.store = store
        #: Each region's Jobs API (a single `JobsApi` answers every region).
        self.apis = api if isinstance(api, RegionalJobs) else RegionalJobs.single(api)
        #: Makes the thing groups of waves chosen by query or sample, in each wave's region.
        self._wave_groups = WaveGroupMaker(groups)
        self.clock = clock
        self.owner = owner or default_owner()
        self.lease_ttl = lease_ttl
        self._open_signer = signer
        # Parsed campaign files by (text, directory): a stored campaign's file never
        # changes, and parsing it (YAML with line marks, then pydantic) is the largest
        # CPU cost of a reconcile step.
        self._specs: dict[tuple[str, str | None], CampaignSpec] = {}

    # -- plumbing --------------------------------------------------------------------------

    @contextmanager
    def _lease(self, name: str) -> Iterator[None]:
        now = self.clock.now()
        try:
            self.store.acquire_lease(name, self.owner, self.lease_ttl, now)
        except LeaseHeldError:
            holder = self.store.lease_holder(name)
            if not _dead_local_holder(holder):
                raise
            log.warning("lease-taken-over", campaign=name, previous_owner=holder)
            self.store.acquire_lease(name, self.owner, self.lease_ttl, now, take_over=holder)
        try:
            yield
        finally:
            self.store.release_lease(name, self.owner)

    def _spec(self, stored: StoredCampaign) -> CampaignSpec:
        key = (stored.spec_text, stored.spec_dir)
        spec = self._specs.get(key)
        if spec is None:
            base = Path(stored.spec_dir) if stored.spec_dir else None
            spec = parse_spec(stored.spec_text, f"campaign {stored.state.name}", base_dir=base)
            self._specs[key] = spec
        return spec

    def _signer(self, spec: CampaignSpec) -> DocumentKey | None:
        """The key that signs this campaign's documents (None when it has no `signing`)."""
        if spec.signing is None:
            return None
        if self._open_signer is None:
            raise UsageError(
                f"campaign {spec.name} signs its documents ({spec.signing.source}) but this "
                "reconciler has no signer: build documents with the ca-migrate CLI"
            )
        return self._open_signer(spec.signing, spec.region)

    def _commit(self, before: CampaignState, decision: Decision) -> CampaignState:
        if decision.state == before and not decision.events:
            return before
        return self.store.commit(decision.state, decision.events)

    def _record(self, state: CampaignState, event: Event) -> CampaignState:
        stamped = replace(event, at=self.clock.now())
        return self.store.commit(replace(state, updated_at=self.clock.now()), [stamped])

    # -- starting --------------------------------------------------------------------------

    def start(
        self,
        spec: CampaignSpec,
        spec_text: str,
        spec_dir: str | None,
        *,
        preflight: EndpointPreflight | None = None,
    ) -> CampaignState:
        """Resolve the endpoint, build every wave's document, store the new campaign.

        `preflight`, when given, checks the endpoints once the documents are built and before
        anything is stored; its event is recorded beside `campaign-started`, and what it
        raises leaves no campaign and no job. Starting a campaign that exists with the very
        same file is a no-op (a `start` that was killed can be run again); with another
        file it is `CampaignExistsError`.
        """
        from orchestrator.jobdocs import build_wave_documents

        try:
            existing = self.store.load(spec.name)
        except CampaignNotFoundError:
            pass
        else:
            if existing.spec_text == spec_text:
                log.info("campaign-already-started", campaign=spec.name)
                return existing.state
        hosts = self.endpoints(spec)
        built = build_wave_documents(spec, hosts, self._signer(spec))
        host = built.endpoint
        checked = None if preflight is None else preflight(spec, built.endpoints, built.catalog)
        now = self.clock.now()
        docs = {wave: (doc.text, doc.sha256) for wave, doc in built.documents.items()}
        state = initial_state(spec, docs, now)
        event = Event(
            kind=EventKind.CAMPAIGN_STARTED,
            reason=f"{_endpoints_text(built.endpoints, host)}; catalog {built.catalog.source}"
            + ("" if built.catalog.is_default else " (NOT the packaged Amazon catalog)"),
            at=now,
            data={
                "endpoint": host,
                "endpoints": built.endpoints,
                "catalog": built.catalog.source,
                "catalog_is_default": built.catalog.is_default,
                "jobs": {w.name: w.job_id for w in state.waves},
                "document_sizes": {w: d.size for w, d in built.documents.items()},
            },
        )
        events = [event] if checked is None else [event, replace(checked, at=now)]
        log.info("campaign-starting", campaign=spec.name, endpoints=built.endpoints)
        return self.store.create(StoredCampaign(spec_text, spec_dir, state), events)

    def endpoints(self, spec: CampaignSpec) -> dict[str, str]:
        """Each region's iot:Data-ATS host: DescribeEndpoint in that region, or the file's."""
        return resolve_endpoints(spec, self.apis.api)

    def _api(self, spec: CampaignSpec, wave: str) -> JobsApi:
        return self.apis.api(spec.region_of(wave))

    def _observe(self, spec: CampaignSpec, state: CampaignState) -> Observations:
        """DescribeJob for each job to observe, in its wave's region, checked to be there."""
        wave_of: dict[str, str] = {}
        for wave in state.waves:
            for job_id in (wave.job_id, wave.restore_job_id):
                if job_id:
                    wave_of[job_id] = wave.name
        jobs: dict[str, JobObservation] = {}
        for job_id in jobs_to_observe(state):
            owner = wave_of.get(job_id)
            region = spec.region_of(owner) if owner is not None else spec.region
            seen = self.apis.api(region).describe_job(job_id)
            check_job_region(seen, owner or "?", region)
            jobs[job_id] = seen
        return Observations(jobs=jobs)

    # -- the step --------------------------------------------------------------------------

    def step(self, name: str) -> StepResult:
        """One reconcile: observe, decide, commit, act."""
        with self._lease(name):
            stored = self.store.load(name)
            spec = self._spec(stored)
            state = stored.state
            observations = self._observe(spec, state)
            state = self._adopt_unrecorded(spec, state, observations)
            decision = decide(spec, state, observations, self.clock.now())
            state = self._commit(state, decision)
            state, performed = self._perform(spec, state, decision.actions)
            return StepResult(state=state, actions=performed, events=decision.events)

    def _adopt_unrecorded(
        self, spec: CampaignSpec, state: CampaignState, observations: Observations
    ) -> CampaignState:
        """Record the adoption of a job the campaign made whose creation the log lacks.

        Looked for once per job: a LAUNCHING wave's job, or a restore job not yet
        observed, that exists. The log is read only when there is such a job.
        """

        def exists(job_id: str | None) -> bool:
            seen = observations.jobs.get(job_id) if job_id is not None else None
            return seen is not None and seen.exists

        found: list[tuple[str, str, bool]] = []  # (wave, job id, whether a restore job)
        for wave in state.waves:
            if wave.phase is WavePhase.LAUNCHING and exists(wave.job_id):
                found.append((wave.name, wave.job_id, False))
            if wave.restore_job_id and wave.restore_status is None and exists(wave.restore_job_id):
                found.append((wave.name, wave.restore_job_id, True))
        if not found:
            return state
        recorded = {
            (_JOB_RECORDS[e.kind], e.data.get("job_id"))
            for e in self.store.events(state.name)
            if e.kind in _JOB_RECORDS
        }
        for wave_name, job_id, restore in found:
            if (restore, job_id) in recorded:
                continue
            existing = self._api(spec, wave_name).get_job_document(job_id)
            if not _same_document(existing, state.documents[job_id]):
                raise JobConflictError(
                    f"job {job_id} exists with a different document; delete it "
                    "(aws iot delete-job) or rename the campaign, then run again"
                )
            event = Event(
                kind=EventKind.RESTORE_JOB_ADOPTED if restore else EventKind.JOB_ADOPTED,
                reason=f"job {job_id} exists but its creation was not recorded (the "
                "reconcile that created it stopped first); its document matches",
                wave=wave_name,
                data={"job_id": job_id},
            )
            log.warning(event.kind, campaign=state.name, wave=wave_name, job_id=job_id)
            state = self._record(state, event)
        return state

    def _halt_refused(self, state: CampaignState, action: CreateJob, exc: AwsError) -> NoReturn:
        """CreateJob was refused as invalid: halt with the reason, never stay LAUNCHING."""
        now = self.clock.now()
        reason = (
            f"AWS refused CreateJob for wave {action.wave} as an invalid request ({exc}); "
            "fix the campaign file and start it under a new name"
        )
        wave = replace(
            state.wave(action.wave), phase=WavePhase.HALTED, finished_at=now, verdict=reason
        )
        halted = replace(
            state.with_wave(wave), status=CampaignStatus.HALTED, reason=reason, updated_at=now
        )
        data = {"action": type(action).__name__, "job_id": action.job_id}
        self.store.commit(
            halted,
            [
                Event(
                    kind=EventKind.ACTION_FAILED,
                    reason=str(exc),
                    wave=action.wave,
                    data=data,
                    at=now,
                ),
                Event(kind=EventKind.WAVE_HALTED, reason=reason, wave=action.wave, at=now),
                Event(kind=EventKind.CAMPAIGN_HALTED, reason=reason, at=now),
            ],
        )
        log.error("campaign-halted", campaign=state.name, wave=action.wave, reason=reason)
        raise JobRefusedError(reason, code=exc.code) from exc

    def _perform(
        self, spec: CampaignSpec, state: CampaignState, actions: Sequence[Action]
    ) -> tuple[CampaignState, tuple[Action, ...]]:
        done: list[Action] = []
        waiting: set[str] = set()  # waves whose groups are not ready: no CreateJob yet
        for action in actions:
            bound = log.bind(campaign=state.name, wave=action.wave, job_id=action.job_id)
            if isinstance(action, CreateJob) and action.wave in waiting:
                continue
            try:
                if isinstance(action, PrepareTargets):
                    prepared = self._wave_groups.prepare(spec, state.name, action)
                    if prepared is None:
                        waiting.add(action.wave)
                        continue
                    if self._targets_recorded(state.name, action.wave):
                        # Prepared again after a stop before the job: recorded once, so a
                        # step that dies after each write still reaches the CreateJob.
                        done.append(action)
                        continue
                    event = prepared
                else:
                    event = self._act(self._api(spec, action.wave), state, action)
            except AwsError as exc:
                bound.error("action-failed", action=type(action).__name__, error=str(exc))
                if (
                    isinstance(action, CreateJob)
                    and action.operation == "migrate"
                    and exc.code == _REFUSED
                ):
                    self._halt_refused(state, action, exc)
                self._record(
                    state,
                    Event(
                        kind=EventKind.ACTION_FAILED,
                        reason=str(exc),
                        wave=action.wave,
                        data={"action": type(action).__name__, "job_id": action.job_id},
                    ),
                )
                raise
            bound.info(event.kind, reason=event.reason)
            state = self._record(state, event)
            done.append(action)
        return state, tuple(done)

    def _targets_recorded(self, campaign: str, wave: str) -> bool:
        return any(
            e.kind == EventKind.WAVE_TARGETS_READY and e.wave == wave
            for e in self.store.events(campaign)
        )

    def _act(
        self, api: JobsApi, state: CampaignState, action: CreateJob | CancelJob | ExplainFailures
    ) -> Event:
        if isinstance(action, CreateJob):
            document = state.documents[action.job_id]
            restore = action.operation is Operation.RESTORE
            try:
                api.create_job(action.job_id, document, action.config)
            except JobExistsError:
                existing = api.get_job_document(action.job_id)
                if _same_document(existing, document):
                    return Event(
                        kind=EventKind.RESTORE_JOB_ADOPTED if restore else EventKind.JOB_ADOPTED,
                        reason=f"job {action.job_id} already existed with this document",
                        wave=action.wave,
                        data={"job_id": action.job_id},
                    )
                raise JobConflictError(
                    f"job {action.job_id} exists with a different document; delete it "
                    "(aws iot delete-job) or rename the campaign, then run again"
                ) from None
            return Event(
                kind=EventKind.RESTORE_JOB_CREATED if restore else EventKind.JOB_CREATED,
                reason=f"created job {action.job_id} for {', '.join(action.config.thing_groups)}",
                wave=action.wave,
                data={"job_id": action.job_id, "thing_groups": list(action.config.thing_groups)},
            )
        if isinstance(action, CancelJob):
            api.cancel_job(action.job_id, action.reason)
            return Event(
                kind=EventKind.JOB_CANCEL_REQUESTED,
                reason=action.reason,
                wave=action.wave,
                data={"job_id": action.job_id},
            )
        samples = api.list_failures(action.job_id, action.limit)
        return Event(
            kind=EventKind.FAILURES_EXPLAINED,
            reason=f"{len(samples)} failed executions sampled (at most {action.limit})",
            wave=action.wave,
            data={
                "samples": [
                    {"thing": s.thing_name, "status": s.status, "details": dict(s.details)}
                    for s in samples
                ]
            },
        )

    # -- commands --------------------------------------------------------------------------

    def command(
        self, name: str, make: Callable[[CampaignSpec, CampaignState], Command]
    ) -> StepResult:
        """Apply an operator command now (recorded), perform what it asks, then reconcile."""
        with self._lease(name):
            stored = self.store.load(name)
            spec = self._spec(stored)
            command = make(spec, stored.state)
            decision = apply_command(spec, stored.state, command, self.clock.now())
            state = self._commit(stored.state, decision)
            state, _ = self._perform(spec, state, decision.actions)
        result = self.step(name)
        return StepResult(
            state=result.state,
            actions=decision.actions + result.actions,
            events=decision.events + result.events,
        )

    def rollback(self, name: str, waves: Sequence[str] = ()) -> StepResult:
        """Restore jobs for the named waves, or for every wave that launched."""
        from orchestrator.jobdocs import build_restore_document

        def make(spec: CampaignSpec, state: CampaignState) -> Command:
            docs: dict[str, tuple[str, str]] = {}
            chosen = rollback_waves(state, waves)
            signer = self._signer(spec) if chosen else None
            for wave in chosen:
                built = build_restore_document(spec, wave, signer)
                docs[wave] = (built.text, built.sha256)
            return Rollback(docs)

        return self.command(name, make)


def _endpoints_text(endpoints: dict[str, str], host: str) -> str:
    """`endpoint HOST`, or each region's when the campaign spans several."""
    if len(endpoints) <= 1:
        return f"endpoint {host}"
    return "endpoints " + ", ".join(f"{region} {h}" for region, h in endpoints.items())


def _same_document(a: str, b: str) -> bool:
    try:
        return document_hash(a) == document_hash(b)
    except (ValueError, TypeError):
        return a == b
