"""Waves chosen by query or sample: the campaign file, the group names and queries, the reconcile.

The reconcile tests drive the planner and reconciler with `FakeJobs` and a small in-memory
groups API whose dynamic groups can be BUILDING; `test_aws_groups.py` runs the boto3 adapter
against the sandbox, and tests/e2e/test_campaign_query.py a whole campaign.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from job_documents import ManualClock
from orchestrator.errors import AwsError, GroupConflictError, SpecError, UsageError
from orchestrator.model import WavePhase
from orchestrator.planner import CreateJob, JobConfig, PrepareTargets
from orchestrator.reconcile import Reconciler
from orchestrator.spec import parse_spec
from orchestrator.store.sqlite import SqliteStateStore
from orchestrator.targets import (
    MAX_GROUP_NAME,
    group_name,
    sample_seed,
    wave_groups,
    wave_targets,
)
from orchestrator.testing import FakeJobs

CAMPAIGN = """\
name: qw
region: us-east-1
endpoint: auto
trust: {add: [amazon-root-ca-1]}
waves:
  - name: canary
    sample: {count: 3, stratify_by: attributes.model}
    gate: {min_success_rate: 0.1, confidence: 0.6}
  - name: legacy
    thing_groups: [old-fleet]
    gate: {min_success_rate: 0.1, confidence: 0.6}
  - name: rest
    query: "attributes.model:m*"
    gate: {min_success_rate: 0.1, confidence: 0.6}
