"""Simulated AWS IoT Device Client devices: documents read, handlers run, statuses mapped.

As Device Client's jobs feature does (awslabs/aws-iot-device-client, JobDocument.cpp,
JobEngine.cpp, JobsFeature.cpp): a document it cannot read is REJECTED; a step runs
`<path>/<handler> <runAsUser> <args...>`; a non-zero exit or more stderr lines than
allowStdErr fails it. The handlers here are real scripts in real processes, and the
executions live in the sandbox's Jobs engine.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra.sandbox.engine import JobsEngine
from infra.sandbox.fleet import FleetSpecError, parse_fleet_spec
from infra.sandbox.fleet.device_client import (
    LAYOUT,
    DeviceClientDevice,
    InvalidJobDocumentError,
    parse_job_document,
    step_failed,
)
from infra.sandbox.pki import SandboxPki
from job_documents.clock import ManualClock

THING_ARN = "arn:aws:iot:us-east-1:123456789012:thing/"
SCRIPT = """\
#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$0")/argv.txt"
{stderr}
exit {code}
"""


def _step(handler: str = "h.sh", **action: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "s",
        "type": "runHandler",
        "input": {"handler": handler, "args": ["--x", "/etc/thing.toml"], "path": "/opt/test"},
        "runAsUser": "root",
    }
    base.update(action)
    return {"action": base}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SandboxPki:
    return SandboxPki.create_or_load(tmp_path_factory.mktemp("pki"), region="us-east-1")


@pytest.fixture
def world(pki: SandboxPki, tmp_path: Path) -> tuple[JobsEngine, DeviceClientDevice]:
    engine = JobsEngine(
        clock=ManualClock(datetime(2026, 1, 1, tzinfo=UTC)), default_per_minute=None
    )
    engine.create_things(["gw"])
    device = DeviceClientDevice("gw", tmp_path / "gw", pki, overrides={})
    (tmp_path / "gw").mkdir()
    device.install()
    handlers = device.inside("/opt/test")
    handlers.mkdir(parents=True)
    for name, code, stderr in (("h.sh", 0, 0), ("fail3.sh", 3, 0), ("err1.sh", 0, 1)):
        script = handlers / name
        script.write_text(SCRIPT.format(code=code, stderr="echo oops >&2" if stderr else ""))
        script.chmod(0o700)
    return engine, device


def _job(engine: JobsEngine, document: dict[str, Any], job_id: str = "j1") -> None:
    engine.create_job(
        {"jobId": job_id, "targets": [f"{THING_ARN}gw"], "document": json.dumps(document)}
    )


def _execution(engine: JobsEngine, job_id: str = "j1") -> dict[str, Any]:
    (found,) = [h for h in engine.execution_history(job_id=job_id) if h["thingName"] == "gw"]
    return found


def test_a_step_runs_the_handler_with_run_as_user_first_and_paths_inside_the_device(world) -> None:
    engine, device = world
    _job(engine, {"version": "1.0", "steps": [_step()]})
    assert device.run_next(engine) == "SUCCEEDED"
    argv = device.inside("/opt/test/argv.txt").read_text().splitlines()
    assert argv == ["root", "--x", str(device.inside("/etc/thing.toml"))]
    execution = _execution(engine)
    assert execution["status"] == "SUCCEEDED"
    assert [h["status"] for h in execution["history"]][-2:] == ["IN_PROGRESS", "SUCCEEDED"]
    assert execution["statusDetails"]["reason"] == "step s exited 0"
    assert device.run_next(engine) == "NONE"


@pytest.mark.parametrize(
    ("handler", "allow", "status"),
    [
        ("fail3.sh", 0, "FAILED"),
        ("fail3.sh", 5, "FAILED"),
        ("err1.sh", 0, "FAILED"),
        ("err1.sh", 1, "SUCCEEDED"),
        ("missing.sh", 0, "FAILED"),
    ],
)
def test_exit_code_and_stderr_lines_decide_the_status(world, handler, allow, status) -> None:
    engine, device = world
    _job(engine, {"version": "1.0", "steps": [_step(handler, allowStdErr=allow)]})
    assert device.run_next(engine) == status
    details = _execution(engine)["statusDetails"]
    if handler == "fail3.sh":
        assert details["reason"] == "step s exited 3"
    if handler == "err1.sh":
        assert details["stderr"] == "oops"


@pytest.mark.parametrize(
    ("path", "handler"),
    [("/../../../..", "h.sh"), ("/opt/test", "../../../../../bin/sh"), (None, "sh")],
    ids=["path-climbs-out", "handler-climbs-out", "host-path"],
)
def test_a_handler_outside_the_device_is_never_run(world, path, handler) -> None:
    """A document cannot make the simulated device run a command of the host."""
    engine, device = world
    step = _step(handler)
    if path is None:
        del step["action"]["input"]["path"]
    else:
        step["action"]["input"]["path"] = path
    _job(engine, {"version": "1.0", "steps": [step]})
    assert device.run_next(engine) == "FAILED"
    assert _execution(engine)["statusDetails"]["reason"] == f"step s: handler {handler} not found"


def test_a_step_without_path_finds_its_handler_on_the_devices_own_path(world) -> None:
    engine, device = world
    bin_dir = device.inside("/usr/bin")
    bin_dir.mkdir(parents=True)
    (bin_dir / "h.sh").write_bytes(device.inside("/opt/test/h.sh").read_bytes())
    (bin_dir / "h.sh").chmod(0o700)
    step = _step()
    del step["action"]["input"]["path"]
    _job(engine, {"version": "1.0", "steps": [step]})
    assert device.run_next(engine) == "SUCCEEDED"


def test_an_ignored_failing_step_lets_the_next_one_decide(world) -> None:
    engine, device = world
    steps = [_step("fail3.sh", ignoreStepFailure="true"), _step()]
    _job(engine, {"version": "1.0", "steps": steps})
    assert device.run_next(engine) == "SUCCEEDED"


def test_a_document_device_client_cannot_read_is_rejected_before_anything_runs(world) -> None:
    engine, device = world
    _job(engine, {"version": "1.0", "steps": []})
    assert device.run_next(engine) == "REJECTED"
    assert _execution(engine)["statusDetails"]["reason"].startswith("Unable to execute job")
    assert not device.inside("/opt/test/argv.txt").exists()


def test_device_client_reports_on_the_connection_it_started_with_until_restarted(world) -> None:
    engine, device = world
    _job(engine, {"version": "1.0", "steps": [_step()]})
    device.run_next(engine)
    assert _execution(engine)["history"][-1]["via"] == "legacy"
    config = device.inside(LAYOUT["config_path"])
    body = json.loads(config.read_text())
    config.write_text(
        json.dumps({**body, "endpoint": device.configured_host().replace(".iot", "-ats.iot")})
    )
    _job(engine, {"version": "1.0", "steps": [_step()]}, "j2")
    device.run_next(engine)
    assert _execution(engine, "j2")["history"][-1]["via"] == "legacy"
    device.restart()
    _job(engine, {"version": "1.0", "steps": [_step()]}, "j3")
    device.run_next(engine)
    assert _execution(engine, "j3")["history"][-1]["via"] == "ats"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"version": "1.0", "steps": [_step()]}, ("s", "h.sh", "/opt/test", "root", 0)),
        (
            {"operation": "h.sh", "args": ["a"], "path": "/p", "allowStdErr": 2},
            ("h.sh", "h.sh", "/p", "", 2),
        ),
        (
            {"version": "1.0", "steps": [_step(allowStdErr=True)]},
            ("s", "h.sh", "/opt/test", "root", 0),
        ),
    ],
)
def test_documents_are_read_as_device_client_reads_them(document, expected) -> None:
    step = parse_job_document(json.dumps(document)).steps[0]
    assert (step.name, step.handler, step.path, step.run_as_user, step.allow_stderr) == expected


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("[1]", "not a JSON object"),
        ("{", "not JSON"),
        ({"version": "1.0"}, "Steps is missing"),
        ({"args": ["x"]}, "Steps is missing"),
        ({"version": "1.0", "steps": [_step(name="")]}, "Action Name is missing"),
        ({"version": "1.0", "steps": [_step(type="runCommand")]}, "runCommand"),
        ({"version": "1.0", "steps": [_step(type="reboot")]}, "is not runHandler"),
        ({"version": "1.0", "steps": [_step(handler="")]}, "Handler is missing"),
    ],
)
def test_documents_device_client_refuses(document, problem) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(InvalidJobDocumentError, match=problem):
        parse_job_document(text)


@pytest.mark.parametrize(
    ("exit_code", "lines", "allowed", "failed"),
    [(0, 0, 0, False), (1, 0, 0, True), (0, 1, 0, True), (0, 1, 1, False), (0, 2, 1, True)],
)
def test_step_failed(exit_code: int, lines: int, allowed: int, failed: bool) -> None:
    assert step_failed(exit_code, lines, allowed) is failed


def test_a_device_client_group_refuses_profiles_it_cannot_follow() -> None:
    ok = parse_fleet_spec(
        {
            "groups": [
                {"name": "gw", "size": 4, "runtime": "device-client", "profiles": {"late": 0.5}}
            ]
        }
    )
    assert ok.groups[0].runtime == "device-client"
    with pytest.raises(FleetSpecError, match="remove probe_fails"):
        parse_fleet_spec(
            {
                "groups": [
                    {
                        "name": "gw",
                        "size": 4,
                        "runtime": "device-client",
                        "profiles": {"probe_fails": 0.5},
                    }
                ]
            }
        )
