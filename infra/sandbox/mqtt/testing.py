"""Test helpers for the MQTT data plane: a small in-memory JobsDataPlane and device clients.

Shipped with the package (like `structlog.testing`) so any test suite can use
them: `FakeEngine` implements only what the bridge needs (pending list,
start-next, describe, update with version and state checks, subscribers, and
a device identity that admits a certificate's CN as its client id), so
the bridge and the brokers are tested without the real Jobs engine; `Device`
is a paho MQTT 5 client over mutual TLS; `handshake` is a bare TLS handshake
through the connect-address override.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from device_handler.job_statuses import TERMINAL_STATUSES
from infra.sandbox.dataplane import DataPlaneError, ExecutionSnapshot, PendingJobs
from infra.sandbox.engine import ConnectionRefusedByPolicyError
from infra.sandbox.mqtt import Endpoint, MqttDataPlane
from infra.sandbox.pki import SandboxPki

__all__ = [
    "WAIT",
    "Device",
    "FakeEngine",
    "connect_address",
    "handshake",
    "names_unresolved",
    "tls_context",
]

WAIT = 10.0


@dataclass
class FakeEngine:
    """An in-memory JobsDataPlane: one execution per (thing, job), times from a counter."""

    executions: dict[tuple[str, str], ExecutionSnapshot] = field(default_factory=dict)
    vias: list[tuple[str, str, str, str]] = field(default_factory=list)  # thing, job, status, via
    subscribers: list[Callable[[str], None]] = field(default_factory=list)
    now: int = 1_800_000_000
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _tick(self) -> int:
        self.now += 1
        return self.now

    def queue(self, thing: str, job_id: str, document: Mapping[str, Any] | str) -> None:
        text = document if isinstance(document, str) else json.dumps(document)
        with self.lock:
            at = self._tick()
            self.executions[thing, job_id] = ExecutionSnapshot(
                job_id=job_id,
                thing_name=thing,
                status="QUEUED",
                status_details={},
                queued_at=at,
                started_at=None,
                last_updated_at=at,
                version_number=1,
                execution_number=1,
                approximate_seconds_before_timed_out=None,
                job_document=text,
            )
        self._changed(thing)

    def _changed(self, thing: str) -> None:
        for callback in list(self.subscribers):
            callback(thing)

    def get_pending(self, thing_name: str) -> PendingJobs:
        with self.lock:
            mine = sorted(
                (e for (t, _), e in self.executions.items() if t == thing_name),
                key=lambda e: e.queued_at,
            )
        return PendingJobs(
            in_progress=tuple(e for e in mine if e.status == "IN_PROGRESS"),
            queued=tuple(e for e in mine if e.status == "QUEUED"),
        )

    def start_next(
        self,
        thing_name: str,
        *,
        status_details: Mapping[str, str] | None,
        step_timeout_minutes: int | None,
        via: str,
    ) -> ExecutionSnapshot | None:
        head = self.get_pending(thing_name).next
        if head is None:
            return None
        if head.status == "IN_PROGRESS":
            return head
        return self.update_execution(
            thing_name,
            head.job_id,
            status="IN_PROGRESS",
            status_details=status_details,
            expected_version=None,
            execution_number=None,
            step_timeout_minutes=step_timeout_minutes,
            via=via,
        )

    def describe_execution(
        self, thing_name: str, job_id: str, *, execution_number: int | None
    ) -> ExecutionSnapshot:
        if job_id == "$next":
            head = self.get_pending(thing_name).next
            if head is None:
                raise DataPlaneError("ResourceNotFound", "No pending job execution")
            return head
        with self.lock:
            found = self.executions.get((thing_name, job_id))
        if found is None or (execution_number not in (None, found.execution_number)):
            raise DataPlaneError("ResourceNotFound", f"Job execution {job_id} not found")
        return found

    def update_execution(
        self,
        thing_name: str,
        job_id: str,
        *,
        status: str,
        status_details: Mapping[str, str] | None,
        expected_version: int | None,
        execution_number: int | None,
        step_timeout_minutes: int | None,  # noqa: ARG002 - timers are the real engine's
        via: str,
    ) -> ExecutionSnapshot:
        with self.lock:
            current = self.executions.get((thing_name, job_id))
            if current is None:
                raise DataPlaneError("ResourceNotFound", f"Job execution {job_id} not found")
            if current.status in TERMINAL_STATUSES:
                raise DataPlaneError(
                    "InvalidStateTransition",
                    f"Execution is already {current.status}",
                    execution_state=current,
                )
            if execution_number not in (None, current.execution_number):
                raise DataPlaneError("ResourceNotFound", f"No execution {execution_number}")
            if expected_version is not None and expected_version != current.version_number:
                raise DataPlaneError(
                    "VersionMismatch", "expectedVersion is stale", execution_state=current
                )
            at = self._tick()
            updated = replace(
                current,
                status=status,
                status_details=dict(status_details)
                if status_details is not None
                else current.status_details,
                started_at=current.started_at or at,
                last_updated_at=at,
                version_number=current.version_number + 1,
            )
            self.executions[thing_name, job_id] = updated
            self.vias.append((thing_name, job_id, status, via))
        self._changed(thing_name)
        return updated

    def subscribe(self, callback: Callable[[str], None]) -> None:
        self.subscribers.append(callback)

    # -- device identity: a certificate of the device CA connects as its CN -------------

    def authorize_connection(self, certificate_der: bytes, client_id: str) -> str:
        """Admit a client id equal to the certificate's CN (the PKI names things so)."""
        names = x509.load_der_x509_certificate(certificate_der).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME
        )
        if not names or names[0].value != client_id:
            raise ConnectionRefusedByPolicyError(
                "client-id", f"client id {client_id!r} is not the certificate's CN"
            )
        return client_id

    def watch_certificates(self, listener: Callable[[str], None]) -> None:
        """Certificates never change here."""

    def unwatch_certificates(self, listener: Callable[[str], None]) -> None:
        """Certificates never change here."""

    def certificate_status(self, certificate_id: str) -> str | None:  # noqa: ARG002
        return "ACTIVE"

    def certificate_pem(self, certificate_id: str) -> str | None:  # noqa: ARG002
        return None

    def trust_anchor_pems(self) -> list[str]:
        return []