"""
MODELS = {"a1": "m1", "a2": "m1", "a3": "m1", "b1": "m2", "b2": "m2", "c1": None}


def test_group_names_are_deterministic_and_fit_aws() -> None:
    assert group_name("qw", "rest", "query") == "ca-migrate-qw-rest-query"
    exactly = group_name("c" * 64, "w" * 45, "sample")  # 128 characters: kept as it is
    assert exactly == f"ca-migrate-{'c' * 64}-{'w' * 45}-sample"
    assert len(exactly) == MAX_GROUP_NAME
    long = group_name("c" * 64, "w" * 64, "sample")
    assert len(long) <= MAX_GROUP_NAME
    assert long == group_name("c" * 64, "w" * 64, "sample")
    assert long != group_name("c" * 64, "w" * 63 + "x", "sample")


def test_later_waves_leave_out_the_devices_of_earlier_ones() -> None:
    spec = parse_spec(CAMPAIGN)
    canary, legacy, rest = (wave_targets(spec, w) for w in spec.waves)
    assert canary.sample is not None
    assert canary.sample.population == "thingName:*"
    assert canary.sample.stratify_by == "attributes.model"
    assert canary.sample.count == 3
    assert canary.sample.seed == sample_seed("qw", "canary")
    assert (
        len({sample_seed("qw", "canary"), sample_seed("qx", "canary"), sample_seed("qw", "x")}) == 3
    )
    assert canary.groups == ("ca-migrate-qw-canary-sample",)
    assert legacy.groups == ("old-fleet",)
    assert not legacy.made_by_campaign
    assert rest.query == (
        '(attributes.model:m*) AND NOT thingGroupNames:"ca-migrate-qw-canary-sample" '
        'AND NOT thingGroupNames:"old-fleet"'
    )
    assert wave_groups(spec, spec.waves[2]) == ("ca-migrate-qw-rest-query",)


def test_a_later_sample_draws_from_what_earlier_waves_left() -> None:
    text = CAMPAIGN.replace(
        'query: "attributes.model:m*"',
        'sample: {count: 2, stratify_by: attributes.model, query: "attributes.model:m2"}',
    )
    spec = parse_spec(text)
    late = wave_targets(spec, spec.waves[2]).sample
    assert late is not None
    assert late.population == (
        '(attributes.model:m2) AND NOT thingGroupNames:"ca-migrate-qw-canary-sample" '
        'AND NOT thingGroupNames:"old-fleet"'
    )
    assert late.group == "ca-migrate-qw-rest-sample"


def test_a_query_wave_after_a_query_wave_leaves_out_its_matches() -> None:
    text = CAMPAIGN.replace("thing_groups: [old-fleet]", 'query: "attributes.model:m1"')
    spec = parse_spec(text)
    assert wave_targets(spec, spec.waves[2]).query == (
        '(attributes.model:m*) AND NOT thingGroupNames:"ca-migrate-qw-canary-sample" '
        "AND NOT (attributes.model:m1)"
    )


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        (
            'query: "attributes.model:m*"',
            'query: "attributes.model:(m1"',
            "waves[2].query",
            "not a fleet-indexing query",
        ),
        (
            "thing_groups: [old-fleet]",
            "thing_groups: []",
            "waves[1]",
            "give thing_groups, query or sample",
        ),
        (
            "sample: {count: 3, stratify_by: attributes.model}",
            'sample: {count: 3, stratify_by: attributes.model}\n    query: "x:y"',
            "waves[0]",
            "give query or sample, not both",
        ),
        (
            "stratify_by: attributes.model",
            "stratify_by: model",
            "waves[0].sample.stratify_by",
            "pattern",
        ),
        ("count: 3", "count: 0", "waves[0].sample.count", "greater than or equal to 1"),
        (
            'query: "attributes.model:m*"',
            'query: "' + "(" * 500 + "a" + ")" * 500 + '"',
            "waves[2].query",
            "deeper than 32 levels",
        ),
    ],
    ids=["query-syntax", "no-target", "query-and-sample", "stratum-field", "zero-count", "deep"],
)
def test_bad_targets_are_refused_with_their_line(old, new, path, message) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(CAMPAIGN.replace(old, new), "qw.yaml")
    problems = caught.value.problems
    assert any(p.path == path and message in p.message and p.line for p in problems), [
        str(p) for p in problems
    ]


class Groups:
    """An in-memory `WaveGroupsApi` over `FakeJobs`' groups; dynamic groups may be BUILDING."""

    def __init__(self, jobs: FakeJobs, status: str = "ACTIVE") -> None:
        self.jobs = jobs
        self.status = status
        self.dynamic: dict[str, str] = {}
        self.static: dict[str, list[str]] = {}
        self.descriptions: dict[str, str] = {}
        self.calls: list[str] = []

    def ensure_dynamic_group(self, name: str, query: str, description: str) -> str:
        self.calls.append(f"dynamic {name}")
        self.descriptions.setdefault(name, description)
        if self.dynamic.setdefault(name, query) != query:
            raise GroupConflictError(f"{name} has another query")
        self.jobs.groups[name] = 2
        return self.status

    def ensure_static_group(self, name: str, description: str) -> list[str]:
        self.calls.append(f"static {name}")
        if self.descriptions.setdefault(name, description) != description:
            raise GroupConflictError(f"{name} is not ours")
        self.jobs.groups.setdefault(name, 0)
        return list(self.static.setdefault(name, []))

    def indexed_values(self, query: str, field: str) -> dict[str, str | None]:
        self.calls.append(f"search {query} {field}")
        return dict(MODELS)

    def add_things(self, group: str, things: Sequence[str]) -> list[str]:
        self.calls.append(f"add {group} {len(things)}")
        self.static[group].extend(things)
        self.jobs.groups[group] = len(self.static[group])
        return []


def _world(tmp_path: Path, status: str = "ACTIVE") -> tuple[Reconciler, FakeJobs, Groups]:
    jobs = FakeJobs({"old-fleet": 5})
    groups = Groups(jobs, status)
    rec = Reconciler(
        SqliteStateStore(tmp_path / "state.sqlite"),
        jobs,
        ManualClock(),
        groups=lambda _region: groups,
    )
    rec.start(parse_spec(CAMPAIGN), CAMPAIGN, None)
    return rec, jobs, groups


