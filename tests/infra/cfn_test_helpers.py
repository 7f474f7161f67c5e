"""Helpers shared by the CloudFormation tests: templates, policy statements, IAM action data."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from infra.aws import load_template, resolve, template_paths

__all__ = [
    "TEMPLATES",
    "as_list",
    "iam_catalog",
    "identity_policies",
    "resolve",
    "resolved",
    "statements",
    "template",
]

TEMPLATES = {path.name: path for path in template_paths()}


@cache
def iam_catalog() -> dict[str, Any]:
    """IAM actions and resource types per service, as shipped with cfn-lint."""
    text = resources.files("cfnlint.data.AdditionalSpecs").joinpath("Policies.json").read_text()
    return json.loads(text)


def template(name: str) -> dict[str, Any]:
    return load_template(TEMPLATES[name])


def statements(policy_document: dict[str, Any]) -> list[dict[str, Any]]:
    raw = policy_document["Statement"]
    return raw if isinstance(raw, list) else [raw]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def identity_policies(tpl: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every permission (not trust) policy document in a template, with where it is."""
    found: list[tuple[str, dict[str, Any]]] = []
    for logical, resource in tpl["Resources"].items():
        if logical.startswith("Fn::ForEach::"):
            continue  # expanded by AWS::LanguageExtensions; holds no policies here
        props = resource.get("Properties", {})
        if resource["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            found.append((logical, props["PolicyDocument"]))
        if resource["Type"] == "AWS::IAM::Role":
            found.extend(
                (f"{logical}/{policy['PolicyName']}", policy["PolicyDocument"])
                for policy in props.get("Policies", [])
            )
    return found


def resolved(name: str, **parameters: str) -> dict[str, Any]:
    """The template's Resources with intrinsic functions evaluated for these parameters."""
    tpl = template(name)
    return resolve(tpl["Resources"], tpl, parameters)