def connect_address(plane: MqttDataPlane, kind: str) -> tuple[str, int]:
    """The (host name, local port) a client uses for the `kind` endpoint."""
    endpoint: Endpoint = plane.endpoints[kind]
    return endpoint.host, endpoint.port


def tls_context(pki: SandboxPki, thing: str | None, cafile: Path) -> ssl.SSLContext:
    """A client context trusting only `cafile`, with the thing's client certificate if given."""
    context = ssl.create_default_context(cafile=str(cafile))
    if thing is not None:
        creds = pki.issue_thing_credentials(thing)
        context.load_cert_chain(str(creds.cert_pem), str(creds.key_pem))
    return context


def handshake(host: str, port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    """A real TLS handshake to 127.0.0.1:port verifying `host` (the connect-address override)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    try:
        return context.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


class Device:
    """A paho MQTT 5 device over mutual TLS, collecting every message it receives."""

    def __init__(self, pki: SandboxPki, plane: MqttDataPlane, thing: str, kind: str) -> None:
        self.thing = thing
        self.messages: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._subacks: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
        self._connected = threading.Event()
        cafile = (
            plane.pki.legacy_root_pem
            if kind == "legacy"
            else plane.pki.ats_root_pems["amazon-root-ca-1"]
        )
        host, port = connect_address(plane, kind)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=thing, protocol=mqtt.MQTTv5
        )
        context = tls_context(pki, thing, cafile)
        self.client.tls_set_context(context)
        # paho connects to the name it is given, which is also its SNI and the name it
        # verifies: the AWS-shaped name must resolve to loopback (nss_wrapper).
        self.client.on_message = self._message
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self._subacks.put(codes)
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(WAIT):
            self.close()
            raise TimeoutError(f"{thing} did not connect to {kind}")

    def _message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            body = {"raw": bytes(message.payload)}
        self.messages.put((message.topic, body))

    def subscribe(self, topic: str) -> list[Any]:
        self.client.subscribe(topic, qos=1)
        return self._subacks.get(timeout=WAIT)

    def publish(self, topic: str, payload: Mapping[str, Any] | bytes) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(topic, data, qos=1).wait_for_publish(WAIT)

    def expect(self, topic: str, timeout: float = WAIT) -> dict[str, Any]:
        """The next message on `topic` (others received meanwhile are dropped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                got_topic, payload = self.messages.get(timeout=left)
            except queue.Empty:
                break
            if got_topic == topic:
                return payload
        raise AssertionError(f"{self.thing} got nothing on {topic} within {timeout}s")

    def nothing_on(self, prefix: str, seconds: float) -> list[tuple[str, dict[str, Any]]]:
        """Messages whose topic starts with `prefix` that arrive within `seconds`."""
        seen = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got = self.messages.get(timeout=left)
            except queue.Empty:
                break
            if got[0].startswith(prefix):
                seen.append(got)
        return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def names_unresolved(plane: MqttDataPlane) -> str | None:
    """Why the endpoint names do not resolve to loopback here, or None when they do.

    Clients that connect by name (the SDK, paho) need nss_wrapper:
    `source scripts/env.sh` before starting the process, as `make test` does.
    """
    for endpoint in plane.endpoints.values():
        try:
            address = socket.gethostbyname(endpoint.host)
        except OSError:
            address = ""
        if address != "127.0.0.1":
            return (
                f"{endpoint.host} does not resolve to 127.0.0.1: run the tests after "
                "`source scripts/env.sh` (nss_wrapper), as `make test` does"
            )
    return None
