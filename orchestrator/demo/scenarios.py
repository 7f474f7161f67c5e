"""The demo's scenarios: a fleet shape, its fault profiles, and what the run should show.

Each scenario describes the fleet as a `FleetSpec` over the groups of its
bundled campaign (`campaign.yaml` beside this module; `multi_region.yaml` for the
campaign over two regions; `real_fleet.yaml` for the one with every real-fleet
feature) for any number of devices, plus control-plane
faults and whether the operator rolls back once the campaign halts. `expected`
is the final campaign status the scenario is built to reach; the demo reports
whether it did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infra.sandbox.fleet import FleetSpec, GroupSpec, Profile
from infra.sandbox.fleet.device_client import LAYOUT
from orchestrator.errors import UsageError

__all__ = [
    "CAMPAIGN_FILE",
    "GROUPS",
    "MULTI_REGION_FILE",
    "MULTI_REGION_GROUPS",
    "REAL_FLEET_FILE",
    "REAL_FLEET_GROUPS",
    "SCENARIOS",
    "Scenario",
    "campaign_text",
    "demo_fleet",
    "group_sizes",
    "scenario",
]

CAMPAIGN_FILE = Path(__file__).resolve().parent / "campaign.yaml"
MULTI_REGION_FILE = Path(__file__).resolve().parent / "multi_region.yaml"
REAL_FLEET_FILE = Path(__file__).resolve().parent / "real_fleet.yaml"

GROUPS: tuple[tuple[str, float], ...] = (
    ("demo-canary", 0.02),
    ("demo-wave-1", 0.10),
    ("demo-wave-2", 0.20),
    ("demo-wave-3", 0.30),
    ("demo-wave-4", 0.0),  # the rest
)
"""The bundled campaign's groups: the canary's share of the fleet, then shares of the rest."""

MULTI_REGION_GROUPS: tuple[tuple[str, float], ...] = (
    ("demo-eu-canary", 0.05),  # eu-west-1, the canary region
    ("demo-eu-fleet", 0.40),  # eu-west-1
    ("demo-us-fleet", 0.0),  # us-east-1: the rest
)
"""The multi-region campaign's groups (their regions are the waves' in multi_region.yaml)."""

REAL_FLEET_GROUPS: tuple[tuple[str, float], ...] = (
    ("demo-eu-canary", 0.05),  # eu-west-1, the canary region
    ("demo-eu-gateways", 0.01),  # eu-west-1, AWS IoT Device Client
    ("demo-us-gateways", 0.01),  # us-east-1, AWS IoT Device Client
    ("demo-us-fleet", 0.0),  # us-east-1: the rest
)
"""The real-fleet campaign's groups (regions and runtimes are the waves' in real_fleet.yaml)."""

MIN_WAVE = 5
MIN_DEVICES = 50


def group_sizes(devices: int, groups: tuple[tuple[str, float], ...] = GROUPS) -> dict[str, int]:
    """How many of `devices` go in each group of a bundled campaign (at least 5 in each).

    Five is what the demo gates need to judge a wave at their confidence.
    """
    if devices < MIN_DEVICES:
        raise UsageError(
            f"--devices must be at least {MIN_DEVICES}: each demo wave needs "
            f"{MIN_WAVE} devices for its gate to judge it"
        )
    canary = max(MIN_WAVE, round(devices * groups[0][1]))
    rest = devices - canary
    sizes = {groups[0][0]: canary}
    used = 0
    for name, share in groups[1:-1]:
        sizes[name] = max(MIN_WAVE, round(rest * share))
        used += sizes[name]
    sizes[groups[-1][0]] = rest - used
    return sizes


@dataclass(frozen=True, slots=True)
class Scenario:
    """One demo run's fleet and faults, and the outcome it is built to show."""

    name: str
    description: str
    canary: Mapping[Profile, float]
    rest: Mapping[Profile, float]
    expected: str
    throttle_rate: float = 0.0
    rollback: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)
    device_clients: int = 0  # devices of an extra wave that run AWS IoT Device Client
    campaign: Path = CAMPAIGN_FILE
    groups: tuple[tuple[str, float], ...] = GROUPS
    # groups of `groups` whose devices run AWS IoT Device Client (no fault profiles)
    device_client_groups: frozenset[str] = frozenset()
    # documents signed with the demo's key, which every device pins (as `--signed`)
    signed: bool = False


