"""`ca-migrate sandbox fleet`: real agents for a sandbox that runs in another process.

The pure parts (option parsing, profile picking) are checked directly; the command itself runs
as a real subprocess against a sandbox with its MQTT listeners, found through the files `sandbox
up` writes to its state directory, and migrates real devices over mutual TLS.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import job_documents as jd
from device_handler.config import load_config
from infra.sandbox.connection import (
    SandboxNotRunningError,
    read_description,
    write_connection_files,
)
from infra.sandbox.fleet import Profile
from infra.sandbox.fleet.live import (
    FleetSelectionError,
    device_config_text,
    parse_offline,
    pick_profiles,
)
from infra.sandbox.fleet_command import run_fleet
from infra.sandbox.runtime import Sandbox
from tests.machine import NEEDS_MOSQUITTO, needs_loopback_name

from .proc_lines import lines_until

ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"


ARN = "arn:aws:iot:us-east-1:123456789012:thinggroup/"


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, 0), ("", 0), ("5", 5), ("0", 0), ("0.1", 0.1), ("10%", 0.1), ("1.0", 1.0)],
)
def test_offline_is_a_share_or_a_count(text: str | None, expected: float) -> None:
    value = parse_offline(text)
    assert value == pytest.approx(expected)
    assert isinstance(value, int) == (not text or text.isdigit())


@pytest.mark.parametrize("text", ["many", "1.5", "-0.1", "150%"])
def test_offline_refuses_what_is_neither(text: str) -> None:
    with pytest.raises(FleetSelectionError, match="--offline"):
        parse_offline(text)


def _groups() -> dict[str, list[str]]:
    return {
        "canary": [f"c-{i:02d}" for i in range(20)],
        "fleet": [f"f-{i:02d}" for i in range(40)],
    }


def test_fail_rate_takes_its_share_of_every_group_and_offline_a_count_of_the_rest() -> None:
    profiles = pick_profiles(_groups(), fail_rate=0.25, offline=3, seed=7)
    failing = Counter(name[0] for name, p in profiles.items() if p is Profile.PROBE_FAILS)
    assert failing == {"c": 5, "f": 10}
    offline = [name for name, p in profiles.items() if p is Profile.OFFLINE]
    assert len(offline) == 3
    assert Counter(profiles.values())[Profile.OK] == 60 - 15 - 3


def test_profiles_are_the_same_for_a_seed_and_differ_between_seeds() -> None:
    one = pick_profiles(_groups(), fail_rate=0.2, offline=0.1, seed=7)
    assert one == pick_profiles(_groups(), fail_rate=0.2, offline=0.1, seed=7)
    assert one != pick_profiles(_groups(), fail_rate=0.2, offline=0.1, seed=8)
    assert Counter(one.values())[Profile.OFFLINE] == 6  # 10% of each group


@pytest.mark.parametrize(
    ("fail_rate", "offline", "match"),
    [(1.5, 0, "--fail-rate"), (0.6, 0.6, "exceed"), (0.5, 31, "only 30")],
)
def test_options_that_do_not_fit_the_fleet_are_refused(
    fail_rate: float, offline: float, match: str
) -> None:
    with pytest.raises(FleetSelectionError, match=match):
        pick_profiles(_groups(), fail_rate=fail_rate, offline=offline, seed=7)


# -- finding the sandbox --------------------------------------------------------------------------


def test_the_state_dir_finds_a_running_sandbox_and_not_a_stopped_one(tmp_path: Path) -> None:
    state = tmp_path / "sbx"
    with pytest.raises(SandboxNotRunningError, match="sandbox up --state-dir"):
        read_description(state)
    with Sandbox(mqtt=False, state_dir=state) as sandbox:
        env_file = write_connection_files(state, sandbox.describe())
        assert read_description(state)["admin_url"] == sandbox.admin_url
        text = env_file.read_text()
        assert f"export AWS_ENDPOINT_URL_IOT={sandbox.control_plane_url}\n" in text
        assert f"export CA_MIGRATE_CLOCK=sandbox:{sandbox.admin_url}\n" in text
    with pytest.raises(SandboxNotRunningError, match="does not answer"):
        read_description(state, timeout=2)


def test_git_ignores_the_state_dir_keys_included(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "clone"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    state = repo / "any-name"
    with Sandbox(mqtt=False, state_dir=state) as sandbox:
        write_connection_files(state, sandbox.describe())
    (state / "pki" / "private").mkdir(parents=True, exist_ok=True)
    (state / "pki" / "private" / "root.key").write_text("not a real key")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == ""


# -- the command ----------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.mqtt
@NEEDS_MOSQUITTO
@needs_loopback_name(ATS)
def test_sandbox_fleet_migrates_real_devices_fails_its_share_and_stops_on_sigint(
    tmp_path: Path,
) -> None:
    state = tmp_path / "sbx"
    with Sandbox(mqtt=True, time_scale=60, state_dir=state) as sandbox:
        write_connection_files(state, sandbox.describe())
        things = sandbox.provision(6, [("g", None)]).things
        command = [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "sandbox",
            "fleet",
            "--state-dir",
            str(state),
            "--group",
            "g",
            "--fail-rate",
            "0.34",
            "--offline",
            "1",
            "--seed",
            "3",
        ]
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        )
        try:
            lines_until(proc, lambda line: "5 connected, 1 offline" in line, timeout=60)
            pki = sandbox.pki
            assert pki is not None
            catalog = jd.load_catalog(pki.ats_catalog)
            doc = jd.build_document(
                operation="migrate",
                region="us-east-1",
                campaign="t",
                wave="w",
                endpoint=jd.Endpoint(host=pki.hosts["ats"]),
                roots=[catalog.get("amazon-root-ca-1")],
                catalog=catalog,
            )
            sandbox.engine.create_job({"jobId": "w", "targets": [ARN + "g"], "document": doc.text})
            lines_until(proc, lambda line: "3 succeeded, 2 failed" in line, timeout=90)
        finally:
            asked = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        # Idle devices wait for notifications for 30 s at a time; the stop does not wait for them.
        assert time.monotonic() - asked < 10
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        assert "stopped: devices 6" in out
        history = {h["thingName"]: h for h in sandbox.engine.execution_history(job_id="w")}
        statuses = Counter(h["status"] for h in history.values())
        assert statuses == {"SUCCEEDED": 3, "FAILED": 2, "QUEUED": 1}
        for h in history.values():
            if h["status"] == "SUCCEEDED":
                assert h["history"][-1]["via"] == "ats"  # acknowledged over the new connection
    # Every device.toml is what `ca-migrate-device run --config` loads: the same files and
    # listeners the fleet's thread used.
    for name in things:
        path = state / "fleet" / name / "device.toml"
        config = load_config(path)
        assert config.thing_name == name
        assert config.endpoint_file == state.resolve() / "fleet" / name / "endpoint.json"
        assert config.client_cert.is_file()
        assert config.client_key.is_file()
        assert config.catalog == (state / "pki" / "ats" / "catalog.json").resolve()
        failing = history[name]["status"] == "FAILED"
        assert (config.connect_override[f"{ATS}:8883"] == "127.0.0.1:1") == failing


@pytest.mark.e2e
@pytest.mark.mqtt
@NEEDS_MOSQUITTO
@needs_loopback_name(ATS)
def test_on_a_terminal_the_fleet_is_one_line_rewritten_in_place(tmp_path: Path) -> None:
    import pty

    state = tmp_path / "sbx"
    with Sandbox(mqtt=True, time_scale=60, state_dir=state) as sandbox:
        write_connection_files(state, sandbox.describe())
        sandbox.provision(2, [("g", None)])
        leader, follower = pty.openpty()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator.cli",
                "sandbox",
                "fleet",
                "--state-dir",
                str(state),
            ],
            stdout=follower,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(follower)
        seen = b""
        deadline = time.monotonic() + 60
        try:
            while b"2 connected" not in seen and time.monotonic() < deadline:
                try:
                    seen += os.read(leader, 4096)
                except OSError:
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            os.close(leader)
    assert b"2 connected" in seen
    assert b"\r\x1b[2Kdevices 2:" in seen  # rewritten in place, not a new line per change
    assert b"(sandbox time)" not in seen  # the event lines are for pipes and files
    assert proc.returncode == 0, err
    assert "Traceback" not in err


# -- pinning a document-signing key ---------------------------------------------------------------


def _signing_key(directory: Path) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    public = directory / "ops.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, public


def test_a_pinned_key_is_the_device_toml_signing_public_key(tmp_path: Path) -> None:
    _, public = _signing_key(tmp_path)
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    catalog = tmp_path / "catalog.json"
    catalog.write_text("{}")
    text = device_config_text(
        thing="device-00001",
        region="us-east-1",
        credentials={"cert_pem": str(tmp_path / "cert.pem"), "key_pem": str(tmp_path / "key.pem")},
        catalog=catalog,
        overrides={},
        signing_public_key=public,
    )
    (tmp_path / "device.toml").write_text(text)
    assert load_config(tmp_path / "device.toml").signing_public_key == public.resolve()


@pytest.mark.parametrize("content", [b"not a key", None], ids=["not-pem", "missing"])
def test_sandbox_fleet_refuses_a_key_devices_cannot_pin_with_exit_2_before_anything(
    tmp_path: Path, content: bytes | None, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "ops.pub"
    if content is not None:
        key.write_bytes(content)
    code = run_fleet(
        state_dir=tmp_path / "sbx",  # no sandbox there: the key is checked first
        groups=[],
        things=[],
        fail_rate=0.0,
        offline=None,
        seed=7,
        verbose=False,
        signing_public_key=key,
    )
    assert code == 2
    assert "--signing-public-key" in capsys.readouterr().err
    assert not (tmp_path / "sbx").exists()


@pytest.mark.e2e
@pytest.mark.mqtt
@NEEDS_MOSQUITTO
@needs_loopback_name(ATS)
def test_sandbox_fleet_devices_pinning_a_key_take_what_it_signed_and_reject_the_rest(
    tmp_path: Path,
) -> None:
    key, public = _signing_key(tmp_path)
    state = tmp_path / "sbx"
    with Sandbox(mqtt=True, time_scale=60, state_dir=state) as sandbox:
        write_connection_files(state, sandbox.describe())
        sandbox.provision(2, [("g", None)])
        command = [
            *(sys.executable, "-m", "orchestrator.cli", "sandbox", "fleet"),
            *("--state-dir", str(state), "--group", "g", "--signing-public-key", str(public)),
        ]
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        )
        try:
            lines_until(proc, lambda line: "2 connected" in line, timeout=60)
            pki = sandbox.pki
            assert pki is not None
            catalog = jd.load_catalog(pki.ats_catalog)

            def document(*, sign: bool) -> str:
                return jd.build_document(
                    operation="migrate",
                    region="us-east-1",
                    campaign="t",
                    wave="w",
                    endpoint=jd.Endpoint(host=pki.hosts["ats"]),
                    roots=[catalog.get("amazon-root-ca-1")],
                    catalog=catalog,
                    sign_key=key if sign else None,
                    key_id="ops" if sign else None,
                ).text

            target = [ARN + "g"]
            unsigned_doc = document(sign=False)
            sandbox.engine.create_job({"jobId": "u", "targets": target, "document": unsigned_doc})
            lines_until(proc, lambda line: "0 succeeded, 2 failed" in line, timeout=60)
            signed_doc = document(sign=True)
            sandbox.engine.create_job({"jobId": "s", "targets": target, "document": signed_doc})
            lines_until(proc, lambda line: "2 succeeded, 2 failed" in line, timeout=90)
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        unsigned = {h["status"] for h in sandbox.engine.execution_history(job_id="u")}
        signed = {h["status"] for h in sandbox.engine.execution_history(job_id="s")}
    assert unsigned == {"REJECTED"}
    assert signed == {"SUCCEEDED"}
