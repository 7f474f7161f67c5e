"""One region of the sandbox: its Jobs engine, scheduler, saved state and MQTT listener pair.

AWS keeps IoT state per region: a job, thing or thing group made in us-east-1 does
not exist in eu-west-1, and each region has its own `iot:Data` and `iot:Data-ATS`
hosts. A sandbox that serves several regions runs one `RegionStack` per region, all
on the one clock (a rehearsal's time is the same everywhere).

Where each region keeps its files (the first region keeps the single-region layout,
so a sandbox started with one region is what it always was):

    <state dir>/state.json                     the first region's state
    <state dir>/regions/<region>/state.json    every other region's state
    <work dir>/mqtt, <work dir>/mqtt-<region>  each region's brokers

Invariants:
- `stop()` stops what `start()` started, in reverse order, and is safe to call twice.
- The PKI (roots, device CA) is shared; each region gets server certificates for its
  own host names from it (`SandboxPki` files them by host).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from infra.sandbox import decisions as d
from infra.sandbox.engine import IssuedKeys, JobsEngine
from infra.sandbox.errors import SandboxStartError
from infra.sandbox.persistence import EngineStateFile
from job_documents.clock import Clock

if TYPE_CHECKING:
    from infra.sandbox.mqtt import Endpoint, ListenerPorts, MqttDataPlane
    from infra.sandbox.pki import SandboxPki

__all__ = ["RegionStack", "region_state_dir", "saved_time"]

log = structlog.get_logger(__name__)


def region_state_dir(state_dir: Path, region: str, *, first: bool) -> Path:
    """Where a region's `state.json` lives under the sandbox's state directory."""
    return state_dir if first else state_dir / "regions" / region


def saved_time(state_dir: Path, region: str, *, first: bool) -> float | None:
    """The sandbox time a region's saved state was written at, if it has one."""
    from infra.sandbox.clock import ScaledClock

    probe = EngineStateFile(
        region_state_dir(state_dir, region, first=first),
        JobsEngine(clock=ScaledClock(), region=region),
    )
    return probe.saved_time()


@dataclass(slots=True)
class RegionStack:
    """A region's engine, scheduler thread, state writer and MQTT data plane."""

    region: str
    clock: Clock
    time_scale: float = 1.0
    first: bool = True
    engine: JobsEngine = field(init=False)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    data_plane: MqttDataPlane | None = None
    _store: EngineStateFile | None = None
    _scheduler: threading.Thread | None = None
    _scheduler_stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.engine = JobsEngine(clock=self.clock, region=self.region, time_scale=self.time_scale)

    def start(self, state_dir: Path | None) -> None:
        """Load the saved state (if any), start the state writer and the scheduler."""
        if state_dir is not None:
            store = EngineStateFile(
                region_state_dir(state_dir, self.region, first=self.first), self.engine
            )
            store.load()
            store.start()
            self._store = store
        self._scheduler_stop.clear()
        self._scheduler = threading.Thread(
            target=self.engine.run_scheduler,
            args=(self._scheduler_stop,),
            name=f"sandbox-scheduler-{self.region}",
            daemon=True,
        )
        self._scheduler.start()

    def start_mqtt(
        self, pki: SandboxPki, work_dir: Path, *, ports: ListenerPorts | None = None
    ) -> None:
        """This region's brokers: an `iot:Data` and an `iot:Data-ATS` listener.

        `ports` fixes the ATS listeners' ports (`sandbox up --mqtt-port`).
        """
        try:
            from infra.sandbox.mqtt import start_data_plane
        except ImportError as exc:
            raise SandboxStartError(
                f"the MQTT data plane is not available ({exc}); start the sandbox with "
                "mqtt=False (--no-mqtt) for the control plane and iot-jobs-data only"
            ) from exc
        # Things' certificates (and CreateKeysAndCertificate's) come from the device CA:
        # the account has it as a registered CA, as AWS has its own issuing CA.
        self.engine.trust_ca_certificate(pki.device_ca_pem.read_text())
        self.engine.set_certificate_issuer(
            lambda: IssuedKeys(*pki.issue_keys_and_certificate(d.ISSUED_CERTIFICATE_COMMON_NAME))
        )
        self.data_plane = start_data_plane(
            self.engine,
            pki=pki,
            work_dir=work_dir / ("mqtt" if self.first else f"mqtt-{self.region}"),
            region=self.region,
            endpoint_prefix=d.ENDPOINT_PREFIX,
            ports=ports,
        )
        self.endpoints = dict(self.data_plane.endpoints)

    def stop_mqtt(self) -> None:
        """Stop this region's brokers (first: devices go before the control plane)."""
        if self.data_plane is not None:
            try:
                self.data_plane.stop()
            finally:
                self.data_plane = None

    def stop(self) -> None:
        """Stop the data plane, the scheduler, then write the final state."""
        self.stop_mqtt()
        self._scheduler_stop.set()
        self.engine.stop_scheduler()
        if self._scheduler is not None:
            self._scheduler.join(timeout=5)
            self._scheduler = None
        if self._store is not None:
            self._store.stop()
            self._store = None
