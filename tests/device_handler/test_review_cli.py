"""Adversarial review of the device CLI: one agent per device state directory."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from device_handler.cli import main
from device_handler.device_client.handler import main as handler_main

from .conftest import THING, Device, World


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def _config(device: Device, world: World) -> Path:
    lines = [
        f'thing_name = "{THING}"',
        'region = "us-east-1"',
        f'client_cert = "{world.device.cert_path}"',
        f'client_key = "{world.device.key_path}"',
        'endpoint_file = "etc/endpoint.json"',
        'trust_bundle = "etc/trust.pem"',
        'state_dir = "state"',
        "connect_timeout_seconds = 1",
        "poll_seconds = 1",
        "[connect_override]",
        *(f'"{k}" = "{v}"' for k, v in world.overrides.items()),
    ]
    path = device.root / "device.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def running_agent(device: Device, world: World) -> Iterator[Path]:
    """A `ca-migrate-device run` process on the device (no broker: it keeps retrying)."""
    config = _config(device, world)
    log = device.root / "agent.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "device_handler.cli", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 20
        while '"recovered"' not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.05)
        assert '"recovered"' in log.read_text(), log.read_text()
        yield config
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_recover_is_refused_while_an_agent_runs_on_the_same_state_directory(
    running_agent: Path, device: Device, capsys: pytest.CaptureFixture[str]
):
    """Two writers of one journal could interleave a roll-back with a commit (a mixed config)."""
    journal_before = device.paths.journal.read_bytes() if device.paths.journal.exists() else None
    assert main(["recover", "--config", str(running_agent)]) == 1
    assert "another" in capsys.readouterr().err
    after = device.paths.journal.read_bytes() if device.paths.journal.exists() else None
    assert after == journal_before


def test_the_device_client_handler_is_refused_while_an_agent_runs(
    running_agent: Path, capsys: pytest.CaptureFixture[str]
):
    """Device Client and the agent daemon on one device must not run a transaction each."""
    code = handler_main(["--config", str(running_agent), "--document-json", "{}"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert "another" in out["message"]


def test_the_device_client_handler_writes_nothing_on_stderr(
    device: Device, world: World, capsys: pytest.CaptureFixture[str]
):
    """Device Client fails a job on any stderr line (allowStdErr defaults to 0).

    Its report is the last line of stdout, which Device Client can include in statusDetails.
    """
    code = handler_main(["--config", str(_config(device, world)), "--document-json", "{}"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err == ""
    assert json.loads(captured.out.splitlines()[-1])["status"] == "REJECTED"
