"""A campaign whose canary is a stratified sample and whose next wave is a query, on the sandbox.

The fleet's twelve devices carry a hardware model (six m1, four m2, two m3); fleet indexing
is on. The canary samples four devices by model (two m1, one m2, one m3: every model is in
the canary) into a static group the campaign makes; the next wave targets a dynamic group of
`attributes.model:*` less the canary. Real boto3 over HTTP, devices answering over
iot-jobs-data.
"""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

from orchestrator.model import CampaignStatus
from orchestrator.spec import parse_spec
from orchestrator.store.sqlite import SqliteStateStore

from .campaign_kit import THINGS, Fleet, cli, drive, in_process, jobs_in_sandbox, reconciler

pytestmark = pytest.mark.e2e

MODELS = dict(zip(THINGS, ["m1"] * 6 + ["m2"] * 4 + ["m3"] * 2, strict=True))
CAMPAIGN = """\
name: qw
region: us-east-1
endpoint: auto
trust: {add: [amazon-root-ca-1]}
halt: {max_failure_rate: 0.5, min_executed: 2}
waves:
  - name: canary
    sample: {count: 4, stratify_by: attributes.model}
    gate: {min_success_rate: 0.5, min_completed_fraction: 1.0, confidence: 0.6}
  - name: rest
    query: "attributes.model:*"
    gate: {min_success_rate: 0.5, min_completed_fraction: 1.0, confidence: 0.6}
"""
SAMPLE_GROUP = "ca-migrate-qw-canary-sample"
QUERY_GROUP = "ca-migrate-qw-rest-query"


@pytest.fixture
def modelled(sandbox):
    iot = sandbox.iot_client()
    for thing, model in MODELS.items():
        iot.update_thing(thingName=thing, attributePayload={"attributes": {"model": model}})
    iot.update_indexing_configuration(thingIndexingConfiguration={"thingIndexingMode": "REGISTRY"})
    return sandbox


def test_a_stratified_canary_and_a_query_wave_run_to_completed(modelled, tmp_path) -> None:
    rec = reconciler(modelled, tmp_path)
    rec.start(parse_spec(CAMPAIGN), CAMPAIGN, None)
    with Fleet(modelled):
        state = drive(rec, "qw")
    assert state.status is CampaignStatus.COMPLETED, state.reason
    iot = modelled.iot_client()
    canary = set(iot.list_things_in_thing_group(thingGroupName=SAMPLE_GROUP)["things"])
    assert Counter(MODELS[t] for t in canary) == {"m1": 2, "m2": 1, "m3": 1}
    rest = iot.describe_thing_group(thingGroupName=QUERY_GROUP)
    assert rest["queryString"] == (f'(attributes.model:*) AND NOT thingGroupNames:"{SAMPLE_GROUP}"')
    targeted = set(iot.list_things_in_thing_group(thingGroupName=QUERY_GROUP)["things"])
    assert canary.isdisjoint(targeted)
    assert canary | targeted == set(THINGS)
    assert state.wave("canary").counts.succeeded == 4
    assert state.wave("rest").counts.succeeded == 8
    for wave in state.waves:
        job = iot.describe_job(jobId=wave.job_id)["job"]
        assert job["targetSelection"] == "SNAPSHOT"
    ready = [e for e in rec.store.events("qw") if e.kind == "wave-targets-ready"]
    assert [e.wave for e in ready] == ["canary", "rest"]
    assert ready[0].data["sample"]["strata"] == {
        "m1": {"size": 6, "picked": 2},
        "m2": {"size": 4, "picked": 1},
        "m3": {"size": 2, "picked": 1},
    }
    groups = [g["groupName"] for g in iot.list_thing_groups()["thingGroups"]]
    assert groups.count(SAMPLE_GROUP) == 1
    assert groups.count(QUERY_GROUP) == 1
    # a rollback's restore jobs target the same groups: the sample's devices, the query's
    rolled = rec.rollback("qw").state
    for wave, group in (("canary", SAMPLE_GROUP), ("rest", QUERY_GROUP)):
        restore = rolled.wave(wave).restore_job_id
        assert restore is not None
        targets = iot.describe_job(jobId=restore)["job"]["targets"]
        assert targets == [f"arn:aws:iot:us-east-1:123456789012:thinggroup/{group}"]


