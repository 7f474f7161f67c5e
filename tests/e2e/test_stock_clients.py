"""Stock clients, unmodified: the SDK v2 jobs sample completes a job against the sandbox.

The sample takes no port and no CA file: it connects on 8883 and verifies the
server with the system trust store. The sandbox serves the ATS endpoint on the
port (`--mqtt-port`), and `sandbox trust` puts its roots in a trust store: here
a store root of the test's own, whose bundle the SDK reads through
`SSL_CERT_FILE` (awscrt honours it as OpenSSL does), so the machine's store is
never touched. Without those roots the SDK's handshake fails.

- With `CA_MIGRATE_SDK_SAMPLES` naming the `samples/` directory of an
  aws-iot-device-sdk-python-v2 checkout, its `service_clients/jobs.py` runs as
  it is, fed the walkthrough's commands on stdin (needs port 8883).
- In any case `sdk_jobs_sample.py` makes the same SDK calls (8883 when free,
  else a free port).
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from infra.sandbox.cli import sandbox_app
from infra.sandbox.engine import ConnectPolicy
from infra.sandbox.errors import PortUnavailableError
from infra.sandbox.mqtt import ListenerPorts
from infra.sandbox.runtime import Sandbox
from tests.machine import NEEDS_MOSQUITTO, NEEDS_NSS_WRAPPER

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.mqtt,
    NEEDS_MOSQUITTO,
    NEEDS_NSS_WRAPPER,
    pytest.mark.skipif(
        shutil.which("update-ca-certificates", path="/usr/sbin:/usr/bin:/sbin") is None,
        reason="update-ca-certificates is not installed (Debian's ca-certificates)",
    ),
]

SAMPLES_ENV = "CA_MIGRATE_SDK_SAMPLES"
DRIVER = Path(__file__).with_name("sdk_jobs_sample.py")
THING = "device-00001"
WAIT = 60.0


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
        return port


@dataclass
class StockWorld:
    sandbox: Sandbox
    port: int
    env: dict[str, str]
    cert: str
    key: str

    @property
    def host(self) -> str:
        return self.sandbox.endpoints["ats"].host

    def execution_history(self, job_id: str) -> list[dict[str, Any]]:
        parsed = urlsplit(self.sandbox.control_plane_url)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        try:
            connection.request("GET", f"/_sandbox/executions?jobId={job_id}&thingName={THING}")
            body = json.loads(connection.getresponse().read())
        finally:
            connection.close()
        history: list[dict[str, Any]] = body["executions"][0]["history"]
        return history


def _aws(env: dict[str, str], *args: str) -> dict[str, Any]:
    """The AWS CLI against the sandbox, as an integrator types it (env: `source DIR/env.sh`)."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("aws")), "iot", *args, "--output", "json"],
        env=env | {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout or "{}")
    return answer


def _started(
    state: Path, candidates: list[ListenerPorts], policy: ConnectPolicy
) -> tuple[Sandbox, ListenerPorts]:
    """A sandbox on the first ports it can bind (other tests may hold 8883 a moment)."""
    problem: PortUnavailableError | None = None
    for ports in candidates:
        sandbox = Sandbox(work_dir=state, mqtt_ports=ports, connect_policy=policy)
        try:
            return sandbox.start(), ports
        except PortUnavailableError as exc:
            problem = exc
    wanted = " and ".join(str(port) for port in candidates[0].fixed())
    pytest.skip(f"port {wanted} cannot be bound here (the client connects only there): {problem}")


def _world(
    tmp_path: Path,
    candidates: list[ListenerPorts],
    policy: ConnectPolicy = ConnectPolicy.ANY_CLIENT_ID,
) -> Iterator[StockWorld]:
    state = tmp_path / "state"
    store = tmp_path / "trust-store"
    sandbox, ports = _started(state, candidates, policy)
    try:
        trusted = CliRunner().invoke(
            sandbox_app, ["trust", "--state-dir", str(state), "--store-root", str(store)]
        )
        assert trusted.exit_code == 0, trusted.output
        env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_DIR", "AWS_PROFILE")}
        env |= sandbox.describe()["env"]
        # The device's certificate, as for AWS: created by the AWS CLI, attached to its thing.
        cert, key = tmp_path / "device.pem.crt", tmp_path / "private.pem.key"
        created = _aws(
            env,
            *("create-keys-and-certificate", "--set-as-active"),
            *("--certificate-pem-outfile", str(cert), "--private-key-outfile", str(key)),
        )
        _aws(env, "create-thing", "--thing-name", THING)
        _aws(
            env,
            *("attach-thing-principal", "--thing-name", THING),
            *("--principal", created["certificateArn"]),
        )
        env["SSL_CERT_FILE"] = str(store / "etc/ssl/certs/ca-certificates.crt")
        env["PYTHONUNBUFFERED"] = "1"
        # The ALPN listener when it was asked for (the SDK uses ALPN on 443), else MQTT/TLS.
        port = ports.alpn or sandbox.endpoints["ats"].port
        yield StockWorld(sandbox, port, env, str(cert), str(key))
    finally:
        sandbox.stop()


@pytest.fixture
def on_8883(tmp_path: Path) -> Iterator[StockWorld]:
    yield from _world(tmp_path, [ListenerPorts(mqtt=8883)])