_BENIGN: Mapping[Profile, float] = {
    Profile.LATE: 0.04,
    Profile.SLOW: 0.04,
    Profile.POWER_CUT: 0.05,
    Profile.TLS_NO_ECC: 0.04,
}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="happy",
            description="late, slow, power-cut and RSA-only devices all recover: every wave "
            "promotes and every device ends on the ATS endpoint",
            canary=_BENIGN,
            rest=_BENIGN,
            expected="COMPLETED",
        ),
        Scenario(
            name="bad-canary",
            description="30% of the canary cannot reach the new endpoint: the gate halts the "
            "campaign before wave-1, and the failed devices roll back by themselves",
            canary={Profile.PROBE_FAILS: 0.3},
            rest={},
            expected="HALTED",
        ),
        Scenario(
            name="offline",
            description="8% of every group never connects and 5% connects late: at each wave's "
            "deadline the stragglers are left out of the gate and the campaign completes",
            canary={Profile.OFFLINE: 0.08, Profile.LATE: 0.05},
            rest={Profile.OFFLINE: 0.08, Profile.LATE: 0.05},
            expected="COMPLETED",
        ),
        Scenario(
            name="throttled",
            description="20% of control-plane calls are throttled: retries absorb it and the "
            "outcome is the happy one",
            canary=_BENIGN,
            rest=_BENIGN,
            expected="COMPLETED",
            throttle_rate=0.2,
        ),
        Scenario(
            name="device-client",
            description="a last wave of devices that run AWS IoT Device Client beside the agent "
            "waves: each takes the runHandler document, runs the real handler script, and "
            "reconnects on the ATS endpoint once Device Client restarts",
            canary=_BENIGN,
            rest={},
            expected="COMPLETED",
            device_clients=MIN_WAVE,
        ),
        Scenario(
            name="rollback",
            description="the canary halts (30% cannot reach the new endpoint) and the operator "
            "rolls back: restore jobs return every device to the legacy endpoint",
            canary={Profile.PROBE_FAILS: 0.3},
            rest={},
            expected="ROLLED_BACK",
            rollback=True,
        ),
        Scenario(
            name="multi-region",
            description="one campaign over two regions of one sandbox: the canary region "
            "(eu-west-1) migrates first, then us-east-1, each wave to its own region's ATS "
            "endpoint",
            canary=_BENIGN,
            rest=_BENIGN,
            expected="COMPLETED",
            campaign=MULTI_REGION_FILE,
            groups=MULTI_REGION_GROUPS,
        ),
        Scenario(
            name="real-fleet",
            description="every real-fleet feature in one campaign: signed documents every "
            "device verifies, port 443 with ALPN, two regions (eu-west-1 first), and in each "
            "a wave of agents and a wave of AWS IoT Device Client devices",
            canary=_BENIGN,
            rest=_BENIGN,
            expected="COMPLETED",
            campaign=REAL_FLEET_FILE,
            groups=REAL_FLEET_GROUPS,
            device_client_groups=frozenset({"demo-eu-gateways", "demo-us-gateways"}),
            signed=True,
        ),
    )
}


def scenario(name: str) -> Scenario:
    """The scenario called `name`, or a `UsageError` listing the known ones."""
    found = SCENARIOS.get(name)
    if found is None:
        raise UsageError(f"unknown scenario {name!r}; use one of: {', '.join(SCENARIOS)}")
    return found


DEVICE_CLIENT_GROUP = "demo-device-client"

#: The wave the device-client scenario adds: the simulated devices' layout (the sample's paths).
_DEVICE_CLIENT_WAVE = """\
  - name: device-client
    thing_groups: [{group}]
    device_runtime: device-client
    device_client:
      handler_path: {handler_path}
      device_toml: {device_toml}
      config_path: {config_path}
    gate: {{min_success_rate: 0.5, min_completed_fraction: 0.95, confidence: 0.8}}
    deadline_minutes: 60
"""


def campaign_text(chosen: Scenario) -> str:
    """The scenario's campaign, with its Device Client wave last when it has one."""
    text = chosen.campaign.read_text(encoding="utf-8")
    if not chosen.device_clients:
        return text
    return (
        text.rstrip("\n") + "\n" + _DEVICE_CLIENT_WAVE.format(group=DEVICE_CLIENT_GROUP, **LAYOUT)
    )


def demo_fleet(chosen: Scenario, devices: int, seed: int = 7) -> FleetSpec:
    """The scenario's fleet over its bundled campaign's groups.

    A scenario's Device Client devices are taken from the last group, so `devices` is
    still the whole fleet.
    """
    sizes = group_sizes(devices, chosen.groups)
    last = chosen.groups[-1][0]
    sizes[last] -= chosen.device_clients
    if sizes[last] < MIN_WAVE:
        raise UsageError(
            f"--devices is too small for the {chosen.name} scenario: give at least "
            f"{devices + MIN_WAVE - sizes[last]}"
        )
    groups = tuple(
        GroupSpec(name=name, size=size, runtime="device-client")
        if name in chosen.device_client_groups
        else GroupSpec(
            name=name,
            size=size,
            profiles=dict(chosen.canary if name == chosen.groups[0][0] else chosen.rest),
        )
        for name, size in sizes.items()
    )
    if chosen.device_clients:
        groups += (
            GroupSpec(
                name=DEVICE_CLIENT_GROUP, size=chosen.device_clients, runtime="device-client"
            ),
        )
    return FleetSpec(groups=groups, seed=seed)
