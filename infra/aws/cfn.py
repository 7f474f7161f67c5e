"""Read ca-migrate's CloudFormation templates as plain data.

CloudFormation YAML uses short-form tags for intrinsic functions (`!Sub`, `!Ref`, `!GetAtt`,
...), which a plain YAML loader rejects. `load_template` maps every such tag to its long form
(`{"Fn::Sub": ...}`, `{"Ref": ...}`), exactly as CloudFormation does, so templates can be
inspected as dictionaries. `resolve` then evaluates the intrinsic functions a policy document
uses (`Ref`, `Fn::Sub`, `Fn::If`, `Fn::Equals`, `Fn::Not`, `Fn::GetAtt`, `Fn::Join`,
`Fn::Split`) for one set of parameter values, so tests can check the ARNs a stack would
really grant.

Invariants: loading never executes anything (safe loader); an intrinsic `resolve` does not
know raises `TemplateError` instead of being passed through silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["TEMPLATES_DIR", "TemplateError", "load_template", "resolve", "template_paths"]

TEMPLATES_DIR = Path(__file__).resolve().parent

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class TemplateError(ValueError):
    """A template cannot be read or an expression in it cannot be evaluated."""


class _CfnLoader(yaml.SafeLoader):
    """A safe loader that also accepts CloudFormation's short-form intrinsic tags."""


def _construct_intrinsic(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - PyYAML has no other node kinds
        raise TemplateError(f"unsupported YAML node for !{tag_suffix}")
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def template_paths() -> list[Path]:
    """Every CloudFormation template shipped with ca-migrate, sorted by name."""
    return sorted(TEMPLATES_DIR.glob("*.yaml"))


def load_template(path: Path) -> dict[str, Any]:
    """Parse one template; intrinsic tags become their long form."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path} is not valid YAML: {exc}; fix the line shown") from exc
    if not isinstance(data, dict) or "Resources" not in data:
        raise TemplateError(f"{path} is not a CloudFormation template (no Resources section)")
    return data


def resolve(node: Any, template: Mapping[str, Any], parameters: Mapping[str, str]) -> Any:
    """Evaluate the intrinsic functions in `node` for these parameter values.

    `parameters` holds the stack parameters (missing ones take the template's defaults) and may
    override the pseudo parameters (`AWS::Partition`, `AWS::Region`, `AWS::AccountId`,
    `AWS::StackName`). `Fn::GetAtt` and a `Ref` to a resource resolve to a placeholder
    `<Logical.Attribute>` / `<Logical>`, enough to tell which resource a policy names.
    """
    values = _parameter_values(template, parameters)
    return _Resolver(template, values).resolve(node)


def _parameter_values(template: Mapping[str, Any], given: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "AWS::Partition": "aws",
        "AWS::Region": "us-east-1",
        "AWS::AccountId": "123456789012",
        "AWS::StackName": "ca-migrate",
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::NoValue": None,
    }
    for name, spec in (template.get("Parameters") or {}).items():
        if name in given:
            raw: Any = given[name]
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            raw = f"<{name}>"
        if spec.get("Type") == "CommaDelimitedList" and isinstance(raw, str):
            raw = [item.strip() for item in raw.split(",")] if raw else []
        values[name] = raw if isinstance(raw, list) else str(raw)
    values.update({k: v for k, v in given.items() if k.startswith("AWS::")})
    return values


class _Resolver:
    def __init__(self, template: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        self._template = template
        self._values = values
        self._conditions: dict[str, bool] = {}

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [r for r in (self.resolve(item) for item in node) if r is not None]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self._ref(arg)
            if key.startswith("Fn::") or key == "Condition":
                return self._function(key, arg)
        return {k: r for k, r in ((k, self.resolve(v)) for k, v in node.items()) if r is not None}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self._template.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"condition {name!r} is not defined in Conditions")
            self._conditions[name] = bool(self.resolve(conditions[name]))
        return self._conditions[name]

    def _ref(self, name: Any) -> Any:
        if name in self._values:
            return self._values[name]
        if name in (self._template.get("Resources") or {}):
            return f"<{name}>"
        raise TemplateError(f"Ref to unknown parameter or resource {name!r}")

    def _function(self, key: str, arg: Any) -> Any:
        if key == "Fn::Sub":
            return self._sub(arg)
        if key == "Fn::If":
            name, if_true, if_false = arg
            return self.resolve(if_true if self.condition(name) else if_false)
        if key == "Fn::Equals":
            left, right = (self.resolve(a) for a in arg)
            return left == right
        if key == "Fn::Not":
            return not self.resolve(arg[0])
        if key == "Fn::And":
            return all(self.resolve(a) for a in arg)
        if key == "Fn::Or":
            return any(self.resolve(a) for a in arg)
        if key == "Condition":
            return self.condition(arg)
        if key == "Fn::GetAtt":
            resource, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return f"<{resource}.{attribute}>"
        if key == "Fn::Join":
            separator, items = arg
            resolved = self.resolve(items)
            if isinstance(resolved, str):  # a Ref to a CommaDelimitedList, resolved to text
                resolved = [resolved]
            return str(separator).join(str(i) for i in resolved)
        if key == "Fn::Split":
            separator, text = arg
            return str(self.resolve(text)).split(str(separator))
        raise TemplateError(f"{key} is not supported by infra.aws.cfn.resolve")

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, local = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
        else:
            text, local = arg, {}

        def replace(match: re.Match[str]) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in local:
                return str(local[inner])
            if "." in inner and inner.split(".", 1)[0] in (self._template.get("Resources") or {}):
                return f"<{inner}>"
            return str(self._ref(inner))

        return _SUB_VARIABLE.sub(replace, str(text))
