"""`ca-migrate ca ...` and `ca-migrate document ...`, through typer's runner and the real script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from job_documents import load_catalog
from job_documents.testing import (
    make_leaf,
    make_root_ca,
    make_signing_key,
    private_key_pem,
    public_key_pem,
)
from orchestrator.cli import app

HOST = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI configures structlog to write to the runner's stderr, closed after each run."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _run(*args: str, stdin: str | None = None):
    return runner.invoke(app, ["--log-format", "json", *args], input=stdin)


def test_ca_list_prints_a_table_of_the_packaged_roots():
    result = _run("ca", "list")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "KEY", "NOT", "AFTER", "SHA256"]
    assert len(lines) == 6
    root = load_catalog().get("amazon-root-ca-4")
    assert lines[4].split() == ["amazon-root-ca-4", "EC", "P-384", "2040-05-26", root.sha256]


def test_ca_list_as_json_from_a_sandbox_catalog(test_catalog_path: Path):
    result = _run("ca", "list", "--catalog", str(test_catalog_path), "--output", "json")
    assert result.exit_code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["sandbox"] is True
    assert [r["name"] for r in listed["roots"]] == ["test-root-a", "test-root-b"]
    assert "sandbox catalog" in result.stderr


def test_a_broken_catalog_exits_2(tmp_path: Path):
    (tmp_path / "catalog.json").write_text("{}")
    result = _run("ca", "list", "--catalog", str(tmp_path / "catalog.json"))
    assert result.exit_code == 2
    assert "not a root catalog" in result.stderr


def test_build_then_validate_round_trip(tmp_path: Path):
    out = tmp_path / "doc.json"
    built = _run(
        "document", "build", "--region", "us-east-1", "--endpoint", HOST, "--port", "443",
        "--ca", "amazon-root-ca-1", "--ca", "amazon-root-ca-3",
        "--campaign", "ats-2026", "--wave", "canary", "--probe-timeout", "5",
        "--probe-attempts", "2", "--output-file", str(out),
    )  # fmt: skip
    assert built.exit_code == 0, built.stderr
    assert built.stdout == ""
    assert "size: " in built.stderr
    document = json.loads(out.read_text())
    assert document["endpoint"]["alpn"] == ["x-amzn-mqtt-ca"]
    assert [r["name"] for r in document["trust"]["roots"]] == [
        "amazon-root-ca-1",
        "amazon-root-ca-3",
    ]
    assert document["probe"] == {"timeoutSeconds": 5, "attempts": 2}
    checked = _run("document", "validate", str(out), "--region", "us-east-1")
    assert checked.exit_code == 0, checked.stderr
    assert checked.stdout.startswith("valid: migrate campaign=ats-2026 wave=canary")
    assert "roots=2" in checked.stdout


def test_build_defaults_to_every_catalog_root_and_prints_json_to_stdout():
    result = _run("document", "build", "--region", "us-east-1", "--endpoint", HOST)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert len(document["trust"]["roots"]) == 5


def test_validate_reads_stdin():
    built = _run("document", "build", "--region", "us-east-1", "--endpoint", HOST)
    assert built.exit_code == 0, built.stderr
    result = _run("document", "validate", "-", stdin=built.stdout)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("valid: migrate campaign=")
    assert "roots=5" in result.stdout
    empty = _run("document", "validate", "-", stdin="")
    assert empty.exit_code == 2


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--endpoint", "A1-ats.iot.us-east-1.amazonaws.com"], "uppercase"),
        (["--endpoint", "a1sandbox2demo.iot.us-east-1.amazonaws.com"], "legacy"),
        (["--endpoint", HOST, "--port", "1883"], "8883 or 443"),
        (["--endpoint", HOST, "--ca", "verisign-g5"], "not in the catalog"),
        (["--endpoint", HOST, "--ca", "missing.pem"], "no such file"),
        (["--endpoint", HOST, "--wave", "a b"], "/wave"),
        (["--operation", "restore", "--endpoint", HOST], "applies to migrate"),
        (["--operation", "prune"], "removes 1 to 10"),
        ([], "needs --endpoint"),
    ],
)
def test_build_refusals_exit_2_with_the_reason(args, says):
    result = _run("document", "build", "--region", "us-east-1", *args)
    assert result.exit_code == 2, result.stdout
    assert says in result.stderr
    assert result.stdout == ""


def test_a_pem_file_outside_the_catalog_needs_the_allow_flag(tmp_path: Path):
    pem = tmp_path / "private-root.pem"
    pem.write_text(make_root_ca("Operator Root").pem)
    args = ["document", "build", "--region", "us-east-1", "--endpoint", HOST, "--ca", str(pem)]
    refused = _run(*args)
    assert refused.exit_code == 2
    assert "--allow-unknown-ca" in refused.stderr
    allowed = _run(*args, "--allow-unknown-ca")
    assert allowed.exit_code == 0, allowed.stderr
    assert json.loads(allowed.stdout)["trust"]["roots"][0]["name"] == "private-root"


def test_a_leaf_certificate_file_is_refused(tmp_path: Path):
    pem = tmp_path / "server.pem"
    pem.write_text(make_leaf(make_root_ca()).pem)
    result = _run(
        "document", "build", "--region", "us-east-1", "--endpoint", HOST,
        "--ca", str(pem), "--allow-unknown-ca",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "[pem-not-ca]" in result.stderr


def test_prune_takes_names_fingerprints_and_name_equals_fingerprint():
    legacy = "verisign-class-3-g5=" + "AB:" * 31 + "AB"
    result = _run(
        "document", "build", "--region", "eu-west-1", "--operation", "prune",
        "--remove", "amazon-root-ca-2", "--remove", legacy,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["trust"]["remove"] == [
        {"name": "amazon-root-ca-2", "sha256": load_catalog().get("amazon-root-ca-2").sha256},
        {"name": "verisign-class-3-g5", "sha256": "ab" * 32},
    ]


@pytest.mark.parametrize("algorithm", ["Ed25519", "ECDSA-P256-SHA256"])
def test_signed_build_and_verified_validate(tmp_path: Path, algorithm):
    key = make_signing_key(algorithm)  # type: ignore[arg-type]
    (tmp_path / "ops.key").write_text(private_key_pem(key))
    (tmp_path / "ops.pub").write_text(public_key_pem(key))
    out = tmp_path / "doc.json"
    built = _run(
        "document", "build", "--region", "us-east-1", "--endpoint", HOST,
        "--sign-key", str(tmp_path / "ops.key"), "--key-id", "ops-2026", "--output-file", str(out),
    )  # fmt: skip
    assert built.exit_code == 0, built.stderr
    verified = _run("document", "validate", str(out), "--verify-key", str(tmp_path / "ops.pub"))
    assert verified.exit_code == 0, verified.stderr
    assert "signed=yes" in verified.stdout
    out.write_text(out.read_text().replace('"wave":"manual"', '"wave":"everyone"'))
    tampered = _run("document", "validate", str(out), "--verify-key", str(tmp_path / "ops.pub"))
    assert tampered.exit_code == 2
    assert "[signature-invalid]" in tampered.stderr


def test_validate_prints_one_line_per_problem_and_exits_2(tmp_path: Path, test_migrate):
    test_migrate["wave"] = "not valid"
    test_migrate["region"] = "eu-west-1"
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(test_migrate))
    result = _run("document", "validate", str(path))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("invalid: ") for line in lines)
    codes = {line.rsplit("[", 1)[1].rstrip("]") for line in lines}
    assert {"schema", "endpoint-region", "unknown-root"} <= codes


def test_validate_accepts_test_roots_under_their_catalog(
    tmp_path: Path, test_migrate, test_catalog_path
):
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(test_migrate))
    result = _run("document", "validate", str(path), "--catalog", str(test_catalog_path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("valid: migrate ")
    assert f"roots={len(test_migrate['trust']['roots'])}" in result.stdout
    packaged = _run("document", "validate", str(path))
    assert packaged.exit_code == 2
    assert "[unknown-root]" in packaged.stderr


def test_validate_of_a_missing_file_exits_2(tmp_path: Path):
    result = _run("document", "validate", str(tmp_path / "nope.json"))
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_document_schema_prints_the_packaged_schema():
    result = _run("document", "schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["title"] == "ca-migration/1"


def test_the_installed_console_script_builds_and_validates(tmp_path: Path):
    script = Path(sys.executable).parent / "ca-migrate"
    out = tmp_path / "doc.json"
    built = subprocess.run(
        [str(script), "--log-format", "json", "document", "build", "--region", "us-east-1",
         "--endpoint", HOST, "--output-file", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    checked = subprocess.run(
        [str(script), "document", "validate", str(out), "--region", "eu-west-1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 2
    assert "[region-mismatch]" in checked.stderr
