"""`run --follow` as its own process against the sandbox: piped, one JSON line per change,
saying in words that a manual wave waits for `approve`, until the campaign completes."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from infra.sandbox import runtime
from tests.e2e.campaign_kit import GROUPS, THINGS, Fleet, campaign_text

pytestmark = pytest.mark.e2e


@pytest.fixture
def sandbox() -> Iterator[object]:
    with runtime.Sandbox(mqtt=False) as sb:
        sb.provision(len(THINGS), GROUPS)
        yield sb


def in_process(sandbox, state: Path, *args: str) -> tuple[int, str, str]:
    from orchestrator.cli import app

    result = CliRunner().invoke(
        app, ["--endpoint-url", sandbox.control_plane_url, "--state", str(state), *args]
    )
    structlog.reset_defaults()
    return result.exit_code, result.stdout, result.stderr


def test_follow_says_what_it_waits_for_and_ends_with_the_final_state(
    sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="sandbox", AWS_SECRET_ACCESS_KEY="sandbox")
    env.pop("AWS_PROFILE", None)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "sandbox")
    state = tmp_path / "state.sqlite"
    path = tmp_path / "c.yaml"
    path.write_text(campaign_text("manual"))
    approve = "wave-1 waits for approval: run `ca-migrate approve e2e wave-1`"
    with Fleet(sandbox):
        # the sandbox has no MQTT listener: no endpoint to check
        assert in_process(sandbox, state, "start", str(path), "--skip-endpoint-check")[0] == 0
        follow = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator.cli",
                "run",
                "e2e",
                "--follow",
                "--interval",
                "0.1",
                "--endpoint-url",
                sandbox.control_plane_url,
                "--state",
                str(state),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        watchdog = threading.Timer(60, follow.kill)  # a missing line fails, never hangs
        watchdog.start()
        try:
            assert follow.stdout is not None
            lines: list[str] = []
            for line in follow.stdout:
                lines.append(line)
                if approve in json.loads(line)["waiting"]:
                    break
            code, _, err = in_process(sandbox, state, "approve", "e2e", "wave-1")
            assert code == 0, err
            rest, stderr = follow.communicate(timeout=120)
        finally:
            watchdog.cancel()
            follow.kill()
    assert follow.returncode == 0, stderr
    records = [json.loads(line) for line in [*lines, *rest.splitlines()]]
    assert approve in records[len(lines) - 1]["waiting"]
    assert records[-1]["status"] == "COMPLETED"
    assert records[-1]["waiting"] == []
    for before, after in itertools.pairwise(records):
        assert {k: v for k, v in before.items() if k != "at"} != {
            k: v for k, v in after.items() if k != "at"
        }  # one line per change, never a repeat
