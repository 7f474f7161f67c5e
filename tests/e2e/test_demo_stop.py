"""Stopping `ca-migrate demo --transport mqtt` from outside leaves nothing behind.

A real `ca-migrate` process, real mosquitto brokers, real signals: SIGTERM stops it
as Ctrl-C (SIGINT) does (one line, the devices and the sandbox stopped, exit 143 and
130); SIGKILL
gives it no chance, and the brokers and the run directory still go.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

MQTT_DEMO = ("--transport", "mqtt", "--devices", "50")
BOOT_SECONDS = 90.0
GONE_SECONDS = 15.0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _started_demo() -> tuple[subprocess.Popen[str], list[int], Path]:
    """A running MQTT demo, the pids of its two mosquitto brokers, and its run directory."""
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "demo", *MQTT_DEMO],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    deadline = time.monotonic() + BOOT_SECONDS
    while time.monotonic() < deadline:
        shells = [p for p in _children(process.pid) if "mosquitto.conf" in " ".join(_cmdline(p))]
        brokers = [b for s in shells for b in _children(s) if _cmdline(b)[0].endswith("mosquitto")]
        if len(brokers) == 2:
            conf = Path(_cmdline(shells[0])[-2])
            run_dir = next(p for p in conf.parents if p.name.startswith("ca-migrate-run-"))
            return process, brokers, run_dir
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"the demo's brokers did not start in {BOOT_SECONDS:.0f}s")


def _gone(brokers: list[int], run_dir: Path) -> bool:
    deadline = time.monotonic() + GONE_SECONDS
    while time.monotonic() < deadline:
        if not any(_alive(b) for b in brokers) and not run_dir.exists():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_devices_and_the_sandbox_then_exits_128_plus_it(signum: int) -> None:
    process, brokers, run_dir = _started_demo()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert stderr.count("interrupted: stopping devices and the sandbox") == 1, stderr
    assert "Traceback" not in stderr
    assert _gone(brokers, run_dir), (brokers, run_dir)


def test_sigkill_leaves_no_broker_and_no_run_directory() -> None:
    process, brokers, run_dir = _started_demo()
    process.kill()
    process.communicate(timeout=10)
    assert _gone(brokers, run_dir), (brokers, run_dir)