def test_plan_shows_the_strata_and_the_query_matches(modelled, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    path = tmp_path / "qw.yaml"
    path.write_text(CAMPAIGN)
    result = in_process(modelled, tmp_path / "state.sqlite", "plan", "-o", "json", str(path))
    assert result.returncode == 0, result.stderr
    canary, rest = json.loads(result.stdout)["waves"]
    assert canary["sample"]["strata"]["m3"] == {"size": 2, "picked": 1}
    assert canary["distinct_devices"] == 4
    assert rest["query"]["matches"] == 8
    assert rest["distinct_devices"] == 8
    text = in_process(modelled, tmp_path / "state.sqlite", "plan", str(path))
    assert "m1 2 of 6, m2 1 of 4, m3 1 of 2" in text.stdout
    assert "query matches 8 devices" in text.stdout
    # nothing was made by plan
    groups = [g["groupName"] for g in modelled.iot_client().list_thing_groups()["thingGroups"]]
    assert SAMPLE_GROUP not in groups


def test_plan_without_fleet_indexing_says_how_to_turn_it_on(sandbox, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    path = tmp_path / "qw.yaml"
    path.write_text(CAMPAIGN)
    result = in_process(sandbox, tmp_path / "state.sqlite", "plan", str(path))
    assert result.returncode == 2
    assert "update-indexing-configuration" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigkill_after_every_write_makes_each_group_once_and_completes(
    modelled, tmp_path, monkeypatch
) -> None:
    """The CLI as a process, SIGKILLed after each write (store commit or CreateJob): the kill
    after `wave-targets-ready` is recorded, before the wave's CreateJob, makes the next run
    prepare the groups again; each is made once, the sample is drawn the same, and the
    campaign completes with one job per wave."""
    state = tmp_path / "state.sqlite"
    path = tmp_path / "qw.yaml"
    path.write_text(CAMPAIGN)
    with Fleet(modelled):
        assert cli(modelled, state, "start", str(path), kill_after=1).returncode == -9
        store = SqliteStateStore(state)
        for _ in range(120):
            result = cli(modelled, state, "run", "qw", kill_after=1)
            assert result.returncode in (0, -9), result.stderr
            if store.load("qw").state.status is not CampaignStatus.RUNNING:
                break
            if result.returncode == 0:
                threading.Event().wait(0.3)
    final = store.load("qw").state
    assert final.status is CampaignStatus.COMPLETED, [
        (w.name, w.phase, w.counts) for w in final.waves
    ]
    assert jobs_in_sandbox(modelled) == sorted(w.job_id for w in final.waves)
    iot = modelled.iot_client()
    groups = [g["groupName"] for g in iot.list_thing_groups()["thingGroups"]]
    assert sorted(g for g in groups if g.startswith("ca-migrate-")) == [SAMPLE_GROUP, QUERY_GROUP]
    canary = iot.list_things_in_thing_group(thingGroupName=SAMPLE_GROUP)["things"]
    assert Counter(MODELS[t] for t in canary) == {"m1": 2, "m2": 1, "m3": 1}
    assert final.wave("canary").counts.succeeded + final.wave("rest").counts.succeeded == 12
    ready = [e.wave for e in store.events("qw") if e.kind == "wave-targets-ready"]
    assert ready == ["canary", "rest"]  # recorded once each, however often prepared
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    report = in_process(modelled, state, "report", "qw", "--format", "json")
    waves = json.loads(report.stdout)["settings"]["waves"]
    assert [w["thing_groups"] for w in waves] == [[SAMPLE_GROUP], [QUERY_GROUP]]
