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
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from device_handler.channel import JobExecution, JobsChannel
from device_handler.errors import ChannelError, ChannelRejected, ConfigError
from device_handler.fsops import StrPath
from device_handler.probe import ClientIdentity, connect_address
from device_handler.trust import EndpointConfig

__all__ = [
    "PROTOCOLS",
    "MqttChannel",
    "MqttConnector",
    "TlsEndpoint",
    "jobs_client_v2",
    "mqtt5_mtls_client",
    "mqtt311_mtls_connection",
    "open_next_job_stream",
]

log = structlog.get_logger(__name__)

PROTOCOLS = frozenset({"mqtt5", "mqtt311"})


def _plain_execution(data: Any) -> JobExecution:
    # Reads no thing name and no timer: AWS leaves both out of MQTT executions.
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

    def connect(self, endpoint: EndpointConfig, ca_file: StrPath, timeout: float) -> JobsChannel:
        _, port = connect_address(endpoint, self.overrides)
        channel = MqttChannel(
            thing_name=self.thing_name,
            host=endpoint.host,
            port=port,
            alpn=endpoint.alpn,
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


@dataclass(frozen=True, slots=True)
class TlsEndpoint:
    """Where an SDK client connects and as whom: mutual TLS with a certificate and key."""

    host: str
    port: int
    cert: Path
    key: Path
    ca: Path
    client_id: str
    #: ALPN protocols to offer (the document's: x-amzn-mqtt-ca on 443).
    alpn: tuple[str, ...] = ()

    def builder_args(self) -> dict[str, Any]:
        """The arguments both SDK builders (`mtls_from_path`) take, metrics off."""
        return {
            "endpoint": self.host,
            "port": self.port,
            "cert_filepath": str(self.cert),
            "pri_key_filepath": str(self.key),
            "ca_filepath": str(self.ca),
            "client_id": self.client_id,
            "enable_metrics_collection": False,
        }


_ALPN_PORT = 443


def _mtls(builder: Any, endpoint: TlsEndpoint, **kwargs: Any) -> Any:
    """`builder.mtls_from_path`, offering the endpoint's ALPN on any port.

    The SDK offers ALPN x-amzn-mqtt-ca by itself when the port is 443. When the
    endpoint says 443 but a connect override sends the connection to another
    local port (the sandbox), the same ALPN is set on the TLS options the SDK's
    `mtls_from_path` would build, and the SDK's builder is used as it is.
    """
    args = {**endpoint.builder_args(), **kwargs}
    if not endpoint.alpn or endpoint.port == _ALPN_PORT:
        return builder.mtls_from_path(**args)
    import awscrt.io

    options = awscrt.io.TlsContextOptions.create_client_with_mtls_from_path(
        args.pop("cert_filepath"), args.pop("pri_key_filepath")
    )
    options.alpn_list = list(endpoint.alpn)
    return builder._builder(options, **args)  # noqa: SLF001 - mtls_from_path's own next step


def mqtt5_mtls_client(
    endpoint: TlsEndpoint, *, on_stopped: Callable[[Any], None]
) -> tuple[Any, Future[Any]]:
    """An MQTT 5 client (not started yet) and a future of its first connection.

    The future fails with `ConnectionError` when the first attempt fails.
    """
    from awsiot import mqtt5_client_builder

    connected: Future[Any] = Future()

    def on_success(event: Any) -> None:
        if not connected.done():
            connected.set_result(event)

    def on_failure(event: Any) -> None:
        if not connected.done():
            connected.set_exception(ConnectionError(f"connection failed: {event.exception}"))

    client = _mtls(
        mqtt5_client_builder,
        endpoint,
        on_lifecycle_connection_success=on_success,
        on_lifecycle_connection_failure=on_failure,
        on_lifecycle_stopped=on_stopped,
    )
    return client, connected


def mqtt311_mtls_connection(endpoint: TlsEndpoint) -> Any:
    """An MQTT 3.1.1 connection (not connected yet), clean session, 30 s keep-alive."""
    from awsiot import mqtt_connection_builder

    return _mtls(mqtt_connection_builder, endpoint, clean_session=True, keep_alive_secs=30)


def jobs_client_v2(client5: Any, operation_timeout: float) -> Any:
    """The SDK's request-response Jobs client on a started MQTT 5 client."""
    from awscrt import mqtt_request_response
    from awsiot import iotjobs

    return iotjobs.IotJobsClientV2(
        client5,
        mqtt_request_response.ClientOptions(
            max_request_response_subscriptions=4,
            max_streaming_subscriptions=2,
            operation_timeout_in_seconds=max(1, int(operation_timeout)),
        ),
    )


def _shadow_client_v2(client5: Any, operation_timeout: float) -> Any:
    """The SDK's request-response Device Shadow client on a started MQTT 5 client."""
    from awscrt import mqtt_request_response
    from awsiot import iotshadow

    return iotshadow.IotShadowClientV2(
        client5,
        mqtt_request_response.ClientOptions(
            max_request_response_subscriptions=2,
            max_streaming_subscriptions=1,
            operation_timeout_in_seconds=max(1, int(operation_timeout)),
        ),
    )


def open_next_job_stream(
    jobs: Any, thing_name: str, on_event: Callable[[Any], None], timeout: float
) -> Any | None:
    """The open notify-next stream of `thing_name`; None when not established in `timeout`."""
    from awscrt import mqtt_request_response
    from awsiot import ServiceStreamOptions, iotjobs

    established = threading.Event()

    def on_status(event: Any) -> None:
        kind = mqtt_request_response.SubscriptionStatusEventType.SUBSCRIPTION_ESTABLISHED
        if event.type == kind:
            established.set()

    stream = jobs.create_next_job_execution_changed_stream(
        iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=thing_name),
        ServiceStreamOptions(
            incoming_event_listener=on_event, subscription_status_listener=on_status
        ),
    )
    stream.open()
    return stream if established.wait(timeout) else None


