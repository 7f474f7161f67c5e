"""The IAM policies in the templates: no wildcard actions, every resource scoped and valid.

Action names and the resource types each action accepts come from the IAM service reference data
that cfn-lint ships, so a misspelt action, or an ARN of a type the action ignores (which would
silently grant nothing), fails here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from .cfn_test_helpers import (
    TEMPLATES,
    as_list,
    iam_catalog,
    identity_policies,
    resolve,
    resolved,
    statements,
    template,
)

PARTITIONS = [
    ("aws", "us-east-1"),
    ("aws", "eu-west-1"),
    ("aws-cn", "cn-north-1"),
]


def _all_policy_statements() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for name in TEMPLATES:
        for where, document in identity_policies(template(name)):
            found.extend((name, where, statement) for statement in statements(document))
    return found


STATEMENTS = _all_policy_statements()
STATEMENT_IDS = [
    f"{name}:{where}:{s.get('Sid', i)}" for i, (name, where, s) in enumerate(STATEMENTS)
]


def test_the_templates_hold_policies():
    assert len(STATEMENTS) >= 6


@pytest.mark.parametrize(("name", "where", "statement"), STATEMENTS, ids=STATEMENT_IDS)
def test_no_wildcard_actions_and_only_allow(name, where, statement):
    assert statement["Effect"] == "Allow"
    assert "NotAction" not in statement, "NotAction grants everything else"
    assert "NotResource" not in statement
    for action in as_list(statement["Action"]):
        assert isinstance(action, str)
        assert "*" not in action, f"{name} {where}: wildcard action {action}"
        assert "?" not in action, f"{name} {where}: wildcard action {action}"


@pytest.mark.parametrize(("name", "where", "statement"), STATEMENTS, ids=STATEMENT_IDS)
def test_every_action_exists_in_iam(name, where, statement):
    catalog = iam_catalog()
    for action in as_list(statement["Action"]):
        service, _, operation = action.partition(":")
        assert service in catalog, f"unknown service prefix in {action}"
        assert operation.lower() in catalog[service]["Actions"], f"IAM has no action {action}"


def _arn_patterns(service: str, resource_type: str, partition: str, region: str) -> list[str]:
    formats = iam_catalog()[service]["Resources"][resource_type]["ARNFormats"]
    return [
        fmt.replace("${Partition}", partition)
        .replace("${Region}", region)
        .replace("${Account}", "123456789012")
        for fmt in formats
    ]


@pytest.mark.parametrize(("partition", "region"), PARTITIONS)
@pytest.mark.parametrize(("name", "where", "statement"), STATEMENTS, ids=STATEMENT_IDS)
def test_resources_are_scoped_to_types_each_action_accepts(
    name, where, statement, partition, region
):
    tpl = template(name)
    params = {"AWS::Partition": partition, "AWS::Region": region}
    resources = as_list(resolve(statement["Resource"], tpl, params))
    catalog = iam_catalog()
    for action in as_list(statement["Action"]):
        service, _, operation = action.partition(":")
        accepted = catalog[service]["Actions"][operation.lower()].get("Resources", [])
        if resources == ["*"]:
            assert not accepted, f"{action} supports resource-level scoping: do not use '*'"
            continue
        for arn in resources:
            if arn.startswith("<"):
                continue  # a resource of the same stack (Ref/GetAtt), scoped by construction
            assert "*" not in arn.split(":", 6)[:5], f"{arn}: partition/region/account wildcard"
            assert arn.startswith(f"arn:{partition}:"), f"{arn} is not in partition {partition}"
            assert any(
                re.fullmatch(pattern, arn)
                for resource_type in accepted
                for pattern in _arn_patterns(service, resource_type, partition, region)
            ), f"{name} {where}: {action} does not apply to {arn} (accepts {accepted})"


def test_only_actions_without_a_resource_type_get_a_resource_wildcard():
    wildcard_actions = {
        action
        for name, _, statement in STATEMENTS
        if resolve(statement["Resource"], template(name), {}) in ("*", ["*"])
        for action in as_list(statement["Action"])
    }
    assert wildcard_actions == {
        "iot:DescribeEndpoint",
        "iot:GetIndexingConfiguration",
        "iot:UpdateIndexingConfiguration",
    }


def _policy_actions(resources: dict[str, Any], name: str) -> set[str]:
    document = resources[name]["Properties"]["PolicyDocument"]
    return {a for statement in statements(document) for a in as_list(statement["Action"])}


def test_operators_may_turn_on_fleet_indexing_and_the_runner_may_only_query_it():
    resources = resolved("orchestrator-iam.yaml")
    setup = _policy_actions(resources, "FleetIndexingSetupPolicy")
    assert setup == {
        "iot:GetIndexingConfiguration",
        "iot:UpdateIndexingConfiguration",
        "iot:DescribeIndex",
    }
    assert (
        "<FleetIndexingSetupPolicy>" in resources["OperatorRole"]["Properties"]["ManagedPolicyArns"]
    )
    shared = _policy_actions(resources, "OrchestratorPolicy")  # the runner's too
    assert {"iot:SearchIndex", "iot:GetStatistics", "iot:GetBucketsAggregation"} <= shared
    assert not setup & shared
    runner = template("runner.yaml")
    role = resolve(runner["Resources"]["RunnerRole"], runner, {"OrchestratorPolicyArn": "arn:p"})
    assert "IndexingConfiguration" not in str(role)
    assert "FleetIndexingSetup" not in str(role)


@pytest.mark.parametrize(
    ("iot_region", "expected_region"), [("", "us-west-2"), ("eu-central-1", "eu-central-1")]
)
def test_orchestrator_policy_follows_the_iot_region(iot_region, expected_region):
    tpl = template("orchestrator-iam.yaml")
    params = {"IotRegion": iot_region, "AWS::Region": "us-west-2", "TableName": "camp"}
    document = resolve(tpl["Resources"]["OrchestratorPolicy"], tpl, params)["Properties"][
        "PolicyDocument"
    ]
    arns = [arn for s in statements(document) for arn in as_list(s["Resource"]) if arn != "*"]
    assert arns
    assert all(arn.split(":")[3] == expected_region for arn in arns)
    assert f"arn:aws:dynamodb:{expected_region}:123456789012:table/camp" in arns


def test_orchestrator_policy_grants_dynamodb_only_on_the_campaign_table():
    tpl = template("orchestrator-iam.yaml")
    document = resolve(tpl["Resources"]["OrchestratorPolicy"], tpl, {"TableName": "camp"})[
        "Properties"
    ]["PolicyDocument"]
    ddb = [s for s in statements(document) if as_list(s["Action"])[0].startswith("dynamodb:")]
    assert ddb
    for statement in ddb:
        assert all(a.startswith("dynamodb:") for a in as_list(statement["Action"]))
        assert set(as_list(statement["Resource"])) <= {
            "arn:aws:dynamodb:us-east-1:123456789012:table/camp",
            "arn:aws:dynamodb:us-east-1:123456789012:table/camp/index/*",
        }


def _trust(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return statements(resource["Properties"]["AssumeRolePolicyDocument"])


def test_runner_roles_trust_only_their_service_in_this_account():
    tpl = template("runner.yaml")
    resources = resolve(tpl["Resources"], tpl, {})
    for role, service in (
        ("RunnerRole", "lambda.amazonaws.com"),
        ("SchedulerRole", "scheduler.amazonaws.com"),
    ):
        (trust,) = _trust(resources[role])
        assert trust["Principal"] == {"Service": service}
        assert trust["Action"] == "sts:AssumeRole"
        assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


def test_scheduler_may_only_invoke_the_runner():
    tpl = template("runner.yaml")
    role = resolve(tpl["Resources"]["SchedulerRole"], tpl, {})
    (policy,) = role["Properties"]["Policies"]
    (statement,) = statements(policy["PolicyDocument"])
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Resource"] == "<RunnerFunction.Arn>"


def test_runner_role_carries_the_orchestrator_policy():
    tpl = template("runner.yaml")
    role = resolve(tpl["Resources"]["RunnerRole"], tpl, {"OrchestratorPolicyArn": "arn:p"})
    assert role["Properties"]["ManagedPolicyArns"] == ["arn:p"]


def test_runner_role_carries_the_orchestrator_policy_of_each_iot_region():
    """Waves of one campaign may run in several regions: the runner needs each one's policy."""
    tpl = template("runner.yaml")
    role = resolve(
        tpl["Resources"]["RunnerRole"],
        tpl,
        {"OrchestratorPolicyArn": "arn:east", "MoreOrchestratorPolicyArns": "arn:west,arn:tokyo"},
    )
    assert role["Properties"]["ManagedPolicyArns"] == ["arn:east", "arn:west", "arn:tokyo"]


