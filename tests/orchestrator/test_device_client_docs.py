"""Device Client waves: the campaign keys, the runHandler document, its size, the plan.

The wrapped document is compared with the shipped sample
(`device_handler/device_client/sample-job-document-v1.json`), and the embedded
document is checked by the device's own validator; `plan` runs with real boto3
against the sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import device_handler
from device_handler.validation import ValidationSettings, make_validator
from infra.sandbox import runtime
from job_documents import MAX_DOCUMENT_CHARS, BuiltDocument, Operation, document_hash
from orchestrator.device_client_docs import WrappedTooLargeError, redacted, wrap_for_device_client
from orchestrator.errors import SpecError
from orchestrator.jobdocs import build_restore_document, build_wave_documents
from orchestrator.model import DeviceClientSettings, DeviceRuntime
from orchestrator.planner import job_id_for
from orchestrator.spec import parse_spec

HOST = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
SAMPLE = Path(device_handler.__file__).parent / "device_client" / "sample-job-document-v1.json"
SETTINGS = """\
device_client:
  handler_path: /opt/ca-migrate/handlers/ca-migrate-handler.sh
  device_toml: /etc/ca-migrate/device.toml
  config_path: /etc/.aws-iot-device-client/aws-iot-device-client.conf
"""
CAMPAIGN = """\
name: mixed
region: us-east-1
endpoint: auto
trust: {add: [amazon-root-ca-1]}
RUNTIME
waves:
  - name: canary
    thing_groups: [canary]
    gate: {min_success_rate: 0.5}
  - name: dc
    thing_groups: [fleet-dc]
    gate: {min_success_rate: 0.5}
    device_runtime: device-client
