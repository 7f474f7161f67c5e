"""Fleet indexing in the sandbox, driven by boto3 and the AWS CLI.

Shadows are written through the sandbox's own MQTT shadow service logic
(`ShadowStore` over the engine's shadow table), without a broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from infra.sandbox.mqtt._shadow import ShadowStore
from infra.sandbox.runtime import Sandbox

SHADOW = "ca-migration"
LEGACY = "a1sandbox2demo.iot.us-east-1.amazonaws.com"
ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
VENV_BIN = Path(sys.executable).parent

ON = {
    "thingIndexingMode": "REGISTRY_AND_SHADOW",
    "namedShadowIndexingMode": "ON",
    "filter": {"namedShadowNames": [SHADOW]},
    "customFields": [
        {"name": f"shadow.name.{SHADOW}.reported.endpoint", "type": "String"},
        {"name": f"shadow.name.{SHADOW}.reported.roots", "type": "String"},
        {"name": f"shadow.name.{SHADOW}.reported.port", "type": "Number"},
    ],
}


def report(sandbox: Sandbox, thing: str, reported: dict, shadow: str = SHADOW) -> None:
    store = ShadowStore(lambda: 1_700_000_000, sandbox.engine.named_shadows)
    topic = f"$aws/things/{thing}/shadow/name/{shadow}/update"
    answers = store.handle(topic, json.dumps({"state": {"reported": reported}}).encode())
    assert answers[0].topic.endswith("/accepted"), answers


@pytest.fixture
def fleet(sandbox: Sandbox, iot):
    """Six things: three report legacy, two ATS, one never reports; two groups."""
    sandbox.provision(6, [("canary", 2), ("rest", None)])
    for index in range(1, 6):
        endpoint = ATS if index in (2, 4) else LEGACY
        roots = ["amazon-root-ca-1"] + ([] if endpoint == ATS else ["verisign-g5"])
        report(
            sandbox,
            f"device-{index:05d}",
            {"endpoint": endpoint, "port": 8883 if endpoint == ATS else 443, "roots": roots},
        )
    report(sandbox, "device-00006", {"endpoint": LEGACY}, shadow="other")
    iot.update_indexing_configuration(thingIndexingConfiguration=ON)
    return iot


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def test_indexing_is_off_until_configured_and_then_reads_back(sandbox: Sandbox, iot) -> None:
    config = iot.get_indexing_configuration()["thingIndexingConfiguration"]
    assert config["thingIndexingMode"] == "OFF"
    with pytest.raises(ClientError) as off:
        iot.search_index(queryString="thingName:*")
    assert _code(off) == "ResourceNotFoundException"
    iot.update_indexing_configuration(thingIndexingConfiguration=ON)
    config = iot.get_indexing_configuration()["thingIndexingConfiguration"]
    assert config["thingIndexingMode"] == "REGISTRY_AND_SHADOW"
    assert config["namedShadowIndexingMode"] == "ON"
    assert config["filter"] == {"namedShadowNames": [SHADOW]}
    assert {"name": "thingName", "type": "String"} in config["managedFields"]
    assert config["customFields"] == ON["customFields"]


@pytest.mark.parametrize(
    "thing_config",
    [
        {"thingIndexingMode": "REGISTRY", "namedShadowIndexingMode": "ON"},
        {"thingIndexingMode": "OFF", "thingConnectivityIndexingMode": "STATUS"},
        {
            "thingIndexingMode": "REGISTRY_AND_SHADOW",
            "namedShadowIndexingMode": "ON",
            "filter": {"namedShadowNames": [f"s{i}" for i in range(11)]},
        },
        {"thingIndexingMode": "REGISTRY", "customFields": [{"name": "attributes.x"}]},
    ],
)
def test_an_inconsistent_indexing_configuration_is_refused(iot, thing_config) -> None:
    with pytest.raises(ClientError) as refused:
        iot.update_indexing_configuration(thingIndexingConfiguration=thing_config)
    assert _code(refused) == "InvalidRequestException"
    assert iot.get_indexing_configuration()["thingIndexingConfiguration"]["thingIndexingMode"] == (
        "OFF"
    )


def test_search_index_finds_reported_devices_and_renders_their_shadow(fleet) -> None:
    found = fleet.search_index(queryString=f"shadow.name.{SHADOW}.reported.endpoint:*")
    names = [t["thingName"] for t in found["things"]]
    assert names == [f"device-{i:05d}" for i in range(1, 6)]
    first = found["things"][0]
    assert first["thingGroupNames"] == ["canary"]
    shadow = json.loads(first["shadow"])
    assert shadow["name"][SHADOW]["reported"]["endpoint"] == LEGACY
    assert "other" not in json.loads(found["things"][0]["shadow"])["name"]
    ats = fleet.search_index(
        queryString=f"shadow.name.{SHADOW}.reported.endpoint:*-ats.* AND thingGroupNames:canary"
    )
    assert [t["thingName"] for t in ats["things"]] == ["device-00002"]


def test_a_shadow_outside_the_filter_is_not_indexed(fleet) -> None:
    found = fleet.search_index(queryString="shadow.name.other.reported.endpoint:*")
    assert found["things"] == []
    never = fleet.search_index(
        queryString=f"thingName:* AND NOT shadow.name.{SHADOW}.reported.endpoint:*"
    )
    assert [t["thingName"] for t in never["things"]] == ["device-00006"]


def test_search_index_pages_with_next_token(fleet) -> None:
    seen: list[str] = []
    kwargs: dict = {"queryString": "thingName:device*", "maxResults": 4}
    pages = 0
    while True:
        page = fleet.search_index(**kwargs)
        pages += 1
        seen.extend(t["thingName"] for t in page["things"])
        if "nextToken" not in page:
            break
        kwargs["nextToken"] = page["nextToken"]
    assert pages == 2
    assert seen == [f"device-{i:05d}" for i in range(1, 7)]
    with pytest.raises(ClientError) as foreign:
        fleet.search_index(queryString="thingName:x*", nextToken=kwargs["nextToken"])
    assert _code(foreign) == "InvalidRequestException"


@pytest.mark.parametrize(
    ("call", "code"),
    [
        ({"queryString": "thingName:(a OR"}, "InvalidQueryException"),
        ({"queryString": "thingName:*", "indexName": "AWS_Nope"}, "ResourceNotFoundException"),
    ],
)
def test_search_index_errors_are_the_ones_aws_names(fleet, call, code) -> None:
    with pytest.raises(ClientError) as error:
        fleet.search_index(**call)
    assert _code(error) == code


def test_get_statistics_counts_and_computes_numeric_statistics(fleet) -> None:
    counted = fleet.get_statistics(queryString=f"shadow.name.{SHADOW}.reported.endpoint:{LEGACY}")
    assert counted["statistics"]["count"] == 3
    ports = fleet.get_statistics(
        queryString="thingName:*", aggregationField=f"shadow.name.{SHADOW}.reported.port"
    )["statistics"]
    assert ports["count"] == 5
    assert ports["minimum"] == 443
    assert ports["maximum"] == 8883
    assert ports["sum"] == 3 * 443 + 2 * 8883
    assert ports["average"] == pytest.approx((3 * 443 + 2 * 8883) / 5)
    with pytest.raises(ClientError) as untyped:
        fleet.get_statistics(queryString="thingName:*", aggregationField="attributes.model")
    assert _code(untyped) == "InvalidAggregationException"


def test_get_buckets_aggregation_counts_things_per_term(fleet) -> None:
    endpoints = fleet.get_buckets_aggregation(
        queryString="thingName:*",
        aggregationField=f"shadow.name.{SHADOW}.reported.endpoint",
        bucketsAggregationType={"termsAggregation": {"maxBuckets": 10}},
    )
    assert endpoints["totalCount"] == 6
    assert endpoints["buckets"] == [{"keyValue": LEGACY, "count": 3}, {"keyValue": ATS, "count": 2}]
    roots = fleet.get_buckets_aggregation(
        queryString="thingGroupNames:rest",
        aggregationField=f"shadow.name.{SHADOW}.reported.roots",
        bucketsAggregationType={"termsAggregation": {"maxBuckets": 1}},
    )
    assert roots["buckets"] == [{"keyValue": "amazon-root-ca-1", "count": 3}]
    groups = fleet.get_buckets_aggregation(
        queryString="thingName:*",
        aggregationField="thingGroupNames",
        bucketsAggregationType={"termsAggregation": {}},
    )
    assert groups["buckets"] == [
        {"keyValue": "rest", "count": 4},
        {"keyValue": "canary", "count": 2},
    ]
    with pytest.raises(ClientError) as numeric:
        fleet.get_buckets_aggregation(
            queryString="thingName:*",
            aggregationField=f"shadow.name.{SHADOW}.reported.port",
            bucketsAggregationType={"termsAggregation": {}},
        )
    assert _code(numeric) == "InvalidAggregationException"


def test_shadows_and_the_indexing_configuration_survive_a_restart(tmp_path: Path) -> None:
    with Sandbox(mqtt=False, state_dir=tmp_path) as first:
        first.provision(1)
        report(first, "device-00001", {"endpoint": ATS})
        first.iot_client().update_indexing_configuration(thingIndexingConfiguration=ON)
    with Sandbox(mqtt=False, state_dir=tmp_path) as second:
        found = second.iot_client().search_index(
            queryString=f"shadow.name.{SHADOW}.reported.endpoint:{ATS}"
        )
        assert [t["thingName"] for t in found["things"]] == ["device-00001"]


def _aws(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "AWS_ACCESS_KEY_ID": "sandbox",
        "AWS_SECRET_ACCESS_KEY": "sandbox",
        "AWS_DEFAULT_REGION": sandbox.region,
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    return subprocess.run(
        [str(VENV_BIN / "aws"), "iot", *args, "--endpoint-url", sandbox.control_plane_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_aws_cli_turns_indexing_on_and_searches(sandbox: Sandbox) -> None:
    sandbox.provision(2)
    report(sandbox, "device-00002", {"endpoint": LEGACY})
    before = _aws(sandbox, "search-index", "--index-name", "AWS_Things", "--query-string", "*")
    assert before.returncode != 0
    assert "ResourceNotFoundException" in before.stderr
    turned_on = _aws(
        sandbox,
        "update-indexing-configuration",
        "--thing-indexing-configuration",
        json.dumps(ON),
    )
    assert turned_on.returncode == 0, turned_on.stderr
    found = _aws(
        sandbox,
        "search-index",
        "--index-name",
        "AWS_Things",
        "--query-string",
        f"shadow.name.{SHADOW}.reported.endpoint:*",
    )
    assert found.returncode == 0, found.stderr
    assert [t["thingName"] for t in json.loads(found.stdout)["things"]] == ["device-00002"]
    bad = _aws(sandbox, "search-index", "--query-string", "thingName:(a")
    assert "InvalidQueryException" in bad.stderr


def test_a_query_sees_every_change_since_the_last_one(sandbox: Sandbox, fleet) -> None:
    query = f"shadow.name.{SHADOW}.reported.endpoint:{ATS} AND thingGroupNames:canary"
    assert [t["thingName"] for t in fleet.search_index(queryString=query)["things"]] == [
        "device-00002"
    ]
    report(sandbox, "device-00001", {"endpoint": ATS})
    fleet.add_thing_to_thing_group(thingGroupName="canary", thingName="device-00004")
    names = [t["thingName"] for t in fleet.search_index(queryString=query)["things"]]
    assert names == ["device-00001", "device-00002", "device-00004"]
