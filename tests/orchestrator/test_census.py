"""`ca-migrate census`: the pure arithmetic, and the command against sandbox fleet indexing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from infra.sandbox.mqtt._shadow import ShadowStore
from infra.sandbox.runtime import Sandbox
from job_documents import default_catalog_path
from orchestrator.census import (
    INDEXING_CONFIGURATION,
    assemble,
    base_query,
    classify_endpoint,
    count_by_kind,
    name_roots,
    render_text,
)
from orchestrator.cli import app
from orchestrator.cli.census import _root_names

REGION = "us-east-1"
LEGACY = "a1sandbox2demo.iot.us-east-1.amazonaws.com"
ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        (ATS, "ats"),
        (LEGACY, "legacy"),
        ("a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com", "other"),
        ("mqtt.example.com", "other"),
    ],
)
def test_endpoints_are_classified_by_the_job_documents_rules(host: str, kind: str) -> None:
    assert classify_endpoint(host, REGION) == kind


def test_group_queries_quote_names() -> None:
    assert base_query([]) == "thingName:*"
    assert base_query(["a", 'b"c']) == '(thingGroupNames:"a" OR thingGroupNames:"b\\"c")'


def test_assemble_adds_endpoint_kinds_and_derives_never_reported_per_group() -> None:
    census = assemble(
        region=REGION,
        groups_asked=[],
        total=10,
        reported=7,
        endpoints={LEGACY: 4, ATS: 3},
        roots={},
        phases={},
        agent_versions={},
        group_totals={"g1": 6, "g2": 4},
        group_endpoints={LEGACY: {"g1": 4}, ATS: {"g1": 1, "g2": 2}},
    )
    assert census.by_endpoint_kind == {"legacy": 4, "ats": 3, "other": 0}
    assert census.never_reported == 3
    assert census.groups["g1"].never_reported == 1
    assert census.groups["g2"].never_reported == 2
    assert census.notes == ()
    short = assemble(
        region=REGION,
        groups_asked=[],
        total=10,
        reported=9,
        endpoints={LEGACY: 4},
        roots={},
        phases={},
        agent_versions={},
        group_totals={},
        group_endpoints={},
    )
    assert "endpoint buckets hold 4" in render_text(short)


#: The packaged catalog's amazon-root-ca-1, as a device whose catalog lacks it reports it.
CA1_HASH = "sha256:8ecde6884f3d87b1"


def test_reported_hashes_are_named_by_the_catalog_and_unknown_ones_kept() -> None:
    catalog = {"8ecde6884f3d87b1" + "0" * 48: "amazon-root-ca-1", "ab" * 32: "other-root"}
    roots = {CA1_HASH: 3, "amazon-root-ca-1": 2, "sha256:c4ce74aa692acf26": 4, "sha256:": 1}
    assert name_roots(roots, catalog) == {
        "amazon-root-ca-1": 5,
        "sha256:c4ce74aa692acf26": 4,
        "sha256:": 1,
    }


def test_text_census_has_a_waves_block_and_names_roots() -> None:
    census = assemble(
        region=REGION,
        groups_asked=[],
        total=10,
        reported=8,
        endpoints={LEGACY: 5, ATS: 3},
        roots={CA1_HASH: 8},
        phases={},
        agent_versions={},
        group_totals={},
        group_endpoints={},
        waves={"canary": (4, {ATS: 3}), "wave-1": (6, {LEGACY: 5})},
    )
    text = render_text(census, {"8ecde6884f3d87b1" + "0" * 48: "amazon-root-ca-1"})
    assert "roots held:\n  amazon-root-ca-1  8\n" in text
    assert (
        "waves (total / legacy / ATS / other / never reported):\n"
        "  canary  4 / 0 / 3 / 0 / 1\n"
        "  wave-1  6 / 5 / 0 / 0 / 1\n"
    ) in text
    assert census.waves["canary"] == count_by_kind(4, {ATS: 3}, REGION)
    assert CA1_HASH in render_text(census)  # no catalog: the hash


def test_root_names_come_from_the_campaigns_catalog(tmp_path: Path) -> None:
    packaged = default_catalog_path()
    shutil.copytree(packaged.parent, tmp_path / "roots")
    own = tmp_path / "roots" / packaged.name
    own.write_text(own.read_text().replace('"amazon-root-ca-1"', '"our-root-1"'))
    assert name_roots({CA1_HASH: 1}, _root_names(str(own))) == {"our-root-1": 1}
    assert name_roots({CA1_HASH: 1}, _root_names(None)) == {"amazon-root-ca-1": 1}


def _report(sandbox: Sandbox, thing: str, endpoint: str) -> None:
    store = ShadowStore(lambda: 0, sandbox.engine.named_shadows)
    reported = {"endpoint": endpoint, "roots": ["r", CA1_HASH], "phase": "idle"}
    body = {"state": {"reported": reported}}
    store.handle(f"$aws/things/{thing}/shadow/name/ca-migration/update", json.dumps(body).encode())


def _fleet(sandbox: Sandbox, size: int) -> None:
    result = sandbox.provision(size, [("half", size // 2), ("rest", None)])
    for index, thing in enumerate(result.things):
        if index % 5 == 4:
            continue  # never reports
        _report(sandbox, thing, ATS if index % 2 else LEGACY)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(mqtt=False) as running:
        yield running


def _run(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    result = CliRunner().invoke(
        app, ["--endpoint-url", sandbox.control_plane_url, "census", "--region", REGION, *args]
    )
    structlog.reset_defaults()
    return result


def test_census_with_indexing_off_exits_2_and_says_how_to_turn_it_on(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fleet(sandbox, 4)
    result = _run(sandbox, monkeypatch)
    assert result.exit_code == 2
    assert "aws iot update-indexing-configuration" in result.stderr
    assert "Traceback" not in result.stderr


def test_census_without_the_custom_fields_exits_2(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fleet(sandbox, 4)
    no_fields = {k: v for k, v in INDEXING_CONFIGURATION.items() if k != "customFields"}
    sandbox.iot_client().update_indexing_configuration(thingIndexingConfiguration=no_fields)
    result = _run(sandbox, monkeypatch)
    assert result.exit_code == 2
    assert "customFields" in result.stderr


def test_census_text_and_list_file(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fleet(sandbox, 20)
    sandbox.iot_client().update_indexing_configuration(
        thingIndexingConfiguration=INDEXING_CONFIGURATION
    )
    listed = tmp_path / "never.txt"
    result = _run(sandbox, monkeypatch, "--show", "2", "--list-file", str(listed))
    assert result.exit_code == 0, result.stderr
    assert "legacy endpoint   8" in result.stdout
    assert "ATS endpoint      8" in result.stdout
    assert "never reported    4" in result.stdout
    assert "  amazon-root-ca-1  16\n" in result.stdout  # named by the packaged catalog
    assert CA1_HASH not in result.stdout
    assert "(and 2 more; --list-file writes all)" in result.stdout
    assert listed.read_text().split() == [f"device-{i:05d}" for i in (5, 10, 15, 20)]
    assert _run(sandbox, monkeypatch, "--output", "yaml").exit_code == 2


def _calls(size: int, monkeypatch: pytest.MonkeyPatch) -> int:
    with Sandbox(mqtt=False) as running:
        _fleet(running, size)
        running.iot_client().update_indexing_configuration(
            thingIndexingConfiguration=INDEXING_CONFIGURATION
        )
        result = _run(running, monkeypatch, "--output", "json")
        assert result.exit_code == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["total"] == size
        return int(out["calls"])


def test_census_calls_do_not_grow_with_the_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _calls(10, monkeypatch) == _calls(600, monkeypatch)


def test_census_of_an_unknown_campaign_exits_2(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CA_MIGRATE_STATE", str(tmp_path / "state.sqlite"))
    result = _run(sandbox, monkeypatch, "--campaign", "nope")
    assert result.exit_code == 2
    assert "nope" in result.stderr
