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
- a device acts on its news only after its arrival delay, and its
  transaction's terminal report waits until the transaction's duration is up
  (`FleetTiming.arrival`, `.transaction`: per device, from the seed and its
  name); profiles that wait (late, slow, a rebooting power-cut device) add
  their own delays. Each wait is a timer on the simulated clock, on the grid of
  `FleetTiming.resolution`; `next_wakeup()` tells the driver when to move the
  clock next. Nothing sleeps in real time.
- every activation runs as a greenlet: a device whose transaction is still
  running parks there (`_sleeping`) and resumes when its timer falls due, in
  this process or in a `ShardedFleet` worker alike (`runner`).

Invariants:
- Per-device memory is one small slotted object; an `Agent` exists only while
  its device runs. A device's files are created when it first boots.
- A device is polled at most `MAX_POLLS` times per activation, and
  `run_due()` processes at most `max_activations` activations per call.
- Thread-safe where it must be: the subscriber callback may run on any
  thread (HTTP front end, scheduler); `run_due()` runs on one thread.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import math
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, Self

import greenlet
import structlog

from device_handler.agent import Agent, AgentSettings
from device_handler.channel import Connector
from device_handler.errors import DeviceHandlerError, PowerCut
from device_handler.fsops import FileOps, RealFileOps, StrPath
from device_handler.job_statuses import DEVICE_STATUSES
from device_handler.memory import ExecutionView, JobsBackend, MemoryConnector
from device_handler.probe import ProbeResult
from device_handler.simulation import CrashingFileOps, NoSyncFileOps
from device_handler.trust import EndpointConfig
from infra.sandbox import decisions as d
from infra.sandbox.fleet._base import (
    FleetBase,
    FleetTiming,
    Hung,
    _Device,
    hanging_probe,
)
from infra.sandbox.fleet.device_client import DeviceClientDevice
from infra.sandbox.fleet.profiles import Profile
from infra.sandbox.fleet.simtls import SimulatedTls
from infra.sandbox.pki import SandboxPki
from job_documents.clock import Clock

__all__ = ["CUT_POINTS", "FleetEngine", "MemoryFleet"]

log = structlog.get_logger(__name__)

MAX_POLLS: Final = 8
# A migrate transaction makes 34 mutating file operations (every one a power-cut point);
# a power-cut device loses power before one of them, drawn uniformly.
CUT_POINTS: Final = 34
_DONE: Final = frozenset({"NONE", "SKIPPED"})
# The reports that end a device's transaction: held back until its duration is up.
_FINAL_REPORTS: Final = DEVICE_STATUSES - {"IN_PROGRESS"}


class FleetEngine(JobsBackend[ExecutionView], Protocol):
    """What a memory fleet needs of the Jobs engine: its clock, its news, the data plane.

    `JobsEngine` is one; a worker of `ShardedFleet` has a stand-in that relays the
    two data-plane calls to the engine in the parent process.
    """

    @property
    def clock(self) -> Clock: ...

    def subscribe(self, callback: Callable[[str], None]) -> None: ...


