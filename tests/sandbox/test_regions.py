"""One sandbox, several regions: routing by the SigV4 region, state and listeners per region."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

import job_documents as jd
from infra.sandbox.connection import region_description, write_connection_files
from infra.sandbox.errors import SandboxError
from infra.sandbox.runtime import Sandbox
from infra.sandbox.sigv4 import signed_region
from job_documents.clock import ManualClock
from tests.machine import NEEDS_MOSQUITTO, needs_loopback_name

from .proc_lines import lines_until

NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})
DOCUMENT = json.dumps({"operation": "rotate"})
VENV_BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("headers", "query", "region"),
    [
        (
            {
                "authorization": "AWS4-HMAC-SHA256 Credential=sandbox/20260301/eu-west-1/iot/"
                "aws4_request, SignedHeaders=host;x-amz-date, Signature=abc"
            },
            "",
            "eu-west-1",
        ),
        ({}, "X-Amz-Credential=sandbox%2F20260301%2Fap-south-1%2Fiot%2Faws4_request", "ap-south-1"),
        ({}, "", None),
        ({"authorization": "Bearer token"}, "", None),
        ({"authorization": "AWS4-HMAC-SHA256 Credential=a/b/c"}, "", None),
        (
            {"authorization": "AWS4-HMAC-SHA256 Credential=k/2026/US_EAST/iot/aws4_request"},
            "",
            None,
        ),
        ({"authorization": "Credential=" + "x" * 5000}, "", None),
    ],
)
def test_the_signed_region_is_read_from_the_credential_scope(headers, query, region):
    assert signed_region(headers, query) == region


@pytest.fixture
def two_regions():
    with Sandbox(
        mqtt=False, clock=ManualClock(), region="us-east-1", regions=["eu-west-1"]
    ) as running:
        yield running


def test_each_region_keeps_its_own_things_groups_and_jobs(two_regions):
    east = two_regions.iot_client(config=NO_RETRY, region="us-east-1")
    west = two_regions.iot_client(config=NO_RETRY, region="eu-west-1")
    west.create_thing(thingName="dev-1")
    group = west.create_thing_group(thingGroupName="canary")
    assert group["thingGroupArn"] == "arn:aws:iot:eu-west-1:123456789012:thinggroup/canary"
    west.add_thing_to_thing_group(thingGroupName="canary", thingName="dev-1")
    job = west.create_job(jobId="j1", targets=[group["thingGroupArn"]], document=DOCUMENT)
    assert job["jobArn"] == "arn:aws:iot:eu-west-1:123456789012:job/j1"
    with pytest.raises(east.exceptions.ResourceNotFoundException):
        east.describe_thing_group(thingGroupName="canary")
    with pytest.raises(east.exceptions.ResourceNotFoundException):
        east.describe_job(jobId="j1")
    assert east.list_things()["things"] == []
    # A target in another region is refused, as AWS refuses an ARN of another region.
    with pytest.raises(east.exceptions.InvalidRequestException, match="region"):
        east.create_job(jobId="j2", targets=[group["thingGroupArn"]], document=DOCUMENT)
    # The device data plane is per region too.
    west_data = two_regions.jobs_data_client(config=NO_RETRY, region="eu-west-1")
    east_data = two_regions.jobs_data_client(config=NO_RETRY, region="us-east-1")
    assert [
        j["jobId"] for j in west_data.get_pending_job_executions(thingName="dev-1")["queuedJobs"]
    ] == ["j1"]
    with pytest.raises(east_data.exceptions.ResourceNotFoundException):
        east_data.get_pending_job_executions(thingName="dev-1")


def test_describe_endpoint_answers_each_regions_hosts(two_regions):
    for region in ("us-east-1", "eu-west-1"):
        iot = two_regions.iot_client(config=NO_RETRY, region=region)
        ats = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
        legacy = iot.describe_endpoint()["endpointAddress"]
        assert ats == f"a1sandbox2demo-ats.iot.{region}.amazonaws.com"
        assert legacy == f"a1sandbox2demo.iot.{region}.amazonaws.com"


def test_a_region_the_sandbox_does_not_serve_is_refused_naming_the_ones_it_does(two_regions):
    iot = two_regions.iot_client(config=NO_RETRY, region="ap-south-1")
    with pytest.raises(iot.exceptions.ClientError, match="serves us-east-1, eu-west-1") as caught:
        iot.list_things()
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_a_single_region_sandbox_takes_any_signed_region_as_before():
    with Sandbox(mqtt=False, clock=ManualClock(), region="eu-west-1") as single:
        iot = single.iot_client(config=NO_RETRY, region="us-west-2")
        assert iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"] == (
            "a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com"
        )


def test_admin_requests_name_their_region_and_the_clock_moves_every_region(two_regions):
    west = two_regions.iot_client(config=NO_RETRY, region="eu-west-1")
    west.create_thing(thingName="dev-1")
    west.create_thing_group(thingGroupName="g")
    west.add_thing_to_thing_group(thingGroupName="g", thingName="dev-1")
    arn = west.describe_thing_group(thingGroupName="g")["thingGroupArn"]
    west.create_job(
        jobId="timed",
        targets=[arn],
        document=DOCUMENT,
        timeoutConfig={"inProgressTimeoutInMinutes": 1},
    )
    data = two_regions.jobs_data_client(config=NO_RETRY, region="eu-west-1")
    data.start_next_pending_job_execution(thingName="dev-1")
    before = two_regions.engine_for("us-east-1").clock.now()
    assert (
        west.describe_job_execution(jobId="timed", thingName="dev-1")["execution"]["status"]
        == "IN_PROGRESS"
    )
    parsed = urlsplit(two_regions.control_plane_url)

    def admin(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        try:
            connection.request(method, path, body=None if body is None else json.dumps(body))
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    status, moved = admin("POST", "/_sandbox/clock", {"advanceSeconds": 120})
    assert status == 200
    assert moved["now"] == pytest.approx(before.timestamp() + 120)
    # the timeout fell due in eu-west-1 although the clock was moved through the first region
    assert (
        west.describe_job_execution(jobId="timed", thingName="dev-1")["execution"]["status"]
        == "TIMED_OUT"
    )
    status, counts = admin("GET", "/_sandbox/jobs/timed/counts?region=eu-west-1")
    assert status == 200
    assert counts["counts"]["TIMED_OUT"] == 1
    assert admin("GET", "/_sandbox/jobs/timed/counts?region=us-east-1")[0] == 404
    assert admin("GET", "/_sandbox/jobs/timed/counts?region=ap-south-1")[0] == 403


def test_each_regions_state_survives_a_restart_in_its_own_file(tmp_path):
    state = tmp_path / "state"
    with Sandbox(mqtt=False, region="us-east-1", regions=["eu-west-1"], state_dir=state) as box:
        box.iot_client(region="eu-west-1").create_thing(thingName="west-thing")
        box.iot_client(region="us-east-1").create_thing(thingName="east-thing")
    assert (state / "state.json").exists()
    assert (state / "regions" / "eu-west-1" / "state.json").exists()
    with Sandbox(mqtt=False, region="us-east-1", regions=["eu-west-1"], state_dir=state) as box:
        west = [t["thingName"] for t in box.iot_client(region="eu-west-1").list_things()["things"]]
        east = [t["thingName"] for t in box.iot_client(region="us-east-1").list_things()["things"]]
    assert (west, east) == (["west-thing"], ["east-thing"])


def _handshake(port: int, host: str, ca: Path, credentials: dict[str, str]) -> str:
    """A mutual-TLS handshake with hostname verification; the server certificate's CN."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(credentials["cert_pem"], credentials["key_pem"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        subject = dict(item[0] for item in tls.getpeercert()["subject"])
    return str(subject["commonName"])


