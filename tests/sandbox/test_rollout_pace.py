"""The rollout's pace at its edges, on the engine itself: a thing that already has the job,
things joining a continuous job between batches and exactly at a batch's time, a scheduled end,
and an engine without the default pace that still follows rates and maintenance windows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.sandbox.engine import JobsEngine
from infra.sandbox.mqtt._shadow import ShadowStore
from job_documents.clock import ManualClock

from .conftest import START

ARN = "arn:aws:iot:us-east-1:123456789012"
DOCUMENT = json.dumps({"operation": "rotate"})
T0 = START.timestamp()


def _engine(things: list[str], groups: tuple[str, ...], **options: Any) -> JobsEngine:
    engine = JobsEngine(clock=ManualClock(START), **options)
    engine.create_things(things)
    for group in groups:
        engine.create_thing_group({"thingGroupName": group})
    return engine


def _continuous(engine: JobsEngine, groups: tuple[str, ...], **params: Any) -> None:
    engine.create_job(
        {
            "jobId": "c",
            "targets": [f"{ARN}:thinggroup/{g}" for g in groups],
            "document": DOCUMENT,
            "targetSelection": "CONTINUOUS",
            **params,
        }
    )


def _execution(engine: JobsEngine, thing: str) -> dict[str, Any]:
    found: dict[str, Any] = engine.describe_job_execution({"jobId": "c", "thingName": thing})
    return found["execution"]


@pytest.mark.parametrize("pace", ["all at once", "default", "one a minute"])
def test_a_thing_that_already_has_the_job_is_not_notified_again(pace: str) -> None:
    engine = _engine(
        ["t", "u"], ("g1", "g2"), default_per_minute=None if pace == "all at once" else 1000
    )
    engine.add_things_to_group("g1", ["t"])
    rate = {"jobExecutionsRolloutConfig": {"maximumPerMinute": 1}} if pace == "one a minute" else {}
    _continuous(engine, ("g1", "g2"), **rate)
    engine.update_execution(
        "t", "c", status="SUCCEEDED", status_details=None, expected_version=None,
        execution_number=None, step_timeout_minutes=None, via="ats",
    )  # fmt: skip
    engine.advance(30)
    engine.add_things_to_group("g2", ["t"])  # a second target group: the same job
    assert _execution(engine, "t")["status"] == "SUCCEEDED"
    assert _execution(engine, "t")["executionNumber"] == 1
    assert engine.describe_job({"jobId": "c"})["job"]["isConcurrent"] is False
    engine.add_things_to_group("g2", ["u"])  # a new thing, 30 s into the minute
    engine.advance(30)
    expected = T0 + 60 if pace == "one a minute" else T0 + 30  # the next slot, or at once
    assert _execution(engine, "u")["queuedAt"] == expected


def test_late_things_take_the_next_slot_exactly_one_batch_at_a_time() -> None:
    names = [f"t{i}" for i in range(5)]
    engine = _engine(names, ("g", "other"))
    engine.add_things_to_group("g", ["t0"])
    _continuous(engine, ("g", "other"), jobExecutionsRolloutConfig={"maximumPerMinute": 1})
    engine.advance(30)
    engine.add_things_to_group("g", ["t1"])
    engine.advance(10)
    engine.add_things_to_group("g", ["t2"])  # joins a rollout that already waits
    engine.advance(20)  # T0 + 60: one batch, one thing
    assert engine.counts("c")["QUEUED"] == 2
    engine.advance(60)  # T0 + 120
    assert engine.counts("c")["QUEUED"] == 3
    engine.advance(60)  # T0 + 180: the slot, with nothing waiting
    engine.add_things_to_group("g", ["t3"])  # exactly at the slot: at once
    assert _execution(engine, "t3")["queuedAt"] == T0 + 180
    engine.advance(70)  # T0 + 250: the next slot (240) has passed
    engine.add_things_to_group("other", ["t0"])  # already has the job: moves no slot
    engine.advance(10)
    engine.add_things_to_group("g", ["t4"])  # T0 + 260, after the slot: at once
    assert _execution(engine, "t4")["queuedAt"] == T0 + 260


def test_a_thing_joining_at_the_scheduled_end_is_not_notified() -> None:
    engine = _engine(["t0", "t1"], ("g",))
    engine.add_things_to_group("g", ["t0"])
    _continuous(engine, ("g",), schedulingConfig={"endTime": "2026-03-01T12:30"})
    engine.advance(30 * 60)  # exactly the endTime
    engine.add_things_to_group("g", ["t1"])
    engine.advance(60)
    assert engine.counts("c")["QUEUED"] == 1


def test_without_the_default_pace_rates_and_windows_still_apply() -> None:
    names = [f"t{i}" for i in range(3)]
    engine = _engine(names, ("g",), default_per_minute=None)
    engine.add_things_to_group("g", names)
    target = [f"{ARN}:thinggroup/g"]
    engine.create_job(
        {"jobId": "rate", "targets": target, "document": DOCUMENT,
         "jobExecutionsRolloutConfig": {"maximumPerMinute": 1}}
    )  # fmt: skip
    # START is 12:00 UTC; the window opens at 14:00 for two minutes
    window = {"startTime": "cron(0 14 ? * * *)", "durationInMinutes": 2}
    engine.create_job(
        {"jobId": "win", "targets": target, "document": DOCUMENT,
         "schedulingConfig": {"maintenanceWindows": [window]}}
    )  # fmt: skip
    assert engine.counts("rate")["QUEUED"] == 1
    assert engine.counts("win")["QUEUED"] == 0
    engine.advance(2 * 3600)  # 14:00: the window opens, every target at once
    assert engine.counts("win")["QUEUED"] == 3


def test_things_joining_exactly_at_a_default_batch_start_a_new_minute() -> None:
    """At the batch's time the old minute is over: its unused budget does not add to the new."""
    names = [f"t{i}" for i in range(4)]
    engine = _engine(names, ("g",), default_per_minute=2)
    engine.add_things_to_group("g", ["t0"])
    _continuous(engine, ("g",))  # one of the first minute's two
    engine.advance(60)
    engine.add_things_to_group("g", ["t1", "t2", "t3"])  # exactly at the next batch's time
    engine.advance(0)
    assert engine.counts("c")["QUEUED"] == 3  # t0, then two in the new minute
    engine.advance(60)
    assert engine.counts("c")["QUEUED"] == 4


