"""The unattended runner's Lambda handler, locally: moto's DynamoDB, the sandbox's AWS IoT Jobs.

The state store is the orchestrator's real DynamoDB store (over moto's DynamoDB), the jobs are
created through the real boto3 IoT adapter in the sandbox's control plane over HTTP. Overlapping
invocations are two runners in two threads, held at chosen points so the overlap is certain.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import moto
import pytest
from botocore.config import Config

from infra.sandbox import runtime
from job_documents import ManualClock
from orchestrator import runner_lambda
from orchestrator.aws.dynamodb import DynamoDbStateStore
from orchestrator.aws.iot import IotJobsAdapter
from orchestrator.errors import AwsError
from orchestrator.notify import SnsNotifier
from orchestrator.reconcile import Reconciler
from orchestrator.spec import parse_spec

CAMPAIGN = """\
name: ats-2026
region: us-east-1
endpoint: auto
trust:
  add: [amazon-root-ca-1, amazon-root-ca-3]
  keep_existing: true
execution:
  in_progress_timeout_minutes: 30
  retries: {failed: 1, timed_out: 1}
halt:
  max_failure_rate: 0.05
  fleet_failure_budget: 200
waves:
  - name: canary
    thing_groups: [canary]
    gate: {min_success_rate: 0.95, min_completed: 10, bake_minutes: 10}
  - name: wave-1
    thing_groups: [fleet-a]
    rollout: {maximum_per_minute: 100}
    gate: {min_success_rate: 0.98, min_completed_fraction: 0.9, bake_minutes: 30}
    approval: manual
  - name: wave-2
    thing_groups: [fleet-b, fleet-c]
    gate: {min_success_rate: 0.98, min_completed_fraction: 0.95}
