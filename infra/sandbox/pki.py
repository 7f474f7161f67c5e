"""The sandbox's public key infrastructure: every root, server and device certificate it uses.

Why: a rehearsal must exercise real TLS. A device that trusts only the legacy
root has to fail its handshake on the ATS listener exactly as it would against
AWS, and a device that trusts the new roots has to succeed with hostname
verification on. So the sandbox generates its own stand-ins:

- a *legacy* root (RSA 2048) standing in for "VeriSign Class 3 Public Primary
  Certification Authority - G5"; the legacy (`iot:Data`) listener chains to it;
- *ATS* roots standing in for Amazon Root CA 1 (RSA 2048) and Amazon Root CA 3
  (ECC P-256); the ATS (`iot:Data-ATS`) listener chains to the RSA one. They
  are published as a catalog file (job_documents catalog format, with
  `"sandbox": true`) that operators and devices are pointed at explicitly; the
  packaged catalog of real Amazon roots is never replaced;
- a *device CA* that issues each thing's client certificate (CN = thing name),
  which the broker requires on both listeners.

Layout under the PKI directory (created on first use, reused afterwards)::

    pki.json                         manifest (format version)
    private/                         every private key of the sandbox's CAs and servers (0700)
    legacy/verisign-class3-g5.pem    the legacy root
    ats/catalog.json                 the ATS stand-in catalog (sandbox: true)
    ats/amazon-root-ca-<n>.pem       the ATS stand-in roots
    device-ca/device-ca.pem          the CA that issues thing certificates
    server/<host>.pem                a server certificate for one endpoint host name
    things/<thing>/cert.pem|key.pem  one thing's credentials

Invariants:
- Roots are self-signed CA certificates valid for 20 years, so documents built
  from them pass the ">= 1 year left" check for the life of a sandbox.
- Every file is written to a temporary name, fsynced and renamed; a thing's
  credentials appear as one directory rename, so a key never pairs with
  another key's certificate, even when two processes issue at once.
- Issuing is idempotent: the same thing name returns the same files.
- Private keys are never logged.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from infra.sandbox.errors import SandboxError
from job_documents.x509_issuer import issue_ca, issue_leaf, subject_name

__all__ = [
    "ATS_ROOTS",
    "CATALOG_FORMAT",
    "SANDBOX_ORGANIZATION",
    "PkiError",
    "SandboxPki",
    "ThingCredentials",
    "endpoint_hosts",
]

log = structlog.get_logger(__name__)

CATALOG_FORMAT = "ca-migrate-catalog/1"
_MANIFEST_FORMAT = "ca-migrate-sandbox-pki/1"
#: The organization in the subject of every sandbox certificate: never Amazon's or VeriSign's.
SANDBOX_ORGANIZATION: Final = "ca-migrate sandbox (not Amazon, not VeriSign)"
_ORGANIZATION = SANDBOX_ORGANIZATION
_ROOT_VALIDITY = timedelta(days=20 * 365 + 5)
_LEAF_VALIDITY = timedelta(days=5 * 365)
_BACKDATE = timedelta(days=1)
_THING_NAME = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
_HOST_LABEL = re.compile(r"^[a-z0-9-]{1,63}$")


@dataclass(frozen=True, slots=True)
class _RootSpec:
    name: str
    common_name: str
    key_type: str  # "rsa-2048" | "ec-p256"


ATS_ROOTS: tuple[_RootSpec, ...] = (
    _RootSpec("amazon-root-ca-1", "Sandbox stand-in for Amazon Root CA 1", "rsa-2048"),
    _RootSpec("amazon-root-ca-3", "Sandbox stand-in for Amazon Root CA 3", "ec-p256"),
)
"""The ATS stand-ins, by catalog name. The ATS listener chains to the first."""

_LEGACY_ROOT = _RootSpec(
    "verisign-class3-g5",
    "Sandbox stand-in for VeriSign Class 3 Public Primary CA - G5",
    "rsa-2048",
)
_DEVICE_CA = _RootSpec("device-ca", "Sandbox device certificate CA", "ec-p256")


class PkiError(SandboxError):
    """The PKI directory cannot be used as it is (the message says what to do)."""


@dataclass(frozen=True, slots=True)
class ThingCredentials:
    """A thing's client certificate and private key, as files (PEM)."""

    thing_name: str
    cert_pem: Path
    key_pem: Path


def endpoint_hosts(region: str, endpoint_prefix: str) -> dict[str, str]:
    """The AWS-shaped host names of the two data endpoints: {"legacy": ..., "ats": ...}.

    Same shape as DescribeEndpoint's iot:Data and iot:Data-ATS answers; China
    regions use the `amazonaws.com.cn` suffix.
    """
    if not all(_HOST_LABEL.match(part) for part in region.split("-")) or "." in region:
        raise PkiError(f"region {region!r} is not an AWS region name such as 'us-east-1'")
    if not _HOST_LABEL.match(endpoint_prefix):
        raise PkiError(
            f"endpoint prefix {endpoint_prefix!r} must be lowercase letters, digits and '-'"
        )
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return {
        "legacy": f"{endpoint_prefix}.iot.{region}.{suffix}",
        "ats": f"{endpoint_prefix}-ats.iot.{region}.{suffix}",
    }


