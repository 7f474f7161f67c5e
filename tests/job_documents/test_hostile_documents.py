"""Hostile documents: deep nesting, `null`, fake regions, key material in messages.

Each is refused with a code and a message, through the library, the CLI
(`document validate`, exit 2, no traceback) and the device's validator; no
message ever quotes text that looks like key material.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from device_handler.errors import DocumentRejected
from device_handler.validation import ValidationSettings, make_validator
from job_documents import DocumentInvalid, EndpointRejected, ValidationPolicy, validate_document
from job_documents._endpoint import check_region, known_regions
from job_documents.errors import redact_key_material
from job_documents.testing import make_root_ca, private_key_pem
from job_documents.validator import MAX_DEPTH
from orchestrator.cli import app

ROOT = Path(__file__).resolve().parents[2]
HOST = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"


@pytest.fixture(autouse=True)
def _restore_logging():
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _cli(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--log-format", "json", *args], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.stdout + result.stderr


def _codes(raw: Any, policy: ValidationPolicy | None = None) -> list[str]:
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(raw, policy)
    return [p.code for p in caught.value.problems]


def _nested(depth: int, inner: str = "0") -> str:
    return '{"a":' * depth + inner + "}" * depth


# -- item 7: depth --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[" * 1000 + "]" * 1000,
        _nested(1000),
        "[" * 100_000,  # unclosed, and deeper than any stack
        '{"campaign": "x", "trust": ' + "[" * 995 + "]" * 995 + "}",
    ],
    ids=["arrays-1000", "objects-1000", "unclosed-100000", "inside-a-document-995"],
)
def test_json_nested_deeper_than_the_bound_is_invalid_before_parsing(text: str) -> None:
    codes = _codes(text)
    assert codes[0] == "invalid"
    assert _codes(text.encode()) == codes


def test_a_deep_mapping_is_invalid_not_a_recursion_error() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    assert _codes(deep) == ["invalid"]
    shallow: dict[str, Any] = json.loads(_nested(MAX_DEPTH + 1))
    assert _codes(shallow) == ["invalid"]


def test_brackets_inside_strings_do_not_count_toward_the_depth(
    ats_migrate: dict[str, Any],
) -> None:
    ats_migrate["campaign"] = '\\"[[[[' + "[" * 2000 + '{"'
    codes = _codes(json.dumps(ats_migrate))
    assert "invalid" not in codes  # refused by the schema (campaign pattern), not for depth
    assert "schema" in codes
    assert _codes(_nested(MAX_DEPTH)) != ["invalid"]  # exactly at the bound: parsed


def test_document_validate_of_a_1000_deep_file_exits_2_with_the_invalid_code(
    tmp_path: Path,
) -> None:
    path = tmp_path / "deep.json"
    path.write_text(_nested(1000))
    code, output = _cli("document", "validate", str(path))
    assert code == 2, output
    assert "Traceback" not in output
    assert f"nests more than {MAX_DEPTH} levels deep (line 1)" in output
    assert "[invalid]" in output


def test_the_device_reports_a_deep_document_as_invalid_without_a_recursion_error() -> None:
    validate = make_validator(ValidationSettings())
    with pytest.raises(DocumentRejected) as caught:
        validate("[" * 1000 + "]" * 1000)
    assert caught.value.code == "invalid"
    assert "RecursionError" not in str(caught.value)
    assert "levels deep" in str(caught.value)


def test_document_validate_refuses_a_huge_input_without_reading_it_whole(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "huge.json"
    with path.open("wb") as handle:
        handle.truncate(200 * 1024 * 1024)  # sparse: 200 MB of NUL bytes
    tracemalloc.start()
    try:
        code, output = _cli("document", "validate", str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 2
    assert "is over 1 MiB; a job document is at most 32,768 characters [too-large]" in output
    assert peak < 16 * 1024 * 1024


# -- item 8: null ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [("null", "null"), ("42", "a number"), ('"x"', "a string"), ("[]", "an array")],
)
def test_a_document_that_is_not_an_object_says_what_it_is(text: str, kind: str) -> None:
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(text)
    assert [p.code for p in caught.value.problems] == ["schema"]
    assert f"must be a JSON object, not {kind}" in str(caught.value)


def test_document_validate_of_null_exits_2_with_a_message() -> None:
    code, output = _cli("document", "validate", "-", stdin="null")
    assert code == 2
    assert "invalid: /: the document must be a JSON object, not null" in output


# -- item 9: --margin-days ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "build"])
def test_a_margin_of_99999999_days_is_refused_with_exit_2(command: str, tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_text("{}")
    args = [str(path)] if command == "validate" else ["--region", "us-east-1", "--endpoint", HOST]
    code, output = _cli("document", command, *args, "--margin-days", "99999999")
    assert code == 2
    assert "Traceback" not in output
    assert "Invalid value for '--margin-days'" in output
    assert "36500" in output


# -- item 10: regions -----------------------------------------------------------------------------


def test_the_packaged_region_list_matches_the_installed_botocore() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import generate_regions
    finally:
        sys.path.pop(0)
    packaged = (ROOT / "job_documents" / "data" / "regions.json").read_text()
    packaged_regions = json.loads(packaged)["partitions"]
    assert packaged_regions == generate_regions.regions_from_botocore()["partitions"], (
        "botocore knows other regions: run python scripts/generate_regions.py"
    )
    assert {"us-east-1", "cn-north-1", "us-gov-west-1"} <= known_regions()
    assert not any("iso" in r for r in known_regions())


@pytest.mark.parametrize("region", ["zz-fake-9", "us-east-99", "eu-nowhere-1", "cn-south-1"])
def test_a_region_no_partition_knows_is_refused_as_region_invalid(region: str) -> None:
    with pytest.raises(EndpointRejected) as caught:
        check_region(region)
    assert caught.value.code == "region-invalid"


def test_a_new_region_is_accepted_only_when_named_explicitly(tmp_path: Path) -> None:
    host = "a1b2c3-ats.iot.zz-fake-9.amazonaws.com"
    refused, output = _cli("document", "build", "--region", "zz-fake-9", "--endpoint", host)
    assert refused == 2
    assert "region-invalid" in output or "not an AWS region" in output
    assert "--allow-region" in output
    path = tmp_path / "doc.json"
    built, output = _cli(
        "document", "build", "--region", "zz-fake-9", "--endpoint", host,
        "--allow-region", "zz-fake-9", "--output-file", str(path),
    )  # fmt: skip
    assert built == 0, output
    code, output = _cli("document", "validate", str(path))
    assert code == 2
    assert "[region-invalid]" in output
    code, output = _cli("document", "validate", str(path), "--allow-region", "zz-fake-9")
    assert code == 0, output
    with pytest.raises(DocumentInvalid):
        validate_document(path.read_text())
    validate_document(path.read_text(), ValidationPolicy(extra_regions=frozenset({"zz-fake-9"})))


# -- item 12: key material ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_body() -> str:
    pem = private_key_pem(make_root_ca("ca-migrate Leaky Root").key)
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


def _leaks(text: str, body: str, piece: int = 8) -> list[str]:
    return [body[i : i + piece] for i in range(len(body) - piece) if body[i : i + piece] in text]


@pytest.mark.parametrize(
    "place",
    [
        lambda d, b: d.update(wave=[b]),
        lambda d, b: d.update(campaign=b),
        lambda d, b: d.update(campaign=b[:40] + "!"),
        lambda d, b: d.update(extra={b: 1}),
        lambda d, b: d["trust"]["roots"].append(b),
        lambda d, b: d["trust"]["roots"][0].update(sha256=b[:64]),
        lambda d, b: d["endpoint"].update(host=b[:60]),
        lambda d, b: d.update(region=b[:30]),
        lambda d, b: d["probe"].update(attempts=[b, b]),
    ],
    ids=[
        "in-a-list",
        "as-campaign",
        "40-chars-as-campaign",
        "as-a-key",
        "as-a-root",
        "as-sha256",
        "as-host",
        "as-region",
        "in-probe",
    ],
)
def test_no_message_quotes_key_material(
    place: Any, key_body: str, ats_migrate: dict[str, Any]
) -> None:
    place(ats_migrate, key_body)
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(json.dumps(ats_migrate))
    assert caught.value.problems
    assert _leaks(str(caught.value), key_body) == []
    validate = make_validator(ValidationSettings(validity_margin_days=0))
    with pytest.raises(DocumentRejected) as rejected:
        validate(json.dumps(ats_migrate))
    assert _leaks(str(rejected.value), key_body) == []


def test_a_pem_private_key_in_a_list_is_refused_and_never_quoted(
    key_body: str, ats_migrate: dict[str, Any]
) -> None:
    pem = private_key_pem(make_root_ca("ca-migrate Leaky Root 2").key)
    ats_migrate["wave"] = [pem]
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(json.dumps(ats_migrate))
    assert caught.value.problems[0].code == "private-key"
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    assert _leaks(str(caught.value), body) == []


@pytest.mark.parametrize(
    "spelling",
    [
        "-----BEGIN \\u0050RIVATE KEY-----",
        "-----BEGIN PRIVATE\\u0020KEY-----",
        "\\u002d" * 5 + "BEGIN EC PRIVATE KEY" + "\\u002d" * 5,
        "PuTTY-User-Key-Fil\\u0065",
    ],
)
def test_a_private_key_hidden_with_json_escapes_is_refused_as_private_key(
    spelling: str, ats_migrate_text: str
) -> None:
    text = ats_migrate_text.replace('"wave":"canary"', f'"wave":"{spelling}\\nMIIE"')
    assert text != ats_migrate_text
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(text)
    assert caught.value.problems[0].code == "private-key"
    validate = make_validator(ValidationSettings(validity_margin_days=0))
    with pytest.raises(DocumentRejected) as rejected:
        validate(text)
    assert rejected.value.code == "private-key"


@pytest.mark.parametrize(
    "kept",
    [
        "sha256 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "/trust/roots/10/sha256",
        HOST,
        "not a PEM certificate (no '-----BEGIN CERTIFICATE-----' block)",
        "ECDSA-P256-SHA256 amazon-root-ca-1 ats-2026-canary-m0123456789ab",
    ],
)
def test_redaction_keeps_fingerprints_pointers_and_hosts(kept: str) -> None:
    assert redact_key_material(kept) == kept


def test_redaction_removes_pem_blocks_and_base64_runs(key_body: str) -> None:
    pem = "-----BEGIN PRIVATE KEY-----\n" + key_body[:64] + "\n-----END PRIVATE KEY-----"
    for text in (pem, repr(pem), key_body, f"value {key_body[:24]!r} is too long"):
        assert _leaks(redact_key_material(text), key_body) == []
    assert re.search("redacted|PEM text", redact_key_material(repr(pem)))
