"""`sandbox provision`'s text output: where the credentials went and how many, never a PEM."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from infra.sandbox.cli import _credentials_line, sandbox_app
from infra.sandbox.runtime import Sandbox


def test_provision_names_the_credentials_directory_and_prints_no_key(tmp_path: Path):
    with Sandbox(work_dir=tmp_path) as sandbox:
        result = CliRunner().invoke(
            sandbox_app,
            [
                "provision",
                "--things",
                "3",
                "--group",
                "g",
                "--endpoint-url",
                sandbox.control_plane_url,
            ],
        )
        assert result.exit_code == 0, result.output
        assert sandbox.pki is not None
        things = sandbox.pki.directory / "things"
        key = (things / "device-00001" / "key.pem").read_text()
        cert = (things / "device-00001" / "cert.pem").read_text()
    line = result.stdout.strip().splitlines()[-1]
    assert line == (
        f"credentials for 3 things written under {things} "
        "(one directory per thing: cert.pem, key.pem)"
    )
    assert "{" not in result.stdout  # no Python dict
    assert "BEGIN" not in result.stdout
    for pem in (key, cert):
        body = "".join(pem.splitlines()[1:-1])
        assert all(part not in result.stdout for part in (body[:16], body[-16:]))


def test_a_pem_body_in_the_admin_answer_is_never_printed():
    secret = (
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n"
    )
    line = _credentials_line({"device-00001": {"cert_pem": secret, "key_pem": secret}})
    assert "MIGHAgEA" not in line
    assert "BEGIN" not in line
    assert line.startswith("credentials for 1 things")