def test_each_region_has_its_own_mqtt_listener_pair(tmp_path):
    with Sandbox(region="us-east-1", regions=["eu-west-1"], work_dir=tmp_path) as box:
        described = box.describe()
        box.provision(1, [("g", None)], region="eu-west-1")
        (credentials,) = box.issue_credentials(["device-00001"], "eu-west-1").values()
        assert box.pki is not None
        west = box.endpoints_for("eu-west-1")
        ats_root = box.pki.ats_root_pems["amazon-root-ca-1"]
        host = "a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com"
        # the eu-west-1 ATS listener proves the eu-west-1 host name, chained to the ATS root
        wildcard = "*.iot.eu-west-1.amazonaws.com"  # as AWS's own server certificates name it
        assert _handshake(west["ats"].port, host, ats_root, credentials) == wildcard
        legacy = "a1sandbox2demo.iot.eu-west-1.amazonaws.com"
        assert _handshake(west["legacy"].port, legacy, box.pki.legacy_root_pem, credentials) == (
            wildcard
        )
        # and not us-east-1's name: a device of one region cannot verify the other's listener
        with pytest.raises(ssl.SSLCertVerificationError):
            _handshake(
                west["ats"].port,
                "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com",
                ats_root,
                credentials,
            )
    regions = described["regions"]
    assert list(regions) == ["us-east-1", "eu-west-1"]
    hosts = {r: {k: e["host"] for k, e in v["endpoints"].items()} for r, v in regions.items()}
    assert hosts["eu-west-1"] == {
        "legacy": "a1sandbox2demo.iot.eu-west-1.amazonaws.com",
        "ats": "a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com",
    }
    assert hosts["us-east-1"]["ats"] == "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
    ports = [e["port"] for v in regions.values() for e in v["endpoints"].values()]
    assert len(set(ports)) == 4  # two listeners per region
    assert described["endpoints"] == regions["us-east-1"]["endpoints"]


