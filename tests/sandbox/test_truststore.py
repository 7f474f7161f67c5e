"""`ca-migrate sandbox trust` / `untrust`: the sandbox roots in and out of a Debian trust store.

Every test works on a store root of its own (`--store-root`): the real
`update-ca-certificates` rebuilds that tree's bundle, and a TLS client that reads
the bundle, as stock clients read /etc/ssl/certs/ca-certificates.crt, verifies the
sandbox's ATS endpoint only while the roots are trusted. The machine's own trust
store is never touched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from infra.sandbox.cli import sandbox_app
from infra.sandbox.mqtt.testing import handshake
from infra.sandbox.pki import SandboxPki
from infra.sandbox.runtime import Sandbox
from infra.sandbox.truststore import (
    STORE_SUBDIR,
    DebianTrustStore,
    TrustStoreError,
    sandbox_anchors,
    trust,
    untrust,
)

pytestmark = pytest.mark.skipif(
    shutil.which("update-ca-certificates", path="/usr/sbin:/usr/bin:/sbin") is None,
    reason="update-ca-certificates is not installed (Debian's ca-certificates)",
)

ROOT_NAMES = ("verisign-class3-g5", "amazon-root-ca-1", "amazon-root-ca-3")


def _fingerprints(bundle: Path) -> set[str]:
    if not bundle.exists():
        return set()
    return {
        hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
        for cert in x509.load_pem_x509_certificates(bundle.read_bytes())
    }


def _foreign_root(path: Path, organization: str = "Somebody else") -> str:
    """A self-signed CA that is not the sandbox's, written to `path`; its fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, "Local root"),
        ]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


@pytest.fixture
def pki(tmp_path: Path) -> SandboxPki:
    return SandboxPki.create_or_load(tmp_path / "state" / "pki")


@pytest.fixture
def store(tmp_path: Path) -> DebianTrustStore:
    return DebianTrustStore(tmp_path / "root")


def test_trust_installs_the_three_server_roots_and_the_bundle_holds_them(
    pki: SandboxPki, store: DebianTrustStore
) -> None:
    anchors = sandbox_anchors(pki)
    assert [a.name for a in anchors] == list(ROOT_NAMES)
    change = trust(anchors, store)
    assert sorted(p.name for p in change.added) == sorted(a.file_name for a in anchors)
    assert {a.sha256 for a in anchors} <= _fingerprints(store.bundle)
    assert change.update.endswith("done.")
    # The device CA issues client certificates: it is never a server trust anchor.
    device_ca = x509.load_pem_x509_certificate(pki.device_ca_pem.read_bytes())
    assert hashlib.sha256(device_ca.public_bytes(Encoding.DER)).hexdigest() not in (
        _fingerprints(store.bundle)
    )


def test_trust_twice_changes_nothing_the_second_time(
    pki: SandboxPki, store: DebianTrustStore
) -> None:
    anchors = sandbox_anchors(pki)
    trust(anchors, store)
    before = store.bundle.stat().st_mtime_ns
    again = trust(anchors, store)
    assert again.added == ()
    assert len(again.unchanged) == len(ROOT_NAMES)
    assert again.update == ""
    assert store.bundle.stat().st_mtime_ns == before


def test_trust_rebuilds_a_bundle_that_lost_the_roots(
    pki: SandboxPki, store: DebianTrustStore
) -> None:
    anchors = sandbox_anchors(pki)
    trust(anchors, store)
    store.bundle.write_text("")
    again = trust(anchors, store)
    assert again.added == ()
    assert again.update.endswith("done.")
    assert {a.sha256 for a in anchors} <= _fingerprints(store.bundle)


def test_untrust_removes_only_what_trust_wrote(
    pki: SandboxPki, store: DebianTrustStore, tmp_path: Path
) -> None:
    local = store.root / "usr/local/share/ca-certificates"
    beside = _foreign_root(local / "company-root.crt")
    trust(sandbox_anchors(pki), store)
    # In the sandbox's own directory: a foreign root, and one named like ours.
    foreign = _foreign_root(store.local_dir / "my-root.crt")
    lookalike = store.local_dir / f"amazon-root-ca-1-{'0' * 16}.crt"
    _foreign_root(lookalike)
    trust(sandbox_anchors(pki), store)  # the bundle now holds the foreign roots too
    change = untrust(store)
    assert sorted(p.name for p in change.removed) == sorted(
        a.file_name for a in sandbox_anchors(pki)
    )
    assert set(change.kept) == {lookalike, store.local_dir / "my-root.crt"}
    left = _fingerprints(store.bundle)
    assert not {a.sha256 for a in sandbox_anchors(pki)} & left
    assert {beside, foreign} <= left
    assert (local / "company-root.crt").exists()
    assert lookalike.exists()


