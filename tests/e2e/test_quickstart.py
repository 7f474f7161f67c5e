"""The README's quick start: its provisioning and campaign plan cleanly with gates that can pass,
and the whole flow (`sandbox up --time-scale 60`, `sandbox fleet`, `start`, `run --follow`,
`approve`, each its own process) completes on the sandbox's clock in real seconds."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml

from infra.sandbox.pki import SandboxPki
from infra.sandbox.runtime import Sandbox
from orchestrator.census import INDEXING_CONFIGURATION
from orchestrator.gates import wilson_bounds
from tests.machine import NEEDS_MOSQUITTO, needs_loopback_name

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "quickstart.yaml"
CLI = [sys.executable, "-m", "orchestrator.cli"]
ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"


def _quick_start() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Quick start on the sandbox")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def readme_provision_line() -> list[str]:
    """The first `ca-migrate sandbox provision` command of the quick start, as argv."""
    for block in _blocks(_quick_start(), "sh"):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            command = line.split("#", 1)[0].strip()
            if command.startswith("ca-migrate sandbox provision"):
                return shlex.split(command)
    raise AssertionError("the README's quick start has no `ca-migrate sandbox provision` line")


def readme_campaign() -> dict[str, object]:
    blocks = _blocks(_quick_start(), "yaml")
    assert blocks, "the README's quick start shows no campaign"
    loaded: dict[str, object] = yaml.safe_load(blocks[0])
    return loaded


def _env(extra: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CA_MIGRATE_"))}
    env.update(extra)
    env["CA_MIGRATE_STATE"] = str(tmp_path / "ca-migrate.sqlite")
    return env


def _cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    done = subprocess.run(
        [*CLI, *args],
        check=False,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def test_the_readme_campaign_is_the_example_file() -> None:
    assert readme_campaign() == yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def test_readme_provisioning_and_campaign_plan_cleanly_and_every_gate_can_pass(
    tmp_path: Path,
) -> None:
    # The README's layout: sbx/ (the state dir) and examples/quickstart.yaml side by side.
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "quickstart.yaml").write_text(yaml.safe_dump(readme_campaign()))
    state = tmp_path / "sbx"
    SandboxPki.create_or_load(state / "pki")
    with Sandbox(mqtt=False, state_dir=state) as sandbox:
        env = _env(sandbox.describe()["env"], tmp_path)
        argv = readme_provision_line()
        assert argv[:3] == ["ca-migrate", "sandbox", "provision"]
        _cli(argv[1:], env, tmp_path)
        # the sandbox runs without MQTT listeners: no endpoint to check
        plan = ["plan", "examples/quickstart.yaml", "--output", "json", "--skip-endpoint-check"]
        planned = json.loads(_cli(plan, env, tmp_path))
    spec = readme_campaign()
    waves = {w["name"]: w for w in spec["waves"]}  # type: ignore[attr-defined]
    assert [w["wave"] for w in planned["waves"]] == list(waves)
    for wave in planned["waves"]:
        devices = sum(wave["devices"].values())
        gate = waves[wave["wave"]]["gate"]
        confidence = gate.get("confidence", 0.95)
        lower, _ = wilson_bounds(devices, devices, confidence)
        # Every device succeeding passes the gate, with room for at least one failure.
        assert lower >= gate["min_success_rate"], (wave["wave"], devices, lower)
        assert devices >= gate.get("min_completed", 1)
        one_failure, _ = wilson_bounds(devices - 1, devices, confidence)
        assert one_failure >= gate["min_success_rate"], (wave["wave"], devices, one_failure)


def test_a_sandbox_clock_against_aws_is_refused_with_exit_2(tmp_path: Path) -> None:
    env = _env({"CA_MIGRATE_CLOCK": "sandbox:http://127.0.0.1:1/_sandbox"}, tmp_path)
    env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_REGION="us-east-1")
    done = subprocess.run(
        [*CLI, "start", str(EXAMPLE)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "unset CA_MIGRATE_CLOCK" in done.stderr
    assert "Traceback" not in done.stderr


# -- the whole flow ------------------------------------------------------------------------------

CAMPAIGN = """\
name: qs
region: us-east-1
endpoint: auto
catalog: sbx/pki/ats/catalog.json
trust: {add: [amazon-root-ca-1, amazon-root-ca-3], keep_existing: true}
execution: {in_progress_timeout_minutes: 30, retries: {failed: 1, timed_out: 1}}
halt: {max_failure_rate: 0.2, fleet_failure_budget: 3}
waves:
  - name: canary
    thing_groups: [canary]
    gate: {min_success_rate: 0.8, min_completed: 12, bake_minutes: 10}
  - name: wave-1
    thing_groups: [fleet-a]
    gate: {min_success_rate: 0.8, min_completed_fraction: 1.0, bake_minutes: 5}
    approval: manual