"""
TABLE = "ca-migrate-campaigns"
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})
WAIT = 20  # seconds; every wait is bounded, none is expected to come close


@dataclass
class World:
    sandbox: Any
    clock: ManualClock

    def store(self) -> DynamoDbStateStore:
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        return DynamoDbStateStore(ddb, TABLE)

    def reconciler(self, owner: str, api: Any = None, ttl: timedelta | None = None) -> Reconciler:
        api = api or IotJobsAdapter(self.sandbox.iot_client(config=NO_RETRY))
        return Reconciler(
            self.store(),
            api,
            self.clock,
            owner=owner,
            lease_ttl=timedelta(minutes=5) if ttl is None else ttl,
        )

    def job_ids(self) -> list[str]:
        jobs = self.sandbox.iot_client(config=NO_RETRY).list_jobs()["jobs"]
        return sorted(job["jobId"] for job in jobs)

    def events(self) -> list[Any]:
        return self.store().events("ats-2026")


def _serialise_moto_dynamodb(monkeypatch) -> None:
    """Make moto's DynamoDB atomic per request, as DynamoDB is.

    moto's TransactWriteItems copies the whole table first and, when a condition fails, puts
    the copy back, wiping out whatever another thread wrote in between. Real DynamoDB never
    does that, and these tests run two invocations in two threads, so every backend operation
    takes one lock.
    """
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in (
        "put_item",
        "get_item",
        "update_item",
        "delete_item",
        "query",
        "scan",
        "transact_write_items",
        "transact_get_items",
    ):
        original = getattr(DynamoDBBackend, name)

        def locked(self, *args, _original=original, **kwargs):
            with lock:
                return _original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, locked)


@pytest.fixture
def world(monkeypatch) -> Iterator[World]:
    _serialise_moto_dynamodb(monkeypatch)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    with runtime.Sandbox(mqtt=False, clock=clock) as sandbox, moto.mock_aws():
        sandbox.provision(
            things=40, groups=[("canary", 10), ("fleet-a", 20), ("fleet-b", 5), ("fleet-c", 5)]
        )
        DynamoDbStateStore.create_table(boto3.client("dynamodb", region_name="us-east-1"), TABLE)
        world = World(sandbox, clock)
        world.reconciler("operator").start(parse_spec(CAMPAIGN), CAMPAIGN, None)
        yield world


class HeldJobs:
    """The real adapter, but CreateJob first waits at a gate the test controls."""

    def __init__(self, inner: IotJobsAdapter, before_create: Any) -> None:
        self._inner = inner
        self._before_create = before_create

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_job(self, job_id: str, document: str, config: Any) -> None:
        self._before_create()
        self._inner.create_job(job_id, document, config)


class FailingCreate(HeldJobs):
    """A crash between committing LAUNCHING and CreateJob reaching AWS."""

    def create_job(self, job_id: str, document: str, config: Any) -> None:
        del job_id, document, config
        raise AwsError("simulated: the connection dropped before CreateJob was sent")


def _in_thread(target: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["report"] = target()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def _outcomes(report: Any) -> list[str]:
    return [c.outcome for c in report.campaigns]


def _job_events(world: World) -> list[tuple[str, str]]:
    return [
        (e.kind, e.data.get("job_id", ""))
        for e in world.events()
        if e.kind in ("job-created", "job-adopted")
    ]


@pytest.mark.e2e
def test_a_second_invocation_while_the_first_holds_the_lease_does_nothing(world):
    first_inside = threading.Event()
    second_done = threading.Event()

    def hold() -> None:
        first_inside.set()
        assert second_done.wait(WAIT)

    base = IotJobsAdapter(world.sandbox.iot_client(config=NO_RETRY))
    first = world.reconciler("lambda:first", HeldJobs(base, hold))
    thread, box = _in_thread(lambda: runner_lambda.run_once(first.store, first))
    assert first_inside.wait(WAIT)

    second = world.reconciler("lambda:second")
    second_report = runner_lambda.run_once(second.store, second)
    second_done.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert "error" not in box, box.get("error")

    assert _outcomes(second_report) == ["busy"]
    assert _outcomes(box["report"]) == ["stepped"]
    (job_id,) = world.job_ids()
    assert _job_events(world) == [("job-created", job_id)]


@pytest.mark.e2e
def test_overlapping_invocations_past_an_expired_lease_create_the_job_once(world):
    """Both steps reach CreateJob for the same wave; AWS keeps one job, the log one record."""
    crashed = world.reconciler("lambda:crashed", FailingCreate(None, None))
    report = runner_lambda.run_once(crashed.store, crashed)
    assert _outcomes(report) == ["failed"]
    assert world.job_ids() == []

    both_at_create = threading.Barrier(2, timeout=WAIT)
    threads = []
    for owner in ("lambda:a", "lambda:b"):
        base = IotJobsAdapter(world.sandbox.iot_client(config=NO_RETRY))
        # A zero lease is expired the moment it is taken: neither invocation keeps the other out.
        rec = world.reconciler(owner, HeldJobs(base, both_at_create.wait), timedelta(0))
        threads.append(_in_thread(lambda rec=rec: runner_lambda.run_once(rec.store, rec)))
    for thread, _ in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    boxes = [box for _, box in threads]
    assert all("error" not in box for box in boxes), boxes

    assert sorted(o for box in boxes for o in _outcomes(box["report"])) == ["busy", "stepped"]
    (job_id,) = world.job_ids()
    records = _job_events(world)
    assert len(records) == 1, [(e.version, e.index, e.kind, e.reason) for e in world.events()]
    assert records[0][1] == job_id


@pytest.mark.e2e
def test_repeated_invocations_never_duplicate_jobs(world):
    rec = world.reconciler("lambda:tick")
    for _ in range(5):
        runner_lambda.run_once(rec.store, rec)
        world.clock.advance(timedelta(minutes=5))
    assert len(world.job_ids()) == 1
    assert len(_job_events(world)) == 1


class Recorder:
    """Collects what the runner announces (the `Notifier` interface)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def publish(self, subject: str, message: str) -> None:
        self.sent.append((subject, message))


