"""A simulated fleet over MQTT/TLS: the real agent, the real SDK, the real probe.

Each device is a thread running what `ca-migrate-device run` runs: the
`device_handler.agent.Agent` with `device_handler.mqtt.MqttConnector` (AWS IoT
Device SDK v2, mutual TLS with the thing's sandbox certificate) against the
sandbox's mosquitto listeners, and the real TLS probe
(`device_handler.probe.probe`). Hundreds of devices fit on one machine; time
is the sandbox's scaled clock, so profiles that wait (late, slow, reboot)
sleep their simulated delay divided by the time scale.

Fault profiles act where a real device would fail:
- `probe_fails`: the ATS endpoint's address is a closed port for this device
  (a firewall), so the real probe and the real connection fail;
- `tls_no_ecc`: the device's TLS stack drops ECC roots when it loads a CA
  bundle: the probe and the connector get an RSA-only copy of the real file;
- `reject`: the validator pins the legacy root (real validator, real verdict);
- `power_cut`: `CrashingFileOps` cuts power before a random file operation of
  the first transaction; the device reboots (new agent, recovery) later.

Invariants:
- Every thread is started by `start()` and joined by `close()`.
- Devices report their own statuses through the broker; nothing else does.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Self

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from device_handler.agent import Agent, AgentSettings
from device_handler.channel import Connector, JobsChannel
from device_handler.errors import ConfigError, DeviceHandlerError, PowerCut
from device_handler.fsops import RealFileOps, StrPath, read_bytes
from device_handler.mqtt import MqttConnector
from device_handler.probe import ClientIdentity, ProbeResult, probe
from device_handler.simulation import CrashingFileOps
from device_handler.trust import EndpointConfig
from infra.sandbox.fleet._base import FleetBase, FleetTiming, Hung, _Device, hanging_probe
from infra.sandbox.fleet.memory import CUT_POINTS
from infra.sandbox.fleet.profiles import Profile
from infra.sandbox.pki import SandboxPki
from job_documents.clock import Clock

__all__ = ["MqttFleet"]

log = structlog.get_logger(__name__)

CLOSED_PORT: Final = 1  # nothing listens on 127.0.0.1:1: connections are refused
_DONE: Final = frozenset({"NONE", "SKIPPED"})


def _rsa_only(bundle: StrPath, device_dir: Path) -> Path:
    """A copy of `bundle` with only its RSA roots: what an RSA-only TLS stack loads."""
    certs = x509.load_pem_x509_certificates(read_bytes(bundle))
    kept = b"".join(
        c.public_bytes(Encoding.PEM) for c in certs if isinstance(c.public_key(), rsa.RSAPublicKey)
    )
    out = device_dir / "rsa-only-view.pem"
    out.write_bytes(kept)
    return out


class _RsaOnlyConnector:
    """A connector whose TLS stack ignores the ECC roots of the bundle it is given."""

    def __init__(self, inner: Connector, device_dir: Path) -> None:
        self._inner = inner
        self._dir = device_dir

    def connect(self, endpoint: EndpointConfig, ca_file: StrPath, timeout: float) -> JobsChannel:
        return self._inner.connect(endpoint, _rsa_only(ca_file, self._dir), timeout)


class MqttFleet(FleetBase):
    """Simulated devices, one thread each, on the sandbox's MQTT listeners."""

    def __init__(
        self,
        pki: SandboxPki,
        profiles: Mapping[str, Profile],
        *,
        ports: Mapping[str, int],
        alpn_ports: Mapping[str, int] | None = None,
        credentials: Mapping[str, Mapping[str, str]],
        clock: Clock,
        time_scale: float,
        root: Path | None = None,
        seed: int = 7,
        timing: FleetTiming | None = None,
        protocol: str = "mqtt5",
        dead_man_seconds: float = 60.0,
        connect_timeout: float = 30.0,
        boot_spacing_seconds: float = 0.02,
        idle_wait_seconds: float = 1.0,
        verify_key: Path | None = None,
    ) -> None:
        super().__init__(
            pki,
            profiles,
            clock=clock,
            root=root,
            seed=seed,
            timing=timing,
            share_validation=True,
            verify_key=verify_key,
        )
        self.time_scale = time_scale
        self.protocol = protocol
        self.dead_man_seconds = dead_man_seconds
        # Hundreds of devices share two cores here: handshakes queue far longer than in the field.
        self.connect_timeout = connect_timeout
        # Devices power up a few milliseconds apart, not as one thundering herd on the broker.
        self.boot_spacing_seconds = boot_spacing_seconds
        # An idle device polls again after this long without a notification (real seconds):
        # short for a demo that must notice every job at once, longer for a fleet left running.
        self.idle_wait_seconds = idle_wait_seconds
        self._credentials = credentials
        # The documents and the devices name the endpoints as AWS does (port 8883); the
        # sandbox serves them on local ports, and nss_wrapper resolves the names to 127.0.0.1.
        self._overrides = {
            f"{pki.hosts[kind]}:8883": f"127.0.0.1:{port}" for kind, port in ports.items()
        }
        # MQTT over 443 with ALPN x-amzn-mqtt-ca, where the endpoint serves it (ATS).
        self._overrides.update(
            {
                f"{pki.hosts[kind]}:443": f"127.0.0.1:{port}"
                for kind, port in (alpn_ports or {}).items()
            }
        )
        self._firewalled = dict(self._overrides)
        self._firewalled[f"{pki.hosts['ats']}:8883"] = f"127.0.0.1:{CLOSED_PORT}"
        self._firewalled[f"{pki.hosts['ats']}:443"] = f"127.0.0.1:{CLOSED_PORT}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._booted = 0
        self._expected_boots = 0
        self._all_booted = threading.Event()
        self.outcomes: Counter[str] = Counter()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Start one thread per device that ever connects (offline ones never do)."""
        for device in self._devices.values():
            if device.profile is Profile.OFFLINE:
                continue
            if device.profile is Profile.LATE:
                self._busy.add(device.name)
            else:
                self._expected_boots += 1
            delay = len(self._threads) * self.boot_spacing_seconds
            thread = threading.Thread(
                target=self._life,
                args=(device, delay),
                name=f"device-{device.name}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        if self._expected_boots == 0:
            self._all_booted.set()
        log.info("mqtt_fleet_started", devices=len(self._threads), root=str(self.root))
        return self

    def wait_booted(
        self, timeout: float, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Wait until every device that is online from the start has connected once.

        A campaign meets a fleet that is already up; returns how many have booted.
        `progress(booted, expected)` hears how far it is, about once a second.
        """
        deadline = time.monotonic() + timeout
        while not self._all_booted.wait(max(0.0, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                break
            if progress is not None:
                with self._lock:
                    booted, expected = self._booted, self._expected_boots
                progress(booted, expected)
        with self._lock:
            return self._booted

    def _mark_booted(self, device: _Device) -> None:
        if device.profile is Profile.LATE:
            return
        with self._lock:
            self._booted += 1
            if self._booted >= self._expected_boots:
                self._all_booted.set()

    def close(self) -> None:
        """Stop every device thread (each disconnects), then remove the files if ours."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.dead_man_seconds + 30)
        self._threads = []
        super().close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ driver view
    def run_due(self) -> int:
        """Devices act on their own threads; nothing to run here."""
        return 0

    def next_wakeup(self) -> float | None:
        """Now, while any device is in a transaction or waiting to act; else None."""
        with self._lock:
            return self._now() if self._busy else None

    # ------------------------------------------------------------------ one device
    def _sleep(self, device: _Device, simulated: tuple[float, float]) -> bool:
        """Sleep a simulated delay in real time; False when the fleet is stopping."""
        seconds = self._random(device).uniform(*simulated) / self.time_scale
        return not self._stop.wait(seconds)

    def _agent(self, device: _Device, *, crash: bool) -> Agent:
        paths = self._boot(device)
        creds = self._credentials[device.name]
        identity = ClientIdentity(cert=Path(creds["cert_pem"]), key=Path(creds["key_pem"]))
        overrides = self._firewalled if device.profile is Profile.PROBE_FAILS else self._overrides
        connector: Connector = MqttConnector(
            device.name,
            identity,
            overrides=overrides,
            protocol=self.protocol,
            operation_timeout=self.connect_timeout,
        )
        probe_fn: Callable[..., ProbeResult] = (
            hanging_probe if device.profile is Profile.HANG else probe
        )
        if device.profile is Profile.TLS_NO_ECC:
            connector = _RsaOnlyConnector(connector, paths.state_dir)

            def probe_fn(endpoint: EndpointConfig, ca_file: StrPath, **kwargs: Any) -> ProbeResult:
                return probe(endpoint, _rsa_only(ca_file, paths.state_dir), **kwargs)

        settings = AgentSettings(
            thing_name=device.name,
            paths=paths,
            identity=identity,
            overrides=overrides,
            dead_man_seconds=self.dead_man_seconds,
            connect_timeout=self.connect_timeout,
        )
        fs = RealFileOps()
        return Agent(
            settings,
            self.validator(device.profile),
            connector,
            fs=(
                CrashingFileOps(crash_at=self._random(device).randrange(CUT_POINTS), inner=fs)
                if crash
                else fs
            ),
            clock=self.clock,
            probe_fn=probe_fn,
        )

    def _set_busy(self, device: _Device, busy: bool) -> None:
        with self._lock:
            if busy:
                self._busy.add(device.name)
            else:
                self._busy.discard(device.name)

    def _life(self, device: _Device, delay: float) -> None:
        if self._stop.wait(delay):
            return
        if device.profile is Profile.LATE and not self._sleep(device, self.timing.late):
            return
        agent = self._agent(device, crash=device.profile is Profile.POWER_CUT)
        try:
            self._loop(device, agent)
        except ConfigError as exc:
            log.exception("device_config_error", thing=device.name, error=str(exc))
        finally:
            self._set_busy(device, busy=False)

    def _idle(self, agent: Agent) -> bool:
        """Wait for a job notification, up to `idle_wait_seconds`; False when none or stopping.

        In steps of at most a second, so that a stopping fleet is not held up by idle devices.
        """
        channel = agent.connect()
        left = self.idle_wait_seconds
        while left > 0 and not self._stop.is_set():
            step = min(1.0, left)
            if channel.wait_for_jobs(step):
                return True
            left -= step
        return False

    def _loop(self, device: _Device, agent: Agent) -> None:
        notified = False  # a device that boots looks for work at once
        booted = False
        while not self._stop.is_set():
            try:
                self._set_busy(device, busy=True)
                if (
                    notified
                    and device.profile is Profile.SLOW
                    and not self._sleep(device, self.timing.slow)
                ):
                    return
                outcome = agent.poll()
                if not booted:
                    booted = True
                    self._mark_booted(device)
                notified = False
                with self._lock:
                    self.outcomes[outcome.status] += 1
                if outcome.status not in _DONE:
                    if device.first_job_at is None:
                        device.first_job_at = self._now()
                    continue
                self._set_busy(device, busy=False)
                notified = self._idle(agent)
            except Hung:
                if device.first_job_at is None:
                    device.first_job_at = self._now()
                with self._lock:
                    self.outcomes["HUNG"] += 1
                self._set_busy(device, busy=False)
                self._stop.wait()  # silent until the fleet stops: its executions time out
                return
            except PowerCut:
                device.cuts += 1
                if device.first_job_at is None:
                    device.first_job_at = self._now()
                with self._lock:
                    self.outcomes["POWER_CUT"] += 1
                agent.disconnect()
                if not self._sleep(device, self.timing.reboot):
                    return
                agent = self._agent(device, crash=False)
                agent.recover()
            except ConfigError:
                raise
            except DeviceHandlerError as exc:
                log.info("device_retry", thing=device.name, error=str(exc))
                agent.disconnect()
                if self._stop.wait(1.0):
                    return
        agent.disconnect()
