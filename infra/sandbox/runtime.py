"""The running sandbox: engine, scheduler, HTTP front ends, state, PKI and MQTT data plane.

`Sandbox` is what tests, the demo and `ca-migrate sandbox up` start. It owns
every thread and subprocess it starts and stops them all in `stop()` (also on
`__exit__`), in reverse order: MQTT data plane (mosquitto), HTTP servers,
scheduler, state writer (which writes the final state).

The MQTT data plane and its PKI are imported lazily, only when `mqtt=True`.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import boto3
import structlog
from botocore.config import Config

from infra.sandbox import decisions as d
from infra.sandbox.clock import ScaledClock
from infra.sandbox.engine import ConnectPolicy, JobsEngine, certificate_id_of
from infra.sandbox.errors import SandboxStartError, ServiceError, invalid_request
from infra.sandbox.faults import FaultInjector
from infra.sandbox.http_api import HttpFrontEnd
from infra.sandbox.regional import RegionStack, saved_time
from job_documents.clock import Clock

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient
    from mypy_boto3_iot_jobs_data import IoTJobsDataPlaneClient

    from infra.sandbox.mqtt import Endpoint, ListenerPorts, MqttDataPlane
    from infra.sandbox.pki import SandboxPki

__all__ = ["ProvisionResult", "Sandbox", "plan_provision"]

log = structlog.get_logger(__name__)

DUMMY_CREDENTIALS = {"aws_access_key_id": "sandbox", "aws_secret_access_key": "sandbox"}
#: How `sandbox provision` calls the control plane: the orchestrator's retry policy
#: (botocore's adaptive mode, 10 attempts), so throttling, the sandbox's fault included,
#: is waited out instead of ending the command.
PROVISION_RETRIES = Config(retries={"mode": "adaptive", "max_attempts": 10})
# The variable through which the orchestrator's commands take this sandbox's clock; its value
# is `sandbox:<admin URL>` (GET <admin URL>/clock gives the time and the scale).
CLOCK_ENV = "CA_MIGRATE_CLOCK"
# The variable through which `ca-migrate plan` and `start` reach this sandbox's listeners for
# their endpoint check: `HOST:PORT=127.0.0.1:LOCAL` entries, the names and ports as AWS has them
# (8883; 443 with ALPN) and where the sandbox serves them. SNI and verification keep the name.
CONNECT_TO_ENV = "CA_MIGRATE_CONNECT_TO"
#: The ports the documents and the devices name; the sandbox serves them on local ports.
_MQTT_PORT = 8883
_ALPN_PORT = 443


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    """Things and groups created by `provision`, and each thing's credential files."""

    things: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)


def plan_provision(
    things: int, groups: Sequence[tuple[str, int | None]], *, prefix: str = "device"
) -> tuple[list[str], dict[str, list[str]]]:
    """Thing names and group memberships: groups take consecutive slices, in order.

    A group with a count takes that many of the things not yet in a group; a
    group without one takes all the rest.
    """
    if things < 0:
        raise invalid_request("--things must be zero or more")
    names = [f"{prefix}-{index:05d}" for index in range(1, things + 1)]
    membership: dict[str, list[str]] = {}
    cursor = 0
    for group, count in groups:
        if group in membership:
            raise invalid_request(f"group {group} is given twice")
        take = len(names) - cursor if count is None else count
        if take < 0 or cursor + take > len(names):
            raise invalid_request(
                f"group {group} wants {take} things but only {len(names) - cursor} are left "
                f"of {len(names)}; raise --things or lower the counts"
            )
        membership[group] = names[cursor : cursor + take]
        cursor += take
    return names, membership


_SESSIONS: dict[str, boto3.session.Session] = {}
_SESSIONS_LOCK = threading.RLock()


def _session(region: str) -> boto3.session.Session:
    """One boto3 session per region, shared: loading the service models is the slow part."""
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(region)
        if session is None:
            session = boto3.session.Session(
                aws_access_key_id=DUMMY_CREDENTIALS["aws_access_key_id"],
                aws_secret_access_key=DUMMY_CREDENTIALS["aws_secret_access_key"],
                region_name=region,
            )
            _SESSIONS[region] = session
        return session