def _fail_every_canary_device(world: World) -> None:
    (job_id,) = world.job_ids()
    data = world.sandbox.jobs_data_client(config=NO_RETRY)
    iot = world.sandbox.iot_client(config=NO_RETRY)
    things = iot.list_things_in_thing_group(thingGroupName="canary")["things"]
    # The campaign retries a failed execution once: each device fails its try and its retry.
    for _ in range(2):
        for thing in things:
            data.start_next_pending_job_execution(thingName=thing)
            data.update_job_execution(
                jobId=job_id,
                thingName=thing,
                status="FAILED",
                statusDetails={"reason": "probe-failed"},
            )
    counts = iot.describe_job(jobId=job_id)["job"]["jobProcessDetails"]
    assert counts["numberOfFailedThings"] == len(things)


def _tick_until_halted(world: World, rec: Reconciler, notifier: Any) -> list[Any]:
    reports = []
    for _ in range(8):
        reports.append(runner_lambda.run_once(rec.store, rec, notifier))
        world.clock.advance(timedelta(minutes=5))
        if world.store().load("ats-2026").state.status.value == "HALTED":
            break
    return reports


@pytest.mark.e2e
def test_a_halt_is_announced_once_by_the_step_that_decided_it(world):
    rec = world.reconciler("lambda:tick")
    runner_lambda.run_once(rec.store, rec)
    _fail_every_canary_device(world)
    notifier = Recorder()
    reports = _tick_until_halted(world, rec, notifier)
    for _ in range(2):  # later ticks find nothing new to say
        reports.append(runner_lambda.run_once(rec.store, rec, notifier))

    assert world.store().load("ats-2026").state.status.value == "HALTED"
    decided = [kind for r in reports for c in r.campaigns for kind in c.events]
    assert decided.count("campaign-halted") == 1
    # One halt, one message: the wave's halt is told inside the campaign's.
    ((subject, message),) = notifier.sent
    assert subject == "ca-migrate ats-2026: campaign-halted"
    assert "wave canary halted" in message
    assert "ca-migrate status ats-2026" in message
    assert len(world.job_ids()) == 1


@pytest.mark.e2e
def test_a_failing_notifier_does_not_undo_the_step(world):
    class Broken:
        def publish(self, subject: str, message: str) -> None:
            raise RuntimeError(f"SNS unreachable ({subject}, {len(message)} characters)")

    rec = world.reconciler("lambda:tick")
    runner_lambda.run_once(rec.store, rec)
    _fail_every_canary_device(world)
    reports = _tick_until_halted(world, rec, Broken())
    assert {c.outcome for r in reports for c in r.campaigns} == {"stepped"}
    assert world.store().load("ats-2026").state.status.value == "HALTED"


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    """`handler` configures logging for the Lambda process; undo it for the next tests."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def lambda_env(world, monkeypatch, restore_structlog) -> dict[str, str]:
    sns = boto3.client("sns", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="ca-migrate")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    env = {
        "CA_MIGRATE_TABLE": TABLE,
        "CA_MIGRATE_REGION": "us-east-1",
        "CA_MIGRATE_TOPIC_ARN": topic,
        "CA_MIGRATE_LEASE_SECONDS": "300",
        "AWS_ENDPOINT_URL_IOT": world.sandbox.control_plane_url,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {"queue": queue}


class LambdaContext:
    aws_request_id = "8f5c1e52-request"

    def get_remaining_time_in_millis(self) -> int:
        return 280_000


def _inbox(queue: str) -> list[str]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"])["Subject"] for m in messages]


@pytest.mark.e2e
def test_handler_runs_from_its_environment_and_publishes_to_sns(world, lambda_env):
    """The deployed entry point: settings from the environment, boto3 clients of its own."""
    first = runner_lambda.handler({"source": "aws.scheduler"}, LambdaContext())
    assert first["campaigns"][0]["outcome"] == "stepped"
    assert first["campaigns"][0]["events"] == ["wave-launching"]
    assert len(world.job_ids()) == 1

    _fail_every_canary_device(world)
    for _ in range(8):
        world.clock.advance(timedelta(minutes=5))
        runner_lambda.handler({}, LambdaContext())
        if world.store().load("ats-2026").state.status.value == "HALTED":
            break
    assert _inbox(lambda_env["queue"]) == ["ca-migrate ats-2026: campaign-halted"]
    assert len(world.job_ids()) == 1


def test_handler_fails_the_invocation_when_a_campaign_failed(monkeypatch, restore_structlog):
    """So Lambda's Errors metric, and the alarm on it, see a campaign that cannot advance."""
    failed = runner_lambda.RunReport(
        (
            runner_lambda.CampaignOutcome("ok", "stepped", "RUNNING"),
            runner_lambda.CampaignOutcome("bad", "failed", "unknown", error="AccessDenied"),
        )
    )
    monkeypatch.setenv("CA_MIGRATE_TABLE", TABLE)
    monkeypatch.setenv("CA_MIGRATE_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("CA_MIGRATE_TOPIC_ARN", raising=False)
    monkeypatch.setattr(runner_lambda, "run_once", lambda *_args, **_kwargs: failed)
    with pytest.raises(runner_lambda.RunnerFailedError, match="bad"):
        runner_lambda.handler({}, LambdaContext())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "CA_MIGRATE_TABLE"),
        ({"CA_MIGRATE_TABLE": "t"}, "CA_MIGRATE_REGION"),
        (
            {"CA_MIGRATE_TABLE": "t", "AWS_REGION": "eu-west-1", "CA_MIGRATE_LEASE_SECONDS": "5m"},
            "whole number",
        ),
        (
            {"CA_MIGRATE_TABLE": "t", "AWS_REGION": "eu-west-1", "CA_MIGRATE_LEASE_SECONDS": "0"},
            "positive",
        ),
    ],
)
def test_incomplete_environment_is_refused_with_the_variable_named(env, message):
    with pytest.raises(runner_lambda.RunnerConfigError, match=message):
        runner_lambda.RunnerConfig.from_environ(env)