def test_the_aws_cli_reaches_each_region_by_its_region_option(two_regions):
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "sandbox",
        "AWS_SECRET_ACCESS_KEY": "sandbox",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_ENDPOINT_URL_IOT": two_regions.control_plane_url,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    answer = subprocess.run(
        [
            str(VENV_BIN / "aws"),
            "iot",
            "describe-endpoint",
            "--endpoint-type",
            "iot:Data-ATS",
            "--region",
            "eu-west-1",
            "--output",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(answer.stdout)["endpointAddress"] == (
        "a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com"
    )


def test_sandbox_up_serves_each_region_given_and_provision_fills_one(tmp_path):
    cli = str(VENV_BIN / "ca-migrate")
    up = subprocess.Popen(
        [
            cli,
            "sandbox",
            "up",
            "--no-mqtt",
            "--output",
            "json",
            "--region",
            "us-east-1",
            "--region",
            "eu-west-1",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        description = json.loads(up.stdout.readline())
        assert list(description["regions"]) == ["us-east-1", "eu-west-1"]
        subprocess.run(
            [
                cli,
                "sandbox",
                "provision",
                "--things",
                "2",
                "--group",
                "west",
                "--region",
                "eu-west-1",
                "--endpoint-url",
                description["control_plane_url"],
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

        def things(region: str) -> list[str]:
            iot = boto3.client(
                "iot",
                region_name=region,
                endpoint_url=description["control_plane_url"],
                aws_access_key_id="sandbox",
                aws_secret_access_key="sandbox",
                config=NO_RETRY,
            )
            return [t["thingName"] for t in iot.list_things()["things"]]

        assert things("eu-west-1") == ["device-00001", "device-00002"]
        assert things("us-east-1") == []
    finally:
        up.terminate()
        up.wait(timeout=15)


def test_sandbox_up_refuses_a_region_that_is_not_a_region_name():
    answer = subprocess.run(
        [str(VENV_BIN / "ca-migrate"), "sandbox", "up", "--no-mqtt", "--region", "Mars-1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answer.returncode == 2
    assert "--region 'Mars-1' is not an AWS region name" in answer.stderr


WEST_ATS = "a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com"


def test_region_description_is_the_regions_own_view_and_refuses_an_unserved_one() -> None:
    described = {
        "region": "us-east-1",
        "endpoints": {"ats": {"host": "east", "port": 1}},
        "regions": {
            "us-east-1": {"endpoints": {"ats": {"host": "east", "port": 1}}},
            "eu-west-1": {"endpoints": {"ats": {"host": "west", "port": 2}}},
        },
    }
    assert region_description(described, None) is described
    west = region_description(described, "eu-west-1")
    assert (west["region"], west["endpoints"]) == (
        "eu-west-1",
        {"ats": {"host": "west", "port": 2}},
    )
    with pytest.raises(SandboxError, match="serves us-east-1, eu-west-1, not ap-south-1"):
        region_description(described, "ap-south-1")


@pytest.mark.e2e
@pytest.mark.mqtt
@NEEDS_MOSQUITTO
@needs_loopback_name(WEST_ATS)
def test_sandbox_fleet_runs_the_devices_of_the_second_region_over_its_listeners(tmp_path):
    """Real SDK agents of eu-west-1 take an eu-west-1 job and acknowledge it over its ATS host."""
    state = tmp_path / "sbx"
    with Sandbox(time_scale=60, state_dir=state, regions=["eu-west-1"]) as sandbox:
        write_connection_files(state, sandbox.describe())
        sandbox.provision(2, [("g", None)], region="eu-west-1")
        command = [sys.executable, "-m", "orchestrator.cli", "sandbox", "fleet"]
        command += ["--state-dir", str(state), "--group", "g", "--region", "eu-west-1"]
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        )
        try:
            lines_until(proc, lambda line: "2 connected" in line, timeout=60)
            assert sandbox.pki is not None
            catalog = jd.load_catalog(sandbox.pki.ats_catalog)
            doc = jd.build_document(
                operation="migrate",
                region="eu-west-1",
                campaign="t",
                wave="w",
                endpoint=jd.Endpoint(host=WEST_ATS),
                roots=[catalog.get("amazon-root-ca-1")],
                catalog=catalog,
            )
            west = sandbox.engine_for("eu-west-1")
            west.create_job(
                {
                    "jobId": "w",
                    "targets": ["arn:aws:iot:eu-west-1:123456789012:thinggroup/g"],
                    "document": doc.text,
                }
            )
            lines_until(proc, lambda line: "2 succeeded" in line, timeout=90)
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        history = west.execution_history(job_id="w")
        assert {h["status"] for h in history} == {"SUCCEEDED"}
        assert {h["history"][-1]["via"] for h in history} == {"ats"}  # the new connection
        assert sandbox.engine_for("us-east-1").list_things({})["things"] == []
    assert "stopped: devices 2" in out
    assert (state / "fleet-eu-west-1" / "device-00001" / "device.toml").is_file()
    assert not (state / "fleet").exists()


def test_sandbox_fleet_refuses_a_region_the_sandbox_does_not_serve(tmp_path):
    state = tmp_path / "sbx"
    with Sandbox(mqtt=False, state_dir=state) as sandbox:
        write_connection_files(state, sandbox.describe())
        ran = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator.cli",
                "sandbox",
                "fleet",
                "--state-dir",
                str(state),
                "--region",
                "eu-west-1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert ran.returncode == 2
    assert "serves us-east-1, not eu-west-1" in ran.stderr
