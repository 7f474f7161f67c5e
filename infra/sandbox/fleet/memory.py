"""A simulated fleet on the in-memory channel: the real device transaction, many devices.

Each simulated device is the real `device_handler.agent.Agent` with real files
(endpoint, trust bundle, journal) in its own directory, talking to the
sandbox's Jobs engine through `device_handler.memory.MemoryChannel`. Only the
network step of the transaction, the TLS probe (and the connector's check),
goes through `SimulatedTls`, which decides from the bundle file the device
really staged. Devices report what their transaction did; the simulator never
writes a job status itself.

The fleet is driven by events and a simulated clock:
- the engine's subscriber callback marks a thing as having news; `run_due()`
  lets every such device (and every device whose timer fell due) poll until
  it has nothing left to do;
- profiles that wait (late, slow, a rebooting power-cut device) set a timer
  on the simulated clock; `next_wakeup()` tells the driver when to move the
  clock next. Nothing sleeps in real time.

Invariants:
- Per-device memory is one small slotted object; an `Agent` exists only while
  its device runs. A device's files are created when it first boots.
- A device is polled at most `MAX_POLLS` times per activation, and
  `run_due()` processes at most `max_activations` activations per call.
- Thread-safe where it must be: the subscriber callback may run on any
  thread (HTTP front end, scheduler); `run_due()` runs on one thread.
"""

from __future__ import annotations

import heapq
import itertools
import random
import shutil
import tempfile
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self

import structlog

from device_handler.agent import Agent, AgentSettings, DevicePaths
from device_handler.channel import Connector
from device_handler.errors import DeviceHandlerError, DocumentRejected, PowerCut
from device_handler.fsops import FileOps, RealFileOps
from device_handler.memory import MemoryConnector
from device_handler.order import Order, Validator
from device_handler.testing import CrashingFileOps
from device_handler.trust import EndpointConfig
from device_handler.validation import ValidationSettings, make_validator
from infra.sandbox.engine import JobsEngine
from infra.sandbox.fleet.profiles import Profile
from infra.sandbox.fleet.simtls import SimulatedTls, certificate_fingerprint
from infra.sandbox.pki import SandboxPki

__all__ = ["DeviceView", "FleetTiming", "MemoryFleet", "shared_validator"]

log = structlog.get_logger(__name__)

MAX_POLLS: Final = 8
# A migrate transaction makes 38 mutating file operations (every one a power-cut point);
# a power-cut device loses power before one of them, drawn uniformly.
CUT_POINTS: Final = 38
_DONE: Final = frozenset({"NONE", "SKIPPED"})