class MqttChannel:
    """One MQTT connection of one thing to one endpoint."""

    def __init__(
        self,
        *,
        thing_name: str,
        host: str,
        port: int,
        identity: ClientIdentity,
        ca_file: StrPath,
        protocol: str = "mqtt5",
        timeout: float = 10.0,
        operation_timeout: float = 10.0,
        alpn: tuple[str, ...] = (),
    ) -> None:
        self.thing_name = thing_name
        self.host = host
        self.port = port
        self.alpn = alpn
        self.protocol = protocol
        self._identity = identity
        self._ca_file = ca_file
        self._timeout = timeout
        self._op_timeout = operation_timeout
        self._client5: Any = None
        self._connection: Any = None
        self._jobs: Any = None
        self._stream: Any = None
        self._shadow: Any = None
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

    def _tls_endpoint(self) -> TlsEndpoint:
        return TlsEndpoint(
            self.host,
            self.port,
            self._identity.cert,
            self._identity.key,
            Path(self._ca_file),
            self.thing_name,
            self.alpn,
        )

    def _start_v2(self) -> None:
        self._client5, connected = mqtt5_mtls_client(
            self._tls_endpoint(), on_stopped=lambda _event: self._stopped.set()
        )
        self._client5.start()
        self._wait(connected, "connect", self._timeout)
        self._jobs = jobs_client_v2(self._client5, self._op_timeout)
        self._stream = open_next_job_stream(
            self._jobs, self.thing_name, lambda _event: self._notified.set(), self._timeout
        )
        if self._stream is None:
            raise ChannelError(f"{self.via}: notify-next subscription not established")

    def _start_v1(self) -> None:
        from awscrt import mqtt
        from awsiot import iotjobs

        self._connection = mqtt311_mtls_connection(self._tls_endpoint())
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

    def reported_state(self, shadow_name: str) -> Mapping[str, Any] | None:
        """GetThingShadow of a named shadow: its reported state, None when it does not exist."""
        from awsiot import iotshadow

        self._check_open()
        request = iotshadow.GetNamedShadowRequest(
            thing_name=self.thing_name, shadow_name=shadow_name
        )
        try:
            if self.protocol == "mqtt5":
                if self._shadow is None:
                    self._shadow = _shadow_client_v2(self._client5, self._op_timeout)
                future = self._shadow.get_named_shadow(request)
                response = self._wait(future, "shadow get", self._op_timeout)
            else:
                self._subscribe_shadow_v1(shadow_name)
                response = self._v1_request(
                    self._shadow.publish_get_named_shadow, request, "shadow get"
                )
        except ChannelRejected as exc:
            if exc.code in ("404", "ResourceNotFound"):
                return None
            raise
        except ChannelError as exc:
            if "404" in str(exc):
                return None
            raise
        reported = getattr(response.state, "reported", None) if response.state else None
        return dict(reported) if isinstance(reported, dict) else {}

    def _subscribe_shadow_v1(self, shadow_name: str) -> None:
        from awscrt import mqtt
        from awsiot import iotshadow

        if self._shadow is not None:
            return
        self._shadow = iotshadow.IotShadowClient(self._connection)
        topic = iotshadow.GetNamedShadowSubscriptionRequest(
            thing_name=self.thing_name, shadow_name=shadow_name
        )
        qos = mqtt.QoS.AT_LEAST_ONCE
        for future, name in (
            self._shadow.subscribe_to_get_named_shadow_accepted(topic, qos, self._answer(ok=True)),
            self._shadow.subscribe_to_get_named_shadow_rejected(topic, qos, self._answer(ok=False)),
        ):
            self._wait(future, f"subscribe {name}", self._timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The stream and the request-response clients are native resources released with
        # their last reference; they go before the client they ride on.
        self._stream = None
        self._shadow = None
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