def test_lease_outlives_the_function_timeout():
    config = runner_lambda.RunnerConfig.from_environ(
        {"CA_MIGRATE_TABLE": "t", "AWS_REGION": "eu-west-1", "CA_MIGRATE_LEASE_SECONDS": "300"}
    )
    assert config.region == "eu-west-1"
    assert config.topic_arn is None
    assert config.lease > timedelta(seconds=300)


def test_sns_subject_is_printable_ascii_within_the_limit():
    sent: dict[str, str] = {}

    class Client:
        def publish(self, *, TopicArn: str, Subject: str, Message: str) -> dict[str, str]:  # noqa: N803
            sent.update(TopicArn=TopicArn, Subject=Subject, Message=Message)
            return {"MessageId": "1"}

    SnsNotifier(Client(), "arn:aws:sns:us-east-1:123456789012:t").publish(
        "ca-migrate wave-ü: " + "x" * 200, "body"
    )
    assert len(sent["Subject"]) == 99
    assert sent["Subject"].isascii()
    assert "\n" not in sent["Subject"]


def test_runner_table_matches_the_state_stores_own_schema(monkeypatch):
    """runner.yaml creates the table the DynamoDB state store expects (keys and their types)."""
    from infra.aws import load_template, template_paths

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    path = next(p for p in template_paths() if p.name == "runner.yaml")
    props = load_template(path)["Resources"]["CampaignTable"]["Properties"]
    with moto.mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        DynamoDbStateStore.create_table(ddb, "probe")
        table = ddb.describe_table(TableName="probe")["Table"]

    def keys(schema):
        return {(d["AttributeName"], d["KeyType"]) for d in schema}

    def types(definitions):
        return {(d["AttributeName"], d["AttributeType"]) for d in definitions}

    assert keys(props["KeySchema"]) == keys(table["KeySchema"])
    assert types(props["AttributeDefinitions"]) == types(table["AttributeDefinitions"])
    assert props["BillingMode"] == "PAY_PER_REQUEST"