@dataclass(frozen=True, slots=True)
class FleetTiming:
    """Simulated delays of the waiting profiles, in simulated seconds (uniform draws)."""

    late: tuple[float, float] = (300.0, 1200.0)
    slow: tuple[float, float] = (120.0, 480.0)
    reboot: tuple[float, float] = (30.0, 180.0)


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What the fleet knows about one device, for summaries and tests."""

    thing_name: str
    profile: Profile
    paths: DevicePaths
    first_job_at: float | None
    power_cuts: int


class _Device:
    __slots__ = ("cuts", "first_job_at", "name", "profile", "ready_at", "slow_armed", "timer_at")

    def __init__(self, name: str, profile: Profile) -> None:
        self.name = name
        self.profile = profile
        self.ready_at = 0.0  # simulated epoch seconds before which the device does nothing
        self.timer_at = -1.0  # the wake-up already in the heap, to avoid duplicates
        self.slow_armed = False
        self.first_job_at: float | None = None
        self.cuts = 0


def shared_validator(validator: Validator) -> Validator:
    """`validator`, run once per distinct document text and remembered.

    Every device of a simulated fleet that shares a validation policy reaches
    the same verdict on the same document; checking each text once keeps the
    real validator in the path without paying for it 100k times.
    """
    seen: dict[str, Order | DocumentRejected] = {}
    lock = threading.Lock()

    def validate(raw: Any) -> Order:
        if not isinstance(raw, str):
            return validator(raw)
        with lock:
            known = seen.get(raw)
        if known is None:
            try:
                known = validator(raw)
            except DocumentRejected as exc:
                known = exc
            with lock:
                seen[raw] = known
        if isinstance(known, DocumentRejected):
            raise DocumentRejected(known.code, known.message)
        return known

    return validate


class _NoSyncFileOps(RealFileOps):
    """Real writes and renames without fsync: for fleets on tmpfs, where fsync is moot."""

    def fsync(self, path: Path) -> None:
        del path

    def fsync_dir(self, directory: Path) -> None:
        del directory


def default_fleet_root() -> Path:
    """A fresh directory for device files, on tmpfs when the machine has one."""
    shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp below it, not a fixed name
    base = str(shm) if shm.is_dir() else None
    return Path(tempfile.mkdtemp(prefix="ca-migrate-fleet-", dir=base))


class MemoryFleet:
    """Simulated devices running the real transaction against a `JobsEngine`."""

    def __init__(
        self,
        engine: JobsEngine,
        pki: SandboxPki,
        profiles: Mapping[str, Profile],
        *,
        root: Path | None = None,
        seed: int = 7,
        timing: FleetTiming | None = None,
        durable: bool = True,
        share_validation: bool = True,
    ) -> None:
        self.engine = engine
        self.clock = engine.clock
        self.pki = pki
        self.timing = timing or FleetTiming()
        self._owns_root = root is None
        self.root = root if root is not None else default_fleet_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self._rng = random.Random(seed)  # noqa: S311 - a simulation's repeatable draw
        self._devices = {name: _Device(name, p) for name, p in profiles.items()}
        self._fs: FileOps = RealFileOps() if durable else _NoSyncFileOps()
        self.tls = SimulatedTls.from_pki(pki)
        self.legacy = EndpointConfig(host=pki.hosts["legacy"])
        self._legacy_bundle = pki.legacy_root_pem.read_bytes()
        self._vias = {pki.hosts["legacy"]: "legacy", pki.hosts["ats"]: "ats"}
        region = pki.region
        normal = make_validator(
            ValidationSettings(region=region, catalog=pki.ats_catalog, clock=self.clock)
        )
        # Firmware that pins the roots it accepts: only the one it shipped with.
        pinned = make_validator(
            ValidationSettings(
                region=region,
                catalog=pki.ats_catalog,
                allowed_fingerprints=frozenset({certificate_fingerprint(self._legacy_bundle)}),
                clock=self.clock,
            )
        )
        self._validators: dict[bool, Validator] = {
            False: shared_validator(normal) if share_validation else normal,
            True: shared_validator(pinned) if share_validation else pinned,
        }
        unreachable = frozenset({pki.hosts["ats"]})
        self._probes = {
            Profile.TLS_NO_ECC: self.tls.probe_fn(rsa_only=True),
            Profile.PROBE_FAILS: self.tls.probe_fn(unreachable=unreachable),
        }
        self._checks = {
            Profile.TLS_NO_ECC: self.tls.check_fn(rsa_only=True),
            Profile.PROBE_FAILS: self.tls.check_fn(unreachable=unreachable),
        }
        self._default_probe = self.tls.probe_fn()
        self._default_check = self.tls.check_fn()
        self._news: deque[str] = deque()
        self._news_set: set[str] = set()
        self._news_lock = threading.Lock()
        self._timers: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._active: str | None = None
        self._runner: int | None = None
        self._started = False
        self.activations = 0
        self.outcomes: Counter[str] = Counter()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Subscribe to the engine and set the first-connect timers of late devices."""
        if self._started:
            return self
        self._started = True
        now = self._now()
        lo, hi = self.timing.late
        for device in self._devices.values():
            if device.profile is Profile.LATE:
                device.ready_at = now + self._rng.uniform(lo, hi)
                self._schedule(device, device.ready_at)
        self.engine.subscribe(self._on_change)
        log.info("fleet_started", devices=len(self._devices), root=str(self.root))
        return self

    def close(self) -> None:
        """Remove the device files if this fleet created their directory."""
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
            self._owns_root = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ events
    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _on_change(self, thing: str) -> None:
        if thing == self._active and threading.get_ident() == self._runner:
            return  # the device's own update: it keeps polling until it is idle anyway
        if thing not in self._devices:
            return
        with self._news_lock:
            if thing not in self._news_set:
                self._news_set.add(thing)
                self._news.append(thing)

    def _schedule(self, device: _Device, when: float) -> None:
        if device.timer_at == when:
            return
        device.timer_at = when
        heapq.heappush(self._timers, (when, next(self._seq), device.name))

    def next_wakeup(self) -> float | None:
        """The simulated epoch time of the next device timer, if any."""
        return self._timers[0][0] if self._timers else None

    def pending(self) -> int:
        """Devices with news not yet handled."""
        with self._news_lock:
            return len(self._news)

    def run_due(self, max_activations: int | None = None) -> int:
        """Let every device with news, or whose timer is due, act; returns activations run."""
        self._runner = threading.get_ident()
        limit = max_activations if max_activations is not None else 20 * len(self._devices) + 100
        now = self._now()
        while self._timers and self._timers[0][0] <= now:
            _, _, name = heapq.heappop(self._timers)
            device = self._devices[name]
            if device.timer_at <= now:
                device.timer_at = -1.0
            self._on_change(name)
        done = 0
        while done < limit:
            with self._news_lock:
                if not self._news:
                    break
                name = self._news.popleft()
                self._news_set.discard(name)
            self._activate(self._devices[name], self._now())
            done += 1
        self.activations += done
        return done

    # ------------------------------------------------------------------ devices
    def paths(self, thing: str) -> DevicePaths:
        base = self.root / thing
        return DevicePaths(
            endpoint_file=base / "endpoint.json",
            trust_bundle=base / "bundle.pem",
            state_dir=base / "state",
        )

    def _boot(self, device: _Device) -> DevicePaths:
        """The device's files; created with the factory configuration on first boot."""
        paths = self.paths(device.name)
        if not paths.endpoint_file.exists():
            paths.state_dir.mkdir(parents=True, exist_ok=True)
            paths.trust_bundle.write_bytes(self._legacy_bundle)
            paths.endpoint_file.write_bytes(self.legacy.render())
        return paths

    def _agent(self, device: _Device, fs: FileOps) -> Agent:
        paths = self._boot(device)
        check: Callable[[EndpointConfig, Path], None] = self._checks.get(
            device.profile, self._default_check
        )
        connector: Connector = MemoryConnector(
            self.engine, device.name, vias=self._vias, check=check
        )
        settings = AgentSettings(
            thing_name=device.name, paths=paths, dead_man_seconds=0.05, connect_timeout=1.0
        )
        return Agent(
            settings,
            self._validators[device.profile is Profile.REJECT],
            connector,
            fs=fs,
            clock=self.clock,
            probe_fn=self._probes.get(device.profile, self._default_probe),
        )

    def _activate(self, device: _Device, now: float) -> None:
        profile = device.profile
        if profile is Profile.OFFLINE:
            return
        if now < device.ready_at:
            self._schedule(device, device.ready_at)
            return
        if profile is Profile.SLOW and not device.slow_armed:
            device.slow_armed = True
            device.ready_at = now + self._rng.uniform(*self.timing.slow)
            self._schedule(device, device.ready_at)
            return
        device.slow_armed = False
        fs = self._fs
        if profile is Profile.POWER_CUT and device.cuts == 0:
            fs = CrashingFileOps(crash_at=self._rng.randrange(CUT_POINTS), inner=self._fs)
        self._active = device.name
        try:
            agent = self._agent(device, fs)
            for _ in range(MAX_POLLS):
                outcome = agent.poll()
                self.outcomes[outcome.status] += 1
                if device.first_job_at is None and outcome.status not in _DONE:
                    device.first_job_at = now
                if outcome.status in _DONE:
                    break
        except PowerCut:
            device.cuts += 1
            if device.first_job_at is None:
                device.first_job_at = now
            device.ready_at = now + self._rng.uniform(*self.timing.reboot)
            self._schedule(device, device.ready_at)
            self.outcomes["POWER_CUT"] += 1
        except DeviceHandlerError as exc:
            log.warning("device_error", thing=device.name, error=str(exc))
            self.outcomes["ERROR"] += 1
        finally:
            self._active = None

    # ------------------------------------------------------------------ results
    def things(self) -> Iterable[str]:
        return self._devices.keys()

    def profile(self, thing: str) -> Profile:
        return self._devices[thing].profile

    def view(self, thing: str) -> DeviceView:
        device = self._devices[thing]
        return DeviceView(
            thing_name=thing,
            profile=device.profile,
            paths=self.paths(thing),
            first_job_at=device.first_job_at,
            power_cuts=device.cuts,
        )

    def endpoint_of(self, thing: str) -> str:
        """The host in the device's live endpoint file (factory default before first boot)."""
        path = self.paths(thing).endpoint_file
        try:
            return EndpointConfig.parse(path.read_bytes(), source=str(path)).host
        except FileNotFoundError:
            return self.legacy.host

    def endpoint_counts(self) -> dict[str, int]:
        """Devices per live endpoint: "legacy", "ats", or the host when it is neither."""
        counts: Counter[str] = Counter()
        for thing in self._devices:
            host = self.endpoint_of(thing)
            counts[self._vias.get(host, host)] += 1
        return dict(counts)

    def exposed(self, before: float | None = None) -> int:
        """Devices that received a job (at or before `before`, simulated epoch seconds)."""
        return sum(
            1
            for d in self._devices.values()
            if d.first_job_at is not None and (before is None or d.first_job_at <= before)
        )

    def profile_counts(self) -> dict[str, int]:
        return dict(Counter(d.profile.value for d in self._devices.values()))
