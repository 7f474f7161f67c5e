"""Properties of the engine under random operation sequences (in-process, manual clock).

jobProcessDetails is kept as counters; after any sequence of control-plane,
device and clock operations the counters must equal a recount of the
executions, and a job's status must agree with its executions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from infra.sandbox import decisions as d
from infra.sandbox.dataplane import DataPlaneError
from infra.sandbox.engine import JobsEngine
from infra.sandbox.errors import ServiceError
from job_documents.clock import ManualClock

ARN = "arn:aws:iot:us-east-1:123456789012"
THINGS = [f"t{i}" for i in range(6)]
GROUPS = ["g0", "g1"]
HIERARCHY = frozenset({"g1", "g2"})  # g2 is g1's child: a thing is in one of them at most
DEVICE_STATUSES = ["IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"]


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = JobsEngine(clock=ManualClock(datetime(2026, 1, 1, tzinfo=UTC)))
        self.engine.create_things(THINGS)
        for group in GROUPS:
            self.engine.create_thing_group({"thingGroupName": group})
        self.engine.create_thing_group({"thingGroupName": "g2", "parentGroupName": "g1"})
        self.jobs: list[str] = []
        self.members: dict[str, set[str]] = {}
        self.notified: list[str] = []
        self.engine.subscribe(self.notified.append)

    @rule(
        thing=st.sampled_from(THINGS),
        group=st.sampled_from([*GROUPS, "g2"]),
        add=st.booleans(),
    )
    def membership(self, thing: str, group: str, add: bool) -> None:
        params = {"thingGroupName": group, "thingName": thing}
        groups = self.members.setdefault(thing, set())
        if not add:
            self.engine.remove_thing_from_thing_group(params)
            groups.discard(group)
        elif group in HIERARCHY and groups & (HIERARCHY - {group}):
            with pytest.raises(ServiceError, match="same hierarchy"):
                self.engine.add_thing_to_thing_group(params)
        else:
            self.engine.add_thing_to_thing_group(params)
            groups.add(group)

    @rule(
        target_arns=st.lists(
            st.one_of(
                st.sampled_from([f"{ARN}:thing/{t}" for t in THINGS]),
                st.sampled_from([f"{ARN}:thinggroup/{g}" for g in [*GROUPS, "g2"]]),
            ),
            min_size=1,
            max_size=3,
        ),
        continuous=st.booleans(),
        per_minute=st.one_of(st.none(), st.integers(1, 3)),
        retries=st.one_of(st.none(), st.integers(0, 2)),
        timeout=st.one_of(st.none(), st.integers(1, 3)),
        abort=st.one_of(st.none(), st.integers(0, 60)),
        schedule=st.sampled_from([None, None, "start", "window", "end", "all"]),
        end_behavior=st.sampled_from(["STOP_ROLLOUT", "CANCEL", "FORCE_CANCEL"]),
    )
    def create_job(
        self,
        target_arns: list[str],
        continuous: bool,
        per_minute: int | None,
        retries: int | None,
        timeout: int | None,
        abort: int | None,
        schedule: str | None,
        end_behavior: str,
    ) -> None:
        job_id = f"job{len(self.jobs)}"
        params: dict = {
            "jobId": job_id,
            "targets": target_arns,
            "document": json.dumps({"n": len(self.jobs)}),
            "targetSelection": "CONTINUOUS" if continuous else "SNAPSHOT",
        }
        if per_minute is not None:
            params["jobExecutionsRolloutConfig"] = {"maximumPerMinute": per_minute}
        if timeout is not None:
            params["timeoutConfig"] = {"inProgressTimeoutInMinutes": timeout}
        if retries is not None:
            kinds = ["FAILED", "TIMED_OUT"] if timeout is not None else ["FAILED"]
            params["jobExecutionsRetryConfig"] = {
                "criteriaList": [{"failureType": k, "numberOfRetries": retries} for k in kinds]
            }
        if abort is not None:
            params["abortConfig"] = {
                "criteriaList": [
                    {
                        "failureType": "ALL",
                        "action": "CANCEL",
                        "thresholdPercentage": abort,
                        "minNumberOfExecutedThings": 1,
                    }
                ]
            }
        if schedule is not None:
            now = self.engine.clock.now().replace(second=0, microsecond=0)
            config: dict = {}
            if schedule in ("start", "all"):
                config["startTime"] = (now + timedelta(minutes=31)).isoformat()
            if schedule in ("end", "all"):
                config["endTime"] = (now + timedelta(minutes=31 + 31)).isoformat()
                config["endBehavior"] = end_behavior
            if schedule in ("window", "all"):
                config["maintenanceWindows"] = [
                    {"startTime": "cron(0/3 * ? * * *)", "durationInMinutes": 1}
                ]
            params["schedulingConfig"] = config
        self.engine.create_job(params)
        self.jobs.append(job_id)

    @rule(thing=st.sampled_from(THINGS), step=st.one_of(st.none(), st.integers(1, 2)))
    def start_next(self, thing: str, step: int | None) -> None:
        self.engine.start_next(
            thing, status_details={"s": "x"}, step_timeout_minutes=step, via="https"
        )

    @precondition(lambda self: self.jobs)
    @rule(
        thing=st.sampled_from(THINGS),
        job=st.integers(0, 50),
        status=st.sampled_from(DEVICE_STATUSES),
        stale=st.booleans(),
    )
    def update(self, thing: str, job: int, status: str, stale: bool) -> None:
        job_id = self.jobs[job % len(self.jobs)]
        try:
            current = self.engine.describe_execution(thing, job_id, execution_number=None)
        except DataPlaneError:
            return
        expected = current.version_number - 1 if stale else current.version_number
        refused: DataPlaneError | None = None
        try:
            after = self.engine.update_execution(
                thing,
                job_id,
                status=status,
                status_details=None,
                expected_version=expected,
                execution_number=None,
                step_timeout_minutes=None,
                via="ats",
            )
        except DataPlaneError as exc:
            refused = exc
        if refused is not None:
            assert refused.code in {"VersionMismatch", "InvalidStateTransition"}
            assert refused.execution_state is not None
            assert stale or current.status not in {"QUEUED", "IN_PROGRESS"}
            return
        assert not stale
        assert after.version_number > current.version_number or after.execution_number > 1

    @precondition(lambda self: self.jobs)
    @rule(job=st.integers(0, 50), force=st.booleans())
    def cancel_job(self, job: int, force: bool) -> None:
        code = None
        try:
            self.engine.cancel_job({"jobId": self.jobs[job % len(self.jobs)], "force": force})
        except ServiceError as exc:
            code = exc.code
        assert code in {None, "InvalidRequestException"}

    @precondition(lambda self: self.jobs)
    @rule(job=st.integers(0, 50), thing=st.sampled_from(THINGS), force=st.booleans())
    def cancel_execution(self, job: int, thing: str, force: bool) -> None:
        code = None
        try:
            self.engine.cancel_job_execution(
                {"jobId": self.jobs[job % len(self.jobs)], "thingName": thing, "force": force}
            )
        except ServiceError as exc:
            code = exc.code
        assert code in {None, "InvalidStateTransitionException", "ResourceNotFoundException"}

    @rule(thing=st.sampled_from(THINGS))
    def delete_and_recreate(self, thing: str) -> None:
        self.engine.delete_thing({"thingName": thing})
        self.engine.create_thing({"thingName": thing})
        self.members.pop(thing, None)

    @rule(seconds=st.sampled_from([1, 30, 60, 61, 200, 1860]))
    def advance(self, seconds: int) -> None:
        self.engine.advance(seconds)

    @invariant()
    def counters_match_a_recount(self) -> None:
        for job_id in self.jobs:
            assert self.engine.counts(job_id) == self.engine.recount(job_id)

    @invariant()
    def job_status_agrees_with_executions(self) -> None:
        for job_id in self.jobs:
            job = self.engine.describe_job({"jobId": job_id})["job"]
            counts = job["jobProcessDetails"]
            pending = counts["numberOfQueuedThings"] + counts["numberOfInProgressThings"]
            if job["status"] == "COMPLETED":
                assert pending == 0
                assert job["targetSelection"] == "SNAPSHOT"
            if job["status"] == "IN_PROGRESS" and job["targetSelection"] == "SNAPSHOT":
                assert pending > 0 or "processingTargets" in counts
            if job["status"] == "CANCELED" and not job["isConcurrent"]:  # cancel propagated
                assert counts["numberOfQueuedThings"] == 0
            if job["status"] == "SCHEDULED":  # not started, or paused between windows
                started = any(counts[k] for k in counts if k.startswith("numberOf"))
                assert not started or "processingTargets" in counts

    @invariant()
    def pending_lists_hold_only_pending_executions(self) -> None:
        for thing in THINGS:
            pending = self.engine.get_pending(thing)
            assert all(e.status == "IN_PROGRESS" for e in pending.in_progress)
            assert all(e.status == "QUEUED" for e in pending.queued)
            assert len(pending.in_progress) + len(pending.queued) == len(
                {e.job_id for e in (*pending.in_progress, *pending.queued)}
            )


EngineMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_engine_counters_stay_consistent = EngineMachine.TestCase


def test_subscribers_hear_about_new_executions_and_changes():
    engine = JobsEngine(clock=ManualClock())
    heard: list[str] = []
    engine.subscribe(heard.append)
    engine.create_things(["a", "b"])
    engine.create_job({"jobId": "j", "targets": [f"{ARN}:thing/a"], "document": "{}"})
    assert heard == ["a"]
    engine.start_next("a", status_details=None, step_timeout_minutes=None, via="legacy")
    assert heard == ["a", "a"]
    engine.cancel_job({"jobId": "j", "force": True})
    engine.advance(d.CANCEL_PROPAGATION_SECONDS)  # the executions are canceled after
    assert heard == ["a", "a", "a"]


def test_subscriber_errors_do_not_break_the_engine():
    engine = JobsEngine(clock=ManualClock())

    def broken(_: str) -> None:
        raise RuntimeError("subscriber bug")

    engine.subscribe(broken)
    engine.create_things(["a"])
    engine.create_job({"jobId": "j", "targets": [f"{ARN}:thing/a"], "document": "{}"})
    assert engine.get_pending("a").next is not None


@pytest.mark.parametrize(
    ("details", "match"),
    [
        ({f"k{i}": "v" for i in range(11)}, "at most 10"),
        ({"bad key": "v"}, "key 'bad key'"),
        ({"k": "a\x07b"}, "without control characters"),
        ({"k": "a\x7f"}, "without control characters"),
        ({"k": "caf\u00e9 \x85"}, "without control characters"),  # C1, in non-ASCII text
        ({"step": "ok", "bad key": "v"}, "key 'bad key'"),  # a valid key seen first
    ],
)
def test_device_status_details_are_checked_by_the_engine_too(details, match):
    engine = JobsEngine(clock=ManualClock())
    engine.create_things(["a"])
    engine.create_job({"jobId": "j", "targets": [f"{ARN}:thing/a"], "document": "{}"})
    with pytest.raises(DataPlaneError, match=match) as caught:
        engine.start_next("a", status_details=details, step_timeout_minutes=None, via="ats")
    assert caught.value.code == "InvalidRequest"


def test_the_next_execution_is_in_progress_first_then_oldest_queued():
    clock = ManualClock()
    engine = JobsEngine(clock=clock)
    engine.create_things(["a"])
    for job_id in ("j1", "j2", "j3"):
        engine.create_job({"jobId": job_id, "targets": [f"{ARN}:thing/a"], "document": "{}"})
        clock.advance(1)
    engine.update_execution(
        "a",
        "j2",
        status="IN_PROGRESS",
        status_details=None,
        expected_version=None,
        execution_number=None,
        step_timeout_minutes=None,
        via="ats",
    )
    assert engine.describe_execution("a", "$next", execution_number=None).job_id == "j2"
    pending = engine.get_pending("a")
    assert [e.job_id for e in pending.queued] == ["j1", "j3"]
