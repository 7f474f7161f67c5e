"""The device's AWS IoT policy, evaluated the way AWS IoT Core evaluates it.

AWS IoT policy resources are matched with `*` (any characters) and `?` (one character); the MQTT
wildcards `+` and `#` are ordinary characters there. Policy variables such as
`${iot:Connection.Thing.ThingName}` are replaced for the connecting thing first. Publish and
Receive are checked against `topic/` ARNs, Subscribe against `topicfilter/` ARNs, Connect
against `client/` ARNs. These tests ask the resolved policy what a device may do.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from .cfn_test_helpers import as_list, resolve, statements, template

ACCOUNT_PREFIX = "arn:aws:iot:us-east-1:123456789012"
KIND = {
    "iot:Connect": "client",
    "iot:Publish": "topic",
    "iot:Receive": "topic",
    "iot:Subscribe": "topicfilter",
}


def _policy(**parameters: str) -> dict[str, Any]:
    tpl = template("device-policy.yaml")
    resource = resolve(tpl["Resources"]["DevicePolicy"], tpl, parameters)
    return resource["Properties"]["PolicyDocument"]


def _matches(pattern: str, arn: str) -> bool:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, arn) is not None


def allowed(
    document: dict[str, Any], action: str, name: str, *, thing: str, attached: bool = True
) -> bool:
    """Whether `thing` (connected with its own certificate) may do `action` on `name`."""
    arn = f"{ACCOUNT_PREFIX}:{KIND[action]}/{name}"
    for statement in statements(document):
        if action not in as_list(statement["Action"]):
            continue
        condition = statement.get("Condition", {})
        if (
            condition.get("Bool", {}).get("iot:Connection.Thing.IsAttached") == "true"
            and not attached
        ):
            continue
        for pattern in as_list(statement["Resource"]):
            concrete = pattern.replace("${iot:Connection.Thing.ThingName}", thing)
            if _matches(concrete, arn):
                return True
    return False


JOBS = "$aws/things/dev-1/jobs"
SHADOW = "$aws/things/dev-1/shadow/name/ca-migration"

CASES = [
    # (action, resource name, allowed?) for thing dev-1
    ("iot:Connect", "dev-1", True),
    ("iot:Connect", "dev-2", False),
    ("iot:Connect", "dev-1-extra", False),
    ("iot:Publish", f"{JOBS}/get", True),
    ("iot:Publish", f"{JOBS}/start-next", True),
    ("iot:Publish", f"{JOBS}/ats-2026-canary-1a2b/update", True),
    ("iot:Publish", f"{JOBS}/$next/get", True),
    ("iot:Publish", "$aws/things/dev-2/jobs/start-next", False),
    ("iot:Publish", "$aws/things/dev-1x/jobs/get", False),
    ("iot:Publish", f"{SHADOW}/update", True),
    ("iot:Publish", f"{SHADOW}/get", True),
    ("iot:Publish", f"{SHADOW}/delete", False),
    ("iot:Publish", "$aws/things/dev-1/shadow/update", False),
    ("iot:Publish", "$aws/things/dev-1/shadow/name/other/update", False),
    ("iot:Publish", "fleet/broadcast", False),
    ("iot:Subscribe", f"{JOBS}/notify-next", True),
    ("iot:Subscribe", f"{JOBS}/notify", True),
    ("iot:Subscribe", f"{JOBS}/start-next/+", True),
    ("iot:Subscribe", f"{JOBS}/+/get/accepted", True),
    ("iot:Subscribe", f"{SHADOW}/update/accepted", True),
    ("iot:Subscribe", f"{SHADOW}/update/delta", True),
    ("iot:Subscribe", "$aws/things/+/jobs/notify", False),
    ("iot:Subscribe", "$aws/things/dev-2/jobs/notify-next", False),
    ("iot:Subscribe", "#", False),
    ("iot:Subscribe", "$aws/things/dev-1/#", False),
    ("iot:Subscribe", "$aws/things/dev-1/shadow/update/accepted", False),
    ("iot:Receive", f"{JOBS}/notify-next", True),
    ("iot:Receive", f"{JOBS}/start-next/accepted", True),
    ("iot:Receive", f"{SHADOW}/get/accepted", True),
    ("iot:Receive", "$aws/things/dev-2/jobs/notify-next", False),
    ("iot:Receive", "$aws/things/dev-2/shadow/name/ca-migration/update/accepted", False),
]


@pytest.mark.parametrize(("action", "name", "expected"), CASES)
def test_device_may_act_only_on_its_own_topics(action, name, expected):
    assert allowed(_policy(), action, name, thing="dev-1") is expected


def test_connect_requires_the_thing_attached_to_the_certificate():
    document = _policy()
    assert allowed(document, "iot:Connect", "dev-1", thing="dev-1", attached=True)
    assert not allowed(document, "iot:Connect", "dev-1", thing="dev-1", attached=False)


def test_resource_kinds_match_actions():
    """Subscribe is checked against topic filters, Publish/Receive against topics."""
    for statement in statements(_policy()):
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                assert resource.startswith(f"{ACCOUNT_PREFIX}:{KIND[action]}/"), (action, resource)


def test_policy_variable_survives_fn_sub():
    """`${!iot:...}` in the template becomes the policy variable, not a CloudFormation Ref."""
    resources = [r for s in statements(_policy()) for r in as_list(s["Resource"])]
    assert all("${iot:Connection.Thing.ThingName}" in r for r in resources)
    assert all("$aws/things/" in r for r in resources if "topic" in r)


def test_shadow_name_is_a_parameter():
    document = _policy(ShadowName="ca-migration-v2")
    assert allowed(
        document, "iot:Publish", "$aws/things/d/shadow/name/ca-migration-v2/update", thing="d"
    )
    assert not allowed(
        document, "iot:Publish", "$aws/things/d/shadow/name/ca-migration/update", thing="d"
    )


def test_no_policy_wildcard_beyond_the_own_prefixes():
    for statement in statements(_policy()):
        for resource in as_list(statement["Resource"]):
            head, star, tail = resource.partition("*")
            if star:
                assert tail == ""
                assert head.endswith(("/jobs/", "/shadow/name/ca-migration/")), resource


def test_policy_fits_aws_iot_policy_size_limit():
    """AWS IoT rejects a policy document over 2048 characters, whitespace excluded."""
    import json

    document = _policy(ShadowName="x" * 64)
    compact = json.dumps(document, separators=(",", ":"))
    assert len(compact) <= 2048, len(compact)
