"""`ca-migrate verify` finds devices whose shadow disagrees with their SUCCEEDED execution.

A campaign runs to COMPLETED on the reporting devices of `shadow_kit`; verify
is clean (exit 0). Then one device moves back to legacy the way the agent would
report it (its shadow still names the wave's job as its last), and another's
shadow is reset to legacy with no job (its success never showed): verify exits
1 and names both, each with its kind. With fleet indexing off it exits 2 with
the command that turns it on. `status --census` and `report --census` show each
passed wave's devices on its endpoint by their shadow. A device that failed its migration, and
devices that never report, are not drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog

from job_documents import SystemClock
from orchestrator.aws.executions import ExecutionReader
from orchestrator.aws.indexing import FleetIndexAdapter
from orchestrator.census import INDEXING_CONFIGURATION
from orchestrator.drift_survey import Readers
from orchestrator.drift_watch import DriftWatch
from orchestrator.model import CampaignStatus
from orchestrator.runner_lambda import run_once
from orchestrator.spec import parse_spec

from .campaign_kit import campaign_text, drive, in_process, reconciler
from .shadow_kit import LEGACY, LEGACY_ROOTS, ReportingFleet

SILENT = frozenset({"device-00011"})
FAILING = frozenset({"device-00012"})  # last of wave-2: stays on legacy, FAILED, not drift


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _status_census(sandbox: Any, state: Path) -> dict[str, Any]:
    ran = in_process(sandbox, state, "status", "e2e", "--census", "-o", "json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    census = json.loads(ran.stdout)["shadowCensus"]
    assert census["unavailable"] is None
    return census["waves"]


def _verify(sandbox: Any, state: Path, *args: str) -> tuple[int, dict[str, Any]]:
    ran = in_process(sandbox, state, "verify", "e2e", "--output", "json", *args)
    assert ran.returncode in (0, 1), ran.stdout + ran.stderr
    return ran.returncode, json.loads(ran.stdout)


@pytest.mark.usefixtures("aws_env")
def test_verify_names_a_device_moved_back_to_legacy_after_its_wave_passed(
    sandbox: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state.sqlite"
    iot = sandbox.iot_client()
    ats = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    with ReportingFleet(sandbox, ats, silent=SILENT, failing=FAILING) as fleet:
        rec = reconciler(sandbox, tmp_path)
        text = campaign_text()
        rec.start(parse_spec(text), text, None)
        final = drive(rec, "e2e")
        assert final.status is CampaignStatus.COMPLETED

        off = in_process(sandbox, state, "verify", "e2e")
        assert off.returncode == 2, off.stdout + off.stderr  # an error, never "drift"
        assert "update-indexing-configuration" in off.stderr
        no_census = in_process(sandbox, state, "status", "e2e", "--census")
        assert no_census.returncode == 0, no_census.stderr  # status never fails for it
        assert "shadow census: unavailable" in no_census.stdout
        iot.update_indexing_configuration(thingIndexingConfiguration=INDEXING_CONFIGURATION)
        assert _status_census(sandbox, state)["wave-2"] == {
            "endpoint": ats,
            "devices": 4,
            "onTarget": 2,
            "elsewhere": 1,
            "neverReported": 1,
            "succeeded": 3,
        }

        code, clean = _verify(sandbox, state)
        assert code == 0, clean
        assert clean["drift"] == []
        assert clean["waves"]["canary"]["onTarget"] == 4
        assert clean["waves"]["wave-2"] == {
            "jobId": final.wave("wave-2").job_id,
            "endpoint": ats,
            "devices": 4,
            "reported": 3,
            "onTarget": 2,
            "succeeded": 3,
            "unverifiable": 1,
            "drift": 0,
        }

        canary_job = final.wave("canary").job_id
        fleet.report("device-00002", LEGACY, LEGACY_ROOTS, canary_job)  # moved back
        fleet.report("device-00006", LEGACY, LEGACY_ROOTS, None)  # shadow reset, never moved
        code, drifted = _verify(sandbox, state)
        assert code == 1, drifted
        assert [
            (d["thing"], d["wave"], d["kind"], d["endpointKind"]) for d in drifted["drift"]
        ] == [
            ("device-00002", "canary", "moved-back", "legacy"),
            ("device-00006", "wave-1", "not-moved", "legacy"),
        ]
        assert drifted["waves"]["canary"]["onTarget"] == 3
        assert _status_census(sandbox, state)["canary"]["onTarget"] == 3
        report = in_process(sandbox, state, "report", "e2e", "--census", "-o", "md")
        assert report.returncode == 0, report.stderr
        assert "## Shadow census of passed waves" in report.stdout
        assert "- canary: 3 of 4 devices on a1sandbox2demo-ats" in report.stdout
        assert max(len(line) for line in report.stdout.splitlines()) <= 80

    reader = ExecutionReader(sandbox.iot_client())  # both ways of reading executions
    assert reader.listed(canary_job, "SUCCEEDED") == {f"device-{i:05d}" for i in range(1, 5)}
    assert reader.listed(final.wave("wave-2").job_id, "FAILED") == {"device-00012"}
    assert reader.status(final.wave("wave-2").job_id, "device-00012") == "FAILED"
    assert reader.status(canary_job, "device-00012") is None  # not targeted by that job
    assert reader.calls == 4

    text_run = in_process(sandbox, state, "verify", "e2e")
    assert text_run.returncode == 1
    assert "device-00002" in text_run.stdout
    assert "moved back after its job succeeded" in text_run.stdout


@pytest.mark.usefixtures("aws_env")
def test_verify_of_an_unknown_campaign_exits_2(sandbox: Any, tmp_path: Path) -> None:
    ran = in_process(sandbox, tmp_path / "state.sqlite", "verify", "nope")
    assert ran.returncode == 2
    assert "nope" in ran.stderr


class Inbox:
    """A notifier that keeps what it is given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def publish(self, subject: str, message: str) -> None:
        self.sent.append((subject, message))


