"""`JobsChannel` over MQTT with the AWS IoT Device SDK v2, mutual TLS.

Two flavours, the two APIs the SDK offers:
- `protocol="mqtt5"` (default): `IotJobsClientV2`, the SDK's request-response
  client over MQTT 5 (it subscribes `<topic>/+` and matches clientTokens);
- `protocol="mqtt311"`: `IotJobsClient` publish/subscribe helpers over MQTT
  3.1.1, responses matched here by clientToken.

The SDK takes one host name for DNS, SNI and certificate verification, so a
connect-address override can only change the PORT: the host name must
resolve to the override's address by other means (on the sandbox,
nss_wrapper, see scripts/env.sh). Metrics collection is off so the CONNECT
username stays clean. The SDK is untyped; values crossing this module's
surface are plain. Its errors are translated here, once.
"""

from __future__ import annotations

import json
import queue
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import structlog

from device_handler.channel import JobExecution, JobsChannel
from device_handler.errors import ChannelError, ChannelRejected, ConfigError
from device_handler.probe import ClientIdentity, connect_address
from device_handler.trust import EndpointConfig

__all__ = ["PROTOCOLS", "MqttChannel", "MqttConnector"]

log = structlog.get_logger(__name__)

PROTOCOLS = frozenset({"mqtt5", "mqtt311"})


def _plain_execution(data: Any) -> JobExecution:
    document = data.job_document if data.job_document is not None else {}
    return JobExecution(
        job_id=str(data.job_id),
        status=str(data.status),
        document=document,
        execution_number=data.execution_number,
        version_number=data.version_number,
        status_details=dict(data.status_details or {}),
    )


