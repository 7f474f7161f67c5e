"""The Device Client handler's contract for any input, checked on the real handler process.

Device Client fails a job on any stderr output and shows the handler's last stdout line,
so for every input: nothing on stderr, the last stdout line a JSON report with a status,
and the documented exit code (1 for a document that is refused, 2 when nothing could be
tried: arguments, configuration, an unreadable document file). Each case runs
`ca-migrate-handler.sh` as Device Client would, in a process of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import device_handler

from .conftest import Device, World, make_device

HANDLER = Path(device_handler.__file__).parent / "device_client" / "ca-migrate-handler.sh"


def _config(device: Device, world: World) -> Path:
    lines = [
        'thing_name = "thing-0001"',
        'region = "us-east-1"',
        f'client_cert = "{world.device.cert_path}"',
        f'client_key = "{world.device.key_path}"',
        'endpoint_file = "etc/endpoint.json"',
        'trust_bundle = "etc/trust.pem"',
        'state_dir = "state"',
        "[connect_override]",
        *(f'"{k}" = "{v}"' for k, v in world.overrides.items()),
    ]
    path = device.root / "device.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_handler(*args: str | bytes, timeout: float = 60) -> tuple[int, dict[str, Any], bytes]:
    """(exit code, the last stdout line as JSON, stderr) of one handler process."""
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(
        ["sh", str(HANDLER), *args],
        capture_output=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    lines = result.stdout.decode("utf-8", "replace").strip().splitlines()
    assert lines, f"no stdout at all (exit {result.returncode}, stderr {result.stderr[-500:]!r})"
    report = json.loads(lines[-1])
    assert isinstance(report, dict)
    return result.returncode, report, result.stderr


def _check(code: int, report: dict[str, Any], stderr: bytes, expected: int) -> None:
    assert stderr == b""
    assert code == expected, report
    if expected == 1:
        assert report["status"] in {"REJECTED", "FAILED"}
        details = report.get("statusDetails", report)
        assert details["reason"]
        assert details["message"]
    elif expected == 2:
        assert report["status"] == "FAILED"
        assert report["reason"] in {"usage", "config"}
        assert report["message"]


DocumentMaker = Callable[[Path], Path]


def _file(data: bytes) -> DocumentMaker:
    def make(directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "document.json"
        path.write_bytes(data)
        return path

    return make


def _fifo(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fifo"
    os.mkfifo(path)  # no writer: opening it to read would wait forever
    return path


# (name, document file, exit code, reason)
DOCUMENT_FILES: list[tuple[str, DocumentMaker, int, str]] = [
    ("invalid-utf8", _file(b'{"schema": "\xff\xfe"}'), 1, "invalid"),
    ("utf16-bom", _file("{}".encode("utf-16")), 1, "invalid"),
    ("huge", _file(b'{"a": "' + b"x" * (8 << 20) + b'"}'), 1, "too-large"),
    ("not-json", _file(b"migrate everything, please"), 1, ""),
    ("deep-json", _file(b"[" * 100_000 + b"]" * 100_000), 1, ""),
    ("deep-objects", _file(b'{"a":' * 5_000 + b"1" + b"}" * 5_000), 1, ""),
    ("empty", _file(b""), 1, ""),
    ("nul-bytes", _file(b"\x00" * 64), 1, ""),
    ("null", _file(b"null"), 1, ""),
    ("a-list", _file(b"[1, 2, 3]"), 1, ""),
    ("lone-surrogate-escape", _file(b'{"schema": "\\ud800"}'), 1, ""),
    ("missing", lambda d: d / "no-such-document.json", 2, "usage"),
    ("a-directory", lambda d: d, 2, "usage"),
    ("a-fifo", _fifo, 2, "usage"),
]


@dataclass
class Outcome:
    code: int
    report: dict[str, Any]
    stderr: bytes
    changed: bool  # a live file or the journal differs from before the run


@pytest.fixture(scope="module")
def outcomes(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every document-file case, run at once (a device of its own each): one handler
    process spends most of its time starting Python, and the cases are independent."""
    base = tmp_path_factory.mktemp("handler-input")

    def run(name: str, make: DocumentMaker) -> Outcome:
        root = base / name
        device = make_device(world, root / "device")
        before = device.live()
        document = make(root)
        code, report, stderr = run_handler(
            "--config", str(_config(device, world)), "--document", str(document)
        )
        changed = device.live() != before or (device.root / "state" / "journal.json").exists()
        return Outcome(code, report, stderr, changed)

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run, name, make) for name, make, _, _ in DOCUMENT_FILES}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize(
    ("name", "code", "reason"),
    [pytest.param(n, c, r, id=n) for n, _, c, r in DOCUMENT_FILES],
)
def test_any_document_file_gets_a_report_and_nothing_on_stderr(
    outcomes: dict[str, Outcome], name: str, code: int, reason: str
):
    outcome = outcomes[name]
    _check(outcome.code, outcome.report, outcome.stderr, code)
    if reason:
        assert outcome.report.get("statusDetails", outcome.report)["reason"] == reason
    assert not outcome.changed


@pytest.mark.parametrize(
    ("args", "code"),
    [
        pytest.param([], 2, id="no-arguments"),
        pytest.param(["--bogus"], 2, id="unknown-option"),
        pytest.param(["--config"], 2, id="option-without-value"),
        pytest.param(["", "--document-json", "{}"], 2, id="user-then-no-config"),
        pytest.param(
            ["--config", "/no/such/device.toml", "--document-json", "{}"], 2, id="no-config"
        ),
    ],
)
def test_bad_arguments_get_a_usage_report(args: list[str], code: int):
    got, report, stderr = run_handler(*args)
    _check(got, report, stderr, code)


@pytest.mark.parametrize(
    "content", [b"\xff\xfe not toml", b"thing_name = [", b'thing_name = "x"\n'], ids=str
)
def test_a_bad_configuration_file_gets_a_config_report(tmp_path: Path, content: bytes):
    config = tmp_path / "device.toml"
    config.write_bytes(content)
    got, report, stderr = run_handler("--config", str(config), "--document-json", "{}")
    _check(got, report, stderr, 2)
    assert report["reason"] == "config"


def test_document_json_that_is_not_utf8_is_rejected(device: Device, world: World):
    got, report, stderr = run_handler(
        "--config", str(_config(device, world)).encode(), "--document-json", b'{"a": "\xff"}'
    )
    _check(got, report, stderr, 1)
    assert report["statusDetails"]["reason"] == "invalid"


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    document=st.one_of(
        st.binary(max_size=256),
        st.text(max_size=128).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=6), inner, max_size=3)
            ),
            max_leaves=12,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_generated_documents_get_a_report_and_nothing_on_stderr(
    device: Device, world: World, tmp_path: Path, document: bytes
):
    path = tmp_path / "generated.json"
    path.write_bytes(document)
    got, report, stderr = run_handler(
        "--config", str(_config(device, world)), "--document", str(path)
    )
    _check(got, report, stderr, 1)
    assert report["status"] == "REJECTED"
