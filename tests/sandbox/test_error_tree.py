"""The sandbox's error tree holds every error the sandbox raises on purpose, so its front
ends (`ca-migrate sandbox`, `ca-migrate demo`) print a message and exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from infra.sandbox.dataplane import DataPlaneError
from infra.sandbox.errors import PortUnavailableError, SandboxError
from infra.sandbox.mqtt._broker import BrokerError
from infra.sandbox.mqtt._dataplane import MqttError
from infra.sandbox.mqtt._shadow import ShadowRejectedError
from infra.sandbox.mqtt.sdkdevice import SdkDeviceError
from infra.sandbox.pki import PkiError
from orchestrator.errors import OrchestratorError
from orchestrator.runner_lambda import RunnerConfigError, RunnerFailedError

ERRORS = [
    PkiError("delete the PKI directory to renew"),
    DataPlaneError("InvalidRequest", "bad request"),
    BrokerError("mosquitto is not installed"),
    MqttError("the MQTT data plane did not start"),
    PortUnavailableError("port 8883 on 127.0.0.1 is in use by another process"),
    SdkDeviceError("no connection within 10 s"),
    ShadowRejectedError(400, "bad shadow document"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_every_sandbox_error_is_a_sandbox_error(error: Exception) -> None:
    assert isinstance(error, SandboxError)


def test_the_runners_errors_are_orchestrator_errors() -> None:
    assert issubclass(RunnerConfigError, OrchestratorError)
    assert issubclass(RunnerFailedError, OrchestratorError)


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_demo_turns_each_sandbox_error_into_a_message_and_exit_1(
    error: Exception, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli.demo import _exit_codes

    with pytest.raises(typer.Exit) as exited, _exit_codes():
        raise error
    assert exited.value.exit_code == 1
    assert capsys.readouterr().err == f"error: {error}\n"


def test_a_broken_pki_stops_sandbox_up_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    manifest = tmp_path / "state" / "pki" / "pki.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("not a manifest")
    up = ["sandbox", "up", "--port", "0", "--state-dir", str(tmp_path / "state")]
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *up],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "is not a sandbox PKI manifest" in result.stderr
    assert "the sandbox did not start" in result.stderr
