"""`ca-migrate census` counts legacy and ATS devices exactly, before and after a campaign.

The sandbox (no MQTT) runs the campaign of `campaign_kit`; the devices here
answer their jobs over iot-jobs-data and report their trust state to the
`ca-migration` shadow through the sandbox's shadow service (the code the MQTT
bridge runs), as the agent does at start-up and after each transaction.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Self

import pytest

from infra.sandbox.mqtt._shadow import ShadowStore
from orchestrator.census import INDEXING_CONFIGURATION
from orchestrator.model import CampaignStatus
from orchestrator.spec import parse_spec

from .campaign_kit import DEVICE_RETRIES, THINGS, campaign_text, drive, in_process, reconciler

LEGACY = "a1sandbox2demo.iot.us-east-1.amazonaws.com"
SILENT = frozenset({"device-00005", "device-00011"})  # never report (old firmware)
# Its migration fails, so it stays on legacy; last of its wave, so the wave's early
# failure rate never crosses the halt threshold.
FAILING = frozenset({"device-00012"})


class ReportingFleet:
    """Devices that answer their jobs and keep their ca-migration shadow up to date."""

    def __init__(self, sandbox: Any, ats_host: str) -> None:
        self._jobs = sandbox.jobs_data_client(config=DEVICE_RETRIES)
        self._shadows = ShadowStore(lambda: 0, sandbox.engine.named_shadows)
        self._ats = ats_host
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        for thing in THINGS:
            self._report(thing, LEGACY, ["sha256:c4ce74aa692acf26"], None)

    def _report(self, thing: str, endpoint: str, roots: list[str], job: str | None) -> None:
        if thing in SILENT:
            return
        state = {"endpoint": endpoint, "port": 8883, "roots": roots, "phase": "idle"}
        state["lastJob"] = {"jobId": job} if job else None
        topic = f"$aws/things/{thing}/shadow/name/ca-migration/update"
        self._shadows.handle(topic, json.dumps({"state": {"reported": state}}).encode())

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            for thing in THINGS:
                pending = self._jobs.get_pending_job_executions(thingName=thing)
                for job in pending.get("queuedJobs", []) + pending.get("inProgressJobs", []):
                    fail = thing in FAILING
                    self._jobs.update_job_execution(
                        thingName=thing,
                        jobId=job["jobId"],
                        status="FAILED" if fail else "SUCCEEDED",
                        statusDetails={"reason": "probe-failed" if fail else "committed"},
                    )
                    if not fail:
                        roots = ["amazon-root-ca-1", "amazon-root-ca-3"]
                        self._report(thing, self._ats, roots, job["jobId"])


def _census(sandbox: Any, state: Path, *args: str) -> dict[str, Any]:
    ran = in_process(sandbox, state, "census", "--region", "us-east-1", "--output", "json", *args)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return json.loads(ran.stdout)


def test_census_counts_legacy_and_ats_devices_before_and_after_a_campaign(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    state = tmp_path / "state.sqlite"
    sandbox.iot_client().update_indexing_configuration(
        thingIndexingConfiguration=INDEXING_CONFIGURATION
    )
    ats = sandbox.iot_client().describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    with ReportingFleet(sandbox, ats):
        before = _census(sandbox, state)
        assert before["byEndpoint"] == {"legacy": 10, "ats": 0, "other": 0, "neverReported": 2}
        assert before["roots"] == {"sha256:c4ce74aa692acf26": 10}
        assert sorted(before["neverReportedNames"]) == sorted(SILENT)
        rec = reconciler(sandbox, tmp_path)
        text = campaign_text()
        rec.start(parse_spec(text), text, None)
        final = drive(rec, "e2e")
        assert final.status is CampaignStatus.COMPLETED
    after = _census(sandbox, state)
    assert after["byEndpoint"] == {"legacy": 1, "ats": 9, "other": 0, "neverReported": 2}
    assert after["endpoints"] == {ats: 9, LEGACY: 1}
    assert after["roots"]["amazon-root-ca-1"] == 9
    assert after["thingGroups"]["fleet-b"] == {
        "total": 4,
        "legacy": 1,
        "ats": 2,
        "other": 0,
        "neverReported": 1,
    }
    waves = _census(sandbox, state, "--campaign", "e2e")["waves"]
    assert waves["canary"] == {"total": 4, "legacy": 0, "ats": 4, "other": 0, "neverReported": 0}
    assert waves["wave-2"] == after["thingGroups"]["fleet-b"]
    canary = _census(sandbox, state, "--group", "canary")
    assert canary["total"] == 4
    assert canary["byEndpoint"] == {"legacy": 0, "ats": 4, "other": 0, "neverReported": 0}
    assert after["calls"] == before["calls"] + 1  # one more distinct endpoint, same fleet