@pytest.fixture
def on_any_port(tmp_path: Path) -> Iterator[StockWorld]:
    yield from _world(tmp_path, [ListenerPorts(mqtt=8883), ListenerPorts(mqtt=_free_port())])


@pytest.fixture
def under_the_device_policy(tmp_path: Path) -> Iterator[StockWorld]:
    yield from _world(tmp_path, [ListenerPorts(mqtt=_free_port())], ConnectPolicy.THING_NAME)


@pytest.fixture
def on_443(tmp_path: Path) -> Iterator[StockWorld]:
    yield from _world(tmp_path, [ListenerPorts(alpn=443)])


def _run_driver(world: StockWorld) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    done = subprocess.run(
        [
            sys.executable,
            str(DRIVER),
            *("--endpoint", world.host, "--cert", world.cert, "--key", world.key),
            *("--thing", THING, "--region", world.sandbox.region, "--port", str(world.port)),
        ],
        env=world.env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return done, [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _assert_completed_over_ats(world: StockWorld, job_id: str) -> None:
    iot = world.sandbox.iot_client()
    execution = iot.describe_job_execution(jobId=job_id, thingName=THING)["execution"]
    assert execution["status"] == "SUCCEEDED"
    assert iot.describe_job(jobId=job_id)["job"]["status"] == "COMPLETED"
    device_changes = [c for c in world.execution_history(job_id) if c["status"] != "QUEUED"]
    assert [(c["status"], c["via"]) for c in device_changes] == [
        ("IN_PROGRESS", "ats"),
        ("SUCCEEDED", "ats"),
    ]


def test_the_sample_s_sdk_calls_complete_a_job_with_the_system_trust_store(
    on_any_port: StockWorld,
) -> None:
    world = on_any_port
    done, steps = _run_driver(world)
    assert done.returncode == 0, (steps, done.stderr[-2000:])
    assert [s["step"] for s in steps if s["step"] != "changed"] == [
        "connected",
        "create-job",
        "start-next",
        "update-job-execution",
        "done",
    ]
    start = next(s for s in steps if s["step"] == "start-next")
    assert start["status"] == "IN_PROGRESS"
    assert start["document"] == {"ToDo": "Reboot"}
    _assert_completed_over_ats(world, "stock-sample-job")


def test_the_sample_s_sdk_calls_complete_a_job_on_443_with_alpn(on_443: StockWorld) -> None:
    """The SDK's builders default to 443, where they offer ALPN x-amzn-mqtt-ca."""
    done, steps = _run_driver(on_443)
    assert done.returncode == 0, (steps, done.stderr[-2000:])
    assert steps[-1] == {"step": "done"}
    _assert_completed_over_ats(on_443, "stock-sample-job")


def test_the_device_policy_refuses_the_sample_s_empty_client_id(
    under_the_device_policy: StockWorld,
) -> None:
    """Why `--connect-policy any-client-id`: the project's policy wants the thing name."""
    done, steps = _run_driver(under_the_device_policy)
    assert done.returncode != 0
    assert steps == []
    assert "MQTT5_CONNACK_CONNECTION_REFUSED" in done.stderr


class _Lines:
    """A process's stdout, line by line, with a deadline per expected line."""

    def __init__(self, stream: TextIO) -> None:
        self.seen: list[str] = []
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, text: str) -> str:
        deadline = time.monotonic() + WAIT
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r}; the sample printed:\n" + "\n".join(self.seen))

    def expect_all(self, *texts: str) -> None:
        """Lines with each of `texts`, in any order (events race the command's answer)."""
        start = len(self.seen)
        for text in texts:
            if not any(text in line for line in self.seen[start:]):
                self.expect(text)


def test_the_current_sdk_jobs_sample_runs_unmodified(on_8883: StockWorld) -> None:
    samples = os.environ.get(SAMPLES_ENV)
    if not samples:
        pytest.skip(
            f"the AWS IoT Device SDK v2 samples are not here: set {SAMPLES_ENV} to the samples/ "
            "directory of an aws-iot-device-sdk-python-v2 checkout"
        )
    sample = Path(samples) / "service_clients" / "jobs.py"
    world = on_8883
    process = subprocess.Popen(
        [
            sys.executable,
            str(sample),
            *("--endpoint", world.host, "--cert", world.cert, "--key", world.key),
            *("--thing", THING, "--region", world.sandbox.region),
        ],
        env=world.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    out = _Lines(process.stdout)

    def send(command: str) -> None:
        assert process.stdin is not None
        process.stdin.write(command + "\n")
        process.stdin.flush()

    try:
        out.expect("Connected!")
        send('create-job stock-job-1 {"ToDo":"Reboot"}')
        out.expect_all("CreateJobResponse", "Received NextJobExecutionChangedEvent")
        send("start-next-pending-job-execution")
        started = out.expect("StartNextPendingJobExecutionResponse")
        assert "job_id='stock-job-1'" in started
        assert "status='IN_PROGRESS'" in started
        send("update-job-execution stock-job-1 SUCCEEDED")
        out.expect("UpdateJobExecutionResponse")
        send("quit")
        out.expect("Stopped!")
        assert process.wait(timeout=WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not any(line.startswith("Exception:") for line in out.seen), out.seen
    _assert_completed_over_ats(world, "stock-job-1")
