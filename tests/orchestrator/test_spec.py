from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from orchestrator.cron import CronSyntaxError, check_cron
from orchestrator.errors import SpecError
from orchestrator.model import Approval
from orchestrator.spec import load_spec, parse_spec, render_schema, schema_path, spec_json_schema

from .conftest import README_CAMPAIGN

ROOT = Path(__file__).resolve().parents[2]


def test_readme_example_is_accepted_as_is(readme_campaign: Path) -> None:
    spec = load_spec(readme_campaign)
    assert spec.name == "ats-2026"
    assert spec.endpoint == "auto"
    assert spec.trust.add == ("amazon-root-ca-1", "amazon-root-ca-3")
    assert [w.name for w in spec.waves] == ["canary", "wave-1", "wave-2"]
    assert spec.waves[1].approval is Approval.MANUAL
    assert spec.waves[1].rollout.maximum_per_minute == 100
    assert spec.waves[2].thing_groups == ("fleet-b", "fleet-c")
    assert spec.execution.retry_failed == 1
    assert spec.halt.fleet_failure_budget == 200
    assert spec.waves[0].gate.bake_minutes == 10


def test_readme_example_validates_against_the_published_schema() -> None:
    jsonschema.validate(yaml.safe_load(README_CAMPAIGN), spec_json_schema())


def test_published_schema_copies_are_in_sync_with_the_models() -> None:
    expected = render_schema()
    assert schema_path().read_text() == expected
    assert (ROOT / "docs" / "campaign.schema.json").read_text() == expected
    assert json.loads(expected)["$schema"].endswith("2020-12/schema")


@pytest.mark.parametrize(
    ("needle", "replacement", "line", "path", "message"),
    [
        (
            "min_success_rate: 0.98, min_completed_fraction: 0.9,",
            "min_success_rate: 1.5, min_completed_fraction: 0.9,",
            20,
            "waves[1].gate.min_success_rate",
            "less than or equal",
        ),
        (
            "  keep_existing: true",
            "  keep_existing: true\n  keep_exisitng: true",
            7,
            "trust.keep_exisitng",
            "unknown key",
        ),
        ("region: us-east-1", "region: Mars", 2, "region", "pattern"),
        ("    approval: manual", "    approval: sometimes", 21, "waves[1].approval", "auto"),
        ("  - name: wave-2\n", "  - name: canary\n", 22, "waves[2].name", "unique"),
        ("name: ats-2026\n", "name: ats 2026!\n", 1, "name", "pattern"),
        ("    thing_groups: [canary]\n", "", 14, "waves[0]", "give thing_groups, query or sample"),
    ],
)
def test_errors_point_at_line_and_key(needle, replacement, line, path, message) -> None:
    assert needle in README_CAMPAIGN
    text = README_CAMPAIGN.replace(needle, replacement, 1)
    with pytest.raises(SpecError) as info:
        parse_spec(text, "c.yaml")
    problems = info.value.problems
    assert any(p.path == path and p.line == line and message in p.message for p in problems), [
        str(p) for p in problems
    ]
    assert f"c.yaml: line {line}" in str(info.value)


def test_every_problem_is_listed_not_just_the_first() -> None:
    text = README_CAMPAIGN.replace("region: us-east-1", "region: nowhere").replace(
        "min_completed: 10", "min_completed: -1"
    )
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert {p.path for p in info.value.problems} >= {"region", "waves[0].gate.min_completed"}


def test_duplicate_keys_are_reported_with_their_line() -> None:
    text = README_CAMPAIGN.replace("region: us-east-1\n", "region: us-east-1\nregion: eu-west-1\n")
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert [(p.path, p.line) for p in info.value.problems] == [("region", 3)]


@pytest.mark.parametrize(
    ("text", "message"),
    [("name: [unclosed", "not valid YAML"), ("- a\n- b\n", "YAML mapping"), ("", "YAML mapping")],
)
def test_not_a_campaign_at_all(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(text)


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "nope.yaml")


def test_catalog_path_is_resolved_against_the_campaign_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(README_CAMPAIGN + "catalog: roots/catalog.json\n")
    assert load_spec(path).catalog == str(tmp_path / "roots" / "catalog.json")


def test_extras_are_accepted() -> None:
    text = README_CAMPAIGN.replace(
        "    approval: manual\n",
        "    approval: manual\n    deadline_minutes: 120\n    offline: block\n"
        "    max_failure_rate: 0.01\n"
        "    maintenance_windows: [{start: 'cron(0 2 ? * * *)', duration_minutes: 120}]\n"
        "    execution: {in_progress_timeout_minutes: 5}\n",
    ).replace(
        "    rollout: {maximum_per_minute: 100}\n",
        "    rollout:\n      maximum_per_minute: 100\n      exponential:\n"
        "        base_rate_per_minute: 5\n        increment_factor: 2\n"
        "        notified_things: 50\n",
    )
    spec = parse_spec(text)
    wave = spec.wave("wave-1")
    assert wave.deadline_minutes == 120
    assert wave.rollout.exponential is not None
    assert wave.rollout.exponential.notified_things == 50
    assert spec.halt_for(wave).max_failure_rate == 0.01
    assert spec.execution_for(wave).in_progress_timeout_minutes == 5
    assert wave.maintenance_windows[0].duration_minutes == 120


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 2 ? * * *)",
        "cron(30 22 ? * SAT *)",
        "cron(0/15 8-17 ? * MON-FRI *)",
        "cron(0 2 L * ? *)",
        "cron(0 2 3W * ? *)",
        "cron(0 2 ? * 6#3 *)",
        "cron(0 2 ? * 6L *)",
        "cron(0 0 1 JAN,JUL ? 2027-2030)",
        "cron(5,35 14 * * ? *)",
    ],
)
def test_aws_cron_expressions_are_accepted(expression: str) -> None:
    check_cron(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("cron(0 2 * * *)", "six fields"),
        ("cron(0 2 * * * * *)", "six fields"),
        ("cron(0 2 * * * *)", "put ? in exactly one"),
        ("cron(0 2 ? * ? *)", "put ? in exactly one"),
        ("cron(60 2 ? * * *)", "'60' in minutes is outside 0-59"),
        ("cron(0 24 ? * * *)", "'24' in hours is outside 0-23"),
        ("cron(0 2 32 * ? *)", "outside 1-31"),
        ("cron(0 2 ? 13 * *)", "outside 1-12"),
        ("cron(0 2 ? * 8 *)", "outside 1-7"),
        ("cron(0 2 ? * * 1969)", "outside 1970-2199"),
        ("cron(0 2 ? * MON/2 *)", "/ increments are not allowed in day-of-week"),
        ("cron(0/0 2 ? * * *)", "the increment after / is 1-59"),
        ("cron(0 2 ? * 6#6 *)", "the instance after # is 1-5"),
        ("cron(0 2 ? * 1#1,2#2 *)", "a # expression stands alone"),
        ("cron(0 L ? * * *)", "'L' in hours is not a value"),
        ("cron(0 2 ? * * *", "write it as cron("),
        ("rate(5 minutes)", "write it as cron("),
        ("cron(0 2,, ? * * *)", "empty list item"),
        ("cron(0 2 ? * * 2030-2027)", "the range runs backwards"),
        ("cron(" + "0," * 200 + "0 2 ? * * *)", "over 256 characters"),
        ("cron(\u0661 2 ? * * *)", "is not a value"),
    ],
)
def test_cron_expressions_outside_aws_syntax_are_refused_with_the_reason(
    expression: str, message: str
) -> None:
    with pytest.raises(CronSyntaxError, match=re.escape(message)):
        check_cron(expression)
