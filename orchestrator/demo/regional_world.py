"""A run over several regions: one sandbox serving them all, one in-memory fleet per region.

A campaign whose waves name other regions (`region:` on a wave) needs each wave's
thing groups, and their devices, in that wave's region: the sandbox keeps every
region's things, groups and jobs apart, and a device talks only to its own region's
engine and endpoints (its documents name that region's iot:Data-ATS host, which its
region's stand-in TLS answers). `RegionalFleet` puts the regions' fleets behind the
one interface the driver knows.

Invariants:
- A group lives in exactly one region: the region of the waves that target it (two
  waves of different regions naming one group is refused before anything starts).
- Thing names carry their region (`eu-west-1-device-00001`), so the summary and the
  report never show two devices under one name.
- Devices run in this process (no worker processes) and over the memory transport.
- A fleet with Device Client groups gets every region's brokers: their handler's probe
  is a real handshake with its own region's endpoints (`broker_overrides`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import structlog

from infra.sandbox.fleet import FleetSpec, MemoryFleet, assign_profiles, device_client_things
from infra.sandbox.pki import SandboxPki
from infra.sandbox.runtime import Sandbox
from job_documents.clock import ManualClock
from orchestrator.demo.run_types import RunSettings, SimulatedFleet
from orchestrator.demo.worlds import broker_overrides
from orchestrator.errors import SpecError, SpecProblem, UsageError
from orchestrator.model import CampaignSpec

__all__ = ["RegionalFleet", "group_regions", "regional_memory_world"]

log = structlog.get_logger(__name__)


def group_regions(spec: CampaignSpec) -> dict[str, str]:
    """Each thing group's region: that of the waves that target it."""
    found: dict[str, str] = {}
    for wave in spec.waves:
        region = spec.region_of(wave)
        for group in wave.thing_groups:
            if found.setdefault(group, region) != region:
                problem = SpecProblem(
                    f"waves.{wave.name}.thing_groups",
                    f"group {group} is targeted in {found[group]} and in {region}; a "
                    "rehearsal puts each group in one region: name a group per region",
                )
                raise SpecError(spec.name, (problem,))
    return found


class RegionalFleet:
    """The fleets of several regions, driven as one."""

    def __init__(self, fleets: Mapping[str, MemoryFleet]) -> None:
        self.fleets = dict(fleets)

    def start(self) -> Self:
        for fleet in self.fleets.values():
            fleet.start()
        return self

    def close(self) -> None:
        for fleet in self.fleets.values():
            fleet.close()

    def run_due(self) -> int:
        return sum(fleet.run_due() for fleet in self.fleets.values())

    def next_wakeup(self) -> float | None:
        times = [t for t in (f.next_wakeup() for f in self.fleets.values()) if t is not None]
        return min(times) if times else None

    def endpoint_counts(self) -> dict[str, int]:
        """Devices per endpoint host (each region's hosts are its own)."""
        out: dict[str, int] = {}
        for fleet in self.fleets.values():
            for host, count in fleet.endpoint_counts().items():
                out[host] = out.get(host, 0) + count
        return out

    def exposed(self, before: float | None = None) -> int:
        return sum(fleet.exposed(before) for fleet in self.fleets.values())

    def profile_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for fleet in self.fleets.values():
            for profile, count in fleet.profile_counts().items():
                out[profile] = out.get(profile, 0) + count
        return out


def regional_memory_world(
    stack: ExitStack,
    work: Path,
    spec: CampaignSpec,
    fleet: FleetSpec,
    settings: RunSettings,
) -> tuple[Sandbox, SimulatedFleet]:
    """A sandbox serving every region of `spec` on a manual clock, and a fleet per region."""
    if settings.transport != "memory":
        raise UsageError(
            "a campaign over several regions runs on the memory transport only; "
            "drop --transport mqtt"
        )
    where = group_regions(spec)
    regions = tuple(dict.fromkeys((spec.region, *spec.regions)))
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    # Device Client devices run the real handler, whose probe is a real handshake and MQTT
    # CONNECT: they need each region's brokers, which serve the sandbox's own PKI.
    device_clients = any(g.runtime == "device-client" for g in fleet.groups)
    sandbox = Sandbox(
        mqtt=device_clients,
        clock=clock,
        region=regions[0],
        regions=regions[1:],
        work_dir=work / "sandbox",
    ).start()
    stack.callback(sandbox.stop)
    fleets: dict[str, MemoryFleet] = {}
    for region in regions:
        groups = tuple(g for g in fleet.groups if where.get(g.name, spec.region) == region)
        if not groups:
            continue
        part = FleetSpec(groups=groups, seed=fleet.seed, timing=fleet.timing)
        provisioned = sandbox.provision(
            part.size,
            [(g.name, g.size) for g in groups],
            prefix=f"{region}-device",
            region=region,
        )
        # one PKI directory: the same stand-in roots, each region's host names
        pki = SandboxPki.create_or_load(
            sandbox.work_dir / "pki" if sandbox.pki and sandbox.work_dir else work / "pki",
            region=region,
        )
        memory = MemoryFleet(
            sandbox.engine_for(region),
            pki,
            assign_profiles(part, provisioned.groups),
            root=work / "devices" / region,
            seed=fleet.seed,
            timing=fleet.timing,
            durable=settings.durable_device_files,
            verify_key=fleet.signing_public_key,
            device_client_things=device_client_things(part, provisioned.groups),
            broker_overrides=broker_overrides(pki, sandbox.endpoints_for(region)),
        )
        stack.callback(memory.close)
        fleets[region] = memory
    sim = RegionalFleet(fleets).start()
    log.info("regional_fleet_started", devices=fleet.size, regions=list(fleets))
    return sandbox, sim