def test_untrust_of_one_state_dir_leaves_another_sandbox_trusted(
    pki: SandboxPki, store: DebianTrustStore, tmp_path: Path
) -> None:
    other = SandboxPki.create_or_load(tmp_path / "other" / "pki")
    trust(sandbox_anchors(pki), store)
    trust(sandbox_anchors(other), store)
    change = untrust(store, sandbox_anchors(pki))
    assert len(change.removed) == len(ROOT_NAMES)
    left = _fingerprints(store.bundle)
    assert not {a.sha256 for a in sandbox_anchors(pki)} & left
    assert {a.sha256 for a in sandbox_anchors(other)} <= left
    assert untrust(store).removed  # the other sandbox's, now
    assert not store.local_dir.exists()


def test_a_root_that_is_not_a_sandbox_root_is_never_installed(
    pki: SandboxPki, store: DebianTrustStore
) -> None:
    _foreign_root(pki.ats_root_pems["amazon-root-ca-1"])
    with pytest.raises(TrustStoreError, match="is not a sandbox root"):
        sandbox_anchors(pki)
    pki.ats_root_pems["amazon-root-ca-1"].write_text("-----BEGIN CERTIFICATE-----\nnot base64")
    with pytest.raises(TrustStoreError, match="is not a PEM certificate"):
        sandbox_anchors(pki)
    assert not store.local_dir.exists()


@pytest.mark.mqtt
def test_a_client_reading_the_bundle_verifies_the_ats_endpoint_only_while_trusted(
    tmp_path: Path, store: DebianTrustStore
) -> None:
    runner = CliRunner()
    state = tmp_path / "state"
    # A store is never empty: some other root stays in the bundle after `untrust`.
    _foreign_root(store.root / "usr/local/share/ca-certificates/company-root.crt")
    with Sandbox(state_dir=state) as sandbox:
        ats = sandbox.endpoints["ats"]
        args = ["--state-dir", str(state), "--store-root", str(store.root)]

        def verified() -> bool:
            context = ssl.create_default_context(cafile=str(store.bundle))
            try:
                with handshake(ats.host, ats.port, context):
                    return True
            except ssl.SSLCertVerificationError:
                return False

        result = runner.invoke(sandbox_app, ["trust", *args])
        assert result.exit_code == 0, result.output
        assert result.output.count("  added: ") == len(ROOT_NAMES)
        assert "update-ca-certificates: " in result.output
        assert verified()
        result = runner.invoke(sandbox_app, ["trust", *args])
        assert result.output.count("  already trusted: ") == len(ROOT_NAMES)
        result = runner.invoke(sandbox_app, ["untrust", "--store-root", str(store.root)])
        assert result.exit_code == 0, result.output
        assert result.output.count("  removed: ") == len(ROOT_NAMES)
        assert not verified()
        result = runner.invoke(sandbox_app, ["untrust", "--store-root", str(store.root)])
        assert "nothing changed" in result.output