def test_a_thing_a_shadow_moves_into_a_dynamic_target_is_queued_when_the_clock_settles_it() -> None:
    """Membership a shadow changed is settled by the next deadline pass, at that pass's time."""
    engine = _engine(["a"], ())
    shadow = "ca-migration"
    engine.update_indexing_configuration(
        {
            "thingIndexingConfiguration": {
                "thingIndexingMode": "REGISTRY_AND_SHADOW",
                "namedShadowIndexingMode": "ON",
                "filter": {"namedShadowNames": [shadow]},
            }
        }
    )
    engine.create_dynamic_thing_group(
        {"thingGroupName": "on443", "queryString": f"shadow.name.{shadow}.reported.port:443"}
    )
    _continuous(engine, ("on443",))
    engine.advance(20)
    ShadowStore(lambda: int(T0), engine.named_shadows).handle(
        f"$aws/things/a/shadow/name/{shadow}/update",
        json.dumps({"state": {"reported": {"port": 443}}}).encode(),
    )
    engine.advance(10)
    assert _execution(engine, "a")["queuedAt"] == T0 + 30


def test_a_thing_joining_a_windowed_job_between_batches_waits_for_the_next_batch() -> None:
    """Maintenance windows pace a job in batches even at the default pace: no minute budget."""
    engine = _engine(["t0", "t1"], ("g",))
    engine.add_things_to_group("g", ["t0"])
    # START is 12:00 UTC; the window opens at 14:00 for five minutes
    window = {"startTime": "cron(0 14 ? * * *)", "durationInMinutes": 5}
    _continuous(engine, ("g",), schedulingConfig={"maintenanceWindows": [window]})
    engine.advance(2 * 3600)  # 14:00: t0, the first batch
    engine.advance(30)
    engine.add_things_to_group("g", ["t1"])
    engine.advance(30)  # 14:01: the next batch
    assert _execution(engine, "t1")["queuedAt"] == T0 + 2 * 3600 + 60