def _now() -> datetime:
    # Certificates are checked by TLS stacks against the wall clock, never the
    # sandbox's scaled clock, so their validity starts from the real time.
    return datetime.now(UTC)


def _new_key(key_type: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    # Traditional OpenSSL encoding: read by mosquitto (OpenSSL), Python's ssl and awscrt (s2n).
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} holds an unsupported key type; delete the PKI directory to renew")
    return key


def _name(common_name: str) -> x509.Name:
    return subject_name(common_name, organization=_ORGANIZATION, country="US")


def _self_signed_root(
    spec: _RootSpec,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
    key = _new_key(spec.key_type)
    now = _now()
    cert = issue_ca(
        _name(spec.common_name), key, not_before=now - _BACKDATE, not_after=now + _ROOT_VALIDITY
    )
    return cert, key


def _leaf(
    *,
    common_name: str,
    issuer: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    server_names: tuple[str, ...] = (),
) -> x509.Certificate:
    """A server certificate when given `server_names`, else a device's client certificate."""
    now = _now()
    return issue_leaf(
        _name(common_name),
        key,
        issuer=issuer,
        issuer_key=issuer_key,
        not_before=now - _BACKDATE,
        not_after=now + _LEAF_VALIDITY,
        server_names=server_names,
        usages=("server",) if server_names else ("client",),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_atomic(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if not private:
            os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_hex(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


class SandboxPki:
    """The sandbox's certificates and keys, kept in one directory.

    Use `create_or_load`; the constructor only wires paths.
    """

    def __init__(self, directory: Path, *, region: str, endpoint_prefix: str) -> None:
        self.directory = directory
        self.region = region
        self.endpoint_prefix = endpoint_prefix
        self.hosts = endpoint_hosts(region, endpoint_prefix)
        self._private = directory / "private"
        self.legacy_root_pem = directory / "legacy" / f"{_LEGACY_ROOT.name}.pem"
        self.ats_catalog = directory / "ats" / "catalog.json"
        self.ats_root_pems = {
            spec.name: directory / "ats" / f"{spec.name}.pem" for spec in ATS_ROOTS
        }
        self.device_ca_pem = directory / "device-ca" / "device-ca.pem"
        self._lock = threading.Lock()

    # -- construction -----------------------------------------------------------------

    @classmethod
    def create_or_load(
        cls,
        directory: Path,
        *,
        region: str = "us-east-1",
        endpoint_prefix: str = "a1sandbox2demo",
    ) -> SandboxPki:
        """Reuse the PKI in `directory`, creating whatever is missing (roots are never renewed)."""
        pki = cls(Path(directory), region=region, endpoint_prefix=endpoint_prefix)
        pki._ensure()
        return pki

    def _ensure(self) -> None:
        manifest = self.directory / "pki.json"
        if manifest.exists():
            try:
                recorded = json.loads(manifest.read_text())["format"]
            except (ValueError, KeyError, TypeError) as exc:
                raise PkiError(
                    f"{manifest} is not a sandbox PKI manifest; delete {self.directory} "
                    "to let the sandbox create a new PKI"
                ) from exc
            if recorded != _MANIFEST_FORMAT:
                raise PkiError(
                    f"{self.directory} holds a PKI in format {recorded!r}, this sandbox writes "
                    f"{_MANIFEST_FORMAT!r}; delete the directory to create a new one"
                )
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._private.mkdir(mode=0o700, exist_ok=True)
            self._ensure_root(_LEGACY_ROOT, self.legacy_root_pem)
            for spec in ATS_ROOTS:
                self._ensure_root(spec, self.ats_root_pems[spec.name])
            self._ensure_root(_DEVICE_CA, self.device_ca_pem)
            self._write_catalog()
            if not manifest.exists():
                _write_atomic(
                    manifest, json.dumps({"format": _MANIFEST_FORMAT}, indent=2).encode() + b"\n"
                )
            for kind in ("legacy", "ats"):
                self._ensure_server(kind)
        log.debug("sandbox_pki_ready", directory=str(self.directory), hosts=self.hosts)

    def _ensure_root(self, spec: _RootSpec, pem: Path) -> None:
        key_path = self._private / f"{spec.name}.key"
        if pem.exists() and key_path.exists():
            return
        if pem.exists() != key_path.exists():
            raise PkiError(
                f"{pem} and {key_path} must exist together; delete {self.directory} "
                "to create a new sandbox PKI (every issued certificate changes)"
            )
        cert, key = _self_signed_root(spec)
        _write_atomic(key_path, _key_pem(key), private=True)
        _write_atomic(pem, _cert_pem(cert))
        log.info("sandbox_root_created", root=spec.name, sha256=_sha256_hex(cert))

    def _write_catalog(self) -> None:
        roots = []
        for spec in ATS_ROOTS:
            cert = x509.load_pem_x509_certificate(self.ats_root_pems[spec.name].read_bytes())
            roots.append(
                {"name": spec.name, "file": f"{spec.name}.pem", "sha256": _sha256_hex(cert)}
            )
        catalog = {
            "catalog": CATALOG_FORMAT,
            "description": (
                "Sandbox stand-ins for the Amazon Trust Services roots, generated locally "
                "for rehearsals; devices in the field must never trust these."
            ),
            "sandbox": True,
            "roots": roots,
        }
        data = json.dumps(catalog, indent=2).encode() + b"\n"
        if not self.ats_catalog.exists() or self.ats_catalog.read_bytes() != data:
            _write_atomic(self.ats_catalog, data)

    def _ca(
        self, name: str, pem: Path
    ) -> tuple[x509.Certificate, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
        return (
            x509.load_pem_x509_certificate(pem.read_bytes()),
            _load_key(self._private / f"{name}.key"),
        )

    def _ensure_server(self, kind: str) -> None:
        host = self.hosts[kind]
        pem, key_path = self.server_cert_pem(kind), self.server_key_pem(kind)
        if pem.exists() and key_path.exists():
            return
        if kind == "legacy":
            issuer, issuer_key = self._ca(_LEGACY_ROOT.name, self.legacy_root_pem)
        else:
            first = ATS_ROOTS[0].name
            issuer, issuer_key = self._ca(first, self.ats_root_pems[first])
        wildcard = "*." + host.split(".", 1)[1]
        key = _new_key("rsa-2048")
        cert = _leaf(
            common_name=wildcard,
            issuer=issuer,
            issuer_key=issuer_key,
            key=key,
            server_names=(host, wildcard),
        )
        _write_atomic(key_path, _key_pem(key), private=True)
        _write_atomic(pem, _cert_pem(cert))
        log.info("sandbox_server_cert_created", endpoint=kind, host=host)

    # -- public API -------------------------------------------------------------------

    def server_cert_pem(self, kind: str) -> Path:
        """The server certificate of the `kind` ("legacy" / "ats") listener for this region."""
        return self.directory / "server" / f"{self.hosts[kind]}.pem"

    def server_key_pem(self, kind: str) -> Path:
        """The server certificate's private key (mosquitto reads it)."""
        return self._private / f"server-{self.hosts[kind]}.key"

    def issue_keys_and_certificate(self, common_name: str) -> tuple[str, str, str]:
        """A new RSA 2048 key and a client certificate for it from the device CA, kept nowhere.

        What CreateKeysAndCertificate hands out: (certificate PEM, public key PEM,
        private key PEM), valid as long as the things' certificates.
        """
        issuer, issuer_key = self._ca(_DEVICE_CA.name, self.device_ca_pem)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _leaf(common_name=common_name, issuer=issuer, issuer_key=issuer_key, key=key)
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return _cert_pem(cert).decode(), public.decode(), _key_pem(key).decode()

    def issue_thing_credentials(self, thing_name: str) -> ThingCredentials:
        """The client certificate (CN = thing name) and key of `thing_name`; idempotent."""
        if not _THING_NAME.match(thing_name):
            raise PkiError(
                f"thing name {thing_name!r} is not valid: "
                "use 1-128 of letters, digits, ':', '_', '-'"
            )
        target = self.directory / "things" / thing_name
        creds = ThingCredentials(thing_name, target / "cert.pem", target / "key.pem")
        if creds.cert_pem.exists() and creds.key_pem.exists():
            return creds
        issuer, issuer_key = self._ca(_DEVICE_CA.name, self.device_ca_pem)
        key = _new_key("ec-p256")
        cert = _leaf(common_name=thing_name, issuer=issuer, issuer_key=issuer_key, key=key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{thing_name}."))
        try:
            _write_atomic(staging / "key.pem", _key_pem(key), private=True)
            _write_atomic(staging / "cert.pem", _cert_pem(cert))
            staging.chmod(0o755)
            try:
                staging.rename(target)
            except OSError:
                # Another issuer won the race; its files are complete, ours are dropped.
                if not (creds.cert_pem.exists() and creds.key_pem.exists()):
                    raise
            else:
                _fsync_dir(target.parent)
                log.debug("sandbox_thing_credentials_issued", thing=thing_name)
        finally:
            for leftover in staging.glob("*") if staging.exists() else ():
                leftover.unlink()
            if staging.exists():
                staging.rmdir()
        return creds
