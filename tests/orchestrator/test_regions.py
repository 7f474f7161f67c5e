"""A campaign whose waves run in several regions: spec, documents, clients, plan, reconcile.

Real boto3 against a sandbox serving us-east-1 and eu-west-1 (told apart by the SigV4
region, as AWS tells them apart by host).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from infra.sandbox import runtime
from job_documents import ManualClock, legacy_endpoint, validate_document
from orchestrator.aws.iot import IotJobsAdapter
from orchestrator.errors import SpecError, WrongRegionError
from orchestrator.jobdocs import build_restore_document, build_wave_documents
from orchestrator.model import CampaignStatus
from orchestrator.planner import JobObservation
from orchestrator.reconcile import Reconciler
from orchestrator.regional import RegionalJobs, arn_region, check_job_region
from orchestrator.report import render_html, render_markdown, report_data
from orchestrator.spec import parse_spec
from orchestrator.store.sqlite import SqliteStateStore
from tests.e2e.campaign_kit import without_listener

TWO_REGIONS = """\
name: global
region: us-east-1
endpoint: auto
trust: {add: [amazon-root-ca-1, amazon-root-ca-3]}
waves:
  - name: west-canary
    region: eu-west-1
    thing_groups: [canary]
    gate: {min_success_rate: 0.5, min_completed: 3, confidence: 0.6}
  - name: east
    thing_groups: [fleet]
    gate: {min_success_rate: 0.5, min_completed: 3, confidence: 0.6}
