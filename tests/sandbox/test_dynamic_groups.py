"""Dynamic thing groups in the sandbox, driven by boto3: membership follows the index.

Each behaviour is a row of docs/sandbox.md ("Dynamic thing groups") with the AWS page
it follows.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from infra.sandbox import decisions as d
from infra.sandbox.mqtt._shadow import ShadowStore
from infra.sandbox.runtime import Sandbox

ARN = "arn:aws:iot:us-east-1:123456789012"
DOCUMENT = json.dumps({"operation": "noop"})
REGISTRY = {"thingIndexingMode": "REGISTRY"}
SHADOW = "ca-migration"
WITH_SHADOW = {
    "thingIndexingMode": "REGISTRY_AND_SHADOW",
    "namedShadowIndexingMode": "ON",
    "filter": {"namedShadowNames": [SHADOW]},
}


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def _built(sandbox: Sandbox) -> None:
    """Let a dynamic group's backfill complete (BUILDING or REBUILDING, then ACTIVE)."""
    sandbox.engine.advance(d.DYNAMIC_GROUP_BUILD_SECONDS)


def _members(iot, group: str) -> list[str]:
    return sorted(iot.list_things_in_thing_group(thingGroupName=group)["things"])


@pytest.fixture
def models(iot):
    """Five things with a model attribute (three m1, two m2) and indexing on."""
    for index, model in enumerate(["m1", "m1", "m2", "m1", "m2"], start=1):
        iot.create_thing(thingName=f"t{index}", attributePayload={"attributes": {"model": model}})
    iot.update_indexing_configuration(thingIndexingConfiguration=REGISTRY)
    return iot


def test_a_dynamic_group_holds_what_its_query_matches_and_describes_itself(
    sandbox: Sandbox, models
) -> None:
    created = models.create_dynamic_thing_group(
        thingGroupName="m2s", queryString="attributes.model:m2"
    )
    assert created["thingGroupArn"] == f"{ARN}:thinggroup/m2s"
    assert (created["indexName"], created["queryVersion"]) == ("AWS_Things", "2017-09-30")
    _built(sandbox)
    assert _members(models, "m2s") == ["t3", "t5"]
    described = models.describe_thing_group(thingGroupName="m2s")
    assert described["queryString"] == "attributes.model:m2"
    assert (described["indexName"], described["status"]) == ("AWS_Things", "ACTIVE")
    models.create_thing_group(thingGroupName="static")
    assert "queryString" not in models.describe_thing_group(thingGroupName="static")
    groups = models.list_thing_groups()["thingGroups"]
    assert [g["groupName"] for g in groups] == ["m2s", "static"]
    assert [g["groupName"] for g in models.list_thing_groups(namePrefixFilter="m")["thingGroups"]]
    assert models.search_index(queryString="thingGroupNames:m2s")["things"][0]["thingName"] == "t3"


def test_a_new_group_is_building_and_empty_until_its_backfill_completes(
    sandbox: Sandbox, models
) -> None:
    """AWS: "Dynamic thing group creation is not instantaneous": BUILDING, then ACTIVE;
    a BUILDING or REBUILDING group "might not include all of the things that match"."""
    models.create_dynamic_thing_group(thingGroupName="m2s", queryString="attributes.model:m2")
    assert models.describe_thing_group(thingGroupName="m2s")["status"] == "BUILDING"
    assert _members(models, "m2s") == []
    sandbox.engine.advance(d.DYNAMIC_GROUP_BUILD_SECONDS - 1)
    models.update_thing(thingName="t1", attributePayload={"attributes": {"model": "m2"}})
    assert _members(models, "m2s") == []
    sandbox.engine.advance(1)
    assert models.describe_thing_group(thingGroupName="m2s")["status"] == "ACTIVE"
    assert _members(models, "m2s") == ["t1", "t3", "t5"]
    models.update_dynamic_thing_group(
        thingGroupName="m2s", thingGroupProperties={}, queryString="thingName:t2"
    )
    assert models.describe_thing_group(thingGroupName="m2s")["status"] == "REBUILDING"
    assert _members(models, "m2s") == ["t1", "t3", "t5"]  # the old query's, meanwhile
    saved = sandbox.engine.export_state()  # a restart while rebuilding finishes it
    sandbox.engine.import_state(json.loads(json.dumps(saved)))
    _built(sandbox)
    assert models.describe_thing_group(thingGroupName="m2s")["status"] == "ACTIVE"
    assert _members(models, "m2s") == ["t2"]