def test_operator_role_trust_can_be_narrowed_to_one_principal():
    tpl = template("orchestrator-iam.yaml")
    whole = resolve(tpl["Resources"]["OperatorRole"], tpl, {})
    assert _trust(whole)[0]["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    one = resolve(
        tpl["Resources"]["OperatorRole"],
        tpl,
        {"OperatorPrincipalArn": "arn:aws:iam::123456789012:role/fleet-ops"},
    )
    assert _trust(one)[0]["Principal"] == {"AWS": "arn:aws:iam::123456789012:role/fleet-ops"}


def test_orchestrator_policy_fits_the_managed_policy_size_limit():
    """IAM rejects a managed policy over 6144 characters, whitespace excluded."""
    import json

    tpl = template("orchestrator-iam.yaml")
    params = {"TableName": "t" * 255, "IotRegion": "ap-southeast-5", "AWS::Partition": "aws-cn"}
    document = resolve(tpl["Resources"]["OrchestratorPolicy"], tpl, params)["Properties"][
        "PolicyDocument"
    ]
    assert len(json.dumps(document, separators=(",", ":"))) <= 6144


KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"


def test_the_signing_policy_exists_only_with_a_key_and_grants_that_key_only():
    tpl = template("orchestrator-iam.yaml")
    assert tpl["Resources"]["DocumentSigningPolicy"]["Condition"] == "SignWithKms"
    created = {"Fn::If": ["SignWithKms", True, False]}
    assert resolve(created, tpl, {}) is False
    assert resolve(created, tpl, {"SigningKeyId": KEY_ID}) is True
    without = resolved("orchestrator-iam.yaml")
    assert without["OperatorRole"]["Properties"]["ManagedPolicyArns"] == [
        "<OrchestratorPolicy>",
        "<FleetIndexingSetupPolicy>",
    ]
    params = {"SigningKeyId": KEY_ID, "IotRegion": "eu-west-1"}
    with_key = resolved("orchestrator-iam.yaml", **params)
    document = with_key["DocumentSigningPolicy"]["Properties"]["PolicyDocument"]
    (statement,) = statements(document)
    assert statement["Resource"] == f"arn:aws:kms:eu-west-1:123456789012:key/{KEY_ID}"
    assert with_key["OperatorRole"]["Properties"]["ManagedPolicyArns"] == [
        "<OrchestratorPolicy>",
        "<FleetIndexingSetupPolicy>",
        "<DocumentSigningPolicy>",
    ]


def test_the_runner_is_not_given_the_signing_policy():
    tpl = template("runner.yaml")
    role = resolve(tpl["Resources"]["RunnerRole"], tpl, {"OrchestratorPolicyArn": "arn:p"})
    assert "kms:" not in str(role)
