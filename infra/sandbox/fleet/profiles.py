"""Fault profiles and fleet descriptions: which simulated device behaves how.

A fleet description names thing groups, their sizes and the share of each
group that follows each fault profile (the rest is `ok`). It is what
`ca-migrate rehearse --fleet FLEET.yaml` reads and what the demo scenarios
are written in::

    seed: 7
    groups:
      - name: canary
        size: 50
        profiles: {probe_fails: 0.3}
      - name: fleet-a
        size: 950
        profiles: {offline: 0.05, late: 0.05, power_cut: 0.01}
      - name: gateways
        size: 20
        runtime: device-client     # AWS IoT Device Client runs the real handler script
        profiles: {offline: 0.05}
    timing:                        # optional; simulated seconds, [low, high]
      arrival_seconds: [1, 120]    # notification to acting on it
      transaction_seconds: [5, 60] # start of a transaction to its report

`timing` overrides `FleetTiming`'s defaults key by key (`late_seconds`,
`slow_seconds`, `reboot_seconds`, `resolution_seconds` too); `[0, 0]` makes
devices act at once.

Invariants:
- Assignment is deterministic for a given description and seed: the same
  devices get the same profiles on every run, so a rehearsal is repeatable.
- Within a group the counts per profile are the shares rounded by largest
  remainder (they add up to the group size exactly), and the faulty devices
  are spread through the group (shuffled), not bunched at its end, so a paced
  rollout meets them at the rate it would in the field.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from infra.sandbox.errors import SandboxError
from infra.sandbox.fleet.timing import FleetTiming

__all__ = [
    "DEVICE_CLIENT_PROFILES",
    "FleetSpec",
    "FleetSpecError",
    "GroupSpec",
    "Profile",
    "assign_profiles",
    "device_client_things",
    "load_fleet_spec",
    "parse_fleet_spec",
]


class Profile(StrEnum):
    """How one simulated device behaves; see docs/demo.md for each one's effect."""

    OK = "ok"  # does the transaction as designed
    OFFLINE = "offline"  # never connects: its executions stay QUEUED
    LATE = "late"  # connects for the first time some minutes after the fleet starts
    TLS_NO_ECC = "tls_no_ecc"  # its TLS stack cannot use ECC roots
    PROBE_FAILS = "probe_fails"  # the new endpoint is unreachable from where it sits
    REJECT = "reject"  # its firmware pins the roots it accepts: it refuses the document
    POWER_CUT = "power_cut"  # loses power at a random step of its first transaction
    SLOW = "slow"  # takes minutes before it acts on each job
    HANG = "hang"  # its probe never returns: it goes silent mid-transaction, the job times out


#: The profiles a Device Client device can follow: its timing (the handler's own
#: transaction is real, with its real probe, so the network faults are not simulated there).
DEVICE_CLIENT_PROFILES: frozenset[Profile] = frozenset(
    {Profile.OK, Profile.OFFLINE, Profile.LATE, Profile.SLOW}
)


class FleetSpecError(SandboxError):
    """A fleet description cannot be used; the message says what to change."""


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """One thing group of a described fleet."""

    name: str
    size: int
    profiles: Mapping[Profile, float] = field(default_factory=dict)
    runtime: str = "agent"  # or "device-client"


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """A described fleet: its groups in order, and the seed of the profile assignment."""

    groups: tuple[GroupSpec, ...]
    seed: int = 7
    timing: FleetTiming = field(default_factory=FleetTiming)
    #: The document-signing public key every agent device pins (its `signing_public_key`):
    #: such devices take only documents that key signed. None: signatures are not required.
    signing_public_key: Path | None = None

    @property
    def size(self) -> int:
        return sum(g.size for g in self.groups)

    def group(self, name: str) -> GroupSpec:
        for group in self.groups:
            if group.name == name:
                return group
        known = ", ".join(g.name for g in self.groups)
        raise FleetSpecError(f"the fleet has no group {name!r}; it has: {known}")


Share = Annotated[float, Field(ge=0.0, le=1.0)]
# A delay span in simulated seconds: [low, high], at most a week.
Seconds = Annotated[float, Field(ge=0.0, le=7 * 86400.0, allow_inf_nan=False)]
SpanModel = tuple[Seconds, Seconds]


class _GroupModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-zA-Z0-9:_-]{1,128}$")
    size: int = Field(ge=0, le=1_000_000)
    profiles: dict[Profile, Share] = Field(default_factory=dict)
    runtime: Literal["agent", "device-client"] = "agent"

    @model_validator(mode="after")
    def _shares(self) -> _GroupModel:
        if self.runtime == "device-client":
            other = sorted(
                p.value for p, s in self.profiles.items() if s and p not in DEVICE_CLIENT_PROFILES
            )
            if other:
                raise ValueError(
                    f"Device Client devices follow only the profiles "
                    f"{', '.join(sorted(p.value for p in DEVICE_CLIENT_PROFILES))}; "
                    f"remove {', '.join(other)} from this group"
                )
        total = sum(self.profiles.values())
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"profile shares add up to {total:g}; they must add up to 1 or less "
                "(the rest of the group is 'ok')"
            )
        return self