class Sandbox:
    """A local AWS IoT Jobs stand-in; a context manager."""

    def __init__(
        self,
        *,
        port: int = 0,
        region: str = d.DEFAULT_REGION,
        regions: Sequence[str] = (),
        time_scale: float = 1.0,
        state_dir: Path | None = None,
        mqtt: bool = True,
        clock: Clock | None = None,
        work_dir: Path | None = None,
        throttle_rate: float = 0.0,
        enforce_quotas: bool = False,
        mqtt_ports: ListenerPorts | None = None,
        connect_policy: ConnectPolicy = ConnectPolicy.THING_NAME,
    ) -> None:
        if time_scale <= 0:
            raise SandboxStartError("--time-scale must be a positive number")
        self.port = port
        #: The first region: requests that name no region (or the only region) go to it.
        self.region = region
        #: Every region served, the first one first (`regions` adds to `region`).
        self.regions: tuple[str, ...] = tuple(dict.fromkeys((region, *regions)))
        self.account_id = d.ACCOUNT_ID
        self.time_scale = time_scale
        self.state_dir = state_dir
        self.mqtt = mqtt
        self._given_clock = clock
        self._given_work_dir = work_dir
        self.throttle_rate = throttle_rate
        self.enforce_quotas = enforce_quotas
        #: Fixed ports of the first region's ATS listeners (`sandbox up --mqtt-port`).
        self.mqtt_ports = mqtt_ports
        #: Which AWS IoT policy authorizes device CONNECTs (`sandbox up --connect-policy`).
        self.connect_policy = ConnectPolicy(connect_policy)
        self.work_dir: Path | None = None
        self._owns_work_dir = False
        self.pki: SandboxPki | None = None
        self._stacks: dict[str, RegionStack] = {}
        self._http: HttpFrontEnd | None = None
        self.faults: FaultInjector | None = None

    # ------------------------------------------------------------- lifecycle
    @property
    def engine(self) -> JobsEngine:
        """The first region's engine (the only one of a single-region sandbox)."""
        return self.engine_for(self.region)

    def engine_for(self, region: str) -> JobsEngine:
        """The engine that holds `region`'s jobs, things and groups."""
        stack = self._stacks.get(region)
        if stack is None:
            if not self._stacks:
                raise SandboxStartError("the sandbox is not started; call start() first")
            raise invalid_request(
                f"this sandbox serves {', '.join(self.regions)}, not {region}; start it with "
                f"--region {region}"
            )
        return stack.engine

    @property
    def engines(self) -> dict[str, JobsEngine]:
        """Every region's engine, the first region first."""
        return {region: stack.engine for region, stack in self._stacks.items()}

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """The first region's MQTT endpoints (`legacy`, `ats`)."""
        return self.endpoints_for(self.region)

    def endpoints_for(self, region: str) -> dict[str, Endpoint]:
        """A region's MQTT endpoints (empty without the MQTT data plane)."""
        stack = self._stacks.get(region)
        return {} if stack is None else dict(stack.endpoints)

    @property
    def _data_plane(self) -> MqttDataPlane | None:
        stack = self._stacks.get(self.region)
        return None if stack is None else stack.data_plane

    def start(self) -> Self:
        """Start everything; on any failure, stop what was started and raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_clock(self) -> Clock:
        if self._given_clock is not None:
            return self._given_clock
        if self.state_dir is not None:
            start = datetime.now(UTC)
            for index, region in enumerate(self.regions):
                saved = saved_time(self.state_dir, region, first=index == 0)
                if saved is not None and saved > start.timestamp():
                    start = datetime.fromtimestamp(saved, UTC)
            return ScaledClock(self.time_scale, start=start)
        return ScaledClock(self.time_scale)

    def _start(self) -> None:
        if self._given_work_dir is not None:
            self.work_dir = self._given_work_dir
        elif self.state_dir is not None:
            self.work_dir = self.state_dir
        else:
            self.work_dir = Path(tempfile.mkdtemp(prefix="ca-migrate-sandbox-"))
            self._owns_work_dir = True
        self.work_dir.mkdir(parents=True, exist_ok=True)
        clock = self._start_clock()
        for index, region in enumerate(self.regions):
            stack = RegionStack(region, clock, self.time_scale, first=index == 0)
            stack.engine.set_connect_policy(self.connect_policy)
            self._stacks[region] = stack
            stack.start(self.state_dir)
        self.faults = FaultInjector(
            clock, throttle_rate=self.throttle_rate, enforce_quotas=self.enforce_quotas
        )
        if self.mqtt:
            self._start_mqtt()
        self._http = HttpFrontEnd(
            self.engines, self.faults, admin=self, port=self.port, default_region=self.region
        )
        self._http.start()
        log.info(
            "sandbox_started",
            control_plane_url=self.control_plane_url,
            jobs_data_url=self.jobs_data_url,
            regions=list(self.regions),
            mqtt=self.mqtt,
            time_scale=self.time_scale,
        )

    def _start_mqtt(self) -> None:
        try:
            from infra.sandbox.pki import SandboxPki
        except ImportError as exc:
            raise SandboxStartError(
                f"the MQTT data plane is not available ({exc}); start the sandbox with "
                "mqtt=False (--no-mqtt) for the control plane and iot-jobs-data only"
            ) from exc
        assert self.work_dir is not None  # noqa: S101 - set by _start
        for region, stack in self._stacks.items():
            # One PKI directory: the same roots, server certificates for each region's hosts.
            pki = SandboxPki.create_or_load(
                self.work_dir / "pki", region=region, endpoint_prefix=d.ENDPOINT_PREFIX
            )
            if region == self.region:
                self.pki = pki
            stack.start_mqtt(
                pki, self.work_dir, ports=self.mqtt_ports if region == self.region else None
            )

    def stop(self) -> None:
        """Stop everything this sandbox started; safe to call more than once."""
        try:
            for stack in reversed(self._stacks.values()):
                stack.stop_mqtt()
        finally:
            if self._http is not None:
                self._http.stop()
            for stack in reversed(self._stacks.values()):
                stack.stop()
        if self._owns_work_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self._owns_work_dir = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ access
    @property
    def control_plane_url(self) -> str:
        if self._http is None:
            raise SandboxStartError("the sandbox is not started; call start() first")
        return self._http.control_plane_url

    @property
    def jobs_data_url(self) -> str:
        if self._http is None:
            raise SandboxStartError("the sandbox is not started; call start() first")
        return self._http.jobs_data_url

    @property
    def admin_url(self) -> str:
        return self.control_plane_url + "/_sandbox"

    def iot_client(self, *, config: Config | None = None, region: str | None = None) -> IoTClient:
        """A boto3 `iot` client for one region of this sandbox (dummy credentials).

        The client signs for `region` (default: the first); the sandbox routes each
        request by the region of its signature, as AWS routes by host.
        """
        with _SESSIONS_LOCK:
            return _session(region or self.region).client(
                "iot", endpoint_url=self.control_plane_url, config=config
            )

    def jobs_data_client(
        self, *, config: Config | None = None, region: str | None = None
    ) -> IoTJobsDataPlaneClient:
        """A boto3 `iot-jobs-data` client for one region of this sandbox (dummy credentials)."""
        with _SESSIONS_LOCK:
            return _session(region or self.region).client(
                "iot-jobs-data", endpoint_url=self.jobs_data_url, config=config
            )

    def describe(self) -> dict[str, Any]:
        """What `ca-migrate sandbox up --output json` prints."""
        ca_files: dict[str, Any] = {}
        if self.pki is not None:
            ca_files = {
                "legacy_root_pem": str(self.pki.legacy_root_pem),
                "ats_root_pems": {k: str(v) for k, v in self.pki.ats_root_pems.items()},
                "ats_catalog": str(self.pki.ats_catalog),
                "device_ca_pem": str(self.pki.device_ca_pem),
            }
        return {
            "control_plane_url": self.control_plane_url,
            "jobs_data_url": self.jobs_data_url,
            "admin_url": self.admin_url,
            "region": self.region,
            "account_id": self.account_id,
            "endpoint_prefix": d.ENDPOINT_PREFIX,
            "endpoints": _endpoints_json(self.endpoints),
            # Every region served, the first one first, with its own MQTT listener pair.
            "regions": {
                region: {"endpoints": _endpoints_json(self.endpoints_for(region))}
                for region in self.regions
            },
            "ca_dir": str(self.work_dir / "pki")
            if self.pki is not None and self.work_dir
            else None,
            "ca_files": ca_files,
            "mqtt": self.mqtt,
            "connect_policy": self.connect_policy.value,
            "time_scale": self.time_scale,
            "state_dir": None if self.state_dir is None else str(self.state_dir),
            "env": {
                "AWS_ENDPOINT_URL_IOT": self.control_plane_url,
                "AWS_ENDPOINT_URL_IOT_JOBS_DATA_PLANE": self.jobs_data_url,
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
                # The orchestrator's commands read this sandbox's (scaled) time: docs/sandbox.md.
                CLOCK_ENV: f"sandbox:{self.admin_url}",
            }
            | ({CONNECT_TO_ENV: self.connect_to()} if self.connect_to() else {}),
        }

    def connect_to(self) -> str:
        """Every MQTT listener as `HOST:PORT=127.0.0.1:LOCAL`, space-separated ('' without MQTT).

        What `ca-migrate plan` and `start` take (`--connect-to`, `CA_MIGRATE_CONNECT_TO`) to
        check the sandbox's endpoints where they listen, as devices reach them
        (`connect_override`).
        """
        entries: list[str] = []
        for region in self.regions:
            for endpoint in self.endpoints_for(region).values():
                entries.append(f"{endpoint.host}:{_MQTT_PORT}=127.0.0.1:{endpoint.port}")
                if endpoint.alpn_port:
                    entries.append(f"{endpoint.host}:{_ALPN_PORT}=127.0.0.1:{endpoint.alpn_port}")
        return " ".join(entries)

    # ------------------------------------------------------------ admin hooks
    def shadow(
        self, thing_name: str, shadow_name: str, region: str | None = None
    ) -> dict[str, Any] | None:
        """A named shadow kept by a region's MQTT data plane, if any."""
        stack = self._stacks.get(region or self.region)
        if stack is None or stack.data_plane is None:
            return None
        reader = getattr(stack.data_plane, "shadow", None)
        if reader is None:
            return None
        result: dict[str, Any] | None = reader(thing_name, shadow_name)
        return result

    def issue_credentials(
        self, thing_names: list[str], region: str | None = None
    ) -> dict[str, dict[str, str]]:
        """Certificate and key files for each thing of a region (idempotent), from the PKI.

        Like a fleet provisioning step, each certificate is registered ACTIVE
        (RegisterCertificate under the device CA) and attached to its thing
        (AttachThingPrincipal), so the device policy admits the thing's CONNECT.
        A certificate registered before keeps its status (a revoked one stays revoked).
        """
        if self.pki is None:
            raise invalid_request(
                "this sandbox has no PKI (started without MQTT); device credentials need "
                "`sandbox up` without --no-mqtt"
            )
        engine = self.engine_for(region or self.region)
        out: dict[str, dict[str, str]] = {}
        for name in thing_names:
            engine.describe_thing({"thingName": name})
            credentials = self.pki.issue_thing_credentials(name)
            _register_and_attach(engine, name, credentials.cert_pem.read_text())
            out[name] = {"cert_pem": str(credentials.cert_pem), "key_pem": str(credentials.key_pem)}
        return out

    def provision(
        self,
        things: int | None = None,
        groups: Sequence[tuple[str, int | None]] = (),
        *,
        prefix: str = "device",
        region: str | None = None,
    ) -> ProvisionResult:
        """Create things and groups in a region, in-process (and credentials with a PKI)."""
        names, membership = plan_provision(things or 0, groups, prefix=prefix)
        engine = self.engine_for(region or self.region)
        engine.create_things(names)
        for group, members in membership.items():
            engine.create_thing_group({"thingGroupName": group})
            engine.add_things_to_group(group, members)
        credentials = self.issue_credentials(names, region) if self.pki is not None else {}
        return ProvisionResult(
            things=tuple(names),
            groups={g: tuple(m) for g, m in membership.items()},
            credentials=credentials,
        )


def _register_and_attach(engine: JobsEngine, thing_name: str, certificate_pem: str) -> None:
    """RegisterCertificate (ACTIVE) unless already registered, then AttachThingPrincipal."""
    try:
        arn = engine.register_certificate({"certificatePem": certificate_pem, "status": "ACTIVE"})[
            "certificateArn"
        ]
    except ServiceError as exc:
        if exc.code != "ResourceAlreadyExistsException":
            raise
        certificate_id = certificate_id_of(certificate_pem)
        arn = engine.describe_certificate({"certificateId": certificate_id})[
            "certificateDescription"
        ]["certificateArn"]
    engine.attach_thing_principal({"thingName": thing_name, "principal": arn})


def _endpoints_json(endpoints: dict[str, Endpoint]) -> dict[str, Any]:
    return {
        kind: {"host": endpoint.host, "port": endpoint.port}
        | ({"alpn_port": endpoint.alpn_port} if endpoint.alpn_port else {})
        for kind, endpoint in endpoints.items()
    }