def test_runner_template_environment_is_what_the_handler_reads():
    """The function's environment in runner.yaml configures RunnerConfig, lease past timeout."""
    from infra.aws import load_template, resolve, template_paths

    path = next(p for p in template_paths() if p.name == "runner.yaml")
    tpl = load_template(path)
    function = resolve(
        tpl["Resources"]["RunnerFunction"],
        tpl,
        {"FunctionTimeoutSeconds": "600", "TableName": "camp", "AWS::Region": "eu-west-1"},
    )["Properties"]
    env = {k: str(v) for k, v in function["Environment"]["Variables"].items()}
    config = runner_lambda.RunnerConfig.from_environ(env)
    assert config.table == "camp"
    assert config.region == "eu-west-1"
    assert config.topic_arn == "<Notifications>"
    assert config.lease > timedelta(seconds=int(function["Timeout"]))
    assert function["Handler"] == "orchestrator.runner_lambda.handler"
    assert callable(runner_lambda.handler)


@pytest.mark.e2e
def test_campaigns_are_deferred_when_the_invocation_is_about_to_time_out(world):
    """No step starts with less than the reserve left; the next tick takes the rest."""
    second = CAMPAIGN.replace("name: ats-2026", "name: ats-2026-b")
    world.reconciler("operator").start(parse_spec(second), second, None)
    rec = world.reconciler("lambda:tick")
    clock_readings = iter([200.0, 30.0])

    report = runner_lambda.run_once(
        rec.store, rec, seconds_left=lambda: next(clock_readings), reserve_seconds=60
    )
    assert [(c.name, c.outcome) for c in report.campaigns] == [
        ("ats-2026", "stepped"),
        ("ats-2026-b", "deferred"),
    ]
    assert len(world.job_ids()) == 1

    later = runner_lambda.run_once(rec.store, rec, seconds_left=lambda: 200.0)
    assert {c.name: c.outcome for c in later.campaigns} == {
        "ats-2026": "stepped",
        "ats-2026-b": "stepped",
    }
    assert len(world.job_ids()) == 2


def _one_wave(name: str, region: str) -> str:
    return f"""\
name: {name}
region: {region}
endpoint: auto
trust: {{add: [amazon-root-ca-1, amazon-root-ca-3]}}
waves:
  - name: canary
    thing_groups: [canary]
    gate: {{min_success_rate: 0.5, min_completed: 3}}
"""


def test_handler_steps_each_campaign_with_its_own_regions_clients(monkeypatch, restore_structlog):
    """Two campaigns of one table in two regions: each job is made in its campaign's region."""
    _serialise_moto_dynamodb(monkeypatch)
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "CA_MIGRATE_TABLE": TABLE,
        "CA_MIGRATE_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    with (
        runtime.Sandbox(mqtt=False, clock=clock, regions=["eu-west-1"]) as sandbox,
        moto.mock_aws(),
    ):
        monkeypatch.setenv("AWS_ENDPOINT_URL_IOT", sandbox.control_plane_url)
        for region in ("us-east-1", "eu-west-1"):
            sandbox.provision(5, [("canary", None)], region=region)
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        DynamoDbStateStore.create_table(ddb, TABLE)
        store = DynamoDbStateStore(ddb, TABLE)
        operator = Reconciler(
            store,
            runner_lambda.regional_jobs(lambda r: sandbox.iot_client(config=NO_RETRY, region=r)),
            clock,
        )
        for name, region in (("east", "us-east-1"), ("west", "eu-west-1")):
            text = _one_wave(name, region)
            operator.start(parse_spec(text), text, None)
        summary = runner_lambda.handler({}, LambdaContext())
        assert sorted(c["outcome"] for c in summary["campaigns"]) == ["stepped", "stepped"]
        for name, region in (("east", "us-east-1"), ("west", "eu-west-1")):
            job_id = store.load(name).state.wave("canary").job_id
            jobs = sandbox.engine_for(region).list_jobs({})["jobs"]
            assert [j["jobId"] for j in jobs] == [job_id]
            assert jobs[0]["jobArn"].startswith(f"arn:aws:iot:{region}:")
