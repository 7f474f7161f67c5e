"""The unattended runner: one reconcile step for every live campaign, from AWS Lambda.

EventBridge Scheduler invokes `handler` every few minutes (`infra/aws/runner.yaml`); each
invocation visits every campaign in the DynamoDB state store and runs one `Reconciler.step` for
those that still have something to do. Operators keep using `ca-migrate` (approve, pause,
rollback) against the same table; the runner picks the change up on its next tick.

Invariants:
- Two overlapping invocations never act twice on a campaign. A step holds the campaign's lease
  (a conditional put in DynamoDB); a campaign whose lease is held elsewhere is reported `busy`
  and left alone, and so is one whose state changed under the step (the conditional commit
  lost: `VersionConflictError`). Even a step that outlived its lease cannot create a second
  job: job ids are deterministic and CreateJob adopts an existing job with the same document.
- One failing campaign does not stop the others, but the invocation still fails at the end
  (`RunnerFailedError`), so Lambda's Errors metric, and the stack's alarm, see it.
- Halts, completions, aborts, finished rollbacks and waves waiting for approval are published
  to the notifications topic by the step that decided them, one message per decision
  (`orchestrator.notify`); a failed publish is logged and does not undo the step.
- Drift (`ca-migrate verify`'s finding: a device of a PASSED wave whose shadow reports another
  endpoint than its SUCCEEDED job set) is checked for every stepped or finished campaign and
  announced as `drift-found` when the set of drifted devices is new (`orchestrator.drift_watch`);
  a check that cannot run (fleet indexing off) is logged and never fails the invocation.
- Each campaign is stepped with the clients of its own regions: one AWS IoT client per
  region, made on first use and kept for the invocation (`RegionalJobs`); the table and
  the topic stay in the runner's region (`CA_MIGRATE_REGION`).
- The library never configures logging; `handler`, an entry point, does (JSON to stderr,
  which Lambda ships to the function's log group).

Environment (set by runner.yaml): `CA_MIGRATE_TABLE` (required), `CA_MIGRATE_REGION`,
`CA_MIGRATE_TOPIC_ARN`, `CA_MIGRATE_LEASE_SECONDS`. boto3 also honours its own variables, such
as `AWS_ENDPOINT_URL_IOT`, which point the runner at the local sandbox.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import structlog

from job_documents import SystemClock, logs
from orchestrator.errors import (
    LeaseHeldError,
    OrchestratorError,
    VersionConflictError,
)
from orchestrator.jobs import WaveGroupsApi
from orchestrator.model import CampaignState, CampaignStatus, Event
from orchestrator.notify import Announcer, Notifier, SnsNotifier, SnsPublisher
from orchestrator.planner import jobs_to_observe
from orchestrator.reconcile import Reconciler
from orchestrator.regional import RegionalJobs
from orchestrator.store import StateStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_iot import IoTClient

__all__ = [
    "DEFAULT_RESERVE_SECONDS",
    "CampaignOutcome",
    "RunReport",
    "RunnerConfig",
    "RunnerConfigError",
    "RunnerFailedError",
    "handler",
    "regional_jobs",
    "run_once",
]

log = structlog.get_logger(__name__)

_FINISHED = frozenset({CampaignStatus.COMPLETED, CampaignStatus.ROLLED_BACK})
_LEASE_MARGIN = timedelta(seconds=60)
DEFAULT_RESERVE_SECONDS = 60.0  # the longest one step is expected to take

Outcome = Literal["stepped", "busy", "finished", "failed", "deferred"]


class RunnerConfigError(OrchestratorError):
    """The runner's environment is incomplete; the message names the variable."""


class RunnerFailedError(OrchestratorError):
    """At least one campaign's step failed; the others were still stepped."""


