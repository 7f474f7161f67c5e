"""The simulated fleet: devices that run the real device transaction against the sandbox.

`MemoryFleet` runs thousands of devices in one process on the in-memory
channel and a simulated clock; `MqttFleet` runs hundreds over MQTT/TLS with the
AWS IoT Device SDK against the sandbox's brokers. A memory fleet's Device Client
devices (`device_client.py`) run the real handler script as AWS IoT Device Client
would. Both assign fault profiles
(`Profile`) per cohort from a `FleetSpec`. See docs/demo.md.
"""

from __future__ import annotations

from infra.sandbox.fleet._base import DeviceView, FleetTiming, shared_validator
from infra.sandbox.fleet.memory import MemoryFleet
from infra.sandbox.fleet.profiles import (
    DEVICE_CLIENT_PROFILES,
    FleetSpec,
    FleetSpecError,
    GroupSpec,
    Profile,
    assign_profiles,
    device_client_things,
    load_fleet_spec,
    parse_fleet_spec,
)
from infra.sandbox.fleet.sharded import (
    FleetWorkerError,
    ShardedFleet,
    WorkerProcesses,
    simulation_gc,
)
from infra.sandbox.fleet.simtls import SimulatedTls, certificate_fingerprint

__all__ = [
    "DEVICE_CLIENT_PROFILES",
    "DeviceView",
    "FleetSpec",
    "FleetSpecError",
    "FleetTiming",
    "FleetWorkerError",
    "GroupSpec",
    "MemoryFleet",
    "Profile",
    "ShardedFleet",
    "SimulatedTls",
    "WorkerProcesses",
    "assign_profiles",
    "certificate_fingerprint",
    "device_client_things",
    "load_fleet_spec",
    "parse_fleet_spec",
    "shared_validator",
    "simulation_gc",
]
