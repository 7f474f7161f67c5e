"""Test helpers, shipped as public API so integrators can test their own devices.

- `memoized`: a validator that checks each distinct document text once, for
  simulations where thousands of devices receive the same document.
- `NoSyncFileOps`, `CrashingFileOps`: re-exported from `device_handler.simulation`
  (the sandbox's simulated fleets use them, so they live in the product).
- `MemoryJobs`: a small in-memory `JobsBackend` with the AWS IoT Jobs rules a
  device meets (versions, terminal states, `$next`).
- `TestPki` and `TlsServer`: generated CAs and certificates, and a real TLS
  server on 127.0.0.1 in a thread that answers an MQTT CONNECT (modes: serve,
  close, silent, hang), for probe tests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from device_handler.errors import DocumentRejected
from device_handler.job_statuses import DEVICE_STATUSES, TERMINAL_STATUSES
from device_handler.order import Order, Validator
from device_handler.simulation import CrashingFileOps, NoSyncFileOps
from job_documents.x509_issuer import issue_ca, issue_leaf, subject_name

__all__ = [
    "CrashingFileOps",
    "JobsRejection",
    "MemoryExecution",
    "MemoryJobs",
    "NoSyncFileOps",
    "PemFiles",
    "TestPki",
    "TlsServer",
    "memoized",
]


def memoized(validator: Validator) -> Validator:
    """`validator` with a cache of its answers (and rejections) per document text."""
    answers: dict[str | bytes, Order | DocumentRejected] = {}

    def validate(raw: str | bytes | Mapping[str, Any]) -> Order:
        if not isinstance(raw, str | bytes):
            return validator(raw)
        answer = answers.get(raw)
        if answer is None:
            try:
                answer = validator(raw)
            except DocumentRejected as exc:
                answer = exc
            answers[raw] = answer
        if isinstance(answer, DocumentRejected):
            raise DocumentRejected(answer.code, answer.message)
        return answer

    return validate


# ------------------------------------------------------------------ jobs


class JobsRejection(Exception):  # noqa: N818 - mirrors the service's rejection
    """A request `MemoryJobs` refuses; `code` is the AWS IoT Jobs rejection code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(slots=True)
class MemoryExecution:
    """One execution in `MemoryJobs`; also what `describe_execution` returns."""

    job_id: str
    thing_name: str
    job_document: str
    status: str = "QUEUED"
    version_number: int = 1
    execution_number: int = 1
    status_details: Mapping[str, str] = field(default_factory=dict)
    history: list[tuple[str, str]] = field(default_factory=list)  # (status, via)


class MemoryJobs:
    """An in-memory Jobs data plane for tests and simulations (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executions: dict[str, dict[str, MemoryExecution]] = {}

    def add_job(self, thing_name: str, job_id: str, document: str) -> MemoryExecution:
        with self._lock:
            execution = MemoryExecution(job_id=job_id, thing_name=thing_name, job_document=document)
            self._executions.setdefault(thing_name, {})[job_id] = execution
            return execution

    def execution(self, thing_name: str, job_id: str) -> MemoryExecution:
        with self._lock:
            return self._find(thing_name, job_id)

    def _find(self, thing_name: str, job_id: str) -> MemoryExecution:
        executions = self._executions.get(thing_name, {})
        if job_id == "$next":
            for wanted in ("IN_PROGRESS", "QUEUED"):
                for execution in executions.values():
                    if execution.status == wanted:
                        return execution
        elif job_id in executions:
            return executions[job_id]
        raise JobsRejection("ResourceNotFound", f"no execution {job_id} for {thing_name}")

    def describe_execution(
        self, thing_name: str, job_id: str, *, execution_number: int | None
    ) -> MemoryExecution:
        del execution_number
        with self._lock:
            found = self._find(thing_name, job_id)
            return MemoryExecution(
                job_id=found.job_id,
                thing_name=found.thing_name,
                job_document=found.job_document,
                status=found.status,
                version_number=found.version_number,
                execution_number=found.execution_number,
                status_details=dict(found.status_details),
            )

    def update_execution(
        self,
        thing_name: str,
        job_id: str,
        *,
        status: str,
        status_details: Mapping[str, str] | None,
        expected_version: int | None,
        execution_number: int | None,
        step_timeout_minutes: int | None,
        via: str,
    ) -> MemoryExecution:
        del execution_number, step_timeout_minutes
        with self._lock:
            found = self._find(thing_name, job_id)
            if status not in DEVICE_STATUSES:
                raise JobsRejection("InvalidRequest", f"a device cannot set {status}")
            if found.status in TERMINAL_STATUSES:
                raise JobsRejection("InvalidStateTransition", f"{job_id} is {found.status}")
            if expected_version is not None and expected_version != found.version_number:
                raise JobsRejection(
                    "VersionMismatch",
                    f"expected version {expected_version}, current {found.version_number}",
                )
            found.status = status
            if status_details is not None:
                found.status_details = dict(status_details)
            found.version_number += 1
            found.history.append((status, via))
            return MemoryExecution(
                job_id=found.job_id,
                thing_name=found.thing_name,
                job_document=found.job_document,
                status=found.status,
                version_number=found.version_number,
                execution_number=found.execution_number,
                status_details=dict(found.status_details),
            )


# ------------------------------------------------------------------- PKI


@dataclass(frozen=True, slots=True)
class PemFiles:
    """A certificate and its key, and the PEM files `TestPki` wrote them to."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    cert_path: Path
    key_path: Path

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