@dataclass(frozen=True, slots=True)
class CampaignOutcome:
    """What one invocation did with one campaign."""

    name: str
    outcome: Outcome
    status: str
    actions: int = 0
    events: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RunReport:
    """What one invocation did, campaign by campaign."""

    campaigns: tuple[CampaignOutcome, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> tuple[CampaignOutcome, ...]:
        return tuple(c for c in self.campaigns if c.outcome == "failed")

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able summary the Lambda function returns."""
        return {
            "campaigns": [
                {
                    "name": c.name,
                    "outcome": c.outcome,
                    "status": c.status,
                    "actions": c.actions,
                    "events": list(c.events),
                    **({"error": c.error} if c.error else {}),
                }
                for c in self.campaigns
            ]
        }


def needs_step(state: CampaignState) -> bool:
    """Whether a reconcile step could still change anything for this campaign."""
    return state.status not in _FINISHED or bool(jobs_to_observe(state))


DriftCheck = Callable[[str, CampaignState], Event | None]


def run_once(
    store: StateStore,
    reconciler: Reconciler,
    notifier: Notifier | None = None,
    *,
    seconds_left: Callable[[], float] | None = None,
    reserve_seconds: float = DEFAULT_RESERVE_SECONDS,
    drift_check: DriftCheck | None = None,
) -> RunReport:
    """One reconcile step for every campaign that needs one; never raises for one campaign.

    `seconds_left` (the Lambda context's remaining time) lets the run stop starting steps
    when fewer than `reserve_seconds` remain, so no step is cut off mid-way by the function's
    timeout; the campaigns left over are reported `deferred` and taken by the next tick.
    `drift_check` (`orchestrator.drift_watch.DriftWatch.check`) then looks at each stepped or
    finished campaign; a new `drift-found` event it returns is announced like a step's.
    """
    outcomes: list[CampaignOutcome] = []
    announcer = Announcer(notifier) if notifier is not None else None
    for name in store.names():
        bound = log.bind(campaign=name)
        if seconds_left is not None and seconds_left() < reserve_seconds:
            bound.warning("runner-campaign-deferred", reserve_seconds=reserve_seconds)
            outcomes.append(CampaignOutcome(name, "deferred", "unknown"))
            continue
        try:
            state = store.load(name).state
            if not needs_step(state):
                outcomes.append(CampaignOutcome(name, "finished", state.status.value))
                _check_drift(drift_check, announcer, name, state)
                continue
            result = reconciler.step(name)
        except (LeaseHeldError, VersionConflictError) as exc:
            bound.info("runner-campaign-busy", reason=str(exc))
            outcomes.append(CampaignOutcome(name, "busy", "unknown", error=str(exc)))
            continue
        except OrchestratorError as exc:
            bound.error("runner-campaign-failed", error=str(exc), error_type=type(exc).__name__)
            outcomes.append(CampaignOutcome(name, "failed", "unknown", error=str(exc)))
            continue
        kinds = tuple(event.kind for event in result.events)
        bound.info(
            "runner-campaign-stepped",
            status=result.state.status.value,
            actions=len(result.actions),
            events=list(kinds),
        )
        outcomes.append(
            CampaignOutcome(name, "stepped", result.state.status.value, len(result.actions), kinds)
        )
        if announcer is not None:
            announcer.announce(result.state, result.events)
        _check_drift(drift_check, announcer, name, result.state)
    return RunReport(tuple(outcomes))


def _check_drift(
    drift_check: DriftCheck | None, announcer: Announcer | None, name: str, state: CampaignState
) -> None:
    if drift_check is None:
        return
    event = drift_check(name, state)
    if event is not None and announcer is not None:
        announcer.announce(state, [event])


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """The runner's settings, from the Lambda function's environment."""

    table: str
    region: str
    topic_arn: str | None
    lease: timedelta

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> RunnerConfig:
        table = env.get("CA_MIGRATE_TABLE", "").strip()
        if not table:
            raise RunnerConfigError(
                "CA_MIGRATE_TABLE is not set: deploy infra/aws/runner.yaml, which sets it to "
                "the campaign table's name"
            )
        region = (
            env.get("CA_MIGRATE_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        )
        if not region:
            raise RunnerConfigError("CA_MIGRATE_REGION (or AWS_REGION) is not set")
        raw_lease = env.get("CA_MIGRATE_LEASE_SECONDS", "300")
        try:
            seconds = int(raw_lease)
        except ValueError:
            raise RunnerConfigError(
                f"CA_MIGRATE_LEASE_SECONDS must be a whole number of seconds, not {raw_lease!r}"
            ) from None
        if seconds <= 0:
            raise RunnerConfigError("CA_MIGRATE_LEASE_SECONDS must be positive")
        # The lease outlives the function's timeout, so a running invocation keeps it.
        lease = timedelta(seconds=seconds) + _LEASE_MARGIN
        return cls(table, region, env.get("CA_MIGRATE_TOPIC_ARN") or None, lease)


def _configure_logging() -> None:
    logs.configure_logging(json=True, level=logging.INFO)


def _clients(region: str) -> tuple[DynamoDBClient, SnsPublisher]:
    """boto3 clients with adaptive retries (throttling is botocore's job, as in the CLI)."""
    import boto3

    from orchestrator.aws.iot import RETRY_CONFIG

    session = boto3.Session(region_name=region)
    sns: SnsPublisher = session.client("sns", config=RETRY_CONFIG)
    return session.client("dynamodb", config=RETRY_CONFIG), sns


def _iot_client(region: str) -> IoTClient:
    """The AWS IoT client of one region (a campaign's waves may run in several)."""
    import boto3

    from orchestrator.aws.iot import RETRY_CONFIG

    return boto3.Session(region_name=region).client("iot", config=RETRY_CONFIG)


def regional_jobs(make_client: Callable[[str], IoTClient] = _iot_client) -> RegionalJobs:
    """One IoT Jobs adapter per region, each over `make_client(region)`."""
    from orchestrator.aws.iot import IotJobsAdapter

    return RegionalJobs(lambda region: IotJobsAdapter(make_client(region)))


def regional_groups(
    make_client: Callable[[str], IoTClient] = _iot_client,
) -> Callable[[str], WaveGroupsApi]:
    """Each region's maker of the groups of waves chosen by query or sample."""
    from orchestrator.aws.groups import ThingGroupsAdapter

    return lambda region: ThingGroupsAdapter(make_client(region))


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (`orchestrator.runner_lambda.handler`)."""
    del event  # the schedule's payload carries nothing the runner needs
    _configure_logging()
    config = RunnerConfig.from_environ(os.environ)
    ddb, sns = _clients(config.region)
    from orchestrator.aws.dynamodb import DynamoDbStateStore

    store = DynamoDbStateStore(ddb, config.table)
    request_id = getattr(context, "aws_request_id", None)
    reconciler = Reconciler(
        store,
        regional_jobs(),
        SystemClock(),
        owner=f"lambda:{request_id}" if request_id else None,
        lease_ttl=config.lease,
        groups=regional_groups(),
    )
    notifier = SnsNotifier(sns, config.topic_arn) if config.topic_arn else None
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    from orchestrator.aws.readers import regional_readers
    from orchestrator.drift_watch import DriftWatch

    # Each wave's drift is read in the wave's own region, as its job is.
    watch = DriftWatch(store, regional_readers(_iot_client), reconciler.clock)
    report = run_once(
        store,
        reconciler,
        notifier,
        seconds_left=(lambda: remaining_ms() / 1000) if callable(remaining_ms) else None,
        drift_check=watch.check,
    )
    summary = report.as_dict()
    if report.failed:
        names = ", ".join(c.name for c in report.failed)
        raise RunnerFailedError(
            f"reconcile failed for {names}; the other campaigns were stepped. "
            "Read this invocation's log events (runner-campaign-failed) for the reasons"
        )
    return summary