def test_membership_follows_the_registry(sandbox: Sandbox, models) -> None:
    models.create_dynamic_thing_group(thingGroupName="m1s", queryString="attributes.model:m1")
    _built(sandbox)
    models.update_thing(thingName="t1", attributePayload={"attributes": {"model": "m2"}})
    models.create_thing(thingName="t6", attributePayload={"attributes": {"model": "m1"}})
    assert _members(models, "m1s") == ["t2", "t4", "t6"]
    models.update_thing(
        thingName="t1", attributePayload={"attributes": {"model": "m1"}, "merge": True}
    )
    models.delete_thing(thingName="t2")
    assert _members(models, "m1s") == ["t1", "t4", "t6"]


def test_membership_follows_named_shadows_by_the_next_operation(sandbox: Sandbox, iot) -> None:
    iot.create_thing(thingName="a")
    iot.create_thing(thingName="b")
    iot.update_indexing_configuration(thingIndexingConfiguration=WITH_SHADOW)
    iot.create_dynamic_thing_group(
        thingGroupName="legacy", queryString=f"shadow.name.{SHADOW}.reported.port:443"
    )
    _built(sandbox)
    assert _members(iot, "legacy") == []
    store = ShadowStore(lambda: 1_700_000_000, sandbox.engine.named_shadows)
    for thing, port in (("a", 443), ("b", 8883)):
        topic = f"$aws/things/{thing}/shadow/name/{SHADOW}/update"
        store.handle(topic, json.dumps({"state": {"reported": {"port": port}}}).encode())
    iot.list_jobs()  # a Jobs operation settles membership in its prologue
    assert _members(iot, "legacy") == ["a"]


def test_the_rules_aws_sets_for_dynamic_groups(iot) -> None:
    iot.create_thing(thingName="t1", attributePayload={"attributes": {"model": "m1"}})
    with pytest.raises(ClientError) as off:
        iot.create_dynamic_thing_group(thingGroupName="g", queryString="thingName:*")
    assert _code(off) == "InvalidRequestException"
    iot.update_indexing_configuration(thingIndexingConfiguration=REGISTRY)
    with pytest.raises(ClientError) as bad_query:
        iot.create_dynamic_thing_group(thingGroupName="g", queryString="attributes.model:(")
    assert _code(bad_query) == "InvalidQueryException"
    iot.create_dynamic_thing_group(thingGroupName="g", queryString="attributes.model:m1")
    again = iot.create_dynamic_thing_group(thingGroupName="g", queryString="attributes.model:m1")
    assert again["thingGroupName"] == "g"
    with pytest.raises(ClientError) as other_query:
        iot.create_dynamic_thing_group(thingGroupName="g", queryString="thingName:*")
    assert _code(other_query) == "ResourceAlreadyExistsException"
    iot.create_thing_group(thingGroupName="static")
    with pytest.raises(ClientError) as static_name:
        iot.create_dynamic_thing_group(thingGroupName="static", queryString="thingName:*")
    assert _code(static_name) == "ResourceAlreadyExistsException"
    for call in (iot.add_thing_to_thing_group, iot.remove_thing_from_thing_group):
        with pytest.raises(ClientError) as explicit:
            call(thingGroupName="g", thingName="t1")
        assert _code(explicit) == "InvalidRequestException"
        assert "dynamic thing group" in str(explicit.value)
    with pytest.raises(ClientError) as child:
        iot.create_thing_group(thingGroupName="under", parentGroupName="g")
    assert _code(child) == "InvalidRequestException"
    with pytest.raises(ClientError) as indexing_off:
        iot.update_indexing_configuration(thingIndexingConfiguration={"thingIndexingMode": "OFF"})
    assert _code(indexing_off) == "InvalidRequestException"
    with pytest.raises(ClientError) as static_update:
        iot.update_dynamic_thing_group(
            thingGroupName="static", thingGroupProperties={}, queryString="thingName:*"
        )
    assert _code(static_update) == "InvalidRequestException"


