r"""The sandbox's MQTT data plane: two mosquitto brokers and the bridge that serves Jobs over them.

Shape:

    device --TLS--> front "legacy" --> mosquitto "legacy" --unix--\
                                                                   bridge (paho) --> engine
    device --TLS--> front "ats"    --> mosquitto "ats"    --unix--/              \--> shadows
                    (connect rule: DeviceIdentity)

Invariants:
- A request is answered on the broker it came through, and `via` names that
  broker's endpoint, so the engine records over which connection a device
  acknowledged.
- Requests of one thing are handled in arrival order (one worker per thing,
  chosen by hash); different things are handled in parallel, so a slow engine
  call (fault injection) does not stall the fleet.
- Engine change callbacks are queued behind the thing's requests: the answer
  to an update goes out before the `notify`/`notify-next` it causes. Events go
  to both brokers: a device may be connected to either.
- `stop()` stops everything `start_data_plane` started, even after a partial
  start; after it the engine's callbacks are ignored.
"""

from __future__ import annotations

import json
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
from paho.mqtt.client import Client, MQTTMessage, MQTTv5
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from infra.sandbox.dataplane import JobsDataPlane
from infra.sandbox.errors import SandboxError
from infra.sandbox.mqtt._broker import Broker, BrokerError
from infra.sandbox.mqtt._front import DeviceIdentity
from infra.sandbox.mqtt._jobs import JobsTopics, NotifyTracker, Outgoing
from infra.sandbox.mqtt._ports import ListenerPorts, check_bindable
from infra.sandbox.mqtt._shadow import ShadowStore
from infra.sandbox.pki import SandboxPki, endpoint_hosts
from job_documents.clock import Clock, SystemClock

__all__ = ["ENDPOINT_KINDS", "Endpoint", "MqttDataPlane", "MqttError", "start_data_plane"]

log = structlog.get_logger(__name__)

ENDPOINT_KINDS = ("legacy", "ats")
_READY_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_WORKERS = 4
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux
_BRIDGE_TOPICS = ("$aws/things/+/jobs/#", "$aws/things/+/shadow/name/+/+")


class MqttError(SandboxError):
    """The MQTT data plane could not start or was used wrongly (the message says what to do)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An AWS-shaped endpoint host and the local port that serves it (connect to 127.0.0.1)."""

    host: str
    port: int
    #: MQTT with ALPN x-amzn-mqtt-ca, what AWS serves on 443 (ATS only; 0 when none).
    alpn_port: int = 0


