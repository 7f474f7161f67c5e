"""Put the sandbox's stand-in roots into the system trust store, and take them out again.

Device code that an integrator did not write for the sandbox (the AWS IoT
Device SDK v2 samples, AWS IoT Device Client without a CA option) verifies the
server with the system trust store. `ca-migrate sandbox trust` adds the
sandbox's server roots there, `untrust` removes them: the pattern of
`mkcert -install` / `caddy trust`.

The store is Debian's (and Ubuntu's): a `.crt` file per local root under
`/usr/local/share/ca-certificates/`, then `update-ca-certificates`, which
rebuilds `/etc/ssl/certs/ca-certificates.crt` (the file awscrt, OpenSSL and
Python's `ssl` read by default) and the hashed links beside it. A store root
(`--store-root DIR`) puts every one of those paths under DIR, so tests and
rehearsals change a tree of their own, never the machine's.

Invariants:
- only server roots of a sandbox PKI are installed (self-signed CA
  certificates whose organization names the sandbox), never the device CA or
  a file that merely sits in the PKI directory;
- `trust` is idempotent: a root already installed with the same bytes is left
  alone, and `update-ca-certificates` runs only when something changed or the
  bundle lacks a root;
- `untrust` removes only files `trust` wrote: in its own directory, named by
  the root and its fingerprint, with those bytes and the sandbox organization.
  Anything else found there is kept and reported;
- after either, the bundle is read back and must (not) hold each root.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from infra.sandbox.errors import SandboxError
from infra.sandbox.pki import ATS_ROOTS, SANDBOX_ORGANIZATION, SandboxPki

__all__ = [
    "DebianTrustStore",
    "TrustAnchor",
    "TrustChange",
    "TrustStoreError",
    "sandbox_anchors",
    "trust",
    "untrust",
]

log = structlog.get_logger(__name__)

#: The directory under the local certificates directory that only `trust` writes.
STORE_SUBDIR: Final = "ca-migrate-sandbox"
_UPDATE_TIMEOUT: Final = 120.0
_FILE_NAME = re.compile(r"^(?P<name>[a-z0-9-]{1,64})-(?P<fp>[0-9a-f]{16})\.crt$")
_MAX_PEM = 64 * 1024
_MAX_LINKS = 8
#: The CA files awscrt (aws-c-io) probes for the system trust store, in order.
_AWSCRT_CA_FILES: Final = (
    "etc/ssl/certs/ca-certificates.crt",
    "etc/pki/tls/certs/ca-bundle.crt",
    "etc/ssl/ca-bundle.pem",
    "etc/pki/tls/cacert.pem",
    "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "etc/ssl/cert.pem",
)
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class TrustStoreError(SandboxError):
    """The trust store cannot be changed as asked (the message says what to do)."""


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """One sandbox root to install: its catalog name, what it stands in for, its PEM."""

    name: str
    description: str
    pem: bytes
    sha256: str

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.sha256[:16]}.crt"


@dataclass(frozen=True, slots=True)
class DebianTrustStore:
    """Debian's system trust store, under `root` ("/" for the machine's own)."""

    root: Path = Path("/")

    @property
    def local_dir(self) -> Path:
        """The directory `trust` owns, inside /usr/local/share/ca-certificates."""
        return self.root / "usr/local/share/ca-certificates" / STORE_SUBDIR

    @property
    def certs_dir(self) -> Path:
        """/etc/ssl/certs: the hashed links (OpenSSL's default directory) and the bundle."""
        return self.root / "etc/ssl/certs"

    @property
    def bundle(self) -> Path:
        """/etc/ssl/certs/ca-certificates.crt: the file awscrt, OpenSSL and Python read."""
        return self.certs_dir / "ca-certificates.crt"

    def default_files(self) -> list[Path]:
        """The CA files clients read when given none, as found under the store root.

        OpenSSL's compiled-in default (Python's `ssl`; Debian links
        /usr/lib/ssl/cert.pem to the bundle) and the files awscrt probes, in its
        order, for a system trust store. Symbolic links are followed inside the
        store root. Only files that exist are listed.
        """
        relative = [
            "etc/ssl/certs/ca-certificates.crt",
            ssl.get_default_verify_paths().openssl_cafile.lstrip("/"),
            *_AWSCRT_CA_FILES,
        ]
        found: list[Path] = []
        for name in dict.fromkeys(relative):
            path = self._inside(self.root / name)
            if path is not None and path.is_file() and path not in found:
                found.append(path)
        return found

    def _inside(self, path: Path) -> Path | None:
        """`path` with links resolved against the store root (None when a link loops)."""
        for _ in range(_MAX_LINKS):
            if not path.is_symlink():
                return path
            target = path.readlink()
            if target.is_absolute():
                path = self.root / target.relative_to("/")
            else:
                path = path.parent / target
        return None

    def update_command(self, *, fresh: bool) -> list[str]:
        """`update-ca-certificates` with every path under the store root."""
        program = shutil.which("update-ca-certificates") or shutil.which(
            "update-ca-certificates", path="/usr/sbin:/sbin"
        )
        if program is None:
            raise TrustStoreError(
                "update-ca-certificates is not installed (Debian and Ubuntu: apt-get install "
                "ca-certificates); on another system add the roots of `<state-dir>/pki` "
                "(legacy/*.pem, ats/*.pem) to its trust store by hand"
            )
        conf = self.root / "etc/ca-certificates.conf"
        command = [
            program,
            # A store root without a configuration file has no distribution roots to list.
            "--certsconf",
            str(conf if conf.is_file() else Path(os.devnull)),
            "--certsdir",
            str(self.root / "usr/share/ca-certificates"),
            "--localcertsdir",
            str(self.root / "usr/local/share/ca-certificates"),
            "--etccertsdir",
            str(self.certs_dir),
            "--hooksdir",
            str(self.root / "etc/ca-certificates/update.d"),
        ]
        if fresh:
            # Debian's way to drop removed roots: rebuild every link and the bundle.
            command.append("--fresh")
        return command


@dataclass(frozen=True, slots=True)
class TrustChange:
    """What `trust` or `untrust` did, for the operator."""

    added: tuple[Path, ...] = ()
    unchanged: tuple[Path, ...] = ()
    removed: tuple[Path, ...] = ()
    #: Files in the sandbox's directory that `trust` did not write: left in place.
    kept: tuple[Path, ...] = ()
    #: The last line of `update-ca-certificates` when it ran ("3 added, 0 removed; done.").
    update: str = ""
    bundle: Path = field(default_factory=lambda: DebianTrustStore().bundle)
    #: Each default CA file that exists in the store and whether it holds the roots
    #: (after `trust`; see `DebianTrustStore.default_files`).
    readers: tuple[tuple[Path, bool], ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def _organization(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(values[0].value) if values else ""


def _is_sandbox_root(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return (
        constraints.ca
        and cert.subject == cert.issuer
        and _organization(cert) == SANDBOX_ORGANIZATION
    )


def _anchor(name: str, path: Path) -> TrustAnchor:
    try:
        data = path.read_bytes()[: _MAX_PEM + 1]
    except OSError as exc:
        raise TrustStoreError(
            f"cannot read the sandbox root {path}: {exc}; run `ca-migrate sandbox up "
            "--state-dir DIR` once, or give the --state-dir it uses"
        ) from exc
    try:
        if len(data) > _MAX_PEM:
            raise ValueError("larger than a root certificate")  # noqa: TRY301
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise TrustStoreError(
            f"{path} is not a PEM certificate ({exc}); delete the PKI directory to let the "
            "sandbox create a new one"
        ) from exc
    if not _is_sandbox_root(cert):
        raise TrustStoreError(
            f"{path} is not a sandbox root (a self-signed CA of {SANDBOX_ORGANIZATION!r}); "
            "it is not installed: delete the PKI directory to let the sandbox create a new one"
        )
    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    description = str(common_name[0].value) if common_name else name
    pem = cert.public_bytes(encoding=Encoding.PEM)
    digest = hashlib.sha256(cert.public_bytes(encoding=Encoding.DER)).hexdigest()
    return TrustAnchor(name=name, description=description, pem=pem, sha256=digest)


def sandbox_anchors(pki: SandboxPki) -> list[TrustAnchor]:
    """The roots a server of this sandbox chains to: the legacy root and the ATS stand-ins."""
    anchors = [_anchor(pki.legacy_root_pem.stem, pki.legacy_root_pem)]
    anchors += [_anchor(spec.name, pki.ats_root_pems[spec.name]) for spec in ATS_ROOTS]
    return anchors


def _bundle_fingerprints(bundle: Path) -> set[str]:
    try:
        data = bundle.read_bytes()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise TrustStoreError(f"cannot read the bundle {bundle}: {exc}") from exc
    found = set()
    # One block at a time: a bundle may hold text or a broken block beside the certificates.
    for block in _PEM_BLOCK.findall(data):
        try:
            cert = x509.load_pem_x509_certificate(block)
        except ValueError:
            continue
        found.add(hashlib.sha256(cert.public_bytes(encoding=Encoding.DER)).hexdigest())
    return found


def _drop_from_bundle(bundle: Path, fingerprints: set[str]) -> None:
    def keep(block: re.Match[bytes]) -> bytes:
        try:
            cert = x509.load_pem_x509_certificate(block[0])
        except ValueError:
            return block[0]
        digest = hashlib.sha256(cert.public_bytes(encoding=Encoding.DER)).hexdigest()
        return b"" if digest in fingerprints else block[0]

    try:
        kept = _PEM_BLOCK.sub(keep, bundle.read_bytes())
        staging = bundle.with_suffix(".ca-migrate.tmp")
        staging.write_bytes(kept.strip() + b"\n" if kept.strip() else b"")
        staging.chmod(0o644)
        staging.replace(bundle)
    except OSError as exc:
        raise _permission(bundle, exc) from exc


def _run_update(store: DebianTrustStore, *, fresh: bool) -> str:
    command = store.update_command(fresh=fresh)
    try:
        store.certs_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_UPDATE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TrustStoreError(f"update-ca-certificates did not run: {exc}") from exc
    if done.returncode != 0:
        raise TrustStoreError(
            f"update-ca-certificates failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-500:]}"
        )
    lines = [line for line in done.stdout.splitlines() if "added" in line and "removed" in line]
    return lines[-1].strip() if lines else ""


def _permission(path: Path, exc: OSError) -> TrustStoreError:
    if isinstance(exc, PermissionError):
        return TrustStoreError(
            f"cannot change {path}: {exc.strerror or exc}; the system trust store belongs to "
            "root: run the command with sudo (or give --store-root DIR for a store of your own)"
        )
    return TrustStoreError(
        f"cannot change {path}: {exc.strerror or exc}; it must be a directory that only "
        "`sandbox trust` writes in (check --store-root)"
    )


def trust(anchors: Sequence[TrustAnchor], store: DebianTrustStore) -> TrustChange:
    """Install `anchors` in `store` (idempotent) and check that the bundle holds them."""
    added: list[Path] = []
    unchanged: list[Path] = []
    try:
        store.local_dir.mkdir(parents=True, exist_ok=True)
        for anchor in anchors:
            path = store.local_dir / anchor.file_name
            if path.is_file() and path.read_bytes() == anchor.pem:
                unchanged.append(path)
                continue
            staging = path.with_suffix(".tmp")
            staging.write_bytes(anchor.pem)
            staging.chmod(0o644)
            staging.replace(path)
            added.append(path)
    except OSError as exc:
        raise _permission(store.local_dir, exc) from exc
    wanted = {anchor.sha256 for anchor in anchors}
    update = ""
    if added or not wanted <= _bundle_fingerprints(store.bundle):
        update = _run_update(store, fresh=False)
    missing = wanted - _bundle_fingerprints(store.bundle)
    if missing:
        raise TrustStoreError(
            f"update-ca-certificates ran but {store.bundle} lacks {len(missing)} of the "
            f"sandbox roots; check {store.local_dir} and run update-ca-certificates --fresh"
        )
    readers = tuple((path, wanted <= _bundle_fingerprints(path)) for path in store.default_files())
    log.info(
        "sandbox_roots_trusted",
        store=str(store.local_dir),
        added=[p.name for p in added],
        unchanged=len(unchanged),
        bundle=str(store.bundle),
    )
    return TrustChange(
        added=tuple(added),
        unchanged=tuple(unchanged),
        update=update,
        bundle=store.bundle,
        readers=readers,
    )


def _written_by_trust(path: Path, only: set[str] | None) -> str | None:
    """The fingerprint of a root `trust` wrote at `path` (and `only` selects), else None."""
    match = _FILE_NAME.match(path.name)
    if match is None or not path.is_file() or path.is_symlink():
        return None
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes()[: _MAX_PEM + 1])
    except (OSError, ValueError):
        return None
    digest = hashlib.sha256(cert.public_bytes(encoding=Encoding.DER)).hexdigest()
    if not digest.startswith(match["fp"]) or not _is_sandbox_root(cert):
        return None
    return digest if only is None or digest in only else None


def untrust(store: DebianTrustStore, anchors: Iterable[TrustAnchor] | None = None) -> TrustChange:
    """Remove the roots `trust` installed (only `anchors` when given) and rebuild the bundle."""
    only = None if anchors is None else {anchor.sha256 for anchor in anchors}
    removed: list[Path] = []
    gone: set[str] = set()
    kept: list[Path] = []
    if store.local_dir.is_dir():
        try:
            for path in sorted(store.local_dir.iterdir()):
                digest = _written_by_trust(path, only)
                if digest is not None:
                    path.unlink()
                    removed.append(path)
                    gone.add(digest)
                elif only is None or _FILE_NAME.match(path.name) is None:
                    kept.append(path)
            if not any(store.local_dir.iterdir()):
                store.local_dir.rmdir()
        except OSError as exc:
            raise _permission(store.local_dir, exc) from exc
    update = _run_update(store, fresh=True) if removed else ""
    if _bundle_fingerprints(store.bundle) & gone:
        # update-ca-certificates keeps the old bundle when no certificate at all is left
        # to write (a store holding only sandbox roots): drop their blocks from it.
        _drop_from_bundle(store.bundle, gone)
    left = _bundle_fingerprints(store.bundle) & gone
    if left:
        raise TrustStoreError(
            f"{store.bundle} still holds {len(left)} sandbox root(s) after "
            "update-ca-certificates --fresh; run it by hand and check /etc/ssl/certs"
        )
    log.info(
        "sandbox_roots_untrusted",
        store=str(store.local_dir),
        removed=[p.name for p in removed],
        kept=[p.name for p in kept],
        bundle=str(store.bundle),
    )
    return TrustChange(removed=tuple(removed), kept=tuple(kept), update=update, bundle=store.bundle)