def test_a_query_nested_past_the_bound_is_an_invalid_query_not_a_crash(models) -> None:
    deep = "(" * 500 + "thingName:t1" + ")" * 500
    for call in (
        lambda: models.search_index(queryString=deep),
        lambda: models.create_dynamic_thing_group(thingGroupName="deep", queryString=deep),
    ):
        with pytest.raises(ClientError) as caught:
            call()
        assert _code(caught) == "InvalidQueryException"
        assert "deeper than" in str(caught.value)


def test_an_account_has_at_most_a_hundred_dynamic_groups(iot) -> None:
    iot.update_indexing_configuration(thingIndexingConfiguration=REGISTRY)
    for index in range(d.MAX_DYNAMIC_GROUPS):
        iot.create_dynamic_thing_group(thingGroupName=f"g{index}", queryString="thingName:x*")
    with pytest.raises(ClientError) as limit:
        iot.create_dynamic_thing_group(thingGroupName="one-more", queryString="thingName:x*")
    assert _code(limit) == "LimitExceededException"


def test_update_changes_the_query_and_the_members_and_checks_the_version(
    sandbox: Sandbox, models
) -> None:
    models.create_dynamic_thing_group(thingGroupName="g", queryString="attributes.model:m2")
    _built(sandbox)
    with pytest.raises(ClientError) as stale:
        models.update_dynamic_thing_group(
            thingGroupName="g", thingGroupProperties={}, expectedVersion=7, queryString="t1"
        )
    assert _code(stale) == "VersionConflictException"
    answer = models.update_dynamic_thing_group(
        thingGroupName="g", thingGroupProperties={}, queryString="thingName:t1 OR thingName:t2"
    )
    assert answer["version"] == 2
    _built(sandbox)
    assert _members(models, "g") == ["t1", "t2"]
    assert models.describe_thing_group(thingGroupName="g")["queryString"].startswith("thingName")


def test_delete_takes_the_things_out_and_is_quiet_when_the_group_is_gone(models) -> None:
    models.create_dynamic_thing_group(thingGroupName="g", queryString="attributes.model:m1")
    models.delete_dynamic_thing_group(thingGroupName="g")
    with pytest.raises(ClientError) as gone:
        models.describe_thing_group(thingGroupName="g")
    assert _code(gone) == "ResourceNotFoundException"
    assert (
        "g" not in models.search_index(queryString="thingName:t1")["things"][0]["thingGroupNames"]
    )
    models.delete_dynamic_thing_group(thingGroupName="g")


def test_a_thing_leaving_a_continuous_jobs_dynamic_group_has_its_execution_removed(
    sandbox: Sandbox, models, jobs_data
) -> None:
    models.create_dynamic_thing_group(thingGroupName="m2s", queryString="attributes.model:m2")
    _built(sandbox)
    models.create_job(
        jobId="cont",
        targets=[f"{ARN}:thinggroup/m2s"],
        document=DOCUMENT,
        targetSelection="CONTINUOUS",
    )
    started = jobs_data.start_next_pending_job_execution(thingName="t3")["execution"]
    assert started["status"] == "IN_PROGRESS"
    models.update_thing(thingName="t3", attributePayload={"attributes": {"model": "m1"}})
    models.update_thing(thingName="t1", attributePayload={"attributes": {"model": "m2"}})
    details = models.describe_job(jobId="cont")["job"]["jobProcessDetails"]
    assert (details["numberOfRemovedThings"], details["numberOfQueuedThings"]) == (1, 2)
    removed = models.describe_job_execution(jobId="cont", thingName="t3")["execution"]
    assert removed["status"] == "REMOVED"


