"""`survey_drift` over the real adapters: each way of reading executions finds the same drift.

A 40-device wave ran its job on the sandbox's engine: ten FAILED (their shadow
still legacy), two SUCCEEDED and then moved back to legacy (the drift), the
rest SUCCEEDED on ATS, five of them never reporting; a thing added to the group
after the job reports legacy but has no execution (not drift). The three plans
of `orchestrator.verify.lookup_plan` are forced in turn: the drift must be the
same, and the calls what each plan promises.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from infra.sandbox.runtime import Sandbox
from job_documents import ManualClock
from orchestrator.aws.executions import ExecutionReader
from orchestrator.aws.indexing import FleetIndexAdapter
from orchestrator.census import INDEXING_CONFIGURATION
from orchestrator.drift_survey import Readers, passed_wave_census, survey_drift
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

LEGACY = "a1sandbox2demo.iot.us-east-1.amazonaws.com"
ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
JOB = "c-wave-m1"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
FAILED = range(10)
DRIFTED = (10, 11)
SILENT = range(35, 40)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(mqtt=False, clock=ManualClock(NOW)) as running:
        things = running.provision(40, [("wave", None)]).things
        engine = running.engine
        group_arn = running.iot_client().describe_thing_group(thingGroupName="wave")
        engine.create_job(
            {
                "jobId": JOB,
                "targets": [group_arn["thingGroupArn"]],
                "document": json.dumps({"endpoint": {"host": ATS, "port": 8883}}),
            }
        )
        table = engine.named_shadows
        for index, thing in enumerate(things):
            execution = engine.start_next(
                thing, status_details=None, step_timeout_minutes=None, via="ats"
            )
            assert execution is not None
            engine.update_execution(
                thing,
                JOB,
                status="FAILED" if index in FAILED else "SUCCEEDED",
                status_details=None,
                expected_version=execution.version_number,
                execution_number=None,
                step_timeout_minutes=None,
                via="ats",
            )
            if index in SILENT:
                continue
            on_ats = index not in FAILED and index not in DRIFTED
            last = None if index in FAILED else {"jobId": JOB}
            with table.lock:
                table.documents[(thing, "ca-migration")] = {
                    "state": {"reported": {"endpoint": ATS if on_ats else LEGACY, "lastJob": last}},
                    "metadata": {},
                    "version": 1,
                }
                table.changed()
        engine.create_things(["late"])
        engine.add_things_to_group("wave", ["late"])
        with table.lock:
            table.documents[("late", "ca-migration")] = {
                "state": {"reported": {"endpoint": LEGACY}},
                "metadata": {},
                "version": 1,
            }
            table.changed()
        running.iot_client().update_indexing_configuration(
            thingIndexingConfiguration=INDEXING_CONFIGURATION
        )
        yield running


def _campaign() -> tuple[CampaignSpec, CampaignState]:
    wave = WaveSpec(name="wave", thing_groups=("wave",), gate=Gate(min_success_rate=0.5))
    spec = CampaignSpec(
        name="c",
        region="us-east-1",
        endpoint=ATS,
        trust=TrustSpec(add=("amazon-root-ca-1",)),
        waves=(wave,),
    )
    state = CampaignState(
        name="c",
        status=CampaignStatus.COMPLETED,
        waves=(
            WaveState(
                name="wave",
                job_id=JOB,
                phase=WavePhase.PASSED,
                launched_at=NOW,
                counts=Counts(succeeded=30, failed=10),
            ),
        ),
        created_at=NOW,
        updated_at=NOW,
        documents={JOB: json.dumps({"endpoint": {"host": ATS, "port": 8883}})},
    )
    return spec, state


@pytest.mark.parametrize(
    ("plan", "calls"),
    [
        ("describe", 3 + 1 + 13),  # counts, one page of 13 off target, 13 reads
        ("list-succeeded", 3 + 1 + 1),  # one page of the 30 successes
        ("list-others", 3 + 1 + 1 + 3),  # one page of the 10 failures, 3 suspects read
    ],
)
def test_every_way_of_reading_executions_finds_the_same_drift(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, plan: str, calls: int
) -> None:
    monkeypatch.setattr("orchestrator.verify.lookup_plan", lambda *_: plan)
    client = sandbox.iot_client()
    readers = Readers.single(FleetIndexAdapter(client), ExecutionReader(client))
    spec, state = _campaign()
    result = survey_drift(spec, state, readers)
    assert [(d.thing, d.kind.value) for d in result.drift] == [
        ("device-00011", "moved-back"),
        ("device-00012", "moved-back"),
    ]
    (wave,) = result.waves
    assert (wave.devices, wave.reported, wave.on_target, wave.unverifiable) == (41, 36, 23, 5)
    assert result.calls == calls


def test_the_cheapest_plan_is_the_one_taken(sandbox: Sandbox) -> None:
    client = sandbox.iot_client()
    readers = Readers.single(FleetIndexAdapter(client), ExecutionReader(client))
    spec, state = _campaign()
    assert survey_drift(spec, state, readers).calls == 3 + 1 + 1  # 13 candidates, 1 page


def test_the_passed_wave_census_reads_no_execution(sandbox: Sandbox) -> None:
    client = sandbox.iot_client()
    executions = ExecutionReader(client)
    spec, state = _campaign()
    index = FleetIndexAdapter(client)
    (wave,) = passed_wave_census(spec, state, lambda _region: index)
    assert (wave.devices, wave.on_target, wave.succeeded) == (41, 23, 30)
    assert (index.calls, executions.calls) == (3, 0)
