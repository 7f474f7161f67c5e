"""device.toml, the ca-migrate-device CLI and the AWS IoT Device Client handler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives.serialization import Encoding

import device_handler
from device_handler.cli import main
from device_handler.config import load_config
from device_handler.device_client.handler import split_run_as_user
from device_handler.errors import ConfigError
from job_documents import Endpoint, Operation, build_document, load_catalog
from job_documents.testing import write_catalog

from .conftest import ATS_HOST, LEGACY_HOST, THING, Device, World

HANDLER = Path(device_handler.__file__).parent / "device_client" / "ca-migrate-handler.sh"


@pytest.fixture(autouse=True)
def _reset_logging():
    """`main` configures structlog for the process, as a CLI does; undo it for the next test."""
    yield
    structlog.reset_defaults()


def _write_config(device: Device, world: World, catalog: Path | None = None, **extra: str) -> Path:
    lines = [
        f'thing_name = "{THING}"',
        'region = "us-east-1"',
        f'client_cert = "{world.device.cert_path}"',
        f'client_key = "{world.device.key_path}"',
        'endpoint_file = "etc/endpoint.json"',
        'trust_bundle = "etc/trust.pem"',
        'state_dir = "state"',
        "dead_man_seconds = 5",
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    if catalog is not None:
        lines.append(f'catalog = "{catalog}"')
    lines.append("[connect_override]")
    lines += [f'"{k}" = "{v}"' for k, v in world.overrides.items()]
    path = device.root / "device.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_config_paths_are_relative_to_the_file(device: Device, world: World):
    config = load_config(_write_config(device, world))
    assert config.thing_name == THING
    assert config.endpoint_file == device.root.resolve() / "etc" / "endpoint.json"
    assert config.connect_override[f"{ATS_HOST}:8883"].startswith("127.0.0.1:")
    assert config.dead_man_seconds == 5
    assert config.protocol == "mqtt5"
    assert config.validation_settings().validity_margin_days == 365


def test_the_validity_margin_is_a_device_setting(device: Device, world: World):
    config = load_config(_write_config(device, world, validity_margin_days="30"))
    assert config.validation_settings().validity_margin_days == 30


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"colour": '"blue"'}, "unknown settings"),
        ({"connect_timeout_seconds": "0"}, "connect_timeout_seconds"),
        ({"protocol": '"mqtt4"'}, "protocol"),
        ({"allowed_fingerprints": '["abc"]'}, "allowed_fingerprints"),
        ({"validity_margin_days": "-1"}, "validity_margin_days"),
        ({"validity_margin_days": "3651"}, "validity_margin_days"),
        ({"validity_margin_days": "99999999"}, "validity_margin_days"),
        ({"validity_margin_days": "1.5"}, "validity_margin_days"),
        ({"validity_margin_days": "true"}, "validity_margin_days"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_setting(
    device: Device, world: World, extra: dict[str, str], message: str
):
    with pytest.raises(ConfigError, match=message):
        load_config(_write_config(device, world, **extra))


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xff\xfe thing_name", "not UTF-8"), (b"#" * ((1 << 20) + 1), "over")],
    ids=["not-utf8", "huge"],
)
def test_a_configuration_file_that_is_not_small_utf8_text_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
):
    path = tmp_path / "device.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    assert main(["status", "--config", str(path)]) == 2
    assert "configuration error" in capsys.readouterr().err


def test_missing_required_setting_is_named(tmp_path: Path):
    path = tmp_path / "device.toml"
    path.write_text('region = "us-east-1"\n')
    with pytest.raises(ConfigError, match="thing_name"):
        load_config(path)


def test_status_prints_the_live_configuration_and_journal(
    device: Device, world: World, capsys: pytest.CaptureFixture[str]
):
    assert main(["status", "--config", str(_write_config(device, world))]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["endpoint"] == LEGACY_HOST
    assert state["journal"]["phase"] == "idle"
    assert state["journal"]["job_id"] is None  # every field shown, set or not
    assert state["journal"]["attempts"] == 0


def test_cli_exits_2_on_a_configuration_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "device.toml"
    path.write_text("not toml [")
    assert main(["status", "--config", str(path)]) == 2
    assert "configuration error" in capsys.readouterr().err


def _handler(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(
        ["sh", str(HANDLER), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_device_client_handler_migrates_and_syncs_device_client_config(
    device: Device, world: World, tmp_path: Path
):
    catalog = write_catalog(tmp_path / "cat", {"amazon-root-ca-1": world.ats_root.pem.decode()})
    config = _write_config(device, world, catalog)
    dc_config = tmp_path / "aws-iot-device-client.conf"
    dc_config.write_text(json.dumps({"endpoint": LEGACY_HOST, "thing-name": THING}))
    loaded = load_catalog(catalog)
    built = build_document(
        operation=Operation.MIGRATE,
        region="us-east-1",
        campaign="ats-2026",
        wave="dc",
        endpoint=Endpoint(host=ATS_HOST),
        roots=[loaded.get("amazon-root-ca-1")],
        catalog=loaded,
    )
    result = _handler(
        config, "--document-json", built.text, "--device-client-config", str(dc_config)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "SUCCEEDED"
    assert report["statusDetails"]["endpoint"] == f"{ATS_HOST}:8883"
    assert json.loads(device.paths.endpoint_file.read_text())["host"] == ATS_HOST
    assert json.loads(dc_config.read_text())["endpoint"] == ATS_HOST


def _migrate_text(world: World, catalog: Path) -> str:
    loaded = load_catalog(catalog)
    return build_document(
        operation=Operation.MIGRATE,
        region="us-east-1",
        campaign="ats-2026",
        wave="dc",
        endpoint=Endpoint(host=ATS_HOST),
        roots=[loaded.get("amazon-root-ca-1")],
        catalog=loaded,
    ).text


def _wait_for(path: Path, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def test_the_handler_restarts_device_client_detached_after_a_success_when_configured(
    device: Device, world: World, tmp_path: Path
):
    """The device's own command, after the delay, once the handler has exited and reported."""
    catalog = write_catalog(tmp_path / "cat", {"amazon-root-ca-1": world.ats_root.pem.decode()})
    marker = tmp_path / "restarted"
    command = json.dumps(["sh", "-c", f'echo "$$" > {marker}'])
    config = _write_config(
        device,
        world,
        catalog,
        device_client_restart=command,
        device_client_restart_delay_seconds="2",
    )
    result = _handler(config, "--document-json", _migrate_text(world, catalog))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "SUCCEEDED"
    assert report["deviceClientRestart"] == "sh in 2 s"
    assert not marker.exists()  # not before the delay: the handler has returned already
    assert _wait_for(marker)