class _BridgeConnection:
    """The bridge's MQTT 5 session on one broker's unix socket."""

    def __init__(
        self, kind: str, socket_path: Path, on_message: Callable[[str, str, bytes], None]
    ) -> None:
        self.kind = kind
        self._socket_path = socket_path
        self._on_message = on_message
        self._subscribed = threading.Event()
        self._client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"ca-migrate-sandbox-bridge-{kind}",
            protocol=MQTTv5,
            transport="unix",
        )
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._connected
        self._client.on_subscribe = self._suback
        self._client.on_message = self._message

    def start(self) -> None:
        self._client.connect(str(self._socket_path), keepalive=60)
        self._client.loop_start()
        if not self._subscribed.wait(_READY_TIMEOUT):
            raise MqttError(
                f"the bridge could not subscribe on the {self.kind} broker within "
                f"{_READY_TIMEOUT:.0f}s; see its mosquitto.log"
            )

    def _connected(
        self, client: Client, _userdata: object, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            log.error("bridge_connect_refused", endpoint=self.kind, reason=str(reason))
            return
        # Subscribing here also restores the subscriptions after a reconnect.
        client.subscribe([(t, SubscribeOptions(qos=1, noLocal=True)) for t in _BRIDGE_TOPICS])

    def _suback(
        self,
        _client: Client,
        _userdata: object,
        _mid: int,
        reasons: list[ReasonCode],
        _props: Any,
    ) -> None:
        if any(r.is_failure for r in reasons):
            log.error("bridge_subscribe_refused", endpoint=self.kind)
            return
        self._subscribed.set()

    def _message(self, _client: Client, _userdata: object, message: MQTTMessage) -> None:
        self._on_message(self.kind, message.topic, bytes(message.payload))

    def publish(self, out: Outgoing) -> None:
        payload = json.dumps(out.payload, separators=(",", ":"), ensure_ascii=False)
        self._client.publish(out.topic, payload.encode(), qos=1)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class _Workers:
    """A few threads; all work of one thing goes to the same thread, in order."""

    def __init__(self, count: int) -> None:
        self._queues: list[queue.SimpleQueue[Callable[[], None] | None]] = [
            queue.SimpleQueue() for _ in range(count)
        ]
        self._threads = [
            threading.Thread(target=self._run, args=(q,), name=f"mqtt-bridge-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _run(tasks: queue.SimpleQueue[Callable[[], None] | None]) -> None:
        while (task := tasks.get()) is not None:
            try:
                task()
            except Exception:
                log.exception("bridge_task_failed")

    def submit(self, thing_name: str, task: Callable[[], None]) -> None:
        self._queues[hash(thing_name) % len(self._queues)].put(task)

    def stop(self) -> None:
        for tasks in self._queues:
            tasks.put(None)
        for thread in self._threads:
            thread.join(_STOP_TIMEOUT)


class MqttDataPlane:
    """The running MQTT data plane; made by `start_data_plane`, ended by `stop()`."""

    def __init__(
        self,
        engine: JobsDataPlane,
        *,
        pki: SandboxPki,
        work_dir: Path,
        clock: Clock,
        identity: DeviceIdentity,
        ports: ListenerPorts | None = None,
    ) -> None:
        self.pki = pki
        self._identity = identity
        self._ports = ports or ListenerPorts()
        self.work_dir = work_dir
        self.endpoints: dict[str, Endpoint] = {}
        self._engine = engine
        self._clock = clock
        self._jobs = JobsTopics(engine, self._now)
        self._tracker = NotifyTracker(self._now)
        # The engine's shadow table when it keeps one: persisted and indexed with it.
        self._shadows = ShadowStore(self._now, getattr(engine, "named_shadows", None))
        self._brokers: dict[str, Broker] = {}
        self._bridges: dict[str, _BridgeConnection] = {}
        self._workers: _Workers | None = None
        self._socket_dir: Path | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def _now(self) -> int:
        return int(self._clock.now().timestamp())

    # -- lifecycle --------------------------------------------------------------------

    def _start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        sockets = self.work_dir
        if len(str(sockets / "legacy" / "bridge.sock")) > _SOCKET_PATH_MAX:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="ca-migrate-mqtt-"))
            sockets = self._socket_dir
        self._workers = _Workers(_WORKERS)
        for kind in ENDPOINT_KINDS:
            broker = Broker(
                kind,
                pki=self.pki,
                directory=self.work_dir / kind,
                socket_path=sockets / kind / "bridge.sock",
                identity=self._identity,
                ports=self._ports if kind == "ats" else None,
            )
            (sockets / kind).mkdir(parents=True, exist_ok=True)
            self._brokers[kind] = broker
            broker.start()
        for kind, broker in self._brokers.items():
            bridge = _BridgeConnection(kind, broker.socket_path, self._received)
            self._bridges[kind] = bridge
            bridge.start()
            self.endpoints[kind] = Endpoint(broker.host, broker.port, broker.alpn_port)
        self._engine.subscribe(self._engine_changed)
        log.info(
            "mqtt_data_plane_started",
            endpoints={k: f"{e.host} -> 127.0.0.1:{e.port}" for k, e in self.endpoints.items()},
        )

    def stop(self) -> None:
        """Stop the bridge and both brokers; idempotent."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
        if self._workers is not None:
            self._workers.stop()
        for bridge in self._bridges.values():
            bridge.stop()
        for broker in self._brokers.values():
            broker.stop()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        log.info("mqtt_data_plane_stopped")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether both brokers are alive and the data plane was not stopped."""
        return not self._stopped.is_set() and all(b.running for b in self._brokers.values())

    # -- public queries ---------------------------------------------------------------

    def shadow(self, thing_name: str, shadow_name: str) -> dict[str, Any] | None:
        """The named shadow {state, metadata, version, timestamp} of a thing, or None."""
        return self._shadows.get(thing_name, shadow_name)

    # -- message flow -----------------------------------------------------------------

    def _received(self, kind: str, topic: str, payload: bytes) -> None:
        parts = topic.split("/", 3)
        if len(parts) < 4 or self._stopped.is_set() or self._workers is None:  # noqa: PLR2004
            return
        self._workers.submit(parts[2], lambda: self._serve(kind, topic, payload))

    def _serve(self, kind: str, topic: str, payload: bytes) -> None:
        if topic.split("/")[3] == "jobs":
            answers = self._jobs.handle(topic, payload, via=kind)
        else:
            answers = self._shadows.handle(topic, payload)
        for out in answers:
            self._bridges[kind].publish(out)

    def _engine_changed(self, thing_name: str) -> None:
        if self._stopped.is_set() or self._workers is None:
            return
        self._workers.submit(thing_name, lambda: self._notify(thing_name))

    def _notify(self, thing_name: str) -> None:
        events = self._tracker.changes(thing_name, self._engine.get_pending(thing_name))
        for out in events:
            for bridge in self._bridges.values():
                bridge.publish(out)


def start_data_plane(
    engine: JobsDataPlane,
    *,
    pki: SandboxPki,
    work_dir: Path,
    region: str = "us-east-1",
    endpoint_prefix: str = "a1sandbox2demo",
    clock: Clock | None = None,
    identity: DeviceIdentity | None = None,
    ports: ListenerPorts | None = None,
) -> MqttDataPlane:
    """Start both brokers and the bridge; the caller must `stop()` the result.

    `ports` fixes the ATS endpoint's listener ports (`sandbox up --mqtt-port`);
    each is checked before anything starts (`PortUnavailableError`).

    `identity` decides which device CONNECTs the listeners admit (registered
    certificates attached to things); when omitted, the engine itself, which
    must then implement `DeviceIdentity` (the Jobs engine does).

    `clock` stamps the `timestamp` of every answer and event; when omitted,
    the engine's own `clock` attribute if it has one (the sandbox's scaled
    clock), else the wall clock.
    """
    if endpoint_hosts(region, endpoint_prefix) != pki.hosts:
        # Same roots, server certificates for this region's host names.
        pki = SandboxPki.create_or_load(
            pki.directory, region=region, endpoint_prefix=endpoint_prefix
        )
    if clock is None:
        engine_clock = getattr(engine, "clock", None)
        clock = engine_clock if isinstance(engine_clock, Clock) else SystemClock()
    if identity is None:
        if not isinstance(engine, DeviceIdentity):
            raise MqttError(
                "the MQTT listeners need a device identity (certificates attached to things): "
                "pass identity=, or an engine that keeps certificates"
            )
        identity = engine
    for port in (ports or ListenerPorts()).fixed():
        check_bindable(port)
    plane = MqttDataPlane(
        engine, pki=pki, work_dir=Path(work_dir), clock=clock, identity=identity, ports=ports
    )
    try:
        plane._start()  # noqa: SLF001
    except (BrokerError, OSError) as exc:
        plane.stop()
        raise MqttError(str(exc)) from exc
    except BaseException:
        plane.stop()
        raise
    return plane
