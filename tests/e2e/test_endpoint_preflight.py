"""`plan` and `start` check the new endpoint against the sandbox's real TLS listeners.

The sandbox serves its ATS endpoint (mosquitto, 8883; the ALPN front, 443) under the
AWS-shaped name with a server certificate from its stand-in Amazon Root CA 1; the CLI
reaches them where they listen through `CA_MIGRATE_CONNECT_TO` (what `sandbox up`
exports), with SNI and verification on the AWS-shaped name. A campaign whose roots do
not sign that certificate, or whose endpoint is served another name's certificate, is
refused with exit 2 before anything is stored or any job exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.sandbox import runtime
from orchestrator.store.sqlite import SqliteStateStore
from tests.machine import NEEDS_MOSQUITTO

from .campaign_kit import in_process, jobs_in_sandbox

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.mqtt,
    NEEDS_MOSQUITTO,
]

CAMPAIGN = """\
name: NAME
region: us-east-1
endpoint: auto
endpoint_port: PORT
CATALOG
trust: {add: [ROOTS]}
waves:
  - name: canary
    thing_groups: [canary]
    gate: {min_success_rate: 0.5, min_completed: 2, confidence: 0.6}
"""
OTHER_REGION = "eu-west-1"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[runtime.Sandbox]:
    # A second region's listeners: the same roots, certificates for eu-west-1's names only.
    with runtime.Sandbox(mqtt=True, regions=(OTHER_REGION,)) as sb:
        sb.provision(3, [("canary", 3)])
        sb.provision(3, [("eu-canary", 3)], prefix="eu-device", region=OTHER_REGION)
        yield sb


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def campaign(
    sandbox: runtime.Sandbox,
    tmp_path: Path,
    *,
    name: str = "pre",
    roots: str = "amazon-root-ca-1, amazon-root-ca-3",
    catalog: bool = True,
    port: int = 8883,
) -> Path:
    assert sandbox.pki is not None
    text = (
        CAMPAIGN.replace("NAME", name)
        .replace("PORT", str(port))
        .replace("ROOTS", roots)
        .replace("CATALOG", f"catalog: {sandbox.pki.ats_catalog}" if catalog else "")
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def stored(state: Path) -> list[str]:
    if not state.exists():
        return []
    return SqliteStateStore(state).names()


@pytest.mark.parametrize("port", [8883, 443])
def test_plan_and_start_pass_the_check_with_the_sandbox_catalog_and_record_it(
    sandbox, tmp_path: Path, port: int
) -> None:
    state = tmp_path / "state.sqlite"
    ats = sandbox.endpoints["ats"]
    local = ats.port if port == 8883 else ats.alpn_port
    path = campaign(sandbox, tmp_path, name=f"pre-{port}", port=port)
    planned = in_process(sandbox, state, "plan", "--output", "json", str(path))
    assert planned.returncode == 0, planned.stderr
    check = json.loads(planned.stdout)["endpoint_check"]
    assert check["passed"] is True
    assert check["skipped"] is False
    assert check["roots"] == ["amazon-root-ca-1", "amazon-root-ca-3"]
    (proof,) = check["endpoints"]
    assert proof["host"] == ats.host
    assert proof["port"] == port
    assert proof["address"] == f"127.0.0.1:{local}"
    assert proof["alpn"] == ("x-amzn-mqtt-ca" if port == 443 else None)
    assert "Sandbox stand-in for Amazon Root CA 1" in proof["issuer"]
    assert "endpoint check passed" in planned.stderr
    started = in_process(sandbox, state, "start", str(path))
    assert started.returncode == 0, started.stderr
    events = SqliteStateStore(state).events(f"pre-{port}")
    assert [e.kind for e in events[:2]] == ["campaign-started", "endpoint-checked"]
    assert events[1].data["roots"] == ["amazon-root-ca-1", "amazon-root-ca-3"]
    assert any(job.startswith(f"pre-{port}-") for job in jobs_in_sandbox(sandbox))


@pytest.mark.parametrize(
    ("roots", "catalog", "named"),
    [
        # the stand-in Amazon Root CA 3 exists, but does not sign the listener's certificate
        ("amazon-root-ca-3", True, "amazon-root-ca-3"),
        # the packaged (real) Amazon roots against the sandbox: the catalog of another world
        ("amazon-root-ca-1, amazon-root-ca-2", False, "amazon-root-ca-1, amazon-root-ca-2"),
    ],
)
def test_roots_that_do_not_sign_the_endpoint_are_refused_before_anything_exists(
    sandbox, tmp_path: Path, roots: str, catalog: bool, named: str
) -> None:
    state = tmp_path / "state.sqlite"
    jobs_before = jobs_in_sandbox(sandbox)
    path = campaign(sandbox, tmp_path, name="wrong-roots", roots=roots, catalog=catalog)
    for command in ("plan", "start"):
        ran = in_process(sandbox, state, command, str(path))
        assert ran.returncode == 2, (command, ran.stdout, ran.stderr)
        assert f"does not chain to the roots the campaign adds ({named})" in ran.stderr
        assert "Traceback" not in ran.stderr
        assert "BEGIN CERTIFICATE" not in ran.stdout + ran.stderr
    assert stored(state) == []
    assert jobs_in_sandbox(sandbox) == jobs_before


def test_an_endpoint_served_another_names_certificate_is_a_hostname_mismatch(
    sandbox, tmp_path: Path
) -> None:
    """Traffic for us-east-1's endpoint reaching eu-west-1's listener: right roots, wrong name."""
    state = tmp_path / "state.sqlite"
    jobs_before = jobs_in_sandbox(sandbox)
    here = sandbox.endpoints["ats"].host
    there = sandbox.endpoints_for(OTHER_REGION)["ats"].port
    path = campaign(sandbox, tmp_path, name="wrong-name")
    redirect = f"{here}:8883=127.0.0.1:{there}"
    for command in ("plan", "start"):
        ran = in_process(sandbox, state, command, str(path), "--connect-to", redirect)
        assert ran.returncode == 2, (command, ran.stdout, ran.stderr)
        assert f"{here}:8883 (connecting to 127.0.0.1:{there})" in ran.stderr
        assert "presents a certificate for another name" in ran.stderr
    assert stored(state) == []
    assert jobs_in_sandbox(sandbox) == jobs_before


def test_a_campaign_over_two_regions_checks_each_regions_endpoint(sandbox, tmp_path: Path) -> None:
    path = campaign(sandbox, tmp_path, name="two-regions")
    path.write_text(
        path.read_text()
        + f"""\
  - name: eu
    region: {OTHER_REGION}
    thing_groups: [eu-canary]
    gate: {{min_success_rate: 0.5, min_completed: 2, confidence: 0.6}}