class TestPki:
    """Generated CAs and leaf certificates (`job_documents.x509_issuer`), as PEM files."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, *, now: dt.datetime | None = None) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.now = now or dt.datetime.now(dt.UTC)

    def _write(
        self, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ) -> PemFiles:
        cert_path = self.directory / f"{name}.pem"
        key_path = self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return PemFiles(cert=cert, key=key, cert_path=cert_path, key_path=key_path)

    def ca(self, name: str, *, rsa_bits: int | None = None) -> PemFiles:
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        if rsa_bits:
            key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        cert = issue_ca(
            subject_name(name),
            key,
            not_before=self.now - dt.timedelta(days=1),
            not_after=self.now + dt.timedelta(days=3650),
        )
        return self._write(name, cert, key)

    def leaf(
        self,
        name: str,
        issuer: PemFiles,
        *,
        hosts: tuple[str, ...] = (),
        client: bool = False,
        expired: bool = False,
    ) -> PemFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        if expired:
            not_before = self.now - dt.timedelta(days=30)
            not_after = self.now - dt.timedelta(days=1)
        else:
            not_before = self.now - dt.timedelta(days=1)
            not_after = self.now + dt.timedelta(days=365)
        cert = issue_leaf(
            subject_name(name),
            key,
            issuer=issuer.cert,
            issuer_key=issuer.key,
            not_before=not_before,
            not_after=not_after,
            server_names=hosts,
            usages=("client",) if client else ("server",),
        )
        return self._write(name, cert, key)


class TlsServer:
    """A TLS server on 127.0.0.1 in a thread that answers an MQTT CONNECT as told, then hangs up.

    Modes, for what follows the handshake:
    - `serve`: reads a CONNECT (recorded in `client_ids`) and answers a CONNACK with
      `connack_code` (0, accepted, by default; 5 is "not authorized"); a client that
      sends nothing is hung up on after a moment;
    - `close`: hangs up without a word, as a broker that refuses the session does;
    - `silent`: completes the handshake and never answers;
    - `hang`: accepts TCP and never starts the handshake.
    `client_ca` turns on mutual TLS. Use as a context manager; `stop()` joins the thread.
    """

    def __init__(
        self,
        server: PemFiles | None,
        *,
        mode: str = "serve",
        client_ca: Path | None = None,
        alpn: tuple[str, ...] = (),
        connack_code: int = 0,
    ) -> None:
        if mode not in {"serve", "close", "silent", "hang"}:
            raise ValueError(f"unknown TlsServer mode {mode!r}")
        self.mode = mode
        self.connack_code = connack_code
        self._context: ssl.SSLContext | None = None
        if server is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(server.cert_path), str(server.key_path))
            if client_ca is not None:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(cafile=str(client_ca))
            if alpn:
                context.set_alpn_protocols(list(alpn))
            self._context = context
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self.handshakes = 0
        self.client_ids: list[str] = []
        self._thread = threading.Thread(target=self._serve, name="tls-test-server", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        for held in self._held:
            held.close()
        self._held.clear()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.05)
            if not ready:
                continue
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            if self.mode == "hang" or self._context is None:
                self._held.append(conn)
                continue
            conn.settimeout(2.0)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                tls = self._context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                continue
            self.handshakes += 1
            if self.mode == "silent":
                self._held.append(tls)
                continue
            with tls:
                if self.mode == "serve":
                    self._answer(tls)

    def _answer(self, tls: ssl.SSLSocket) -> None:
        tls.settimeout(0.5)
        with contextlib.suppress(OSError, ssl.SSLError, ValueError):
            client_id = _read_connect(tls)
            if client_id is None:
                return
            self.client_ids.append(client_id)
            tls.sendall(bytes([0x20, 2, 0, self.connack_code]))
            tls.settimeout(0.2)
            tls.recv(2)  # the client's DISCONNECT, or its hang-up


_CONNECT = 0x10
_MAX_LENGTH_SHIFT = 21  # a remaining length has at most four bytes


def _read_exactly(sock: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ValueError("connection closed mid-packet")
        data += chunk
    return data


def _read_connect(sock: ssl.SSLSocket) -> str | None:
    """The client id of the MQTT CONNECT read from `sock`, None for another packet."""
    first = sock.recv(1)
    if not first or first[0] != _CONNECT:
        return None
    length, shift = 0, 0
    while True:
        digit = _read_exactly(sock, 1)[0]
        length |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            break
        if shift > _MAX_LENGTH_SHIFT:
            raise ValueError("malformed remaining length")
    body = _read_exactly(sock, length)
    name_len = int.from_bytes(body[0:2], "big")
    at = 2 + name_len + 4  # protocol name, level, flags, keep-alive
    id_len = int.from_bytes(body[at : at + 2], "big")
    return body[at + 2 : at + 2 + id_len].decode()