"""


def _campaign(runtime_keys: str = SETTINGS) -> str:
    return CAMPAIGN.replace("RUNTIME\n", runtime_keys)


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "c.yaml")
    return [str(p) for p in caught.value.problems]


def test_the_wrapped_document_has_the_shape_of_the_shipped_sample() -> None:
    spec = parse_spec(_campaign())
    built = build_wave_documents(spec, HOST)
    wrapped = built.documents["dc"]
    inner = built.embedded["dc"]
    sample = json.loads(SAMPLE.read_text())
    args = wrapped.document["steps"][0]["action"]["input"]["args"]
    # the sample's embedded document is an example; everything around it is the contract
    sample["steps"][0]["action"]["input"]["args"][-1] = args[-1]
    assert wrapped.document == sample
    assert json.loads(wrapped.text) == sample
    assert args[-1] == inner.text
    assert wrapped.size == len(wrapped.text)
    assert wrapped.sha256 == document_hash(wrapped.text) != inner.sha256


def test_the_embedded_document_passes_the_devices_validator() -> None:
    spec = parse_spec(_campaign())
    wrapped = build_wave_documents(spec, HOST).documents["dc"]
    args = wrapped.document["steps"][0]["action"]["input"]["args"]
    order = make_validator(ValidationSettings(region="us-east-1"))(
        args[args.index("--document-json") + 1]
    )
    assert order.operation is Operation.MIGRATE
    assert order.wave == "dc"


def test_agent_waves_keep_the_plain_document_and_the_job_ids_differ() -> None:
    spec = parse_spec(_campaign())
    built = build_wave_documents(spec, HOST)
    assert "schema" in built.documents["canary"].document
    assert "canary" not in built.embedded
    assert spec.runtime_for(spec.wave("canary")) is DeviceRuntime.AGENT
    plain = parse_spec(_campaign("").replace("    device_runtime: device-client\n", ""))
    plain_doc = build_wave_documents(plain, HOST).documents["dc"]
    assert plain_doc.sha256 == built.embedded["dc"].sha256
    assert job_id_for("mixed", "dc", plain_doc.sha256, Operation.MIGRATE) != job_id_for(
        "mixed", "dc", built.documents["dc"].sha256, Operation.MIGRATE
    )


def test_a_campaign_wide_runtime_applies_to_every_wave_unless_a_wave_overrides_it() -> None:
    text = _campaign("device_runtime: device-client\n" + SETTINGS).replace(
        "    gate: {min_success_rate: 0.5}\n  - name: dc",
        "    gate: {min_success_rate: 0.5}\n    device_runtime: agent\n  - name: dc",
    )
    spec = parse_spec(text)
    built = build_wave_documents(spec, HOST)
    assert set(built.embedded) == {"dc"}
    assert spec.device_runtime is DeviceRuntime.DEVICE_CLIENT


def test_a_wave_overrides_the_campaigns_settings() -> None:
    text = _campaign() + (
        "    device_client:\n"
        "      handler_path: /usr/local/bin/h.sh\n"
        "      device_toml: /data/device.toml\n"
        "      config_path: /data/dc.conf\n"
        "      allow_stderr: 2\n"
        "      run_as_user: iot\n"
    )
    action = (
        build_wave_documents(parse_spec(text), HOST).documents["dc"].document["steps"][0]["action"]
    )
    assert action["input"]["path"] == "/usr/local/bin"
    assert action["input"]["handler"] == "h.sh"
    assert action["input"]["args"][:4] == [
        "--config",
        "/data/device.toml",
        "--device-client-config",
        "/data/dc.conf",
    ]
    assert action["allowStdErr"] == 2
    assert action["runAsUser"] == "iot"


def test_a_restore_document_of_a_device_client_wave_is_wrapped_too() -> None:
    spec = parse_spec(_campaign())
    restore = build_restore_document(spec, "dc")
    args = restore.document["steps"][0]["action"]["input"]["args"]
    assert json.loads(args[-1])["operation"] == "restore"
    assert "schema" in build_restore_document(spec, "canary").document


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            CAMPAIGN.replace("RUNTIME\n", ""),
            (
                "line 12 (waves[1].device_runtime): wave 'dc' runs Device Client but no "
                "device_client settings"
            ),
        ),
        (
            CAMPAIGN.replace("RUNTIME\n", "device_runtime: device-client\n"),
            "line 5 (device_runtime): wave 'canary' runs Device Client",
        ),
        (
            _campaign().replace("    device_runtime: device-client\n", "")
            + "    device_client: {handler_path: /h.sh, device_toml: /d.toml, config_path: /c}\n",
            (
                "(waves[1].device_client): wave 'dc' gives device_client settings but its "
                "devices run the agent"
            ),
        ),
        (
            _campaign().replace("/etc/ca-migrate/device.toml", "etc/ca-migrate/device.toml"),
            "(device_client.device_toml): String should match pattern",
        ),
        (
            _campaign().replace("handlers/ca-migrate-handler.sh", "handlers/"),
            "(device_client.handler_path): handler_path names the handler script itself",
        ),
        (
            _campaign().replace(
                "aws-iot-device-client.conf", "aws-iot-device-client.conf\n  allow_stderr: -1"
            ),
            "(device_client.allow_stderr): Input should be greater than or equal to 0",
        ),
        (
            _campaign().replace(
                "aws-iot-device-client.conf", "aws-iot-device-client.conf\n  run_as_user: -rf"
            ),
            "(device_client.run_as_user): String should match pattern",
        ),
        (
            _campaign().replace("device-client\n", "greengrass\n"),
            "(waves[1].device_runtime): Input should be 'agent' or 'device-client'",
        ),
    ],
)
def test_device_client_keys_are_checked_with_the_line_at_fault(text: str, expected: str) -> None:
    problems = _problems(text)
    assert any(expected in p for p in problems), problems


def test_a_wrapped_document_over_the_limit_is_refused_with_what_to_do() -> None:
    settings = DeviceClientSettings(
        handler_path="/opt/h.sh", device_toml="/etc/d.toml", config_path="/etc/c.conf"
    )
    # a document that fits alone (under the limit) but not once escaped into an argument
    inner_text = json.dumps({"pem": "\n" * 16_000})
    assert len(inner_text) < MAX_DOCUMENT_CHARS
    inner = BuiltDocument(document={}, text=inner_text, size=len(inner_text), sha256="0" * 64)
    with pytest.raises(WrappedTooLargeError) as caught:
        wrap_for_device_client(inner, settings)
    assert caught.value.size > MAX_DOCUMENT_CHARS
    assert "put fewer roots" in str(caught.value)
    fits = json.dumps({"pem": "\n" * 1000})
    small = BuiltDocument(document={}, text=fits, size=len(fits), sha256="0" * 64)
    assert wrap_for_device_client(small, settings).size <= MAX_DOCUMENT_CHARS


def test_the_redacted_document_shows_no_pem_and_leaves_the_original_alone() -> None:
    spec = parse_spec(_campaign())
    built = build_wave_documents(spec, HOST)
    shown = redacted(built.documents["dc"].document, built.embedded["dc"])
    text = json.dumps(shown)
    assert "BEGIN CERTIFICATE" not in text
    assert f"sha256 {built.embedded['dc'].sha256}" in text
    assert "BEGIN CERTIFICATE" in built.documents["dc"].text


# -- plan, with real boto3 against the sandbox ----------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with runtime.Sandbox(mqtt=False) as sb:
        sb.provision(10, [("canary", 5), ("fleet-dc", 5)])
        yield sb


def test_plan_json_shows_the_runhandler_document_without_pem_bodies(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    path = tmp_path / "c.yaml"
    path.write_text(_campaign())
    base = ["--endpoint-url", sandbox.control_plane_url, "--state", str(tmp_path / "s.sqlite")]
    skip = "--skip-endpoint-check"  # the sandbox has no MQTT listener to check
    result = CliRunner().invoke(app, [*base, "plan", str(path), "--output", "json", skip])
    text_result = CliRunner().invoke(app, [*base, "plan", str(path), skip])
    structlog.reset_defaults()
    assert result.exit_code == 0, result.stderr
    assert "BEGIN CERTIFICATE" not in result.stdout
    waves = {w["wave"]: w for w in json.loads(result.stdout)["waves"]}
    assert waves["canary"]["device_runtime"] == "agent"
    assert "job_document" not in waves["canary"]
    dc = waves["dc"]
    assert dc["device_runtime"] == "device-client"
    action = dc["job_document"]["steps"][0]["action"]
    assert dc["job_document"]["version"] == "1.0"
    assert action["type"] == "runHandler"
    assert action["input"]["handler"] == "ca-migrate-handler.sh"
    assert action["input"]["args"][-1].startswith("<ca-migration/1 document: ")
    assert dc["document_size"] > dc["embedded_document_size"]
    assert text_result.exit_code == 0
    assert "Device Client runHandler /opt/ca-migrate/handlers/ca-migrate-handler.sh" in (
        text_result.stdout
    )


# -- document wrap -----------------------------------------------------------------------------


def _wrap(*args: str, stdin: bytes | None = None) -> Any:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["document", "wrap", *args], input=stdin)
    structlog.reset_defaults()
    return result


def test_document_wrap_gives_what_a_campaign_wave_carries(tmp_path: Path) -> None:
    spec = parse_spec(_campaign())
    built = build_wave_documents(spec, HOST)
    source = tmp_path / "doc.json"
    source.write_text(json.dumps(built.embedded["dc"].document, indent=2))
    result = _wrap(str(source))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == built.documents["dc"].text
    assert f"sha256 {built.documents['dc'].sha256}" in result.stderr
    assert "BEGIN CERTIFICATE" not in result.stderr


@pytest.mark.parametrize(
    ("stdin", "args", "message"),
    [
        (b'{"operation": "echo"}', (), "is not a ca-migration/1 document"),
        (b"[" * 100_000 + b"]" * 100_000, (), "is not JSON"),
        (b"\xff\xfe", (), "is not JSON"),
        (b'{"schema": "ca-migration/1"}', ("--device-toml", "etc/d.toml"), "device_toml"),
        (b'{"schema": "ca-migration/1"}', ("--run-as-user", "-x"), "run_as_user"),
        (
            json.dumps({"schema": "ca-migration/1", "pad": "\n" * 16_000}).encode(),
            (),
            "put fewer roots",
        ),
        (b" " * (1024 * 1024 + 1), (), "over 1 MiB"),
    ],
)
def test_document_wrap_refuses_bad_input_with_exit_2(
    stdin: bytes, args: tuple[str, ...], message: str
) -> None:
    result = _wrap("-", *args, stdin=stdin)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