"""
    )
    planned = in_process(sandbox, tmp_path / "s.sqlite", "plan", "--output", "json", str(path))
    assert planned.returncode == 0, planned.stderr
    proofs = json.loads(planned.stdout)["endpoint_check"]["endpoints"]
    assert [p["host"] for p in proofs] == [
        sandbox.endpoints["ats"].host,
        sandbox.endpoints_for(OTHER_REGION)["ats"].host,
    ]
    assert [p["address"] for p in proofs] == [
        f"127.0.0.1:{sandbox.endpoints['ats'].port}",
        f"127.0.0.1:{sandbox.endpoints_for(OTHER_REGION)['ats'].port}",
    ]


def test_sandbox_up_exports_every_listener_under_the_variable_the_cli_reads(sandbox) -> None:
    from orchestrator.cli._preflight import CONNECT_TO_ENV

    assert runtime.CONNECT_TO_ENV == CONNECT_TO_ENV
    exported = sandbox.describe()["env"][CONNECT_TO_ENV].split()
    for region in (sandbox.region, OTHER_REGION):
        ats = sandbox.endpoints_for(region)["ats"]
        assert f"{ats.host}:8883=127.0.0.1:{ats.port}" in exported
        assert f"{ats.host}:443=127.0.0.1:{ats.alpn_port}" in exported
    assert len(exported) == 6  # legacy and ats on 8883, ats on 443, in each region


def test_skip_endpoint_check_warns_loudly_and_records_the_skip(sandbox, tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    path = campaign(sandbox, tmp_path, name="skipped", roots="amazon-root-ca-3")
    planned = in_process(sandbox, state, "plan", str(path), "--skip-endpoint-check")
    assert planned.returncode == 0, planned.stderr
    assert "WARNING: ENDPOINT CHECK SKIPPED" in planned.stderr
    assert "!! ENDPOINT NOT CHECKED" in planned.stdout
    started = in_process(sandbox, state, "start", str(path), "--skip-endpoint-check")
    assert started.returncode == 0, started.stderr
    assert "WARNING: ENDPOINT CHECK SKIPPED" in started.stderr
    events = SqliteStateStore(state).events("skipped")
    skipped = [e for e in events if e.kind == "endpoint-check-skipped"]
    assert len(skipped) == 1
    assert "nobody checked" in skipped[0].reason
    assert skipped[0].data["roots"] == ["amazon-root-ca-3"]


def test_a_malformed_connect_to_is_exit_2_before_any_call(sandbox, tmp_path: Path) -> None:
    path = campaign(sandbox, tmp_path, name="bad-connect-to")
    ran = in_process(sandbox, tmp_path / "s.sqlite", "plan", str(path), "--connect-to", "nowhere")
    assert ran.returncode == 2
    assert "HOST:PORT=ADDRESS:PORT" in ran.stderr