class MemoryFleet(FleetBase):
    """Simulated devices running the real transaction against a `JobsEngine`."""

    def __init__(
        self,
        engine: FleetEngine,
        pki: SandboxPki,
        profiles: Mapping[str, Profile],
        *,
        root: Path | None = None,
        seed: int = 7,
        timing: FleetTiming | None = None,
        durable: bool = True,
        share_validation: bool = True,
        device_client_things: frozenset[str] = frozenset(),
        broker_overrides: Mapping[str, str] | None = None,
        verify_key: Path | None = None,
    ) -> None:
        """A fleet of `profiles`' devices; `device_client_things` run AWS IoT Device Client.

        Those run the real handler (`DeviceClientDevice`), whose probe needs the sandbox's
        brokers: `broker_overrides` (host:port -> 127.0.0.1:port) reach them.
        """
        if device_client_things and broker_overrides is None:
            raise ValueError("Device Client devices need the sandbox's brokers (broker_overrides)")
        super().__init__(
            pki,
            profiles,
            clock=engine.clock,
            root=root,
            seed=seed,
            timing=timing,
            share_validation=share_validation,
            verify_key=verify_key,
        )
        self.engine = engine
        self._fs: FileOps = RealFileOps() if durable else NoSyncFileOps()
        self.tls = SimulatedTls.from_pki(pki)
        unreachable = frozenset({pki.hosts["ats"]})
        self._probes: dict[Profile, Callable[..., ProbeResult]] = {
            Profile.HANG: hanging_probe,
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
        self._sleeping: dict[str, greenlet.greenlet] = {}  # transactions waiting for their time
        self._origin = self._now()  # where the timer grid starts
        self._seq = itertools.count()
        self._active: str | None = None
        self._runner: int | None = None
        self._started = False
        self.outcomes: Counter[str] = Counter()
        self._device_clients = {
            name: DeviceClientDevice(
                name,
                self.root / name,
                pki,
                overrides=broker_overrides or {},
                verify_key=verify_key,
            )
            for name in device_client_things
        }

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Subscribe to the engine and set the first-connect timers of late devices."""
        if self._started:
            return self
        self._started = True
        now = self._now()
        for device in self._devices.values():
            if device.profile is Profile.LATE:
                device.ready_at = self._after(device, now, self.timing.late)
                self._schedule(device, device.ready_at)
        self.engine.subscribe(self._on_change)
        log.info("fleet_started", devices=len(self._devices), root=str(self.root))
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """End the transactions still waiting for their time (unwound here), then the files."""
        sleeping, self._sleeping = self._sleeping, {}
        for waiting in sleeping.values():
            with contextlib.suppress(greenlet.error):  # made on another thread: left to the GC
                waiting.throw(greenlet.GreenletExit)
        super().close()

    # ------------------------------------------------------------------ events
    def _on_change(self, thing: str) -> None:
        if thing == self._active and threading.get_ident() == self._runner:
            return  # the device's own update: it keeps polling until it is idle anyway
        if thing not in self._devices:
            return
        with self._news_lock:
            if thing not in self._news_set:
                self._news_set.add(thing)
                self._news.append(thing)

    def notify(self, things: Iterable[str]) -> None:
        """Mark `things` as having news (as the engine's callback does)."""
        for thing in things:
            self._on_change(thing)

    def _after(self, device: _Device, now: float, span: tuple[float, float]) -> float:
        """When a delay drawn from `span` (simulated seconds) ends, on the timer grid."""
        return self.timing.on_grid(now + self._random(device).uniform(*span), self._origin)

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

    def _wake_due_timers(self) -> None:
        now = self._now()
        while self._timers and self._timers[0][0] <= now:
            _, _, name = heapq.heappop(self._timers)
            device = self._devices[name]
            if device.timer_at <= now:
                device.timer_at = -1.0
            self._on_change(name)

    def run_due(self, max_activations: int | None = None) -> int:
        """Let every device with news, or whose timer is due, act; returns activations run."""
        self._runner = threading.get_ident()
        limit = max_activations if max_activations is not None else 20 * len(self._devices) + 100
        self._wake_due_timers()
        done = 0
        while done < limit:
            with self._news_lock:
                if not self._news:
                    break
                name = self._news.popleft()
                self._news_set.discard(name)
            runner = self.runner(name)
            if runner is not None:
                self._active = name
                try:
                    runner.switch()
                finally:
                    self._active = None
            done += 1
        return done

    def take_due(self) -> list[str]:
        """The devices with news or a due timer, now marked as handled; `activate` each one.

        For a driver that runs devices concurrently (a `ShardedFleet` worker); news
        that arrives while they run waits for the next call.
        """
        self._wake_due_timers()
        with self._news_lock:
            names = list(self._news)
            self._news.clear()
            self._news_set.clear()
        return names

    def runner(self, thing: str) -> greenlet.greenlet | None:
        """The greenlet that lets `thing` act now (switch to it), or None when it must wait.

        Its transaction waiting for its time, resumed; else a new activation. The
        greenlet comes back to the caller's when it ends or parks again: the caller
        is its parent. See `take_due`.
        """
        device = self._devices[thing]
        now = self._now()
        waiting = self._sleeping.get(thing)
        if waiting is None:
            return greenlet.greenlet(functools.partial(self._activate, device, now))
        if now < device.ready_at:
            self._schedule(device, device.ready_at)
            return None
        del self._sleeping[thing]
        waiting.parent = greenlet.getcurrent()
        return waiting

    def _wait_until(self, device: _Device, when: float) -> None:
        """Park the running device (a greenlet of `runner`) until simulated time `when`."""
        here = greenlet.getcurrent()
        hub = here.parent
        if hub is None:
            raise RuntimeError("a simulated device waits only inside a greenlet of `runner`")
        device.ready_at = when
        self._schedule(device, when)
        self._sleeping[device.name] = here
        hub.switch()

    def _report_when_due(self, device: _Device) -> None:
        """A terminal report: wait until the device's transaction has taken its time."""
        if self._now() < device.finish_at:
            self._wait_until(device, device.finish_at)

    # ------------------------------------------------------------------ devices
    def _agent(self, device: _Device, fs: FileOps) -> Agent:
        paths = self._boot(device)
        check: Callable[[EndpointConfig, StrPath], None] = self._checks.get(
            device.profile, self._default_check
        )
        connector: Connector = MemoryConnector(
            _TimedBackend(self, device), device.name, vias=self._vias, check=check
        )
        settings = AgentSettings(
            thing_name=device.name, paths=paths, dead_man_seconds=0.05, connect_timeout=1.0
        )
        return Agent(
            settings,
            self.validator(device.profile),
            connector,
            fs=fs,
            clock=self.clock,
            probe_fn=self._probes.get(device.profile, self._default_probe),
        )

    def _activate(self, device: _Device, now: float) -> None:
        if self._waits(device, now):
            return
        if device.name in self._device_clients:
            self._activate_device_client(device)
            return
        fs = self._fs
        if device.profile is Profile.POWER_CUT and device.cuts == 0:
            crash_at = self._random(device).randrange(CUT_POINTS)
            fs = CrashingFileOps(crash_at=crash_at, inner=self._fs)
        try:
            self._transactions(device, self._agent(device, fs))
        except Hung:
            device.ready_at = math.inf  # silent for good: its executions time out
            if device.first_job_at is None:
                device.first_job_at = now
            self.outcomes["HUNG"] += 1
        except PowerCut:
            device.cuts += 1
            device.rebooting = True
            if device.first_job_at is None:
                device.first_job_at = now
            # from the cut, which may come after the transaction waited for its time
            device.ready_at = self._after(device, self._now(), self.timing.reboot)
            self._schedule(device, device.ready_at)
            self.outcomes["POWER_CUT"] += 1
        except DeviceHandlerError as exc:
            log.warning("device_error", thing=device.name, error=str(exc))
            self.outcomes["ERROR"] += 1

    def _waits(self, device: _Device, now: float) -> bool:
        """Whether `device` does not act now: offline, silent, or not due yet (timer set)."""
        if device.profile is Profile.OFFLINE or device.ready_at == math.inf:
            return True
        if now < device.ready_at:
            self._schedule(device, device.ready_at)
            return True
        if not device.noticed and not device.rebooting:
            # It notices its news after its arrival delay (a slow device waits longer).
            delay = self._timing(device)[0]
            if device.profile is Profile.SLOW:
                delay += self._random(device).uniform(*self.timing.slow)
            if delay > 0:
                device.noticed = True
                device.ready_at = self.timing.on_grid(now + delay, self._origin)
                self._schedule(device, device.ready_at)
                return True
        device.noticed = False
        return False

    def _transactions(self, device: _Device, agent: Agent) -> None:
        """Recover after a power cut, then take jobs until none is left (or MAX_POLLS)."""
        if device.rebooting:
            device.rebooting = False
            outcome = agent.recover()
            self.outcomes[f"RECOVERED_{outcome.status}"] += 1
        duration = self._timing(device)[1]
        for _ in range(MAX_POLLS):
            start = self._now()
            device.finish_at = self.timing.on_grid(start + duration, self._origin)
            outcome = agent.poll()
            self.outcomes[outcome.status] += 1
            if device.first_job_at is None and outcome.status not in _DONE:
                device.first_job_at = start
            if outcome.status in _DONE:
                break

    def _activate_device_client(self, device: _Device) -> None:
        """A Device Client device takes its jobs; after a success, Device Client restarts."""
        client = self._device_clients[device.name]
        self._boot(device)
        backend = _TimedBackend(self, device)
        duration = self._timing(device)[1]
        try:
            for _ in range(MAX_POLLS):
                start = self._now()
                device.finish_at = self.timing.on_grid(start + duration, self._origin)
                status = client.run_next(backend)
                self.outcomes[status] += 1
                if status == "NONE":
                    break
                if device.first_job_at is None:
                    device.first_job_at = start
                if status == "SUCCEEDED" and d.DEVICE_CLIENT_RESTARTS_AFTER_SUCCESS:
                    client.restart()
        except DeviceHandlerError as exc:
            log.warning("device_error", thing=device.name, error=str(exc))
            self.outcomes["ERROR"] += 1

    def device_client_things(self) -> frozenset[str]:
        """The devices that run AWS IoT Device Client."""
        return frozenset(self._device_clients)

    def device_client(self, thing: str) -> DeviceClientDevice:
        """The Device Client of device `thing` (KeyError when it runs the agent)."""
        return self._device_clients[thing]


class _TimedBackend:
    """One device's view of the engine: its final report waits for its transaction's time.

    Every other call goes straight through. The device is exposed from its first
    update (it accepted, or refused, a job), when it starts, not when it reports.
    """

    __slots__ = ("_device", "_fleet")

    def __init__(self, fleet: MemoryFleet, device: _Device) -> None:
        self._fleet = fleet
        self._device = device

    def describe_execution(
        self, thing_name: str, job_id: str, *, execution_number: int | None
    ) -> ExecutionView:
        return self._fleet.engine.describe_execution(
            thing_name, job_id, execution_number=execution_number
        )

    def update_execution(self, thing_name: str, job_id: str, **fields: Any) -> ExecutionView:
        device = self._device
        if device.first_job_at is None:
            device.first_job_at = self._fleet._now()  # noqa: SLF001 - the fleet's own helper
        if fields.get("status") in _FINAL_REPORTS:
            self._fleet._report_when_due(device)  # noqa: SLF001 - the fleet's own helper
        return self._fleet.engine.update_execution(thing_name, job_id, **fields)
