"""The conventions every `ca-migrate` command follows: output format and file, global options
anywhere, `--version`, operator commands that do not apply, quiet terminals, fast failures."""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from job_documents import ManualClock
from orchestrator.cli import _hoist_globals, app
from orchestrator.cli._logging import configure_logging
from orchestrator.model import CampaignStatus
from orchestrator.planner import initial_state
from orchestrator.spec import parse_spec
from orchestrator.store import StoredCampaign
from orchestrator.store.sqlite import SqliteStateStore

from .conftest import README_CAMPAIGN


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str


def run(*args: str) -> Ran:
    result = CliRunner().invoke(app, list(args))
    structlog.reset_defaults()
    return Ran(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    """A SQLite store holding the README campaign (canary auto, wave-1 manual), RUNNING."""
    spec = parse_spec(README_CAMPAIGN)
    docs = {w.name: ("{}", "c" * 64) for w in spec.waves}
    path = tmp_path / "state.sqlite"
    SqliteStateStore(path).create(
        StoredCampaign(README_CAMPAIGN, None, initial_state(spec, docs, ManualClock().now())), []
    )
    return path


@pytest.fixture(autouse=True)
def _offline_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_version() -> None:
    ran = run("--version")
    assert ran.code == 0
    assert ran.stdout.startswith("ca-migrate 0.")


def test_global_options_are_accepted_after_the_subcommand(state_file: Path, tmp_path) -> None:
    before = run("--state", str(state_file), "status", "ats-2026")
    after = run("status", "ats-2026", "--state", str(state_file))
    equals = run("status", f"--state={state_file}", "ats-2026", "-o", "json")
    assert before.code == after.code == equals.code == 0, after.stderr
    assert after.stdout == before.stdout
    assert json.loads(equals.stdout)["campaign"] == "ats-2026"
    elsewhere = run("status", "ats-2026", "--state", str(tmp_path / "other.sqlite"))
    assert elsewhere.code == 2  # the option after the command is the one used


def test_a_subcommands_own_option_of_the_same_name_stays_its_own() -> None:
    root = __import__("typer").main.get_command(app)
    ctx = root.make_context("ca-migrate", ["--help"], resilient_parsing=True)
    args = ["document", "build", "--region", "eu-west-1", "--state", "s.db", "--", "--region"]
    assert _hoist_globals(root, ctx, args) == [
        "--state",
        "s.db",
        "document",
        "build",
        "--region",
        "eu-west-1",
        "--",
        "--region",
    ]


def test_report_output_is_a_format_and_output_file_a_destination(
    state_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    as_json = run("--state", str(state_file), "report", "ats-2026", "--output", "json")
    assert as_json.code == 0, as_json.stderr
    assert json.loads(as_json.stdout)["campaign"] == "ats-2026"
    assert not (tmp_path / "json").exists()
    old = run("--state", str(state_file), "report", "ats-2026", "-o", "report.html")
    assert old.code == 2
    assert "--output-file report.html" in old.stderr
    assert not (tmp_path / "report.html").exists()
    page = run("--state", str(state_file), "report", "ats-2026", "--output-file", "r.html")
    assert page.code == 0, page.stderr
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    md = run("--state", str(state_file), "report", "ats-2026", "-o", "text")
    assert md.stdout.startswith("# Campaign ats-2026")


@pytest.mark.parametrize(
    "command",
    [
        ["report", "ats-2026", "--output-file"],
        ["document", "schema", "--output-file"],
    ],
)
def test_an_unwritable_output_file_is_exit_2_with_a_message(
    command: list[str], state_file: Path, tmp_path: Path
) -> None:
    target = tmp_path / "no" / "such" / "dir" / "out.txt"
    ran = run("--state", str(state_file), *command, str(target))
    assert ran.code == 2
    assert f"cannot write --output-file {target}" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_document_schema_o_with_a_file_name_names_output_file(tmp_path: Path) -> None:
    ran = run("document", "schema", "-o", str(tmp_path / "schema.json"))
    assert ran.code == 2
    assert "--output-file" in ran.stderr
    written = run("document", "schema", "--output-file", str(tmp_path / "schema.json"))
    assert written.code == 0
    assert json.loads((tmp_path / "schema.json").read_text())["$schema"]


def test_approve_of_an_auto_wave_is_refused_with_the_reason(state_file: Path) -> None:
    ran = run("--state", str(state_file), "approve", "ats-2026", "canary")
    assert ran.code == 2
    assert "wave canary has approval auto" in ran.stderr


def test_approve_on_a_stopped_campaign_is_refused(state_file: Path) -> None:
    store = SqliteStateStore(state_file)
    state = store.load("ats-2026").state
    store.commit(replace(state, status=CampaignStatus.COMPLETED), [])
    ran = run("--state", str(state_file), "approve", "ats-2026", "wave-1")
    assert ran.code == 2
    assert "campaign ats-2026 is COMPLETED" in ran.stderr
    assert "nothing to approve" in ran.stderr


@pytest.mark.parametrize(("fmt", "shown"), [("console", False), ("json", True)])
def test_a_terminal_sees_warnings_only_unless_verbose(fmt, shown, capsys) -> None:
    configure_logging(fmt, level=None)
    structlog.get_logger().info("routine-step")
    structlog.get_logger().warning("worth-seeing")
    err = capsys.readouterr().err
    structlog.reset_defaults()
    assert ("routine-step" in err) is shown
    assert "worth-seeing" in err
    configure_logging(fmt, level=logging.INFO)
    structlog.get_logger().info("routine-step")
    assert "routine-step" in capsys.readouterr().err
    structlog.reset_defaults()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_plan_against_an_unreachable_endpoint_names_it(readme_campaign: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    ran = run("--endpoint-url", url, "plan", str(readme_campaign))
    assert ran.code == 1
    assert f"cannot reach AWS IoT at {url}" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_plan_without_credentials_says_so(
    readme_campaign: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    url = f"http://127.0.0.1:{_closed_port()}"
    ran = run("--endpoint-url", url, "start", str(readme_campaign))
    assert ran.code == 1
    assert "no AWS credentials found" in ran.stderr
    missing = run("--profile", "nobody", "plan", str(readme_campaign))
    assert missing.code == 1
    assert "nobody" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_demo_reports_of_two_transports_do_not_overwrite_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestrator.demo import runner
    from orchestrator.errors import UsageError

    reports: list[Path] = []

    def run_campaign(_text: str, _fleet: object, settings: runner.RunSettings, **_: object) -> None:
        reports.append(settings.report)
        raise UsageError("stopped by the test")

    monkeypatch.setattr(runner, "run_campaign", run_campaign)
    saved = structlog.get_config()
    try:
        for transport in ("memory", "mqtt"):
            CliRunner().invoke(app, ["demo", "--devices", "50", "--transport", transport])
    finally:
        structlog.configure(**saved)
    assert len(reports) == 2
    assert reports[0] != reports[1]
    assert [p.name for p in reports] == [
        "ca-migrate-demo-happy-memory.html",
        "ca-migrate-demo-happy-mqtt.html",
    ]


def test_document_validate_prints_one_json_object_with_o_json(tmp_path: Path) -> None:
    doc = tmp_path / "doc.json"
    built = run(
        "document", "build", "--region", "us-east-1", "--ca", "amazon-root-ca-1",
        "--endpoint", "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com", "--output-file", str(doc),
    )  # fmt: skip
    assert built.code == 0, built.stderr
    valid = run("document", "validate", str(doc), "-o", "json")
    assert valid.code == 0, valid.stderr
    body = json.loads(valid.stdout)
    assert body["valid"] is True
    assert body["endpoint"] == {
        "host": "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com",
        "port": 8883,
    }
    assert body["roots"] == 1
    (tmp_path / "bad.json").write_text("{}")
    invalid = run("document", "validate", str(tmp_path / "bad.json"), "-o", "json")
    assert invalid.code == 2
    refused = json.loads(invalid.stdout)
    assert refused["valid"] is False
    assert refused["problems"]
    assert {"code", "path", "message"} <= set(refused["problems"][0])
    assert run("document", "validate", str(doc), "-o", "yaml").code == 2
