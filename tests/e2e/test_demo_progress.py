"""`ca-migrate demo` piped (not a terminal) says what happens as it happens, in plain lines.

A real `ca-migrate` process with its output on pipes, as under `make demo | tee` or CI.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.sandbox.runtime import Sandbox
from orchestrator.cli._live import SETTLING
from orchestrator.demo.backoff import telling_backoffs

pytestmark = pytest.mark.e2e

FIFTY = ("--devices", "50")
FAST = (*FIFTY, "--time-scale", "0")


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo", *FAST, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_piped_text_output_prints_one_plain_line_per_phase_change() -> None:
    run = _demo()
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "demo happy: starting"
    assert "t+0 min campaign demo RUNNING; canary LAUNCHING" in lines
    assert any(line.endswith("canary PASSED; wave-1 LAUNCHING") for line in lines), lines
    assert any("campaign demo COMPLETED" in line for line in lines), lines
    # each change once: wave-1 launches on one line only
    assert sum("wave-1 LAUNCHING" in line for line in lines) == 1
    assert "\x1b" not in run.stdout  # no terminal redraw codes


def test_piped_halt_line_gives_the_reason_once() -> None:
    run = _demo("--scenario", "bad-canary")
    assert run.returncode == 0, run.stderr
    halt = [line for line in run.stdout.splitlines() if "campaign demo HALTED" in line]
    assert len(halt) == 1, run.stdout
    assert halt[0].count("max_failure_rate") == 1
    assert "canary HALTED: " in halt[0]


def test_json_output_keeps_stdout_to_the_json_and_progress_on_stderr() -> None:
    run = _demo("--output", "json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1])["status"] == "COMPLETED"
    assert "t+" not in run.stdout
    assert "canary PASSED; wave-1 LAUNCHING" in run.stderr
    assert "\x1b" not in run.stderr


def test_piped_run_says_when_it_waits_for_devices_after_the_campaign_ended() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo", "--time-scale", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    done = next(i for i, line in enumerate(lines) if "campaign demo COMPLETED" in line)
    assert lines[done + 1].endswith(f"COMPLETED: {SETTLING}"), lines[done:]
    stopping = lines.index("demo happy: stopping 1000 devices and the sandbox")
    assert stopping > done + 1
    assert lines[stopping + 1].startswith("campaign demo: COMPLETED")  # then the summary


def test_piped_mqtt_demo_tells_each_set_up_step_before_the_campaign() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "demo", "--transport", "mqtt", *FIFTY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(120, process.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if "devices connected; starting the campaign" in line:
                break
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
        watchdog.cancel()
    steps = [line.removeprefix("demo happy: ") for line in lines]
    assert steps[:4] == [
        "starting",
        "starting the sandbox (HTTP APIs, two mosquitto brokers)",
        "provisioning 50 things in 5 thing groups",
        "connecting the SDK devices over TLS",
    ], lines
    assert steps[-1].endswith("devices connected; starting the campaign"), lines
    counted = [s for s in steps if s.startswith("connecting devices ")]
    assert all("/" in s for s in counted)


def test_each_throttled_answer_is_told_with_the_retries_so_far() -> None:
    told: list[str] = []
    with Sandbox(mqtt=False, throttle_rate=1.0) as sandbox:
        iot = sandbox.iot_client(config=Config(retries={"mode": "standard", "max_attempts": 3}))
        with telling_backoffs(told.append, iot) as counts, pytest.raises(ClientError):
            iot.list_things()
        with pytest.raises(ClientError):
            iot.list_things()  # the hook is gone after the block: no more lines
    assert counts["retries"] == len(told) == 3  # max_attempts 3: four attempts, three retries
    assert told == [
        "control plane throttled (ThrottlingException): botocore backs off and retries "
        f"({n} retries so far)"
        for n in (1, 2, 3)
    ]