def test_trust_creates_the_pki_a_later_sandbox_up_uses(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = tmp_path / "root"
    result = CliRunner().invoke(
        sandbox_app, ["trust", "--state-dir", str(state), "--store-root", str(store)]
    )
    assert result.exit_code == 0, result.output
    assert f"created the sandbox PKI in {state / 'pki'}" in result.output
    assert (state / "pki" / "pki.json").exists()
    assert (store / "usr/local/share/ca-certificates" / STORE_SUBDIR).is_dir()


@pytest.mark.parametrize("command", ["trust", "untrust"])
def test_a_store_that_cannot_be_written_exits_2_saying_what_to_do(
    tmp_path: Path, command: str
) -> None:
    store = tmp_path / "root"
    (store / "usr/local/share/ca-certificates").mkdir(parents=True)
    # A file where the sandbox's directory goes: neither root nor anyone can write in it.
    (store / "usr/local/share/ca-certificates" / STORE_SUBDIR).write_text("")
    SandboxPki.create_or_load(tmp_path / "state" / "pki")
    args = [command, "--state-dir", str(tmp_path / "state"), "--store-root", str(store)]
    result = CliRunner().invoke(sandbox_app, args)
    if command == "untrust":
        assert result.exit_code == 0
        assert "nothing changed" in result.output
        return
    assert result.exit_code == 2
    assert "must be a directory that only `sandbox trust` writes in" in result.output
    assert "Traceback" not in result.output


def test_a_store_root_may_not_write_exits_2_saying_sudo(tmp_path: Path) -> None:
    """Run as a user who may not write the store (a child that drops to `nobody` as root)."""
    store = tmp_path / "root"
    store.mkdir(mode=0o755)
    SandboxPki.create_or_load(tmp_path / "state" / "pki")
    drop = "os.setgid(65534); os.setuid(65534)" if os.geteuid() == 0 else "pass"
    code = (
        "import os, sys\n"
        "from infra.sandbox.truststore import DebianTrustStore, TrustStoreError, trust\n"
        f"{drop}\n"
        "try:\n"
        f"    trust([], DebianTrustStore(__import__('pathlib').Path({str(store)!r})))\n"
        "except TrustStoreError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "run the command with sudo" in done.stdout


def test_untrust_of_a_state_dir_without_a_pki_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        sandbox_app,
        ["untrust", "--state-dir", str(tmp_path / "none"), "--store-root", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert "there is no sandbox PKI" in result.output
    assert not (tmp_path / "none").exists()


def test_trust_warns_when_clients_are_pointed_at_another_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "root"
    args = ["trust", "--state-dir", str(tmp_path / "state"), "--store-root", str(store)]
    monkeypatch.setenv("SSL_CERT_FILE", str(store / "etc/ssl/certs/ca-certificates.crt"))
    monkeypatch.setenv("SSL_CERT_DIR", str(store / "etc/ssl/certs"))
    quiet = CliRunner().invoke(sandbox_app, args)
    assert "warning" not in quiet.output
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "elsewhere.pem"))
    warned = CliRunner().invoke(sandbox_app, args)
    assert warned.exit_code == 0
    assert f"warning: SSL_CERT_FILE is set ({tmp_path / 'elsewhere.pem'})" in warned.output


def test_trust_reports_which_default_ca_files_hold_the_roots(
    pki: SandboxPki, store: DebianTrustStore
) -> None:
    """OpenSSL's default file (a link to the bundle on Debian) and awscrt's probes."""
    openssl_default = store.root / "usr/lib/ssl/cert.pem"
    openssl_default.parent.mkdir(parents=True)
    openssl_default.symlink_to("/etc/ssl/certs/ca-certificates.crt")  # absolute: in the root
    stale = store.root / "etc/pki/tls/certs/ca-bundle.crt"
    _foreign_root(stale)
    change = trust(sandbox_anchors(pki), store)
    readers = dict(change.readers)
    assert readers[store.bundle] is True
    assert readers[stale] is False
    assert len(readers) == 2  # the link resolves to the bundle itself


def test_trust_of_an_existing_pki_only_reads_it(tmp_path: Path) -> None:
    """`sudo ca-migrate sandbox trust` must not leave root-owned files in the user's PKI.

    (A PKI of another region would otherwise get server certificates for us-east-1.)
    """
    pki = SandboxPki.create_or_load(tmp_path / "state" / "pki", region="eu-west-1")
    before = {p: p.stat().st_mtime_ns for p in pki.directory.rglob("*") if p.is_file()}
    result = CliRunner().invoke(
        sandbox_app,
        ["trust", "--state-dir", str(tmp_path / "state"), "--store-root", str(tmp_path / "r")],
    )
    assert result.exit_code == 0, result.output
    assert "created the sandbox PKI" not in result.output
    after = {p: p.stat().st_mtime_ns for p in pki.directory.rglob("*") if p.is_file()}
    assert after == before