"""
SIMULATED_MINUTES = 15  # the bakes alone
REAL_BOUND_SECONDS = 120  # the system clock would need 15 real minutes


def _read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            out[key] = shlex.split(value)[0]
    return out


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return out, err


@pytest.mark.mqtt
@NEEDS_MOSQUITTO
@needs_loopback_name(ATS)
def test_quick_start_completes_on_the_sandbox_clock_with_separate_processes(
    tmp_path: Path,
) -> None:
    (tmp_path / "campaign.yaml").write_text(CAMPAIGN)
    base = _env({}, tmp_path)
    popen = {"cwd": tmp_path, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    up = subprocess.Popen(
        [*CLI, "sandbox", "up", "--state-dir", "sbx", "--time-scale", "60"], env=base, **popen
    )
    fleet: subprocess.Popen[str] | None = None
    follow: subprocess.Popen[str] | None = None
    try:
        env_file = tmp_path / "sbx" / "env.sh"
        _wait_for(env_file.exists, 60, "sandbox up writes sbx/env.sh")
        env = {**base, **_read_env_file(env_file)}
        assert env["CA_MIGRATE_CLOCK"].startswith("sandbox:http://")
        _cli(
            [
                "sandbox",
                "provision",
                "--things",
                "24",
                "--group",
                "canary:12",
                "--group",
                "fleet-a:12",
            ],
            env,
            tmp_path,
        )
        fleet = subprocess.Popen([*CLI, "sandbox", "fleet", "--state-dir", "sbx"], env=env, **popen)
        started = time.monotonic()
        _cli(["start", "campaign.yaml"], env, tmp_path)
        follow = subprocess.Popen(
            [*CLI, "run", "qs", "--follow", "--interval", "1"], env=env, **popen
        )

        def awaiting() -> bool:
            status = json.loads(_cli(["status", "qs", "--output", "json"], env, tmp_path))
            phases = {w["name"]: w["phase"] for w in status["waves"]}
            return phases["wave-1"] == "AWAITING_APPROVAL"

        _wait_for(awaiting, REAL_BOUND_SECONDS, "wave-1 waits for approval")
        approved = _cli(["approve", "qs", "wave-1"], env, tmp_path)
        assert "sandbox time" in approved
        out, err = follow.communicate(timeout=REAL_BOUND_SECONDS)
        real = time.monotonic() - started
        assert follow.returncode == 0, f"{out}\n{err}"
        assert "COMPLETED" in out
        assert "sandbox time" in out
        assert real < REAL_BOUND_SECONDS, real  # bakes of 15 sandbox minutes in real seconds
        events = _cli(["events", "qs", "--output", "json"], env, tmp_path)
        stamps = [json.loads(line)["at"] for line in events.splitlines()]
        from datetime import datetime

        simulated = datetime.fromisoformat(stamps[-1]) - datetime.fromisoformat(stamps[0])
        assert simulated.total_seconds() >= SIMULATED_MINUTES * 60, simulated
        # The README's next steps: census and verify over fleet indexing of the shadows the
        # devices' agents keep (turned on as the census's exit 2 says, here with boto3).
        boto3.client(
            "iot",
            region_name="us-east-1",
            endpoint_url=env["AWS_ENDPOINT_URL_IOT"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        ).update_indexing_configuration(thingIndexingConfiguration=INDEXING_CONFIGURATION)
        census = json.loads(_cli(["census", "--campaign", "qs", "-o", "json"], env, tmp_path))
        assert census["waves"]["canary"]["ats"] == census["waves"]["canary"]["total"] == 12
        verified = _cli(["verify", "qs"], env, tmp_path)  # exit 0: no drift
        assert "no drift" in verified
    finally:
        outputs = {}
        for name, proc in (("follow", follow), ("fleet", fleet), ("up", up)):
            if proc is not None:
                outputs[name] = _stop(proc)
    assert fleet is not None
    assert fleet.returncode == 0, outputs["fleet"]
    assert "24 succeeded" in outputs["fleet"][0]
    assert up.returncode == 0, outputs["up"]
    for _, err in outputs.values():
        assert "Traceback" not in err