def test_the_sample_group_is_made_and_filled_before_the_job(tmp_path: Path) -> None:
    rec, jobs, groups = _world(tmp_path)
    result = rec.step("qw")
    assert [type(a) for a in result.actions] == [PrepareTargets, CreateJob]
    picked = sorted(groups.static["ca-migrate-qw-canary-sample"])
    assert len(picked) == 3
    assert {MODELS[t] for t in picked} == {"m1", "m2", None}
    (job,) = jobs.jobs.values()
    assert job.config.thing_groups == ("ca-migrate-qw-canary-sample",)
    ready = [e for e in rec.store.events("qw") if e.kind == "wave-targets-ready"]
    assert ready[0].data["sample"]["strata"] == {
        "(missing)": {"size": 1, "picked": 1},
        "m1": {"size": 3, "picked": 1},
        "m2": {"size": 2, "picked": 1},
    }


class FailingOnce(FakeJobs):
    """CreateJob fails the first time (the step stops between the group and the job)."""

    failed = False

    def create_job(self, job_id: str, document: str, config: JobConfig) -> None:
        if not self.failed:
            self.failed = True
            raise AwsError("CreateJob throttled", code="ThrottlingException")
        super().create_job(job_id, document, config)


def test_a_prepare_run_again_adds_nothing_and_makes_no_second_group(tmp_path: Path) -> None:
    jobs = FailingOnce({})
    groups = Groups(jobs)
    rec = Reconciler(
        SqliteStateStore(tmp_path / "s"), jobs, ManualClock(), groups=lambda _region: groups
    )
    rec.start(parse_spec(CAMPAIGN), CAMPAIGN, None)
    with pytest.raises(AwsError):
        rec.step("qw")
    assert jobs.jobs == {}
    rec.step("qw")
    adds = [c for c in groups.calls if c.startswith("add ")]
    assert adds == ["add ca-migrate-qw-canary-sample 3", "add ca-migrate-qw-canary-sample 0"]
    assert len(groups.static["ca-migrate-qw-canary-sample"]) == 3
    assert len(jobs.jobs) == 1


def test_no_job_while_the_dynamic_group_builds(tmp_path: Path) -> None:
    rec, jobs, groups = _world(tmp_path, status="BUILDING")
    text = CAMPAIGN.replace(
        "  - name: canary\n    sample: {count: 3, stratify_by: attributes.model}\n"
        "    gate: {min_success_rate: 0.1, confidence: 0.6}\n",
        "",
    ).replace("name: qw", "name: qb")
    rec.start(parse_spec(text), text, None)
    rec.step("qb")  # legacy launches
    legacy = rec.store.load("qb").state.wave("legacy")
    jobs.finish(legacy.job_id)
    for _ in range(3):
        state = rec.step("qb").state
    assert state.wave("rest").phase is WavePhase.LAUNCHING
    assert [j for j in jobs.jobs if "rest" in j] == []
    groups.status = "ACTIVE"
    state = rec.step("qb").state
    assert [j for j in jobs.jobs if "rest" in j] == [state.wave("rest").job_id]
    assert groups.calls.count("dynamic ca-migrate-qb-rest-query") == 4


def test_a_group_that_is_not_the_campaigns_stops_the_step(tmp_path: Path) -> None:
    rec, jobs, groups = _world(tmp_path)
    groups.descriptions["ca-migrate-qw-canary-sample"] = "someone else's"
    with pytest.raises(GroupConflictError):
        rec.step("qw")
    assert jobs.jobs == {}


def test_a_reconciler_without_groups_says_what_to_use(tmp_path: Path) -> None:
    rec = Reconciler(SqliteStateStore(tmp_path / "s"), FakeJobs({}), ManualClock())
    rec.start(parse_spec(CAMPAIGN), CAMPAIGN, None)
    with pytest.raises(UsageError, match="ca-migrate CLI or the runner"):
        rec.step("qw")


def test_a_query_that_parses_alone_but_not_with_earlier_waves_left_out_is_refused() -> None:
    """Wave 3 leaves wave 2's query out inside NOT (...): two more levels than wave 2 has."""
    deep = "(" * 31 + "attributes.model:m1" + ")" * 31
    text = CAMPAIGN.replace("thing_groups: [old-fleet]", f'query: "{deep}"')
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "qw.yaml")
    (problem,) = caught.value.problems
    assert problem.path == "waves[2].query"
    assert "earlier waves left out" in problem.message