def test_the_handler_restarts_nothing_after_a_failure_or_without_the_setting(
    device: Device, world: World, tmp_path: Path
):
    marker = tmp_path / "restarted"
    command = json.dumps(["sh", "-c", f"touch {marker}"])
    config = _write_config(
        device, world, device_client_restart=command, device_client_restart_delay_seconds="0"
    )
    rejected = _handler(config, "--document-json", '{"schema": 1}')
    assert rejected.returncode == 1
    assert "deviceClientRestart" not in rejected.stdout
    catalog = write_catalog(tmp_path / "cat", {"amazon-root-ca-1": world.ats_root.pem.decode()})
    plain = _handler(
        _write_config(device, world, catalog), "--document-json", _migrate_text(world, catalog)
    )
    assert plain.returncode == 0
    assert "deviceClientRestart" not in plain.stdout
    time.sleep(0.5)
    assert not marker.exists()


@pytest.mark.parametrize(
    "value", ['"systemctl restart x"', "[]", '[""]', "[1]", json.dumps(["a"] * 33)]
)
def test_a_restart_command_that_is_not_a_list_of_arguments_is_a_configuration_error(
    device: Device, world: World, value: str
):
    with pytest.raises(ConfigError, match="device_client_restart"):
        load_config(_write_config(device, world, device_client_restart=value))


def test_device_client_handler_exits_1_with_the_reason_for_an_invalid_document(
    device: Device, world: World
):
    before = device.live()
    result = _handler(_write_config(device, world), "--document-json", '{"schema": 1}')
    assert result.returncode == 1
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "REJECTED"
    assert report["statusDetails"]["reason"]
    assert device.live() == before


def _public_key_pem(kind: str) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import PublicFormat

    private: Any
    if kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    elif kind == "p256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif kind == "p384":
        private = ec.generate_private_key(ec.SECP384R1())
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(("kind", "named"), [("p384", "secp384r1"), ("rsa", "RSA")])
def test_a_signing_key_of_another_type_fails_at_configuration_load(
    device: Device, world: World, kind: str, named: str, capsys: pytest.CaptureFixture[str]
):
    """Not later, by rejecting every signed document: exit 2, naming the accepted types."""
    (device.root / "ops.pub").write_bytes(_public_key_pem(kind))
    config = _write_config(device, world, signing_public_key='"ops.pub"')
    with pytest.raises(ConfigError, match=named) as caught:
        load_config(config)
    assert "Ed25519 or ECDSA P-256" in str(caught.value)
    assert main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err
    assert "accepted key types" in err


@pytest.mark.parametrize("kind", ["ed25519", "p256"])
def test_ed25519_and_p256_signing_keys_are_accepted(device: Device, world: World, kind: str):
    (device.root / "ops.pub").write_bytes(_public_key_pem(kind))
    config = load_config(_write_config(device, world, signing_public_key='"ops.pub"'))
    assert config.signing_public_key == device.root.resolve() / "ops.pub"