def test_a_snapshot_job_on_a_dynamic_group_keeps_its_things_but_drops_queued_leavers(
    sandbox: Sandbox, models
) -> None:
    models.create_dynamic_thing_group(thingGroupName="m1s", queryString="attributes.model:m1")
    _built(sandbox)
    models.create_job(jobId="snap", targets=[f"{ARN}:thinggroup/m1s"], document=DOCUMENT)
    models.update_thing(thingName="t1", attributePayload={"attributes": {"model": "m2"}})
    models.update_thing(thingName="t3", attributePayload={"attributes": {"model": "m1"}})
    details = models.describe_job(jobId="snap")["job"]["jobProcessDetails"]
    # t1 left while QUEUED (REMOVED); t3 joined after the snapshot was taken (no execution).
    assert (details["numberOfRemovedThings"], details["numberOfQueuedThings"]) == (1, 2)


def test_a_thing_in_ten_groups_joins_no_more_and_override_makes_room(
    sandbox: Sandbox, models
) -> None:
    for index in range(9):
        models.create_thing_group(thingGroupName=f"s{index}")
        models.add_thing_to_thing_group(thingGroupName=f"s{index}", thingName="t1")
    models.create_dynamic_thing_group(thingGroupName="dyn", queryString="thingName:t1")
    models.create_dynamic_thing_group(thingGroupName="full", queryString="thingName:t1")
    _built(sandbox)
    assert _members(models, "dyn") == ["t1"]
    assert _members(models, "full") == []  # ten groups already
    models.create_thing_group(thingGroupName="s9")
    with pytest.raises(ClientError) as full:
        models.add_thing_to_thing_group(thingGroupName="s9", thingName="t1")
    assert "overrideDynamicGroups" in str(full.value)
    models.add_thing_to_thing_group(thingGroupName="s9", thingName="t1", overrideDynamicGroups=True)
    assert _members(models, "dyn") == []
    assert _members(models, "s9") == ["t1"]


def test_dynamic_groups_survive_an_export_and_import(sandbox: Sandbox, models) -> None:
    models.create_dynamic_thing_group(thingGroupName="m2s", queryString="attributes.model:m2")
    _built(sandbox)
    saved = sandbox.engine.export_state()
    sandbox.engine.import_state(json.loads(json.dumps(saved)))
    assert models.describe_thing_group(thingGroupName="m2s")["queryString"] == (
        "attributes.model:m2"
    )
    models.update_thing(thingName="t1", attributePayload={"attributes": {"model": "m2"}})
    assert _members(models, "m2s") == ["t1", "t3", "t5"]


def test_update_thing_replaces_or_merges_attributes_and_checks_the_version(iot) -> None:
    iot.create_thing(thingName="t", attributePayload={"attributes": {"model": "m1", "hw": "2"}})
    iot.update_thing(
        thingName="t", attributePayload={"attributes": {"fw": "9", "hw": ""}, "merge": True}
    )
    described = iot.describe_thing(thingName="t")
    assert described["attributes"] == {"model": "m1", "fw": "9"}
    assert described["version"] == 2
    iot.update_thing(thingName="t", attributePayload={"attributes": {"site": "x"}})
    assert iot.describe_thing(thingName="t")["attributes"] == {"site": "x"}
    with pytest.raises(ClientError) as stale:
        iot.update_thing(thingName="t", expectedVersion=1, attributePayload={"attributes": {}})
    assert _code(stale) == "VersionConflictException"
