"""cfn-lint accepts every shipped template, and would report a broken one."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import cfnlint
import pytest
from cfnlint.api import ManualArgs, lint_file

from infra.aws import package_lambda, template_paths
from infra.aws.cfn import load_template

# A commercial region, an opt-in one and China, where the partition (and so every ARN) differs.
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-5", "cn-north-1"]


def _lint(path: Path) -> str:
    """cfn-lint's findings for one template, one per line, as its CLI prints them."""
    matches = lint_file(path, ManualArgs(regions=REGIONS))
    return "\n".join(str(match) for match in matches)


def test_templates_are_found():
    names = {path.name for path in template_paths()}
    assert {"orchestrator-iam.yaml", "device-policy.yaml", "fleet.yaml", "runner.yaml"} <= names


@pytest.mark.parametrize("path", template_paths(), ids=lambda p: p.name)
def test_cfn_lint_passes(path: Path):
    findings = _lint(path)
    assert not findings, f"cfn-lint {path.name}:\n{findings}"


MISTAKES = [
    ("      MemorySize: 512\n", "      MemorySize: 512\n      Memory: 1\n", "Memory"),
    ("Runtime: python3.13", "Runtime: python2.7", "python2.7"),
    ("Resource: !GetAtt RunnerFunction.Arn", "Resource: !GetAtt RunnerFunktion.Arn", "Funktion"),
]


def test_cfn_lint_reports_a_broken_template(tmp_path: Path):
    """Guards the test above: cfn-lint reports an unknown property, a retired runtime and a
    dangling GetAtt planted in runner.yaml (one lint run for all three, to keep it quick)."""
    source = next(p for p in template_paths() if p.name == "runner.yaml").read_text()
    for original, broken, _ in MISTAKES:
        assert original in source
        source = source.replace(original, broken)
    path = tmp_path / "runner.yaml"
    path.write_text(source)
    findings = _lint(path)
    for _, _, expected in MISTAKES:
        assert expected in findings, f"cfn-lint missed {expected!r}:\n{findings}"


def test_the_runner_runtime_has_a_year_of_support_left_by_the_pinned_lint_calendar():
    """The calendar is cfn-lint's (pinned floor in pyproject's [dev]); the runner's runtime
    must not be deprecated within the next year, and the zip is built for that Python."""
    lifecycle = json.loads(
        (
            Path(cfnlint.__file__).parent / "data/AdditionalSpecs/LmbdRuntimeLifecycle.json"
        ).read_text()
    )
    source = next(p for p in template_paths() if p.name == "runner.yaml")
    runtime = load_template(source)["Resources"]["RunnerFunction"]["Properties"]["Runtime"]
    assert runtime == f"python{package_lambda.PYTHON_VERSION}"
    deprecated = date.fromisoformat(lifecycle[runtime]["deprecated"])
    left = deprecated - datetime.now(UTC).date()
    assert left > timedelta(days=365), f"{runtime} is deprecated on {deprecated}"
