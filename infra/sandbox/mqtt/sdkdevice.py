"""A minimal jobs device on the official AWS IoT Device SDK v2, pointed at the sandbox.

Why it is here: it is the proof that the sandbox answers the SDK unmodified
(the conformance tests and the MQTT benchmark drive it), and a short sample of
how to point the SDK at a sandbox endpoint: the SDK's own builders
(`mtls_from_path`), the AWS-shaped host name (resolved to 127.0.0.1 by
nss_wrapper, see scripts/env.sh), the listener's local port, the sandbox root
as `ca_filepath`, and `enable_metrics_collection=False`. The connection set-up
is the device handler's own (`device_handler.mqtt`), so the two connect alike.

Two flavours, the two APIs the SDK offers:
- `protocol="mqtt5"`: `IotJobsClientV2` (request-response client over MQTT 5);
- `protocol="mqtt311"`: `IotJobsClient` (publish/subscribe helpers over MQTT 3.1.1).

Each `run_one()` does what the SDK's jobs sample does: wait for notify-next
with an execution, start-next, update it to the given status, and return the
job id. The SDK is untyped; values crossing this module's surface are plain.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import structlog
from awscrt import mqtt
from awsiot import iotjobs

from device_handler.mqtt import (
    TlsEndpoint,
    jobs_client_v2,
    mqtt5_mtls_client,
    mqtt311_mtls_connection,
    open_next_job_stream,
)
from infra.sandbox.errors import SandboxError

__all__ = ["SdkDeviceError", "SdkJobsDevice"]

log = structlog.get_logger(__name__)

_PROTOCOLS = frozenset({"mqtt5", "mqtt311"})


class SdkDeviceError(SandboxError):
    """The SDK device could not connect, subscribe or complete a job in time."""


class SdkJobsDevice:
    """One thing, connected with the AWS IoT Device SDK v2 over mutual TLS."""

    def __init__(
        self,
        *,
        thing_name: str,
        host: str,
        port: int,
        cert_pem: Path,
        key_pem: Path,
        ca_pem: Path,
        protocol: str = "mqtt5",
        timeout: float = 20.0,
    ) -> None:
        if protocol not in _PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(_PROTOCOLS)}, got {protocol!r}")
        self.thing_name = thing_name
        self.protocol = protocol
        self.timeout = timeout
        self._host, self._port = host, port
        self._cert, self._key, self._ca = Path(cert_pem), Path(key_pem), Path(ca_pem)
        self._next_events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._responses: dict[str, queue.SimpleQueue[tuple[bool, Any]]] = {}
        self._client5: Any = None
        self._connection: Any = None
        self._jobs: Any = None
        self._stream: Any = None
        self._stopped = threading.Event()

    # -- connection -------------------------------------------------------------------

    def start(self) -> SdkJobsDevice:
        """Connect and subscribe to notify-next; raises SdkDeviceError if either fails."""
        if self.protocol == "mqtt5":
            self._start_v2()
        else:
            self._start_v1()
        return self

    def _tls_endpoint(self) -> TlsEndpoint:
        return TlsEndpoint(self._host, self._port, self._cert, self._key, self._ca, self.thing_name)

    def _start_v2(self) -> None:
        self._client5, connected = mqtt5_mtls_client(
            self._tls_endpoint(), on_stopped=lambda _event: self._stopped.set()
        )
        self._client5.start()
        self._wait(connected, "connect")
        self._jobs = jobs_client_v2(self._client5, self.timeout)
        self._stream = open_next_job_stream(
            self._jobs, self.thing_name, self._next_events.put, self.timeout
        )
        if self._stream is None:
            raise SdkDeviceError(f"{self.thing_name}: notify-next subscription not established")

    def _start_v1(self) -> None:
        self._connection = mqtt311_mtls_connection(self._tls_endpoint())
        self._wait(self._connection.connect(), "connect")
        self._jobs = iotjobs.IotJobsClient(self._connection)
        thing = self.thing_name
        qos = mqtt.QoS.AT_LEAST_ONCE
        subscriptions = [
            self._jobs.subscribe_to_next_job_execution_changed_events(
                iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=thing),
                qos,
                self._next_events.put,
            ),
        ]
        start_req = iotjobs.StartNextPendingJobExecutionSubscriptionRequest(thing_name=thing)
        update_req = iotjobs.UpdateJobExecutionSubscriptionRequest(thing_name=thing, job_id="+")
        for name, subscribe, request in (
            (
                "start-next",
                self._jobs.subscribe_to_start_next_pending_job_execution_accepted,
                start_req,
            ),
            ("update", self._jobs.subscribe_to_update_job_execution_accepted, update_req),
        ):
            subscriptions.append(subscribe(request, qos, self._answer(name, ok=True)))
        for name, subscribe, request in (
            (
                "start-next",
                self._jobs.subscribe_to_start_next_pending_job_execution_rejected,
                start_req,
            ),
            ("update", self._jobs.subscribe_to_update_job_execution_rejected, update_req),
        ):
            subscriptions.append(subscribe(request, qos, self._answer(name, ok=False)))
        for future, topic in subscriptions:
            self._wait(future, f"subscribe {topic}")

    def _answer(self, name: str, *, ok: bool) -> Any:
        answers = self._responses.setdefault(name, queue.SimpleQueue())

        def callback(response: Any) -> None:
            answers.put((ok, response))

        return callback

    def _wait(self, future: Any, what: str) -> Any:
        try:
            return future.result(self.timeout)
        except Exception as exc:
            raise SdkDeviceError(f"{self.thing_name}: {what} failed: {exc!r}") from exc

    def stop(self) -> None:
        """Disconnect; safe to call more than once or after a failed start."""
        # The streaming operation and request-response client are native
        # resources released with their last reference; the client goes first.
        self._stream = None
        self._jobs = None
        if self._client5 is not None:
            self._client5.stop()
            self._stopped.wait(self.timeout)
            self._client5 = None
        if self._connection is not None:
            try:
                self._connection.disconnect().result(self.timeout)
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                log.debug("sdk_device_disconnect_failed", thing=self.thing_name, error=repr(exc))
            self._connection = None

    @property
    def mqtt5_client(self) -> Any:
        """The SDK's MQTT 5 client once started (protocol "mqtt5"), for other SDK clients."""
        if self._client5 is None:
            raise SdkDeviceError(f"{self.thing_name}: no MQTT 5 client (start it with mqtt5)")
        return self._client5

    # -- the job flow -----------------------------------------------------------------

    def next_execution(self) -> Any:
        """Block until a notify-next event carries an execution; return that execution."""
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self._next_events.get(timeout=left)
            except queue.Empty:
                break
            if event.execution is not None:
                return event.execution
        raise SdkDeviceError(f"{self.thing_name}: no notify-next with an execution")

    def start_next(self) -> Any:
        """start-next; returns the started execution (or None when nothing is pending)."""
        request = iotjobs.StartNextPendingJobExecutionRequest(thing_name=self.thing_name)
        if self.protocol == "mqtt5":
            return self._wait(
                self._jobs.start_next_pending_job_execution(request), "start-next"
            ).execution
        self._wait(
            self._jobs.publish_start_next_pending_job_execution(request, mqtt.QoS.AT_LEAST_ONCE),
            "publish start-next",
        )
        return self._v1_answer("start-next").execution

    def update(self, job_id: str, status: str, *, expected_version: int | None = None) -> Any:
        """Update `job_id` to `status`; returns the accepted response."""
        request = iotjobs.UpdateJobExecutionRequest(
            thing_name=self.thing_name,
            job_id=job_id,
            status=status,
            expected_version=expected_version,
            include_job_execution_state=True,
        )
        if self.protocol == "mqtt5":
            return self._wait(self._jobs.update_job_execution(request), "update")
        self._wait(
            self._jobs.publish_update_job_execution(request, mqtt.QoS.AT_LEAST_ONCE),
            "publish update",
        )
        return self._v1_answer("update")

    def _v1_answer(self, name: str) -> Any:
        try:
            ok, response = self._responses[name].get(timeout=self.timeout)
        except queue.Empty as exc:
            raise SdkDeviceError(f"{self.thing_name}: no answer to {name}") from exc
        if not ok:
            raise SdkDeviceError(
                f"{self.thing_name}: {name} rejected: {response.code} {response.message}"
            )
        return response

    def run_one(self, status: str = "SUCCEEDED") -> str:
        """notify-next -> start-next -> update(status); returns the job id."""
        self.next_execution()
        execution = self.start_next()
        if execution is None:
            raise SdkDeviceError(f"{self.thing_name}: start-next found nothing pending")
        self.update(execution.job_id, status, expected_version=execution.version_number)
        return str(execution.job_id)