class _TimingModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    arrival_seconds: SpanModel | None = None
    transaction_seconds: SpanModel | None = None
    late_seconds: SpanModel | None = None
    slow_seconds: SpanModel | None = None
    reboot_seconds: SpanModel | None = None
    resolution_seconds: Annotated[float, Field(ge=0.0, le=3600.0, allow_inf_nan=False)] | None = (
        None
    )

    @model_validator(mode="after")
    def _ordered(self) -> _TimingModel:
        for name in type(self).model_fields:
            span = getattr(self, name)
            if isinstance(span, tuple) and span[0] > span[1]:
                raise ValueError(f"{name} is [low, high]: {span[0]:g} is above {span[1]:g}")
        return self

    def timing(self) -> FleetTiming:
        defaults = FleetTiming()
        return FleetTiming(
            arrival=self.arrival_seconds or defaults.arrival,
            transaction=self.transaction_seconds or defaults.transaction,
            late=self.late_seconds or defaults.late,
            slow=self.slow_seconds or defaults.slow,
            reboot=self.reboot_seconds or defaults.reboot,
            resolution=(
                defaults.resolution if self.resolution_seconds is None else self.resolution_seconds
            ),
        )


class _FleetModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 7
    groups: list[_GroupModel] = Field(min_length=1, max_length=1000)
    timing: _TimingModel = Field(default_factory=_TimingModel)


def parse_fleet_spec(data: Any, source: str = "<fleet>") -> FleetSpec:
    """Validate a fleet description given as plain data (parsed YAML or JSON)."""
    try:
        model = _FleetModel.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise FleetSpecError(
            f"{source}: {problems}. A fleet file is `groups: [{{name, size, runtime?, profiles: "
            f"{{PROFILE: SHARE}}}}]` with profiles among {', '.join(p.value for p in Profile)}, "
            "and an optional `timing: {arrival_seconds: [LOW, HIGH], ...}` (docs/demo.md)"
        ) from exc
    names = [g.name for g in model.groups]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise FleetSpecError(f"{source}: group {', '.join(twice)} is listed twice; list it once")
    return FleetSpec(
        groups=tuple(
            GroupSpec(name=g.name, size=g.size, profiles=dict(g.profiles), runtime=g.runtime)
            for g in model.groups
        ),
        seed=model.seed,
        timing=model.timing.timing(),
    )


def load_fleet_spec(path: Path) -> FleetSpec:
    """Read and validate a fleet description file (YAML)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FleetSpecError(f"cannot read the fleet file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise FleetSpecError(f"{path} is not valid YAML: {exc}") from exc
    return parse_fleet_spec(data, str(path))


def _counts(size: int, shares: Mapping[Profile, float]) -> dict[Profile, int]:
    """Devices per profile: shares of `size` rounded by largest remainder; `ok` takes the rest."""
    full: dict[Profile, float] = {p: s for p, s in shares.items() if p is not Profile.OK and s > 0}
    full[Profile.OK] = max(0.0, 1.0 - sum(full.values()))
    exact = {p: size * s for p, s in full.items()}
    counts: dict[Profile, int] = {p: math.floor(v + 1e-9) for p, v in exact.items()}
    order = sorted(exact, key=lambda p: (-(exact[p] - counts[p]), p.value))
    for profile in order[: max(0, size - sum(counts.values()))]:
        counts[profile] += 1
    return counts


def assign_profiles(spec: FleetSpec, members: Mapping[str, Sequence[str]]) -> dict[str, Profile]:
    """Each thing's profile, given the thing names of each group (deterministic for the seed)."""
    rng = random.Random(spec.seed)  # noqa: S311 - a simulation's repeatable draw
    out: dict[str, Profile] = {}
    for group in spec.groups:
        names = list(members.get(group.name, ()))
        if len(names) != group.size:
            raise FleetSpecError(
                f"group {group.name} has {len(names)} things but the fleet says {group.size}"
            )
        profiles: list[Profile] = []
        for profile, count in _counts(group.size, group.profiles).items():
            profiles.extend([profile] * count)
        rng.shuffle(profiles)
        out.update(zip(names, profiles, strict=True))
    return out


def device_client_things(spec: FleetSpec, members: Mapping[str, Sequence[str]]) -> frozenset[str]:
    """The things of the groups whose devices run AWS IoT Device Client."""
    return frozenset(
        thing
        for group in spec.groups
        if group.runtime == "device-client"
        for thing in members.get(group.name, ())
    )