"""

ONE_REGION = TWO_REGIONS.replace("    region: eu-west-1\n", "")


# -- the campaign file --------------------------------------------------------------------


def test_a_wave_runs_in_its_own_region_or_the_campaigns() -> None:
    spec = parse_spec(TWO_REGIONS)
    assert [spec.region_of(w) for w in spec.waves] == ["eu-west-1", "us-east-1"]
    assert spec.regions == ("eu-west-1", "us-east-1")


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("region: eu-west-1", "region: eu-wset-1"), 7, "'eu-wset-1' is not an AWS region"),
        (("region: eu-west-1", "region: EU"), 7, "String should match pattern"),
        (("region: eu-west-1", "region: cn-north-1"), 7, "another partition"),
        (("endpoint: auto", "endpoint: x-ats.iot.us-east-1.amazonaws.com"), 7, "endpoint: auto"),
    ],
)
def test_a_wave_region_is_checked_with_its_line(change, line, message) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(TWO_REGIONS.replace(*change))
    problem = caught.value.problems[0]
    assert problem.path == "waves[0].region"
    assert problem.line == line
    assert message in problem.message


def test_each_waves_documents_are_built_for_its_region() -> None:
    spec = parse_spec(TWO_REGIONS)
    hosts = {
        "eu-west-1": "p-ats.iot.eu-west-1.amazonaws.com",
        "us-east-1": "p-ats.iot.us-east-1.amazonaws.com",
    }
    built = build_wave_documents(spec, hosts)
    assert built.endpoints == hosts
    assert built.endpoint == hosts["us-east-1"]
    for wave, region in (("west-canary", "eu-west-1"), ("east", "us-east-1")):
        document = json.loads(built.documents[wave].text)
        assert document["region"] == region
        assert document["endpoint"]["host"] == hosts[region]
        validate_document(built.documents[wave].text)
    restore = json.loads(build_restore_document(spec, "west-canary").text)
    assert restore["region"] == "eu-west-1"


def test_a_regions_documents_refuse_another_regions_host() -> None:
    spec = parse_spec(TWO_REGIONS)
    with pytest.raises(SpecError, match="eu-west-1"):
        build_wave_documents(
            spec,
            {
                "eu-west-1": "p-ats.iot.us-east-1.amazonaws.com",
                "us-east-1": "p-ats.iot.us-east-1.amazonaws.com",
            },
        )


# -- clients and the region check ---------------------------------------------------------


def test_regional_jobs_makes_one_api_per_region_on_first_use() -> None:
    made: list[str] = []

    def make(region: str) -> object:
        made.append(region)
        return object()

    jobs = RegionalJobs(make)  # type: ignore[arg-type]
    first = jobs.api("eu-west-1")
    assert jobs.api("eu-west-1") is first
    jobs.api("us-east-1")
    assert made == ["eu-west-1", "us-east-1"]
    assert jobs.regions == ("eu-west-1", "us-east-1")


@pytest.mark.parametrize(
    ("arn", "region"),
    [
        ("arn:aws:iot:eu-west-1:123456789012:job/j", "eu-west-1"),
        ("arn:aws-cn:iot:cn-north-1:123456789012:job/j", "cn-north-1"),
        ("arn:aws:iot::123456789012:job/j", None),
        ("not-an-arn", None),
    ],
)
def test_arn_region_reads_the_fourth_field(arn, region) -> None:
    assert arn_region(arn) == region


def test_a_job_answered_from_another_region_is_refused() -> None:
    seen = JobObservation(job_id="j", exists=True, arn="arn:aws:iot:us-east-1:123456789012:job/j")
    check_job_region(seen, "east", "us-east-1")
    check_job_region(JobObservation(job_id="j", exists=False), "west", "eu-west-1")
    with pytest.raises(WrongRegionError, match="answered from us-east-1") as caught:
        check_job_region(seen, "west-canary", "eu-west-1")
    assert "runs in eu-west-1" in str(caught.value)


def test_regions_without_a_legacy_endpoint_have_nothing_to_migrate() -> None:
    assert legacy_endpoint("us-east-1") == "yes"
    assert legacy_endpoint("eu-west-2") == "probably"
    assert legacy_endpoint("ap-south-1") == "no"  # the first ATS-only region (9 May 2018)
    assert legacy_endpoint("cn-north-1") == "unconfirmed"


# -- against a two-region sandbox ---------------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[runtime.Sandbox]:
    with runtime.Sandbox(
        mqtt=False, clock=ManualClock(), region="us-east-1", regions=["eu-west-1", "ap-south-1"]
    ) as sb:
        sb.provision(3, [("canary", None)], prefix="west", region="eu-west-1")
        sb.provision(3, [("fleet", None)], prefix="east", region="us-east-1")
        sb.provision(2, [("mumbai", None)], prefix="mum", region="ap-south-1")
        yield sb


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str


def cli(sandbox: runtime.Sandbox, state: Path, *args: str) -> Ran:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    result = CliRunner().invoke(
        app,
        [
            "--endpoint-url",
            sandbox.control_plane_url,
            "--state",
            str(state),
            *without_listener(sandbox, args),
        ],
    )
    structlog.reset_defaults()
    return Ran(result.exit_code, result.stdout, result.stderr)


def test_plan_shows_each_regions_endpoint_and_waves(sandbox, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(TWO_REGIONS)
    ran = cli(sandbox, tmp_path / "s.sqlite", "plan", str(path), "--output", "json")
    assert ran.code == 0, ran.stderr
    plan = json.loads(ran.stdout)
    assert plan["endpoints"] == {
        "eu-west-1": "a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com",
        "us-east-1": "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com",
    }
    assert [(r["region"], r["waves"], r["nothing_to_migrate"]) for r in plan["regions"]] == [
        ("eu-west-1", ["west-canary"], False),
        ("us-east-1", ["east"], False),
    ]
    west = plan["waves"][0]
    assert west["region"] == "eu-west-1"
    assert west["distinct_devices"] == 3
    assert west["create_job"]["targets"] == ["arn:aws:iot:eu-west-1:123456789012:thinggroup/canary"]
    text = cli(sandbox, tmp_path / "s.sqlite", "plan", str(path))
    assert "region eu-west-1: endpoint a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com" in (
        text.stdout
    )
    assert "wave west-canary (eu-west-1)" in text.stdout


def test_plan_marks_a_region_that_never_had_a_legacy_endpoint(sandbox, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        TWO_REGIONS.replace("region: eu-west-1", "region: ap-south-1")
        .replace("[canary]", "[mumbai]")
        .replace(
            "min_completed: 3, confidence: 0.6}\n  - name: east",
            "min_completed: 2, confidence: 0.6}\n  - name: east",
        )
    )
    ran = cli(sandbox, tmp_path / "s.sqlite", "plan", str(path), "--output", "json")
    assert ran.code == 0, ran.stderr
    mumbai = json.loads(ran.stdout)["regions"][0]
    assert mumbai["region"] == "ap-south-1"
    assert mumbai["legacy_endpoint"] == "no"
    assert mumbai["nothing_to_migrate"] is True
    text = cli(sandbox, tmp_path / "s.sqlite", "plan", str(path))
    assert "ap-south-1" in text.stdout
    assert "nothing to migrate" in text.stdout


def test_plan_refuses_a_group_missing_in_the_waves_region(sandbox, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(TWO_REGIONS.replace("[canary]", "[fleet]"))  # fleet is in us-east-1 only
    ran = cli(sandbox, tmp_path / "s.sqlite", "plan", str(path))
    assert ran.code == 2
    assert "fleet" in ran.stderr
    assert "Traceback" not in ran.stderr


def _succeed_all(sandbox: runtime.Sandbox, region: str, prefix: str) -> None:
    data = sandbox.jobs_data_client(region=region)
    for index in range(1, 4):
        thing = f"{prefix}-{index:05d}"
        for job in data.get_pending_job_executions(thingName=thing)["queuedJobs"]:
            data.update_job_execution(thingName=thing, jobId=job["jobId"], status="SUCCEEDED")


def test_the_reconciler_runs_each_wave_in_its_region_to_completion(sandbox, tmp_path) -> None:
    spec = parse_spec(TWO_REGIONS)
    clients = RegionalJobs(lambda region: IotJobsAdapter(sandbox.iot_client(region=region)))
    rec = Reconciler(SqliteStateStore(tmp_path / "s.sqlite"), clients, sandbox.engine.clock)
    state = rec.start(spec, TWO_REGIONS, None)
    started = rec.store.events("global")[0]
    assert started.data["endpoints"]["eu-west-1"] == (
        "a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com"
    )
    assert started.reason.startswith(
        "endpoints eu-west-1 a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com, "
        "us-east-1 a1sandbox2demo-ats.iot.us-east-1.amazonaws.com;"
    )
    state = rec.step("global").state
    west_job = state.wave("west-canary").job_id
    assert west_job is not None
    assert (
        sandbox.iot_client(region="eu-west-1")
        .describe_job(jobId=west_job)["job"]["jobArn"]
        .startswith("arn:aws:iot:eu-west-1:")
    )
    assert sandbox.engine_for("us-east-1").list_jobs({})["jobs"] == []  # the canary region first
    _succeed_all(sandbox, "eu-west-1", "west")
    for _ in range(6):
        state = rec.step("global").state
        if state.wave("east").job_id is not None:
            break
    east_job = state.wave("east").job_id
    assert east_job is not None
    assert (
        sandbox.iot_client(region="us-east-1")
        .describe_job(jobId=east_job)["job"]["jobArn"]
        .startswith("arn:aws:iot:us-east-1:")
    )
    _succeed_all(sandbox, "us-east-1", "east")
    for _ in range(6):
        state = rec.step("global").state
        if state.status is CampaignStatus.COMPLETED:
            break
    assert state.status is CampaignStatus.COMPLETED
    assert clients.regions == ("eu-west-1", "us-east-1")
    data = report_data(state, rec.store.events("global"), None, spec=spec)
    assert [w["region"] for w in data["settings"]["waves"]] == ["eu-west-1", "us-east-1"]
    assert "wave west-canary: groups canary;" in render_markdown(data)
    assert "; in eu-west-1" in render_markdown(data)
    assert "<td>eu-west-1</td>" in render_html(data)


def test_a_client_that_reaches_the_wrong_region_stops_the_step(sandbox, tmp_path) -> None:
    spec = parse_spec(TWO_REGIONS)
    right = RegionalJobs(lambda region: IotJobsAdapter(sandbox.iot_client(region=region)))
    store = SqliteStateStore(tmp_path / "s.sqlite")
    rec = Reconciler(store, right, sandbox.engine.clock)
    rec.start(spec, TWO_REGIONS, None)
    job = rec.step("global").state.wave("west-canary").job_id
    # The same job id exists in us-east-1 too: a client for "eu-west-1" that reaches
    # us-east-1 sees a job there, with an ARN of us-east-1.
    east = sandbox.iot_client(region="us-east-1")
    east.create_thing_group(thingGroupName="canary")
    east.create_job(
        jobId=job,
        targets=["arn:aws:iot:us-east-1:123456789012:thinggroup/canary"],
        document="{}",
    )
    wrong = RegionalJobs(lambda _region: IotJobsAdapter(sandbox.iot_client(region="us-east-1")))
    before = store.load("global").state
    with pytest.raises(WrongRegionError, match="runs in eu-west-1"):
        Reconciler(store, wrong, sandbox.engine.clock).step("global")
    assert store.load("global").state == before


def test_census_of_a_campaign_counts_only_the_waves_of_its_region(sandbox, tmp_path) -> None:
    from orchestrator.census import INDEXING_CONFIGURATION

    state = tmp_path / "s.sqlite"
    rec = Reconciler(
        SqliteStateStore(state),
        RegionalJobs(lambda region: IotJobsAdapter(sandbox.iot_client(region=region))),
        sandbox.engine.clock,
    )
    rec.start(parse_spec(TWO_REGIONS), TWO_REGIONS, None)
    for region in ("us-east-1", "eu-west-1"):
        sandbox.iot_client(region=region).update_indexing_configuration(
            thingIndexingConfiguration=INDEXING_CONFIGURATION
        )
    east = cli(sandbox, state, "census", "--campaign", "global", "--output", "json")
    assert east.code == 0, east.stderr
    assert list(json.loads(east.stdout)["waves"]) == ["east"]
    assert json.loads(east.stdout)["total"] == 3  # us-east-1's three things only
    assert "wave west-canary runs in eu-west-1" in east.stderr
    west = cli(
        sandbox, state, "census", "--campaign", "global", "--region", "eu-west-1", "-o", "json"
    )
    assert west.code == 0, west.stderr
    assert list(json.loads(west.stdout)["waves"]) == ["west-canary"]
    assert "wave east runs in us-east-1" in west.stderr


def test_plan_says_which_regions_the_endpoint_serves_when_a_wave_is_elsewhere(
    sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(TWO_REGIONS.replace("region: eu-west-1", "region: us-west-2"))
    ran = cli(sandbox, tmp_path / "s.sqlite", "plan", str(path))
    assert ran.code == 1
    assert "not us-west-2" in ran.stderr
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize(("text", "shown"), [(TWO_REGIONS, True), (ONE_REGION, False)])
def test_the_live_table_has_a_region_column_only_over_several_regions(text, shown) -> None:
    import io
    from datetime import UTC, datetime

    from rich.console import Console

    from orchestrator.cli._live import FollowView
    from orchestrator.planner import initial_state

    spec = parse_spec(text)
    now = datetime(2026, 3, 1, tzinfo=UTC)
    state = initial_state(
        spec, {w.name: ("{}", f"{i:064x}") for i, w in enumerate(spec.waves)}, now
    )
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    with FollowView(spec, "live", console=console) as view:
        view.show(state, now)
    header = next(line for line in out.getvalue().splitlines() if "phase" in line)
    assert ("region" in header) is shown
    assert ("eu-west-1" in out.getvalue()) is shown


def test_start_and_run_from_the_cli_complete_a_campaign_over_two_regions(sandbox, tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(TWO_REGIONS)
    state = tmp_path / "s.sqlite"
    started = cli(sandbox, state, "start", str(path), "--output", "json")
    assert started.code == 0, started.stderr
    west = [j["jobId"] for j in sandbox.engine_for("eu-west-1").list_jobs({})["jobs"]]
    assert len(west) == 1
    assert sandbox.engine_for("us-east-1").list_jobs({})["jobs"] == []
    _succeed_all(sandbox, "eu-west-1", "west")
    for _ in range(4):
        ran = cli(sandbox, state, "run", "global", "--output", "json")
        assert ran.code == 0, ran.stderr
        if sandbox.engine_for("us-east-1").list_jobs({})["jobs"]:
            break
    _succeed_all(sandbox, "us-east-1", "east")
    for _ in range(4):
        ran = cli(sandbox, state, "run", "global", "--output", "json")
        if json.loads(ran.stdout)["status"] == "COMPLETED":
            break
    assert json.loads(ran.stdout)["status"] == "COMPLETED"
    # --region may only name the campaign's own region
    wrong = cli(sandbox, state, "--region", "eu-west-1", "run", "global")
    assert wrong.code == 2
    assert "drop --region" in wrong.stderr