def test_an_unreadable_signing_key_is_a_configuration_error(device: Device, world: World):
    (device.root / "ops.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="cannot read a PEM public key"):
        load_config(_write_config(device, world, signing_public_key='"ops.pub"'))


def _device_client_argv(sample: str, replace: dict[str, str], *, user: str) -> list[str]:
    """What Device Client's JobEngine passes: `<handler> <runAsUser> <args...>`.

    New schema: the runHandler step's `input.args` and `runAsUser`. Old schema: `args`,
    run by current Device Client releases with an empty user (`user` here).
    """
    body = json.loads((HANDLER.parent / sample).read_text())
    if "version" in body:
        action = body["steps"][0]["action"]
        assert action["type"] == "runHandler"
        assert action["input"]["handler"] == HANDLER.name
        args, user = action["input"]["args"], action["runAsUser"]
    else:
        assert body["operation"] == HANDLER.name
        args = body["args"]
    out = list(args)
    for index, arg in enumerate(out[:-1]):
        if arg in replace:
            out[index + 1] = replace[arg]
    return [user, *out]


@pytest.mark.parametrize("sample", ["sample-job-document.json", "sample-job-document-v1.json"])
def test_device_client_runs_the_shipped_samples_with_its_run_as_user_argument(
    device: Device, world: World, tmp_path: Path, sample: str
):
    """Device Client passes runAsUser first (new schema; empty for the old one)."""
    catalog = write_catalog(tmp_path / "cat", {"amazon-root-ca-1": world.ats_root.pem.decode()})
    dc_config = tmp_path / "aws-iot-device-client.conf"
    dc_config.write_text(json.dumps({"endpoint": LEGACY_HOST, "thing-name": THING}))
    loaded = load_catalog(catalog)
    built = build_document(
        operation=Operation.MIGRATE,
        region="us-east-1",
        campaign="ats-2026",
        wave="dc",
        endpoint=Endpoint(host=ATS_HOST),
        roots=[loaded.get("amazon-root-ca-1")],
        catalog=loaded,
    )
    argv = _device_client_argv(
        sample,
        {
            "--config": str(_write_config(device, world, catalog)),
            "--device-client-config": str(dc_config),
            "--document-json": built.text,
        },
        user="",
    )
    result = subprocess.run(
        ["sh", str(HANDLER), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHON=sys.executable),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert json.loads(result.stdout.splitlines()[-1])["status"] == "SUCCEEDED"
    assert json.loads(dc_config.read_text())["endpoint"] == ATS_HOST


@pytest.mark.parametrize(
    ("argv", "user", "rest"),
    [
        (["root", "--config", "c"], "root", ["--config", "c"]),
        (["", "--config", "c"], "", ["--config", "c"]),
        (["--config", "c"], None, ["--config", "c"]),
        ([], None, []),
    ],
)
def test_a_leading_non_option_is_device_clients_run_as_user(
    argv: list[str], user: str | None, rest: list[str]
):
    assert split_run_as_user(argv) == (user, rest)


# What a `pip install 'ca-migrate[device]'` lacks: importing any of these fails in the child.
_DEVICE_ONLY = (
    "import runpy, sys\n"
    "for name in ('boto3', 'botocore', 'pydantic', 'pydantic_core', 'typer', 'rich', 'yaml',\n"
    "             'orchestrator', 'infra', 'paho'):\n"
    "    sys.modules[name] = None  # an import of it now raises ImportError\n"
    "sys.argv[0] = 'ca-migrate-handler'\n"
    "runpy.run_module('device_handler.device_client.handler', run_name='__main__')\n"
)


def test_the_device_deployable_declares_none_of_the_orchestrators_dependencies():
    from importlib.metadata import requires

    declared = requires("ca-migrate") or []
    device = [r for r in declared if ";" not in r or 'extra == "device"' in r]
    names = {
        r.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in device
    }
    assert names == {"structlog", "jsonschema", "cryptography", "awsiotsdk"}


def test_a_migrate_runs_on_the_device_without_the_orchestrators_dependencies(
    device: Device, world: World, tmp_path: Path
):
    catalog = write_catalog(tmp_path / "cat", {"amazon-root-ca-1": world.ats_root.pem.decode()})
    loaded = load_catalog(catalog)
    built = build_document(
        operation=Operation.MIGRATE,
        region="us-east-1",
        campaign="ats-2026",
        wave="device-only",
        endpoint=Endpoint(host=ATS_HOST),
        roots=[loaded.get("amazon-root-ca-1")],
        catalog=loaded,
    )
    config = _write_config(device, world, catalog)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _DEVICE_ONLY,
            "--config",
            str(config),
            "--document-json",
            built.text,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "SUCCEEDED"
    assert json.loads(device.paths.endpoint_file.read_text())["host"] == ATS_HOST
