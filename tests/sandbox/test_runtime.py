"""The running sandbox: faults, admin API, persistence, environment variables, AWS CLI, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from infra.sandbox.errors import SandboxStartError, ServiceError
from infra.sandbox.runtime import Sandbox, plan_provision

ARN = "arn:aws:iot:us-east-1:123456789012"
DOCUMENT = json.dumps({"operation": "rotate"})
VENV_BIN = Path(sys.executable).parent
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})


def test_throttling_answers_throttling_exception(sandbox, iot, http_call):
    status, _, body = http_call("PUT", "/_sandbox/faults", {"throttleRate": 1.0})
    assert status == 200
    assert body["throttleRate"] == 1.0
    with pytest.raises(iot.exceptions.ThrottlingException, match="Rate exceeded") as caught:
        iot.list_things()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400  # iot's model
    http_call("PUT", "/_sandbox/faults", {"throttleRate": 0})
    assert iot.list_things()["things"] == []


def test_unavailable_for_a_while_then_back(sandbox, iot, jobs_data, http_call):
    http_call("PUT", "/_sandbox/faults", {"unavailableSeconds": 30})
    with pytest.raises(iot.exceptions.ServiceUnavailableException, match="temporarily"):
        iot.list_jobs()
    with pytest.raises(jobs_data.exceptions.ServiceUnavailableException):
        jobs_data.get_pending_job_executions(thingName="x")
    assert http_call("GET", "/_sandbox/faults")[2]["unavailableSeconds"] == 30
    sandbox.engine.advance(30)
    assert iot.list_jobs()["jobs"] == []


def test_added_latency_is_applied_and_reported(sandbox, iot, http_call):
    http_call("PUT", "/_sandbox/faults", {"latencySeconds": 0.01})
    assert http_call("GET", "/_sandbox/faults")[2]["latencySeconds"] == 0.01
    assert iot.list_jobs()["jobs"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"throttleRate": 2},
        {"latencySeconds": -1},
        {"unavailableSeconds": -5},
        {"throttleRate": "x"},
    ],
)
def test_bad_fault_settings_are_refused(http_call, body):
    status, headers, answer = http_call("PUT", "/_sandbox/faults", body)
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "InvalidRequestException"
    assert answer["message"]


def test_admin_counts_agree_with_a_recount(sandbox, iot, http_call):
    sandbox.provision(3, [("g", None)])
    iot.create_job(jobId="j", targets=[f"{ARN}:thinggroup/g"], document=DOCUMENT)
    _, _, body = http_call("GET", "/_sandbox/jobs/j/counts")
    assert body["counts"] == body["recount"]
    assert body["counts"]["QUEUED"] == 3


def test_admin_describe_and_unknown_route(sandbox, http_call):
    _, _, body = http_call("GET", "/_sandbox/")
    assert body["control_plane_url"] == sandbox.control_plane_url
    assert body["env"]["AWS_ENDPOINT_URL_IOT_JOBS_DATA_PLANE"] == sandbox.jobs_data_url
    status, _, body = http_call("GET", "/_sandbox/nothing")
    assert status == 404
    assert "docs/sandbox.md" in body["message"]


def test_admin_shadows_and_credentials_need_the_mqtt_data_plane(http_call):
    status, _, body = http_call("GET", "/_sandbox/shadows/t/config")
    assert status == 404
    assert "No shadow" in body["message"]
    status, _, body = http_call("POST", "/_sandbox/credentials", {"things": ["t"]})
    assert status == 400
    assert "no PKI" in body["message"]


def test_admin_clock_advance_jumps_a_running_scaled_clock(http_call):
    with Sandbox(mqtt=False) as running:
        before = http_call("GET", "/_sandbox/clock", base=running.control_plane_url)[2]["now"]
        status, _, body = http_call(
            "POST", "/_sandbox/clock", {"advanceSeconds": 3600}, base=running.control_plane_url
        )
        assert status == 200
        assert 3600 <= body["now"] - before < 3660
        status, _, body = http_call(
            "POST", "/_sandbox/clock", {"advanceSeconds": -1}, base=running.control_plane_url
        )
    assert status == 400
    assert "zero or more" in body["message"]


def test_the_scheduler_times_executions_out_without_any_call():
    """At 600 sandbox seconds per second a one-minute timeout fires in 0.1 s, by itself."""
    timed_out = threading.Event()
    with Sandbox(mqtt=False, time_scale=600) as running:
        engine = running.engine

        def on_change(thing: str) -> None:
            if engine.counts("fast")["TIMED_OUT"] == 1:
                timed_out.set()

        engine.create_things(["t"])
        engine.create_job(
            {
                "jobId": "fast",
                "targets": [f"{ARN}:thing/t"],
                "document": DOCUMENT,
                "timeoutConfig": {"inProgressTimeoutInMinutes": 1},
            }
        )
        engine.start_next("t", status_details=None, step_timeout_minutes=None, via="https")
        engine.subscribe(on_change)
        assert timed_out.wait(timeout=20)
        assert engine.execution_history(job_id="fast")[0]["history"][-1]["via"] == "service"


def test_state_survives_a_restart(tmp_path):
    with Sandbox(mqtt=False, state_dir=tmp_path) as first:
        first.provision(2, [("g", None)])
        iot = first.iot_client(config=NO_RETRY)
        iot.create_job(
            jobId="kept",
            targets=[f"{ARN}:thinggroup/g"],
            document=DOCUMENT,
            timeoutConfig={"inProgressTimeoutInMinutes": 5},
            jobExecutionsRolloutConfig={"maximumPerMinute": 1},
        )
        jobs_data = first.jobs_data_client(config=NO_RETRY)
        jobs_data.start_next_pending_job_execution(thingName="device-00001")
        jobs_data.update_job_execution(
            thingName="device-00001",
            jobId="kept",
            status="IN_PROGRESS",
            statusDetails={"step": "probe"},
        )
    with Sandbox(mqtt=False, state_dir=tmp_path) as second:
        iot = second.iot_client(config=NO_RETRY)
        job = iot.describe_job(jobId="kept")["job"]
        assert job["jobProcessDetails"]["numberOfInProgressThings"] == 1
        assert job["jobProcessDetails"]["processingTargets"] == [f"{ARN}:thinggroup/g"]
        execution = iot.describe_job_execution(jobId="kept", thingName="device-00001")
        assert execution["execution"]["statusDetails"]["detailsMap"] == {"step": "probe"}
        assert execution["execution"]["versionNumber"] == 3
        assert 0 < execution["execution"]["approximateSecondsBeforeTimedOut"] <= 300
        assert iot.list_things_in_thing_group(thingGroupName="g")["things"] == [
            "device-00001",
            "device-00002",
        ]
        history = second.engine.execution_history(job_id="kept")[0]["history"]
        assert [h["via"] for h in history] == ["service", "https", "https"]
        with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
            iot.create_job(jobId="kept", targets=[f"{ARN}:thinggroup/g"], document=DOCUMENT)


def test_a_damaged_state_file_is_a_clear_start_error(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(SandboxStartError, match="move it away"):
        Sandbox(mqtt=False, state_dir=tmp_path).start()


def test_boto3_finds_the_sandbox_through_the_standard_environment(sandbox, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_IOT", sandbox.control_plane_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_IOT_JOBS_DATA_PLANE", sandbox.jobs_data_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "dummy")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "dummy")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    session = boto3.session.Session()
    iot = session.client("iot")
    iot.create_thing(thingName="env-thing")
    iot.create_job(jobId="env", targets=[f"{ARN}:thing/env-thing"], document=DOCUMENT)
    pending = session.client("iot-jobs-data").get_pending_job_executions(thingName="env-thing")
    assert [j["jobId"] for j in pending["queuedJobs"]] == ["env"]


def _aws(sandbox: Sandbox, *args: str, service: str = "iot") -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "AWS_ACCESS_KEY_ID": "dummy",
        "AWS_SECRET_ACCESS_KEY": "dummy",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    return subprocess.run(
        [
            str(VENV_BIN / "aws"),
            service,
            *args,
            "--endpoint-url",
            sandbox.control_plane_url if service == "iot" else sandbox.jobs_data_url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_aws_cli_creates_describes_and_sees_errors(sandbox):
    sandbox.provision(2, [("cli-group", None)])
    created = _aws(
        sandbox,
        "create-job",
        "--job-id",
        "from-cli",
        "--targets",
        f"{ARN}:thinggroup/cli-group",
        "--document",
        DOCUMENT,
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["jobArn"] == f"{ARN}:job/from-cli"
    job = sandbox.iot_client().describe_job(jobId="from-cli")["job"]
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 2
    again = _aws(
        sandbox,
        "create-job",
        "--job-id",
        "from-cli",
        "--targets",
        f"{ARN}:thinggroup/cli-group",
        "--document",
        DOCUMENT,
    )
    assert again.returncode != 0
    assert "ResourceAlreadyExistsException" in again.stderr
    assert "Job from-cli already exists" in again.stderr
    pending = _aws(
        sandbox,
        "get-pending-job-executions",
        "--thing-name",
        "device-00001",
        service="iot-jobs-data",
    )
    assert pending.returncode == 0, pending.stderr
    assert [j["jobId"] for j in json.loads(pending.stdout)["queuedJobs"]] == ["from-cli"]


def test_plan_provision_slices_groups_in_order():
    names, groups = plan_provision(5, [("canary", 1), ("wave1", 2), ("rest", None)])
    assert names == [f"device-0000{i}" for i in range(1, 6)]
    assert groups == {
        "canary": ["device-00001"],
        "wave1": ["device-00002", "device-00003"],
        "rest": ["device-00004", "device-00005"],
    }


@pytest.mark.parametrize(
    ("things", "groups", "match"),
    [
        (2, [("a", 3)], "only 2 are left"),
        (2, [("a", 1), ("a", 1)], "given twice"),
        (-1, [], "zero or more"),
    ],
)
def test_plan_provision_refuses_impossible_plans(things, groups, match):
    with pytest.raises(ServiceError, match=match):
        plan_provision(things, groups)


@pytest.fixture
def sandbox_process(tmp_path):
    """`ca-migrate sandbox up --no-mqtt --output json` as a subprocess, stopped by SIGTERM."""
    process = subprocess.Popen(
        [
            str(VENV_BIN / "ca-migrate"),
            "sandbox",
            "up",
            "--no-mqtt",
            "--output",
            "json",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            pytest.fail(
                f"sandbox up printed nothing: {process.stderr.read() if process.stderr else ''}"
            )
        yield process, json.loads(line)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def test_sandbox_up_prints_its_description_and_provision_fills_it(sandbox_process, tmp_path):
    process, description = sandbox_process
    assert description["region"] == "us-east-1"
    assert description["account_id"] == "123456789012"
    assert description["control_plane_url"].startswith("http://127.0.0.1:")
    assert description["endpoints"] == {}
    provisioned = subprocess.run(
        [
            str(VENV_BIN / "ca-migrate"),
            "sandbox",
            "provision",
            "--things",
            "3",
            "--group",
            "canary:1",
            "--group",
            "rest",
            "--endpoint-url",
            description["control_plane_url"],
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert provisioned.returncode == 0, provisioned.stderr
    result = json.loads(provisioned.stdout)
    assert result["groups"] == {
        "canary": ["device-00001"],
        "rest": ["device-00002", "device-00003"],
    }
    assert "no PKI" in result["note"]
    iot = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
    ).client("iot", endpoint_url=description["control_plane_url"], config=NO_RETRY)
    assert iot.list_things_in_thing_group(thingGroupName="rest")["things"] == [
        "device-00002",
        "device-00003",
    ]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert (tmp_path / "state" / "state.json").exists()


def test_sandbox_provision_without_a_target_is_invalid_input(monkeypatch):
    from typer.testing import CliRunner

    from infra.sandbox.cli import sandbox_app

    monkeypatch.delenv("AWS_ENDPOINT_URL_IOT", raising=False)
    result = CliRunner().invoke(sandbox_app, ["provision", "--things", "1"])
    assert result.exit_code == 2
    assert "--endpoint-url" in result.output


def test_parse_group_reads_an_optional_count():
    from infra.sandbox.cli import parse_group

    assert parse_group("canary:10") == ("canary", 10)
    assert parse_group("rest") == ("rest", None)
    assert parse_group("site:a:3") == ("site:a", 3)
    assert parse_group("site:a") == ("site:a", None)


def test_quota_token_bucket_refills_at_the_documented_rate():
    from infra.sandbox.faults import FaultInjector
    from job_documents.clock import ManualClock

    now = [100.0]
    faults = FaultInjector(ManualClock(), enforce_quotas=True, monotonic=lambda: now[0])
    for _ in range(10):
        faults.before_call("DescribeJob")
    with pytest.raises(ServiceError, match="quota is 10 requests per second"):
        faults.before_call("DescribeJob")
    faults.before_call("ListJobs")  # not a limited operation
    faults.before_call("CreateJob")  # its own bucket
    now[0] += 0.15
    faults.before_call("DescribeJob")
    with pytest.raises(ServiceError, match="Rate exceeded for DescribeJob"):
        faults.before_call("DescribeJob")
    faults.update(enforce_quotas=False)
    for _ in range(50):
        faults.before_call("DescribeJob")


def test_enforced_quotas_throttle_a_fast_caller(sandbox, iot, http_call):
    sandbox.provision(1, [("q", None)])
    iot.create_job(jobId="q", targets=[f"{ARN}:thinggroup/q"], document=DOCUMENT)
    status, _, body = http_call("PUT", "/_sandbox/faults", {"enforceQuotas": True})
    assert (status, body["enforceQuotas"]) == (200, True)
    sandbox.faults._monotonic = lambda: 1000.0  # time stands still: no refill
    for _ in range(10):
        iot.describe_job(jobId="q")
    with pytest.raises(iot.exceptions.ThrottlingException, match="quota is 10") as caught:
        iot.describe_job(jobId="q")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert iot.list_jobs()["jobs"]  # ListJobs has no quota here
