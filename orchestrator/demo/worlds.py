"""The worlds a run happens in: a sandbox and a simulated fleet, memory or MQTT."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog

from infra.sandbox.fleet import (
    FleetSpec,
    MemoryFleet,
    ShardedFleet,
    WorkerProcesses,
    assign_profiles,
    device_client_things,
)
from infra.sandbox.pki import SandboxPki
from infra.sandbox.runtime import Sandbox
from job_documents.clock import ManualClock
from orchestrator.demo.run_types import RunSettings, SimulatedFleet
from orchestrator.errors import UsageError

__all__ = [
    "AUTO_WORKERS",
    "AUTO_WORKERS_FROM",
    "broker_overrides",
    "default_work_dir",
    "fleet_workers",
    "memory_world",
    "mqtt_world",
    "removed_when_gone",
]

if TYPE_CHECKING:
    from infra.sandbox.mqtt import Endpoint

log = structlog.get_logger(__name__)

MQTT_TIME_SCALE: Final = 60.0
BOOT_TIMEOUT_SECONDS: Final = 300.0
AUTO_WORKERS_FROM: Final = 5000
# Three: on two cores one worker waiting for the engine's answers leaves its core to another.
AUTO_WORKERS: Final = 3


def default_work_dir() -> Path:
    shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp below it, not a fixed name
    base = str(shm) if shm.is_dir() else None
    return Path(tempfile.mkdtemp(prefix="ca-migrate-run-", dir=base))


# Removes the run directory once its standard input ends: a pipe whose other end only
# this process holds, so the directory goes even when this process is killed (SIGKILL).
# Its own session: a Ctrl-C at the terminal does not reach it before the run has stopped.
_REAPER = 'cat >/dev/null 2>&1; rm -rf -- "$1"'


@contextmanager
def removed_when_gone(work: Path) -> Iterator[None]:
    """`work` is removed when the block ends, or by a watcher if this process dies first."""
    reaper = subprocess.Popen(
        ["/bin/sh", "-c", _REAPER, "sh", str(work)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield
    finally:
        shutil.rmtree(work, ignore_errors=True)
        assert reaper.stdin is not None  # noqa: S101 - stdin=PIPE
        with suppress(OSError):
            reaper.stdin.close()
        with suppress(subprocess.TimeoutExpired):
            reaper.wait(timeout=5)


def fleet_workers(devices: int, requested: int | None) -> int:
    """Worker processes for a memory fleet: as asked, else `AUTO_WORKERS` from 5,000 devices.

    0 runs the devices in this process; below a few thousand devices, starting
    workers costs more than it saves. The default does not follow the machine's
    cores: a rehearsal of the same files must give the same answer everywhere, and
    where the service decides from the order of updates across devices (native
    abort thresholds), that order depends on how many workers run the devices.
    """
    if requested is not None:
        if requested < 0:
            raise UsageError(f"--workers must be 0 or more, not {requested}")
        return requested
    return AUTO_WORKERS if devices >= AUTO_WORKERS_FROM else 0


def broker_overrides(pki: SandboxPki, endpoints: Mapping[str, Endpoint]) -> dict[str, str]:
    """Where a region's endpoints really listen, as device.toml's `[connect_override]` says it.

    The host on 8883 goes to its TLS listener; on 443, to its ALPN listener (the ATS
    endpoint's), so a device told `endpoint_port: 443` probes with the ALPN where AWS
    would serve it.
    """
    overrides: dict[str, str] = {}
    for kind, endpoint in endpoints.items():
        overrides[f"{pki.hosts[kind]}:8883"] = f"127.0.0.1:{endpoint.port}"
        if endpoint.alpn_port:
            overrides[f"{pki.hosts[kind]}:443"] = f"127.0.0.1:{endpoint.alpn_port}"
    return overrides


def memory_world(
    stack: ExitStack,
    work: Path,
    region: str,
    fleet: FleetSpec,
    settings: RunSettings,
    *,
    remove_files: bool,
) -> tuple[Sandbox, SimulatedFleet]:
    """A sandbox on a manual clock and an in-memory fleet on its engine.

    No brokers, unless the fleet has Device Client groups (see below).
    """
    device_clients = any(g.runtime == "device-client" for g in fleet.groups)
    workers = fleet_workers(fleet.size, settings.workers)
    if device_clients and workers:
        raise UsageError(
            "a fleet with Device Client groups runs in one process: give --workers 0 "
            "(their handler runs as a process of its own per job anyway)"
        )
    # Worker interpreters import the device code while this process provisions the things.
    processes = stack.enter_context(WorkerProcesses(workers)) if workers else None
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    # Device Client devices run the real handler, whose probe is a real handshake and MQTT
    # CONNECT: they need the sandbox's brokers (and its PKI, which the brokers serve).
    sandbox = Sandbox(
        mqtt=device_clients, clock=clock, region=region, work_dir=work / "sandbox"
    ).start()
    stack.callback(sandbox.stop)
    pki = sandbox.pki or SandboxPki.create_or_load(work / "pki", region=region)
    provisioned = sandbox.provision(fleet.size, [(g.name, g.size) for g in fleet.groups])
    profiles = assign_profiles(fleet, provisioned.groups)
    sim: MemoryFleet | ShardedFleet
    if workers:
        sharded = ShardedFleet(
            sandbox.engine,
            pki,
            profiles,
            workers=workers,
            root=work / "devices",
            seed=fleet.seed,
            timing=fleet.timing,
            verify_key=fleet.signing_public_key,
            durable=settings.durable_device_files,
            worker_setup=settings.worker_setup,
            processes=processes,
        )
        # the workers remove their own devices' files, in parallel, when the run owns them
        stack.callback(sharded.close, remove_files=remove_files)
        sim = sharded
    else:
        memory = MemoryFleet(
            sandbox.engine,
            pki,
            profiles,
            root=work / "devices",
            seed=fleet.seed,
            timing=fleet.timing,
            verify_key=fleet.signing_public_key,
            durable=settings.durable_device_files,
            device_client_things=device_client_things(fleet, provisioned.groups),
            broker_overrides=broker_overrides(pki, sandbox.endpoints),
        )
        stack.callback(memory.close)
        sim = memory
    sim.start()
    log.info("memory_fleet_started", devices=fleet.size, workers=workers)
    return sandbox, sim


def mqtt_world(
    stack: ExitStack, work: Path, region: str, fleet: FleetSpec, settings: RunSettings
) -> tuple[Sandbox, SimulatedFleet]:
    """A sandbox on a scaled clock with its brokers, and SDK devices connected to them."""
    from infra.sandbox.fleet.mqtt import MqttFleet

    if any(g.runtime == "device-client" for g in fleet.groups):
        raise UsageError(
            "Device Client groups are simulated on the memory transport only: run with "
            "--transport memory (their handler still makes a real TLS handshake and MQTT "
            "CONNECT with the sandbox's brokers)"
        )

    scale = settings.time_scale if settings.time_scale > 0 else MQTT_TIME_SCALE
    sandbox = Sandbox(mqtt=True, time_scale=scale, region=region, work_dir=work / "sandbox")
    sandbox.start()
    stack.callback(sandbox.stop)
    assert sandbox.pki is not None  # noqa: S101 - mqtt=True creates it
    _check_name_resolution(sandbox.pki.hosts["ats"])
    provisioned = sandbox.provision(fleet.size, [(g.name, g.size) for g in fleet.groups])
    sim = MqttFleet(
        sandbox.pki,
        assign_profiles(fleet, provisioned.groups),
        ports={kind: endpoint.port for kind, endpoint in sandbox.endpoints.items()},
        alpn_ports={k: e.alpn_port for k, e in sandbox.endpoints.items() if e.alpn_port},
        credentials=provisioned.credentials,
        clock=sandbox.engine.clock,
        time_scale=scale,
        root=work / "devices",
        seed=fleet.seed,
        timing=fleet.timing,
        verify_key=fleet.signing_public_key,
    )
    stack.callback(sim.close)
    sim.start()
    booted = sim.wait_booted(BOOT_TIMEOUT_SECONDS)
    log.info("mqtt_fleet_booted", devices=booted)
    return sandbox, sim


def _check_name_resolution(host: str) -> None:
    try:
        addresses = {a[4][0] for a in socket.getaddrinfo(host, 8883)}
    except OSError:
        addresses = set()
    if "127.0.0.1" not in addresses:
        raise UsageError(
            f"{host} does not resolve to 127.0.0.1 in this process, so the AWS IoT Device SDK "
            "cannot reach the sandbox; run through `make demo` or `source scripts/env.sh` first "
            "(it preloads libnss_wrapper with infra/sandbox/data/hosts)"
        )