@pytest.mark.usefixtures("aws_env")
def test_the_runner_announces_drift_once_per_new_set_of_drifted_devices(
    sandbox: Any, tmp_path: Path
) -> None:
    iot = sandbox.iot_client()
    ats = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    inbox = Inbox()
    with ReportingFleet(sandbox, ats, silent=SILENT, failing=FAILING) as fleet:
        rec = reconciler(sandbox, tmp_path)
        text = campaign_text()
        rec.start(parse_spec(text), text, None)
        final = drive(rec, "e2e")
        assert final.status is CampaignStatus.COMPLETED
        readers = Readers.single(FleetIndexAdapter(iot), ExecutionReader(iot))
        watch = DriftWatch(rec.store, readers, SystemClock())

        def tick() -> None:
            report = run_once(rec.store, rec, inbox, drift_check=watch.check)
            assert not report.failed

        with structlog.testing.capture_logs() as logs:
            tick()  # indexing off: logged, nothing announced, the run stands
        assert [e["event"] for e in logs if "drift" in e["event"]] == ["runner-drift-unavailable"]
        iot.update_indexing_configuration(thingIndexingConfiguration=INDEXING_CONFIGURATION)
        tick()
        assert inbox.sent == []  # clean

        fleet.report("device-00003", LEGACY, LEGACY_ROOTS, final.wave("canary").job_id)
        tick()
        tick()  # the same drift again: not announced twice
        assert len(inbox.sent) == 1
        subject, body = inbox.sent[0]
        assert subject == "ca-migrate e2e: drift-found"
        assert "device-00003" in body
        assert "ca-migrate verify e2e" in body

        fleet.report("device-00007", LEGACY, LEGACY_ROOTS, final.wave("wave-1").job_id)
        tick()
        assert len(inbox.sent) == 2
        assert "2 device(s)" in inbox.sent[1][1]
    found = [e for e in rec.store.events("e2e") if e.kind == "drift-found"]
    assert [e.data["things"] for e in found] == [
        ["device-00003"],
        ["device-00003", "device-00007"],
    ]


@pytest.mark.usefixtures("aws_env")
def test_plan_shows_each_waves_census_when_fleet_indexing_is_on(
    sandbox: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state.sqlite"
    campaign = tmp_path / "campaign.yaml"
    campaign.write_text(campaign_text())
    ReportingFleet(sandbox, "unused", silent=SILENT)  # every device reports legacy but one

    def plan(*args: str) -> Any:
        ran = in_process(sandbox, state, "plan", str(campaign), *args)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        return ran.stdout

    off = json.loads(plan("-o", "json"))
    assert "fleet indexing" in off["census_note"]
    assert all(w["census"] is None for w in off["waves"])
    assert "census: fleet indexing of the ca-migration shadow is off" in plan()

    sandbox.iot_client().update_indexing_configuration(
        thingIndexingConfiguration=INDEXING_CONFIGURATION
    )
    on = json.loads(plan("-o", "json"))
    assert on["census_note"] is None
    censuses = {w["wave"]: w["census"] for w in on["waves"]}
    assert censuses["canary"] == {"total": 4, "legacy": 4, "ats": 0, "other": 0, "neverReported": 0}
    assert censuses["wave-2"] == {"total": 4, "legacy": 3, "ats": 0, "other": 0, "neverReported": 1}
    assert "- wave wave-2: 4 / 3 / 0 / 0 / 1" in plan()
