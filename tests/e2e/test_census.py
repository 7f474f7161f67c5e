"""`ca-migrate census` counts legacy and ATS devices exactly, before and after a campaign.

The sandbox (no MQTT) runs the campaign of `campaign_kit` on the reporting
devices of `shadow_kit`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.census import INDEXING_CONFIGURATION
from orchestrator.model import CampaignStatus
from orchestrator.spec import parse_spec

from .campaign_kit import campaign_text, drive, in_process, reconciler
from .shadow_kit import LEGACY, ReportingFleet

SILENT = frozenset({"device-00005", "device-00011"})  # never report (old firmware)
# Its migration fails, so it stays on legacy; it fails last of its wave (shadow_kit), so
# the wave's early failure rate never crosses the halt threshold.
FAILING = frozenset({"device-00012"})


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
    with ReportingFleet(sandbox, ats, silent=SILENT, failing=FAILING):
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
    text = in_process(sandbox, state, "census", "--region", "us-east-1", "--campaign", "e2e")
    assert text.returncode == 0, text.stderr
    assert "waves (total / legacy / ATS / other / never reported):" in text.stdout
    assert "  canary  4 / 0 / 4 / 0 / 0\n" in text.stdout
    canary = _census(sandbox, state, "--group", "canary")
    assert canary["total"] == 4
    assert canary["byEndpoint"] == {"legacy": 0, "ats": 4, "other": 0, "neverReported": 0}
    assert after["calls"] == before["calls"] + 1  # one more distinct endpoint, same fleet
