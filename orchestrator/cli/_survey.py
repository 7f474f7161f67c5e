"""What `plan` and `start` learn from the account before anything exists, and how they say it.

Each wave's thing groups are resolved (a missing one is exit 2) and their
things listed through the adapter of the wave's region (thing names are per
region: a thing of another region than the campaign's is counted as
`<region>/<name>`, so two regions' same-named things are not taken for one);
`orchestrator.feasibility` decides whether the campaign can succeed; a campaign
that cannot is refused with every problem on its own line (exit 2).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.cli._signing import signing_lines
from orchestrator.errors import CampaignExistsError, CampaignNotFoundError, UsageError
from orchestrator.feasibility import Problem, check_campaign, wave_devices
from orchestrator.model import CampaignSpec, Event, EventKind
from orchestrator.sampling import Sample, select
from orchestrator.store import StateStore
from orchestrator.targets import wave_targets

if TYPE_CHECKING:
    from orchestrator.aws.groups import ThingGroupsAdapter
    from orchestrator.aws.iot import IotJobsAdapter

__all__ = ["Survey", "already_started", "print_plan", "refuse", "survey"]


@dataclass(frozen=True, slots=True)
class Survey:
    """What the account holds for a campaign: group ARNs, each wave's things, the problems.

    `queries` and `samples` hold, per wave chosen by query or sample, the effective
    query with its matches, and the sample as it would be drawn now.
    """

    arns: dict[tuple[str, str], str]  # (region, group) -> ARN
    members: dict[str, dict[str, list[str]]]
    problems: list[Problem]
    queries: dict[str, tuple[str, int]]
    samples: dict[str, Sample]

    def devices(self, wave: str) -> int:
        return len(wave_devices(self.members[wave]))

    def chosen(self, spec: CampaignSpec, wave: str) -> dict[str, Any]:
        """What `plan` says of a wave chosen by query or sample: the matches, the strata."""
        out: dict[str, Any] = {}
        if wave in self.queries:
            query, matches = self.queries[wave]
            out["query"] = {"query": query, "matches": matches}
        sample = wave_targets(spec, spec.wave(wave)).sample
        if wave in self.samples and sample is not None:
            out["sample"] = {
                "group": sample.group,
                "population": sample.population,
                "stratify_by": sample.stratify_by,
                "devices": len(self.samples[wave].things),
                "strata": self.samples[wave].as_dict(),
            }
        return out


def survey(
    api: IotJobsAdapter | Mapping[str, IotJobsAdapter],
    spec: CampaignSpec,
    groups: Callable[[str], ThingGroupsAdapter] | None = None,
) -> Survey:
    """Resolve every group (a missing one is exit 2) and its things; check the campaign can pass.

    `api` is each region's adapter (one adapter serves a campaign of one region). A
    wave's query is counted, and its sample drawn, through fleet indexing in its region
    (`groups(region)`, SearchIndex) as the campaign will at launch; the groups the
    campaign makes do not exist yet, so the devices earlier samples draw are taken out
    here as their groups will take them out then.
    """
    arns: dict[tuple[str, str], str] = {}
    things: dict[tuple[str, str], list[str]] = {}
    members: dict[str, dict[str, list[str]]] = {}
    queries: dict[str, tuple[str, int]] = {}
    samples: dict[str, Sample] = {}
    sampled: set[str] = set()  # drawn by earlier waves: in their sample groups at launch
    for wave in spec.waves:
        region = spec.region_of(wave)
        adapter = api[region] if isinstance(api, Mapping) else api
        members[wave.name] = {}
        for group in wave.thing_groups:
            key = (region, group)
            if key not in arns:
                arns[key] = adapter.group_arn(group)
                names = adapter.thing_names(group)
                things[key] = names if region == spec.region else [f"{region}/{n}" for n in names]
            members[wave.name][group] = things[key]
        targets = wave_targets(spec, wave)
        if not targets.made_by_campaign:
            continue
        if groups is None:
            raise UsageError(f"wave {wave.name} is chosen by query or sample: plan needs indexing")
        index = groups(region)

        def named(thing: str, region: str = region) -> str:
            return thing if region == spec.region else f"{region}/{thing}"

        if targets.dynamic_group is not None and targets.query is not None:
            matched = sorted({named(t) for t in index.indexed_values(targets.query, "")} - sampled)
            arns[region, targets.dynamic_group] = (
                f"<dynamic group {targets.dynamic_group}, made at launch>"
            )
            members[wave.name][targets.dynamic_group] = matched
            queries[wave.name] = (targets.query, len(matched))
        if targets.sample is not None:
            s = targets.sample
            values = index.indexed_values(s.population, s.stratify_by)
            drawn = select(
                {t: v for t, v in values.items() if named(t) not in sampled}, s.count, s.seed
            )
            sampled.update(named(t) for t in drawn.things)
            arns[region, s.group] = f"<sample group {s.group}, made at launch>"
            members[wave.name][s.group] = [named(t) for t in drawn.things]
            samples[wave.name] = drawn
    return Survey(arns, members, check_campaign(spec, members), queries, samples)


def refuse(problems: list[Problem]) -> None:
    if problems:
        lines = "\n".join(f"  - {p.message}" for p in problems)
        raise UsageError(f"the campaign cannot succeed as written:\n{lines}")


def print_plan(
    spec: CampaignSpec,
    host: str,
    catalog: str,
    is_default: bool,
    waves: list[dict[str, Any]],
    region_lines: Sequence[str] = (),
    checked: Event | None = None,
) -> None:
    print(f"campaign {spec.name} in {spec.region}: endpoint {host}")
    for line in region_lines:
        print(line)
    if checked is not None and checked.kind is EventKind.ENDPOINT_CHECK_SKIPPED:
        print(f"!! ENDPOINT NOT CHECKED (--skip-endpoint-check): {checked.reason}")
    elif checked is not None:
        print(f"endpoint check passed: {checked.reason}")
    if not is_default:
        print(f"!! CATALOG {catalog}: NOT the packaged Amazon Trust Services roots")
    else:
        print(f"catalog {catalog}")
    print(f"roots to add: {', '.join(spec.trust.add)}")
    for line in signing_lines(spec):
        print(line)
    for w in waves:
        groups = ", ".join(f"{g} ({n})" for g, n in w["devices"].items())
        needs = w["gate_needs_devices"]
        gate = (
            f"its gate can pass with {needs}+ devices" if needs is not None else "gate cannot pass"
        )
        where = f" ({w['region']})" if w.get("region", spec.region) != spec.region else ""
        print(
            f"- wave {w['wave']}{where}: {w['distinct_devices']} devices in {groups}; {gate}; "
            f"approval {w['approval']}"
        )
        if "query" in w:
            print(f"  query matches {w['query']['matches']} devices: {w['query']['query']}")
        if "sample" in w:
            sample = w["sample"]
            strata = ", ".join(
                f"{value} {n['picked']} of {n['size']}" for value, n in sample["strata"].items()
            )
            print(
                f"  sample of {sample['devices']} by {sample['stratify_by']} "
                f"(from {sample['population']}): {strata}"
            )
        print(f"  job {w['job_id']}, document {w['document_size']} characters")
        if "job_document" in w:
            step = w["job_document"]["steps"][0]["action"]
            print(
                f"  Device Client runHandler {step['input']['path']}/{step['input']['handler']} "
                f"around the ca-migration/1 document ({w['embedded_document_size']} characters)"
            )
        settings = {k: v for k, v in w["create_job"].items() if k not in ("jobId", "document")}
        print(f"  CreateJob {json.dumps(settings, sort_keys=True)}")


def already_started(store: StateStore, name: str, text: str) -> bool:
    """True when the campaign exists with this very file (a re-run); exit 2 with another."""
    try:
        existing = store.load(name)
    except CampaignNotFoundError:
        return False
    started = existing.state.created_at.isoformat(timespec="seconds")
    if existing.spec_text != text:
        raise CampaignExistsError(
            f"campaign {name} exists (started {started}) with another campaign file; "
            f"give the new campaign another name, or see it with `ca-migrate status {name}`"
        )
    print(
        f"campaign {name} exists (started {started}) with this file: nothing new to start; "
        f"follow it with `ca-migrate run {name} --follow`",
        file=sys.stderr,
    )
    return True