class MqttConnector:
    """Opens `MqttChannel`s for one thing with its client certificate."""

    def __init__(
        self,
        thing_name: str,
        identity: ClientIdentity,
        *,
        overrides: Mapping[str, str] | None = None,
        protocol: str = "mqtt5",
        operation_timeout: float = 10.0,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {sorted(PROTOCOLS)}, not {protocol!r}")
        self.thing_name = thing_name
        self.identity = identity
        self.overrides = dict(overrides or {})
        self.protocol = protocol
        self.operation_timeout = operation_timeout

    def connect(self, endpoint: EndpointConfig, ca_file: Path, timeout: float) -> JobsChannel:
        _, port = connect_address(endpoint, self.overrides)
        channel = MqttChannel(
            thing_name=self.thing_name,
            host=endpoint.host,
            port=port,
            identity=self.identity,
            ca_file=ca_file,
            protocol=self.protocol,
            timeout=timeout,
            operation_timeout=self.operation_timeout,
        )
        try:
            channel.start()
        except BaseException:
            channel.close()
            raise
        return channel


class MqttChannel:
    """One MQTT connection of one thing to one endpoint."""

    def __init__(
        self,
        *,
        thing_name: str,
        host: str,
        port: int,
        identity: ClientIdentity,
        ca_file: Path,
        protocol: str = "mqtt5",
        timeout: float = 10.0,
        operation_timeout: float = 10.0,
    ) -> None:
        self.thing_name = thing_name
        self.host = host
        self.port = port
        self.protocol = protocol
        self._identity = identity
        self._ca_file = ca_file
        self._timeout = timeout
        self._op_timeout = operation_timeout
        self._client5: Any = None
        self._connection: Any = None
        self._jobs: Any = None
        self._stream: Any = None
        self._notified = threading.Event()
        self._stopped = threading.Event()
        self._answers: dict[str, queue.SimpleQueue[tuple[bool, Any]]] = {}
        self._answers_lock = threading.Lock()
        self._closed = False

    @property
    def via(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def supports_shadows(self) -> bool:
        return True

    # ------------------------------------------------------------ connecting

    def start(self) -> None:
        try:
            if self.protocol == "mqtt5":
                self._start_v2()
            else:
                self._start_v1()
        except ChannelError:
            raise
        except Exception as exc:
            raise ChannelError(f"cannot connect to {self.via}: {exc!r}") from exc
        log.debug("mqtt_connected", thing=self.thing_name, via=self.via, protocol=self.protocol)

    def _start_v2(self) -> None:
        from awscrt import mqtt_request_response
        from awsiot import ServiceStreamOptions, iotjobs, mqtt5_client_builder

        connected: Future[Any] = Future()

        def on_success(event: Any) -> None:
            if not connected.done():
                connected.set_result(event)

        def on_failure(event: Any) -> None:
            if not connected.done():
                connected.set_exception(ChannelError(f"connection failed: {event.exception}"))

        self._client5 = mqtt5_client_builder.mtls_from_path(
            endpoint=self.host,
            port=self.port,
            cert_filepath=str(self._identity.cert),
            pri_key_filepath=str(self._identity.key),
            ca_filepath=str(self._ca_file),
            client_id=self.thing_name,
            enable_metrics_collection=False,
            on_lifecycle_connection_success=on_success,
            on_lifecycle_connection_failure=on_failure,
            on_lifecycle_stopped=lambda _event: self._stopped.set(),
        )
        self._client5.start()
        self._wait(connected, "connect", self._timeout)
        self._jobs = iotjobs.IotJobsClientV2(
            self._client5,
            mqtt_request_response.ClientOptions(
                max_request_response_subscriptions=4,
                max_streaming_subscriptions=2,
                operation_timeout_in_seconds=max(1, int(self._op_timeout)),
            ),
        )
        established = threading.Event()

        def on_status(event: Any) -> None:
            kind = mqtt_request_response.SubscriptionStatusEventType.SUBSCRIPTION_ESTABLISHED
            if event.type == kind:
                established.set()

        self._stream = self._jobs.create_next_job_execution_changed_stream(
            iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=self.thing_name),
            ServiceStreamOptions(
                incoming_event_listener=lambda _event: self._notified.set(),
                subscription_status_listener=on_status,
            ),
        )
        self._stream.open()
        if not established.wait(self._timeout):
            raise ChannelError(f"{self.via}: notify-next subscription not established")

    def _start_v1(self) -> None:
        from awscrt import mqtt
        from awsiot import iotjobs, mqtt_connection_builder

        self._connection = mqtt_connection_builder.mtls_from_path(
            endpoint=self.host,
            port=self.port,
            cert_filepath=str(self._identity.cert),
            pri_key_filepath=str(self._identity.key),
            ca_filepath=str(self._ca_file),
            client_id=self.thing_name,
            clean_session=True,
            keep_alive_secs=30,
            enable_metrics_collection=False,
        )
        self._wait(self._connection.connect(), "connect", self._timeout)
        self._jobs = iotjobs.IotJobsClient(self._connection)
        thing = self.thing_name
        qos = mqtt.QoS.AT_LEAST_ONCE
        describe = iotjobs.DescribeJobExecutionSubscriptionRequest(thing_name=thing, job_id="+")
        update = iotjobs.UpdateJobExecutionSubscriptionRequest(thing_name=thing, job_id="+")
        subscriptions = [
            self._jobs.subscribe_to_next_job_execution_changed_events(
                iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=thing),
                qos,
                lambda _event: self._notified.set(),
            ),
            self._jobs.subscribe_to_describe_job_execution_accepted(
                describe, qos, self._answer(ok=True)
            ),
            self._jobs.subscribe_to_describe_job_execution_rejected(
                describe, qos, self._answer(ok=False)
            ),
            self._jobs.subscribe_to_update_job_execution_accepted(
                update, qos, self._answer(ok=True)
            ),
            self._jobs.subscribe_to_update_job_execution_rejected(
                update, qos, self._answer(ok=False)
            ),
        ]
        for future, topic in subscriptions:
            self._wait(future, f"subscribe {topic}", self._timeout)

    def _answer(self, *, ok: bool) -> Any:
        def callback(response: Any) -> None:
            token = getattr(response, "client_token", None)
            if token is None:
                return
            with self._answers_lock:
                answers = self._answers.get(token)
            if answers is not None:
                answers.put((ok, response))

        return callback

    def _wait(self, future: Any, what: str, timeout: float) -> Any:
        try:
            return future.result(timeout)
        except ChannelError:
            raise
        except Exception as exc:
            modeled = getattr(exc, "modeled_error", None)
            code = getattr(modeled, "code", None)
            if isinstance(code, str):
                raise ChannelRejected(code, str(getattr(modeled, "message", ""))) from exc
            inner = getattr(exc, "inner_error", None) or exc
            raise ChannelError(f"{self.via}: {what} failed: {inner!r}") from exc

    def _v1_request(self, publish: Any, request: Any, what: str) -> Any:
        from awscrt import mqtt

        token = str(uuid.uuid4())
        request.client_token = token
        answers: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        with self._answers_lock:
            self._answers[token] = answers
        try:
            self._wait(
                publish(request, mqtt.QoS.AT_LEAST_ONCE), f"publish {what}", self._op_timeout
            )
            try:
                ok, response = answers.get(timeout=self._op_timeout)
            except queue.Empty as exc:
                raise ChannelError(f"{self.via}: no answer to {what}") from exc
        finally:
            with self._answers_lock:
                self._answers.pop(token, None)
        if not ok:
            raise ChannelRejected(str(response.code), str(response.message or ""))
        return response

    def _check_open(self) -> None:
        if self._closed or self._jobs is None:
            raise ChannelError(f"the channel to {self.via} is closed")

    # ------------------------------------------------------------- requests

    def next_execution(self) -> JobExecution | None:
        return self.describe("$next")

    def describe(self, job_id: str) -> JobExecution | None:
        from awsiot import iotjobs

        self._check_open()
        request = iotjobs.DescribeJobExecutionRequest(
            thing_name=self.thing_name, job_id=job_id, include_job_document=True
        )
        try:
            if self.protocol == "mqtt5":
                response = self._wait(
                    self._jobs.describe_job_execution(request), "describe", self._op_timeout
                )
            else:
                response = self._v1_request(
                    self._jobs.publish_describe_job_execution, request, "describe"
                )
        except ChannelRejected as exc:
            if exc.code == "ResourceNotFound":
                return None
            raise
        if response.execution is None:
            return None
        return _plain_execution(response.execution)

    def update(
        self,
        job_id: str,
        status: str,
        details: Mapping[str, str],
        *,
        expected_version: int | None,
        execution_number: int | None,
    ) -> int | None:
        from awsiot import iotjobs

        self._check_open()
        request = iotjobs.UpdateJobExecutionRequest(
            thing_name=self.thing_name,
            job_id=job_id,
            status=status,
            status_details=dict(details),
            expected_version=expected_version,
            execution_number=execution_number,
            include_job_execution_state=True,
        )
        if self.protocol == "mqtt5":
            response = self._wait(
                self._jobs.update_job_execution(request), "update", self._op_timeout
            )
        else:
            response = self._v1_request(self._jobs.publish_update_job_execution, request, "update")
        state = response.execution_state
        version = getattr(state, "version_number", None) if state is not None else None
        return int(version) if version is not None else None

    def wait_for_jobs(self, timeout: float) -> bool:
        self._check_open()
        woke = self._notified.wait(timeout)
        self._notified.clear()
        return woke

    def update_shadow(self, shadow_name: str, reported: Mapping[str, Any]) -> None:
        from awscrt import mqtt, mqtt5

        self._check_open()
        topic = f"$aws/things/{self.thing_name}/shadow/name/{shadow_name}/update"
        payload = json.dumps({"state": {"reported": dict(reported)}}).encode()
        if self.protocol == "mqtt5":
            packet = mqtt5.PublishPacket(topic=topic, payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE)
            self._wait(self._client5.publish(packet), "shadow update", self._op_timeout)
        else:
            future, _ = self._connection.publish(topic, payload, mqtt.QoS.AT_LEAST_ONCE)
            self._wait(future, "shadow update", self._op_timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The stream and the request-response client are native resources released with
        # their last reference; they go before the client they ride on.
        self._stream = None
        self._jobs = None
        if self._client5 is not None:
            self._client5.stop()
            self._stopped.wait(self._timeout)
            self._client5 = None
        if self._connection is not None:
            try:
                self._connection.disconnect().result(self._timeout)
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                log.debug("mqtt_disconnect_failed", via=self.via, error=repr(exc))
            self._connection = None
