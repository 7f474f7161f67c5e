"""Every demo scenario end to end: sandbox over HTTP with the real boto3 adapter, simulated
devices running the real transaction (files, journal), one manual clock. Assertions read the
sandbox's job executions and the devices' files, never the demo's own summary alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from device_handler.transaction import Journal, Phase
from device_handler.trust import EndpointConfig, TrustBundle
from infra.sandbox.fleet import Profile
from orchestrator.cli import app
from orchestrator.demo.runner import CampaignRun, RunSettings, run_campaign
from orchestrator.demo.scenarios import CAMPAIGN_FILE, demo_fleet, group_sizes, scenario

pytestmark = pytest.mark.e2e

DEVICES = 60
ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
LEGACY = "a1sandbox2demo.iot.us-east-1.amazonaws.com"


def _device(run: CampaignRun, thing: str) -> dict[str, Any]:
    fleet: Any = run.fleet
    paths = fleet.paths(thing)
    booted = paths.endpoint_file.exists()
    journal = Journal.from_bytes(paths.journal.read_bytes()) if paths.journal.exists() else None
    return {
        "profile": fleet.profile(thing),
        "booted": booted,
        "host": EndpointConfig.parse(paths.endpoint_file.read_bytes()).host if booted else None,
        "roots": len(TrustBundle.parse(paths.trust_bundle.read_bytes()).roots) if booted else 1,
        "phase": journal.phase if journal else Phase.IDLE,
        "previous": paths.previous.exists(),
        "staged": paths.staged_bundle.exists() or paths.staged_endpoint.exists(),
    }


def run_scenario(name: str, **overrides: Any) -> tuple[Any, dict[str, Any]]:
    chosen = scenario(name)
    seen: dict[str, Any] = {}

    def inspect(run: CampaignRun) -> None:
        engine = run.sandbox.engine
        seen["history"] = engine.execution_history()
        seen["job_ids"] = sorted({h["jobId"] for h in seen["history"]})
        seen["devices"] = {t: _device(run, t) for t in run.fleet.things()}  # type: ignore[attr-defined]

    settings = RunSettings(
        throttle_rate=chosen.throttle_rate, rollback_on_halt=chosen.rollback, **overrides
    )
    result = run_campaign(
        CAMPAIGN_FILE.read_text(),
        demo_fleet(chosen, DEVICES),
        settings,
        source=str(CAMPAIGN_FILE),
        inspect=inspect,
    )
    return result, seen


def executions(seen: dict[str, Any], job_prefix: str) -> dict[str, dict[str, Any]]:
    return {h["thingName"]: h for h in seen["history"] if h["jobId"].startswith(job_prefix)}


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "two-workers"])
def test_happy_every_wave_promotes_and_every_device_acknowledges_over_ats(workers: int) -> None:
    result, seen = run_scenario("happy", workers=workers)
    assert result.status == "COMPLETED"
    assert [w["phase"] for w in result.waves] == ["PASSED"] * 5
    migrate = [h for h in seen["history"] if "-m" in h["jobId"]]
    assert len(migrate) == DEVICES
    for h in migrate:
        assert h["status"] == "SUCCEEDED", h
        final = h["history"][-1]
        assert final["status"] == "SUCCEEDED"
        assert final["via"] == "ats"  # acknowledged over the new connection
        assert h["statusDetails"]["step"] == "done"
    for thing, device in seen["devices"].items():
        assert device["host"] == ATS, thing
        assert device["roots"] == 3  # legacy kept, both ATS stand-ins added
        assert device["phase"] is Phase.IDLE
        assert device["previous"]
        assert not device["staged"]
    cut = [t for t, d in seen["devices"].items() if d["profile"] is Profile.POWER_CUT]
    assert cut
    assert result.endpoints == {"ats": DEVICES}
    assert result.exposure == DEVICES
    for wave in result.waves:  # the report's counts are where the executions ended
        assert wave["gate_counts"]["succeeded"] == wave["executions"]["succeeded"], wave


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "two-workers"])
def test_bad_canary_halts_before_wave_1_and_failed_devices_roll_back_themselves(
    workers: int,
) -> None:
    result, seen = run_scenario("bad-canary", workers=workers)
    assert result.status == "HALTED"
    phases = {w["name"]: w["phase"] for w in result.waves}
    assert phases["canary"] == "HALTED"
    assert {phases[w] for w in ("wave-1", "wave-2", "wave-3", "wave-4")} == {"PENDING"}
    canary = executions(seen, "demo-canary-m")
    assert seen["job_ids"] == sorted({h["jobId"] for h in canary.values()})  # one job only
    failing = {t for t, d in seen["devices"].items() if d["profile"] is Profile.PROBE_FAILS}
    assert failing
    for thing in failing:
        assert canary[thing]["status"] == "FAILED"
        assert canary[thing]["statusDetails"]["reason"] == "connect"
        assert seen["devices"][thing]["host"] == LEGACY
    for thing, h in canary.items():
        if thing not in failing and h["status"] == "SUCCEEDED":
            assert seen["devices"][thing]["host"] == ATS
    outside = {t for t, d in seen["devices"].items() if t not in canary}
    assert all(not seen["devices"][t]["booted"] for t in outside)  # never touched
    assert result.exposure == len(canary)
    assert result.exposure < DEVICES // 5


def test_offline_stragglers_are_left_out_at_the_deadline_and_the_campaign_completes() -> None:
    result, seen = run_scenario("offline")
    assert result.status == "COMPLETED"
    offline = {t for t, d in seen["devices"].items() if d["profile"] is Profile.OFFLINE}
    late = {t for t, d in seen["devices"].items() if d["profile"] is Profile.LATE}
    assert offline
    assert late
    never = sum(w["never_started"] or 0 for w in result.waves)
    assert never == len(offline)
    for h in seen["history"]:
        if h["thingName"] in offline:
            assert h["status"] == "QUEUED"
            assert seen["devices"][h["thingName"]]["booted"] is False
        else:
            assert h["status"] == "SUCCEEDED"
    for thing in late:
        assert seen["devices"][thing]["host"] == ATS
    assert result.endpoints == {"ats": DEVICES - len(offline), "legacy": len(offline)}


def test_throttled_control_plane_reaches_the_happy_outcome() -> None:
    result, seen = run_scenario("throttled", interval_seconds=60.0)
    assert result.status == "COMPLETED"
    assert result.http_requests > result.api_calls  # throttled calls were retried
    assert all(h["status"] == "SUCCEEDED" for h in seen["history"])
    assert all(d["host"] == ATS for d in seen["devices"].values())


def test_rollback_returns_every_device_to_the_legacy_endpoint() -> None:
    result, seen = run_scenario("rollback")
    assert result.status == "ROLLED_BACK"
    migrated = {
        t for t, h in executions(seen, "demo-canary-m").items() if h["status"] == "SUCCEEDED"
    }
    restored = executions(seen, "demo-canary-r")
    assert migrated
    for thing in migrated:
        assert restored[thing]["status"] == "SUCCEEDED"
        assert restored[thing]["history"][-1]["via"] == "legacy"  # reported after going back
    for thing, device in seen["devices"].items():
        assert device["host"] in (None, LEGACY), thing
        assert device["roots"] == 1
        assert device["phase"] is Phase.IDLE


@pytest.mark.parametrize("workers", ["0", "2"], ids=["one-process", "two-workers"])
def test_demo_cli_prints_one_json_line_and_writes_the_report(tmp_path: Path, workers: str) -> None:
    report = tmp_path / "report.html"
    env = dict(os.environ)
    env.pop("AWS_PROFILE", None)
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--log-format", "json", "demo",
         "--devices", "50", "--time-scale", "0", "--output", "json", "--report", str(report),
         "--workers", workers, "--verbose"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, lines[:5]  # every process logs to stderr, workers included
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "job_finished" for e in events)  # --verbose reached the devices
    body = json.loads(lines[-1])
    assert body["fleet_workers"] == int(workers)
    assert body["scenario"] == "happy"
    assert body["status"] == "COMPLETED"
    assert body["as_expected"] is True
    assert body["devices"] == 50
    assert body["endpoints"] == {"ats": 50}
    assert [w["executions"]["succeeded"] for w in body["waves"]] == list(group_sizes(50).values())
    assert body["api_calls"] > 0
    assert body["wall_seconds"] > 0
    page = report.read_text()
    assert "<svg" in page
    assert 'aria-label="timeline of wave canary"' in page
    assert "50 of 50 targeted devices on the ATS endpoint" in page
    # the run's temporary directory is gone: the report names no file in it
    assert "ca-migrate-run-" not in page
    assert "generated for this run and deleted with it" in page


def test_rehearse_reports_when_each_gate_promotes_or_halts(tmp_path: Path) -> None:
    campaign = tmp_path / "mine.yaml"
    campaign.write_text(
        "name: mine\nregion: us-east-1\n"
        "trust: {add: [amazon-root-ca-3]}\n"
        "halt: {max_failure_rate: 0.2, min_executed: 4}\n"
        "waves:\n"
        "  - name: first\n    thing_groups: [pilot]\n"
        "    gate: {min_success_rate: 0.7, min_completed: 4, confidence: 0.6}\n"
        "  - name: second\n    thing_groups: [main]\n"
        "    gate: {min_success_rate: 0.7, confidence: 0.6}\n"
    )
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "groups:\n  - {name: pilot, size: 10, profiles: {tls_no_ecc: 0.5}}\n"
        "  - {name: main, size: 20}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--log-format", "json", "rehearse",
         str(campaign), "--fleet", str(fleet), "--output", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    body = json.loads(result.stdout.strip().splitlines()[-1])
    waves = {w["name"]: w for w in body["waves"]}
    assert body["status"] == "HALTED"  # an ECC-only root strands the RSA-only devices
    assert waves["first"]["phase"] == "HALTED"
    assert waves["first"]["finished_after_minutes"] is not None
    assert waves["second"]["phase"] == "PENDING"
    pilot = waves["first"]["executions"]
    acted = pilot["succeeded"] + pilot["failed"] + pilot["in_progress"]
    assert body["exposure"] == acted  # AWS's abort canceled the rest before they started
    assert acted + pilot["canceled"] == 10
    bad = CliRunner().invoke(
        app, ["rehearse", str(campaign), "--fleet", str(tmp_path / "missing.yaml")]
    )
    assert bad.exit_code == 2
    assert "cannot read the fleet file" in bad.output


WAVES = "waves: [{name: w, thing_groups: [g], gate: {min_success_rate: 0.5}}]"
TRUST = "trust: {add: [amazon-root-ca-1]}"


@pytest.mark.parametrize(
    "text",
    [
        (
            "name: a\nregion: us-east-1\nendpoint: x-ats.iot.us-east-1.amazonaws.com\n"
            f"catalog: my.json\n{TRUST}\n{WAVES}\n"
        ),
        f"name: a  # mine\nregion: us-east-1\n{TRUST}\n{WAVES}",
        f"{{name: a, region: us-east-1, {TRUST}, {WAVES}}}",
    ],
)
def test_a_rehearsed_campaign_takes_its_roots_and_endpoint_from_the_sandbox(text, tmp_path) -> None:
    from orchestrator.demo.runner import prepare_campaign_text
    from orchestrator.spec import parse_spec

    catalog = tmp_path / "pki" / "ats" / "catalog.json"
    spec = parse_spec(prepare_campaign_text(text, "c.yaml", catalog=catalog))
    assert spec.catalog == str(catalog)
    assert spec.endpoint == "auto"
    assert spec.name == "a"
    assert spec.waves[0].thing_groups == ("g",)
