"""The boto3 adapter that makes the groups of waves chosen by query or sample, on the sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from infra.sandbox.decisions import DYNAMIC_GROUP_BUILD_SECONDS
from infra.sandbox.mqtt._shadow import ShadowStore
from infra.sandbox.runtime import Sandbox
from job_documents import ManualClock
from orchestrator.aws.groups import ThingGroupsAdapter, field_value
from orchestrator.errors import GroupConflictError, IndexingUnavailableError


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(mqtt=False, clock=ManualClock()) as running:
        yield running


@pytest.fixture
def groups(sandbox: Sandbox) -> ThingGroupsAdapter:
    iot = sandbox.iot_client()
    for name, model in (("a", "m1"), ("b", "m2"), ("c", "m1")):
        iot.create_thing(thingName=name, attributePayload={"attributes": {"model": model}})
    return ThingGroupsAdapter(iot)


def _indexing_on(sandbox: Sandbox) -> None:
    sandbox.iot_client().update_indexing_configuration(
        thingIndexingConfiguration={
            "thingIndexingMode": "REGISTRY_AND_SHADOW",
            "namedShadowIndexingMode": "ON",
            "filter": {"namedShadowNames": ["ca-migration"]},
        }
    )


def test_a_dynamic_group_is_made_once_and_adopted_after(sandbox: Sandbox, groups) -> None:
    _indexing_on(sandbox)
    # As on AWS, a new dynamic group is BUILDING until its backfill completes.
    assert groups.ensure_dynamic_group("ca-migrate-x-w-query", "attributes.model:m1", "d") == (
        "BUILDING"
    )
    sandbox.engine.advance(DYNAMIC_GROUP_BUILD_SECONDS)
    assert groups.ensure_dynamic_group("ca-migrate-x-w-query", "attributes.model:m1", "d") == (
        "ACTIVE"
    )
    with pytest.raises(GroupConflictError, match="delete-dynamic-thing-group"):
        groups.ensure_dynamic_group("ca-migrate-x-w-query", "attributes.model:m2", "d")
    iot = sandbox.iot_client()
    names = [g["groupName"] for g in iot.list_thing_groups()["thingGroups"]]
    assert names == ["ca-migrate-x-w-query"]
    things = iot.list_things_in_thing_group(thingGroupName="ca-migrate-x-w-query")["things"]
    assert sorted(things) == ["a", "c"]


def test_a_static_group_is_adopted_only_with_the_campaigns_description(
    sandbox: Sandbox, groups
) -> None:
    _indexing_on(sandbox)
    assert groups.ensure_static_group("ca-migrate-x-w-sample", "ours") == []
    assert groups.add_things("ca-migrate-x-w-sample", ["a", "b"]) == []
    assert groups.add_things("ca-migrate-x-w-sample", ["a"]) == []
    assert sorted(groups.ensure_static_group("ca-migrate-x-w-sample", "ours")) == ["a", "b"]
    sandbox.iot_client().create_thing_group(
        thingGroupName="ca-migrate-y-w-sample",
        thingGroupProperties={"thingGroupDescription": "somebody else's"},
    )
    with pytest.raises(GroupConflictError):
        groups.ensure_static_group("ca-migrate-y-w-sample", "ours")
    groups.ensure_dynamic_group("ca-migrate-z-w-sample", "thingName:a", "d")
    with pytest.raises(GroupConflictError):
        groups.ensure_static_group("ca-migrate-z-w-sample", "ours")


def test_indexed_values_read_attributes_and_shadows(sandbox: Sandbox, groups) -> None:
    with pytest.raises(IndexingUnavailableError, match="update-indexing-configuration"):
        groups.indexed_values("thingName:*", "attributes.model")
    _indexing_on(sandbox)
    store = ShadowStore(lambda: 1_700_000_000, sandbox.engine.named_shadows)
    topic = "$aws/things/a/shadow/name/ca-migration/update"
    store.handle(topic, json.dumps({"state": {"reported": {"hw": {"rev": 3}}}}).encode())
    assert groups.indexed_values("thingName:*", "attributes.model") == {
        "a": "m1",
        "b": "m2",
        "c": "m1",
    }
    assert groups.indexed_values("thingName:*", "shadow.name.ca-migration.reported.hw.rev") == {
        "a": "3",
        "b": None,
        "c": None,
    }


@pytest.mark.parametrize(
    ("document", "field", "value"),
    [
        ({"attributes": {"model": "m1"}}, "attributes.model", "m1"),
        ({"attributes": {}}, "attributes.model", None),
        (
            {"shadow": '{"name":{"s":{"reported":{"v":[1,2]}}}}'},
            "shadow.name.s.reported.v",
            "[1,2]",
        ),
        ({"shadow": '{"name":{"s":{"reported":{"v":true}}}}'}, "shadow.name.s.reported.v", "true"),
        ({"shadow": "not json"}, "shadow.name.s.reported.v", None),
        ({"shadow": '{"name":{}}'}, "shadow.name.s.reported.v", None),
        ({}, "thingName", None),
    ],
)
def test_field_value_reads_what_search_index_returns(document, field, value) -> None:
    assert field_value(document, field) == value


def test_a_thing_already_in_ten_groups_is_left_out_of_the_sample(sandbox: Sandbox, groups) -> None:
    iot = sandbox.iot_client()
    for index in range(10):
        iot.create_thing_group(thingGroupName=f"g{index}")
        iot.add_thing_to_thing_group(thingGroupName=f"g{index}", thingName="a")
    groups.ensure_static_group("ca-migrate-x-w-sample", "ours")
    assert groups.add_things("ca-migrate-x-w-sample", ["a", "b"]) == ["a"]
    assert iot.list_things_in_thing_group(thingGroupName="ca-migrate-x-w-sample")["things"] == ["b"]
