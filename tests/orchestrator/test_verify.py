"""`orchestrator.verify`: which waves are checked, what the index's documents say, what drift is."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.model import (
    CampaignSpec,
    CampaignState,
    CampaignStatus,
    Counts,
    Gate,
    TrustSpec,
    WavePhase,
    WaveSpec,
    WaveState,
)
from orchestrator.verify import (
    LIST_PAGE,
    DeviceReport,
    DriftKind,
    Verification,
    WaveCheck,
    WaveResult,
    as_json,
    device_report,
    find_drift,
    lookup_plan,
    off_target_query,
    render_text,
    target_endpoint,
    wave_checks,
)

REGION = "us-east-1"
LEGACY = "a1sandbox2demo.iot.us-east-1.amazonaws.com"
ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
OTHER_ATS = "b2other-ats.iot.us-east-1.amazonaws.com"
JOB = "c-w1-mabc"
CHECK = WaveCheck(
    wave="w1", job_id=JOB, thing_groups=("g1",), endpoint=ATS, succeeded=3, region=REGION
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _document(endpoint: str = ATS) -> str:
    return json.dumps({"operation": "migrate", "endpoint": {"host": endpoint, "port": 8883}})


@pytest.mark.parametrize(
    ("document", "host"),
    [
        (_document(), ATS),
        ("", None),
        (None, None),
        ("not json", None),
        ("[1, 2]", None),
        ('{"endpoint": "a-host"}', None),
        ('{"endpoint": {"host": 7}}', None),
        ('{"endpoint": {"host": ""}}', None),
    ],
)
def test_the_target_endpoint_comes_from_the_stored_document(
    document: str | None, host: str | None
) -> None:
    assert target_endpoint(document) == host


def _campaign(*waves: WaveState) -> tuple[CampaignSpec, CampaignState]:
    spec = CampaignSpec(
        name="c",
        region=REGION,
        endpoint="auto",
        trust=TrustSpec(add=("amazon-root-ca-1",)),
        waves=tuple(
            WaveSpec(name=w.name, thing_groups=(f"g-{w.name}",), gate=Gate(min_success_rate=0.9))
            for w in waves
        ),
    )
    state = CampaignState(
        name="c",
        status=CampaignStatus.RUNNING,
        waves=waves,
        created_at=NOW,
        updated_at=NOW,
        documents={w.job_id: _document() for w in waves},
    )
    return spec, state


def _wave(name: str, phase: WavePhase, succeeded: int, **changes: Any) -> WaveState:
    wave = WaveState(
        name=name,
        job_id=f"c-{name}-m1",
        phase=phase,
        launched_at=None if phase is WavePhase.PENDING else NOW,
        counts=Counts(succeeded=succeeded),
    )
    return replace(wave, **changes)


def test_every_wave_with_successes_is_checked_and_the_others_say_why_not() -> None:
    spec, state = _campaign(
        _wave("passed", WavePhase.PASSED, 4),
        _wave("running", WavePhase.RUNNING, 2),
        _wave("fresh", WavePhase.RUNNING, 0),
        _wave("back", WavePhase.CANCELED, 4, restore_job_id="c-back-r1"),
        _wave("pending", WavePhase.PENDING, 0),
    )
    checks, skipped = wave_checks(spec, state)
    assert [(c.wave, c.job_id, c.thing_groups, c.endpoint, c.succeeded) for c in checks] == [
        ("passed", "c-passed-m1", ("g-passed",), ATS, 4),
        ("running", "c-running-m1", ("g-running",), ATS, 2),
    ]
    assert skipped == {
        "fresh": "no device has succeeded yet",
        "back": "rolled back: its devices were moved back on purpose",
        "pending": "no device has succeeded yet",
    }
    passed, skipped_passed = wave_checks(spec, state, passed_only=True)
    assert [c.wave for c in passed] == ["passed"]
    assert skipped_passed["running"] == "not passed (running)"


def test_a_wave_whose_document_is_not_stored_is_not_checked() -> None:
    spec, state = _campaign(_wave("w", WavePhase.PASSED, 4))
    state = replace(state, documents={})
    checks, skipped = wave_checks(spec, state)
    assert checks == []
    assert skipped == {"w": "its job document is not stored, so its endpoint is unknown"}


def test_the_off_target_query_excludes_the_target_and_devices_that_never_reported() -> None:
    assert off_target_query(CHECK) == (
        '(thingGroupNames:"g1") AND shadow.name.ca-migration.reported.endpoint:* '
        f'AND NOT shadow.name.ca-migration.reported.endpoint:"{ATS}"'
    )


def _shadow_doc(thing: str, reported: Any) -> dict[str, Any]:
    shadow = {"name": {"ca-migration": {"reported": reported, "version": 3}}}
    return {"thingName": thing, "shadow": json.dumps(shadow)}


@pytest.mark.parametrize(
    ("document", "report"),
    [
        (
            _shadow_doc("d1", {"endpoint": LEGACY, "lastJob": {"jobId": JOB}}),
            DeviceReport("d1", LEGACY, JOB),
        ),
        (_shadow_doc("d1", {"endpoint": LEGACY, "lastJob": None}), DeviceReport("d1", LEGACY)),
        (_shadow_doc("d1", {"endpoint": 5, "lastJob": "x"}), DeviceReport("d1", None)),
        (_shadow_doc("d1", "not an object"), DeviceReport("d1", None)),
        ({"thingName": "d1", "shadow": "{not json"}, DeviceReport("d1", None)),
        ({"thingName": "d1", "shadow": '{"name": []}'}, DeviceReport("d1", None)),
        ({"thingName": "d1"}, DeviceReport("d1", None)),
        ({"thingName": "d1", "shadow": "[1, 2]"}, DeviceReport("d1", None)),
        (
            _shadow_doc("d1", {"endpoint": LEGACY, "lastJob": {"jobId": 7}}),
            DeviceReport("d1", LEGACY),
        ),
        (_shadow_doc("d1", {"endpoint": "", "lastJob": {"jobId": ""}}), DeviceReport("d1", None)),
        ({"shadow": "{}"}, None),
        ({"thingName": ""}, None),
    ],
)
def test_device_reports_are_read_from_index_documents_and_hostile_ones_read_as_nothing(
    document: dict[str, Any], report: DeviceReport | None
) -> None:
    assert device_report(document) == report


@pytest.mark.parametrize(
    ("report", "status", "kind"),
    [
        (DeviceReport("d", LEGACY, JOB), "SUCCEEDED", DriftKind.MOVED_BACK),
        (DeviceReport("d", LEGACY, "another-job"), "SUCCEEDED", DriftKind.NOT_MOVED),
        (DeviceReport("d", LEGACY, None), "SUCCEEDED", DriftKind.NOT_MOVED),
        (DeviceReport("d", OTHER_ATS, JOB), "SUCCEEDED", DriftKind.MOVED_BACK),
        (DeviceReport("d", LEGACY, JOB), "FAILED", None),
        (DeviceReport("d", LEGACY, None), "REJECTED", None),
        (DeviceReport("d", LEGACY, None), "IN_PROGRESS", None),
        (DeviceReport("d", LEGACY, None), None, None),  # no execution: joined the group later
        (DeviceReport("d", ATS, JOB), "SUCCEEDED", None),  # on target
        (DeviceReport("d", None, None), "SUCCEEDED", None),  # never reported
    ],
)
def test_drift_is_a_succeeded_execution_whose_shadow_is_off_target(
    report: DeviceReport, status: str | None, kind: DriftKind | None
) -> None:
    found = find_drift(CHECK, [report], {"d": status} if status else {})
    assert [d.kind for d in found] == ([kind] if kind else [])


def test_drift_is_sorted_by_thing_and_names_the_endpoint_kind() -> None:
    reports = [DeviceReport("d2", OTHER_ATS, JOB), DeviceReport("d1", LEGACY, None)]
    found = find_drift(CHECK, reports, {"d1": "SUCCEEDED", "d2": "SUCCEEDED"})
    assert [(d.thing, d.endpoint_kind, d.wave, d.job_id) for d in found] == [
        ("d1", "legacy", "w1", JOB),
        ("d2", "ats", "w1", JOB),
    ]


@pytest.mark.parametrize(
    ("candidates", "succeeded", "others", "plan"),
    [
        (1, 1, {}, "describe"),  # one read against one page: equal, read
        (2, 1, {}, "list-succeeded"),
        (2, LIST_PAGE, {}, "list-succeeded"),
        (1, LIST_PAGE, {}, "describe"),
        (2, LIST_PAGE + 1, {}, "describe"),  # two pages against two reads
        (3, LIST_PAGE + 1, {}, "list-succeeded"),
        # 100k devices, 2000 failed and off target, 5 moved back: 8 pages + 5 reads
        (2005, 98_000, {"FAILED": 2000}, "list-others"),
        # the same with 500 moved back: listing the 392 pages of successes is cheaper
        (2500, 98_000, {"FAILED": 2000}, "list-succeeded"),
        (3, 98_000, {"FAILED": 2000}, "describe"),
        (3, 2 * LIST_PAGE, {"FAILED": 3}, "list-others"),  # no suspect: one page, no read
        (300, 98_000, {"FAILED": 200, "TIMED_OUT": 90, "QUEUED": 10}, "list-others"),
    ],
)
def test_executions_are_read_the_cheapest_way(
    candidates: int, succeeded: int, others: dict[str, int], plan: str
) -> None:
    check = replace(CHECK, succeeded=succeeded, others=others)
    assert lookup_plan(candidates, check) == plan


def test_the_other_statuses_come_from_the_waves_counts() -> None:
    counts = Counts(succeeded=5, failed=2, timed_out=1, queued=3, removed=1)
    spec, state = _campaign(_wave("w", WavePhase.PASSED, 5, counts=counts))
    (check,), _ = wave_checks(spec, state)
    assert check.others == {"QUEUED": 3, "FAILED": 2, "TIMED_OUT": 1, "REMOVED": 1}
    every = Counts(1, 2, 3, 4, 5, 6, 7, 8)
    spec, state = _campaign(_wave("w", WavePhase.PASSED, 3, counts=every))
    (check,), _ = wave_checks(spec, state)
    assert check.others == {  # ListJobExecutionsForJob's status names, each with its count
        "QUEUED": 1,
        "IN_PROGRESS": 2,
        "FAILED": 4,
        "REJECTED": 5,
        "TIMED_OUT": 6,
        "CANCELED": 7,
        "REMOVED": 8,
    }


def _verification() -> Verification:
    drift = find_drift(CHECK, [DeviceReport("d9", LEGACY, JOB)], {"d9": "SUCCEEDED"})
    wave = WaveResult("w1", JOB, ATS, devices=5, reported=4, on_target=3, succeeded=4, drift=drift)
    skipped = {"w2": "no device has succeeded yet"}
    return Verification("c", REGION, (wave,), skipped=skipped, calls=7)


def test_the_json_lists_drift_and_each_waves_figures() -> None:
    data = as_json(_verification())
    assert data["drift"] == [
        {
            "wave": "w1",
            "thing": "d9",
            "kind": "moved-back",
            "endpoint": LEGACY,
            "endpointKind": "legacy",
            "jobId": JOB,
        }
    ]
    assert data["waves"]["w1"]["unverifiable"] == 1
    assert data["waves"]["w1"]["onTarget"] == 3
    assert data["skipped"] == {"w2": "no device has succeeded yet"}
    assert data["calls"] == 7


def test_the_text_names_drifted_devices_or_says_there_is_none() -> None:
    text = render_text(_verification())
    assert "d9  w1  moved back after its job succeeded" in text
    assert "w2: not checked, no device has succeeded yet" in text
    assert "3 of 5 devices" in text
    clean = render_text(
        replace(_verification(), waves=(replace(_verification().waves[0], drift=()),))
    )
    assert "no drift" in clean
    nothing = render_text(Verification("c", REGION, ()))
    assert "nothing to verify yet" in nothing
    assert "no drift" not in nothing


def test_each_wave_is_checked_in_its_own_region() -> None:
    spec, state = _campaign(_wave("here", WavePhase.PASSED, 2), _wave("there", WavePhase.PASSED, 2))
    there = replace(spec.waves[1], region="eu-west-1")
    spec = replace(spec, waves=(spec.waves[0], there))
    checks, _ = wave_checks(spec, state)
    assert [(c.wave, c.region) for c in checks] == [("here", REGION), ("there", "eu-west-1")]
    check = replace(checks[1], endpoint="x-ats.iot.eu-west-1.amazonaws.com")
    (drift,) = find_drift(check, [DeviceReport("d", OTHER_ATS, None)], {"d": "SUCCEEDED"})
    assert drift.endpoint_kind == "other"  # an ATS host, but of another region


_STATUSES = st.sampled_from(
    [None, "SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "QUEUED", "IN_PROGRESS", "CANCELED"]
)
_ENDPOINTS = st.sampled_from([None, ATS, LEGACY, OTHER_ATS, "mqtt.example.com"])


@settings(deadline=None)  # the first example loads the region table; the machine is shared
@given(
    devices=st.dictionaries(
        st.text("abcdef0123", min_size=1, max_size=6),
        st.tuples(_ENDPOINTS, st.sampled_from([None, JOB, "other-job"]), _STATUSES),
        max_size=30,
    )
)
def test_drift_is_exactly_the_succeeded_devices_reporting_another_endpoint(
    devices: dict[str, tuple[str | None, str | None, str | None]],
) -> None:
    reports = [DeviceReport(t, endpoint, last) for t, (endpoint, last, _) in devices.items()]
    statuses = {t: status for t, (_, _, status) in devices.items()}
    found = find_drift(CHECK, reports, statuses)
    expected = sorted(
        t
        for t, (endpoint, _, status) in devices.items()
        if status == "SUCCEEDED" and endpoint is not None and endpoint != ATS
    )
    assert [d.thing for d in found] == expected
    for drift in found:
        last = devices[drift.thing][1]
        assert (drift.kind is DriftKind.MOVED_BACK) == (last == JOB)


@settings(deadline=None)
@given(
    candidates=st.integers(0, 5000),
    succeeded=st.integers(0, 100_000),
    others=st.dictionaries(
        st.sampled_from(["FAILED", "QUEUED", "TIMED_OUT"]), st.integers(1, 9000)
    ),
)
def test_the_plan_taken_never_costs_more_than_reading_each_device(
    candidates: int, succeeded: int, others: dict[str, int]
) -> None:
    check = replace(CHECK, succeeded=succeeded, others=others)
    plan = lookup_plan(candidates, check)
    pages = -(-succeeded // LIST_PAGE)
    other_pages = sum(-(-n // LIST_PAGE) for n in others.values())
    cost = {
        "describe": candidates,
        "list-succeeded": pages,
        "list-others": other_pages + max(0, candidates - sum(others.values())),
    }
    assert cost[plan] <= candidates
    assert cost[plan] == min(cost.values())


def test_a_query_or_sample_wave_is_checked_over_the_groups_the_campaign_made() -> None:
    spec, state = _campaign(_wave("q", WavePhase.PASSED, 2))
    query_wave = replace(spec.waves[0], thing_groups=(), query="attributes.model:m1")
    spec = replace(spec, waves=(query_wave,))
    (check,), _ = wave_checks(spec, state)
    assert check.thing_groups == ("ca-migrate-c-q-query",)
    assert off_target_query(check).startswith('(thingGroupNames:"ca-migrate-c-q-query") AND ')
    no_groups = replace(spec, waves=(replace(query_wave, query=None),))
    checks, skipped = wave_checks(no_groups, state)
    assert checks == []
    assert skipped == {"q": "it targets no thing group"}  # never the whole fleet
