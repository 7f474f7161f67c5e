"""The thing groups a wave targets, and the ones the campaign makes for it (pure).

A wave names thing groups, a fleet-indexing `query`, a stratified `sample`, or
groups with one of the others. For a query the campaign creates a dynamic thing
group; for a sample, a static group it fills with the sampled devices. Both are
named deterministically from the campaign and the wave (`ca-migrate-<campaign>-
<wave>-query` / `-sample`, shortened with a digest past AWS's 128 characters), so a
reconcile that crashed and runs again finds and adopts its own group instead of
making a second one.

Waves never overlap by construction when they are chosen by query or sample: a
wave's query (or a sample's population) excludes the devices of every earlier wave
— things directly in an earlier wave's thing groups or sample group
(`thingGroupNames`), and things matching an earlier wave's query. `plan` still
checks the overlap of what the account holds (a thing in a child group of an
earlier wave's group is not excluded by `thingGroupNames`).

Jobs on these groups are SNAPSHOT jobs, as every wave's: a wave is a cohort judged
by its gate, whose fractions need a fixed denominator, and a continuous job would
never complete and would go on enrolling devices after the wave is judged (docs/
orchestrator.md, "Waves chosen by query").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from orchestrator.model import CampaignSpec, WaveSpec

__all__ = [
    "ALL_THINGS",
    "MAX_GROUP_NAME",
    "SampleTarget",
    "WaveTargets",
    "group_name",
    "sample_seed",
    "wave_groups",
    "wave_targets",
]

MAX_GROUP_NAME: Final = 128
#: A sample's population when it gives no query: every indexed thing.
ALL_THINGS: Final = "thingName:*"


@dataclass(frozen=True, slots=True)
class SampleTarget:
    """The static group a sample fills, where it draws from, and how."""

    group: str
    population: str  # the effective query (earlier waves excluded)
    count: int
    stratify_by: str
    seed: str


@dataclass(frozen=True, slots=True)
class WaveTargets:
    """What a wave targets: its own thing groups, and the groups the campaign makes for it."""

    thing_groups: tuple[str, ...]
    dynamic_group: str | None = None
    query: str | None = None  # the dynamic group's effective query
    sample: SampleTarget | None = None

    @property
    def groups(self) -> tuple[str, ...]:
        """Every group the wave's job targets, the campaign's own last."""
        made = (self.dynamic_group, self.sample.group if self.sample else None)
        return self.thing_groups + tuple(g for g in made if g is not None)

    @property
    def made_by_campaign(self) -> bool:
        return self.dynamic_group is not None or self.sample is not None


def group_name(campaign: str, wave: str, kind: str) -> str:
    """`ca-migrate-<campaign>-<wave>-<kind>`; shortened with a digest past 128 characters."""
    name = f"ca-migrate-{campaign}-{wave}-{kind}"
    if len(name) <= MAX_GROUP_NAME:
        return name
    digest = hashlib.sha256(f"{campaign}\0{wave}".encode()).hexdigest()[:12]
    return f"ca-migrate-{campaign[:48]}-{wave[:48]}-{digest}-{kind}"


def sample_seed(campaign: str, wave: str) -> str:
    """The seed a wave's sample is drawn with: the same campaign and wave, the same devices."""
    return hashlib.sha256(f"ca-migrate sample\0{campaign}\0{wave}".encode()).hexdigest()


def _exclusions(spec: CampaignSpec, wave: WaveSpec) -> list[str]:
    out: list[str] = []
    for earlier in spec.waves:
        if earlier.name == wave.name:
            break
        groups = list(earlier.thing_groups)
        if earlier.sample is not None:
            groups.append(group_name(spec.name, earlier.name, "sample"))
        out.extend(f'thingGroupNames:"{g}"' for g in groups)
        if earlier.query is not None:
            out.append(f"({earlier.query})")
    return out


def _effective(base: str, exclusions: list[str]) -> str:
    if not exclusions:
        return base
    return f"({base})" + "".join(f" AND NOT {e}" for e in exclusions)


def wave_targets(spec: CampaignSpec, wave: WaveSpec) -> WaveTargets:
    """The wave's targets, with the effective queries of the groups the campaign makes."""
    exclusions = _exclusions(spec, wave)
    dynamic = query = None
    if wave.query is not None:
        dynamic = group_name(spec.name, wave.name, "query")
        query = _effective(wave.query, exclusions)
    sample = None
    if wave.sample is not None:
        sample = SampleTarget(
            group=group_name(spec.name, wave.name, "sample"),
            population=_effective(wave.sample.query or ALL_THINGS, exclusions),
            count=wave.sample.count,
            stratify_by=wave.sample.stratify_by,
            seed=sample_seed(spec.name, wave.name),
        )
    return WaveTargets(
        thing_groups=wave.thing_groups, dynamic_group=dynamic, query=query, sample=sample
    )


def wave_groups(spec: CampaignSpec, wave: WaveSpec) -> tuple[str, ...]:
    """Every thing group the wave's jobs target."""
    return wave_targets(spec, wave).groups
