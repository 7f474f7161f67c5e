from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.errors import (
    CampaignExistsError,
    CampaignNotFoundError,
    LeaseHeldError,
    StateError,
    VersionConflictError,
)
from orchestrator.model import CampaignStatus, Counts, Event, WavePhase
from orchestrator.planner import initial_state
from orchestrator.spec import parse_spec
from orchestrator.store import BaseStateStore, StoredCampaign
from orchestrator.store.sqlite import SqliteStateStore

from .conftest import README_CAMPAIGN

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SPEC = parse_spec(README_CAMPAIGN)
DOCS = {w.name: ("{}", f"{i:064x}") for i, w in enumerate(SPEC.waves)}


def make_dynamodb_store() -> Iterator[BaseStateStore]:
    import boto3
    import moto

    from orchestrator.aws.dynamodb import DynamoDbStateStore

    with moto.mock_aws():
        client = boto3.client(
            "dynamodb",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        DynamoDbStateStore.create_table(client, "ca-migrate")
        yield DynamoDbStateStore(client, "ca-migrate")


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request, tmp_path: Path) -> Iterator[BaseStateStore]:
    if request.param == "sqlite":
        yield SqliteStateStore(tmp_path / "state.sqlite")
    else:
        yield from make_dynamodb_store()


def new(store: BaseStateStore):
    state = initial_state(SPEC, DOCS, T0)
    return store.create(
        StoredCampaign(README_CAMPAIGN, None, state), [Event("campaign-started", "go", at=T0)]
    )


def test_create_load_round_trip(store) -> None:
    state = new(store)
    assert state.version == 1
    loaded = store.load("ats-2026")
    assert loaded.spec_text == README_CAMPAIGN
    assert loaded.state == state
    assert store.names() == ["ats-2026"]
    with pytest.raises(CampaignExistsError, match="already exists"):
        new(store)


def test_commit_is_conditional_on_the_version_and_events_are_append_only(store) -> None:
    state = new(store)
    wave = replace(
        state.waves[0], phase=WavePhase.RUNNING, counts=Counts(succeeded=3), launched_at=T0
    )
    changed = replace(state.with_wave(wave), status=CampaignStatus.PAUSED)
    v2 = store.commit(changed, [Event("a", "first", wave="canary", data={"n": 1}, at=T0)])
    assert v2.version == 2
    assert store.load("ats-2026").state.wave("canary").counts.succeeded == 3
    with pytest.raises(VersionConflictError, match="run the command again"):
        store.commit(changed, [Event("b", "stale", at=T0)])
    store.commit(v2, [Event("c", "x", at=T0), Event("d", "y", at=T0)])
    log = store.events("ats-2026")
    assert [(e.version, e.index, e.kind) for e in log] == [
        (1, 0, "campaign-started"),
        (2, 0, "a"),
        (3, 0, "c"),
        (3, 1, "d"),
    ]
    assert log[1].data == {"n": 1}
    assert log[1].wave == "canary"


def test_unknown_campaign_says_how_to_start_one(store) -> None:
    with pytest.raises(CampaignNotFoundError, match="ca-migrate start"):
        store.load("nope")


def test_lease_excludes_others_until_it_expires_or_is_released(store) -> None:
    new(store)
    ttl = timedelta(seconds=60)
    store.acquire_lease("ats-2026", "a", ttl, T0)
    store.acquire_lease("ats-2026", "a", ttl, T0 + timedelta(seconds=1))  # renewal
    with pytest.raises(LeaseHeldError):
        store.acquire_lease("ats-2026", "b", ttl, T0 + timedelta(seconds=30))
    assert store.lease_holder("ats-2026") == "a"
    store.acquire_lease("ats-2026", "b", ttl, T0 + timedelta(seconds=30), take_over="a")
    store.acquire_lease("ats-2026", "c", ttl, T0 + timedelta(seconds=91))  # b's expired
    store.release_lease("ats-2026", "b")  # not b's any more: no effect
    with pytest.raises(LeaseHeldError):
        store.acquire_lease("ats-2026", "d", ttl, T0 + timedelta(seconds=92))
    store.release_lease("ats-2026", "c")
    store.acquire_lease("ats-2026", "d", ttl, T0 + timedelta(seconds=93))


def test_sqlite_store_in_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match="cannot open the state store"):
        SqliteStateStore(blocker / "state.sqlite")


def test_state_stored_by_an_older_release_with_gate_passed_at_still_loads() -> None:
    from orchestrator.model import state_from_dict, state_to_dict

    state = initial_state(SPEC, DOCS, T0)
    baking = replace(
        state.waves[0],
        phase=WavePhase.BAKING,
        launched_at=T0,
        bake_until=T0 + timedelta(minutes=10),
    )
    raw = state_to_dict(state.with_wave(baking))
    assert "gate_passed_at" not in raw["waves"][0]
    raw["waves"][0]["gate_passed_at"] = (T0 + timedelta(minutes=2)).isoformat()  # older format
    loaded = state_from_dict(raw, 3)
    assert loaded.wave("canary") == baking
    assert loaded.version == 3
