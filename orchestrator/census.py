"""The fleet census: what to ask fleet indexing, and what the answers add up to (pure).

A census counts devices by the trust state they report to the `ca-migration`
named shadow: by endpoint (legacy, ATS, other, never reported), by root held
(catalog name), by phase and agent version, per thing group. Every count
comes from an aggregation query (GetStatistics, GetBucketsAggregation), so the
number of calls depends on how many distinct endpoints the fleet reports, not
on how many devices it has; only the names of never-reported devices are
listed (SearchIndex, one page unless all are asked for).

No I/O here: `plan_queries` says what to ask, `assemble` adds the answers up,
`render_text` / `as_json` show the result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from job_documents import EndpointRejected, check_ats_endpoint

__all__ = [
    "FIELDS",
    "INDEXING_CONFIGURATION",
    "SHADOW",
    "Census",
    "EndpointKind",
    "as_json",
    "assemble",
    "base_query",
    "classify_endpoint",
    "count_by_kind",
    "counts_json",
    "endpoint_query",
    "indexing_hint",
    "name_roots",
    "never_reported_query",
    "render_text",
    "reported_query",
]

SHADOW = "ca-migration"
_PREFIX = f"shadow.name.{SHADOW}.reported"
FIELDS = {
    "endpoint": f"{_PREFIX}.endpoint",
    "roots": f"{_PREFIX}.roots",
    "phase": f"{_PREFIX}.phase",
    "agentVersion": f"{_PREFIX}.agentVersion",
}
GROUP_FIELD = "thingGroupNames"

# What `ca-migrate census` needs of fleet indexing: named-shadow indexing of
# `ca-migration`, with the fields it aggregates declared as String custom fields.
INDEXING_CONFIGURATION: dict[str, Any] = {
    "thingIndexingMode": "REGISTRY_AND_SHADOW",
    "namedShadowIndexingMode": "ON",
    "filter": {"namedShadowNames": [SHADOW]},
    "customFields": [{"name": name, "type": "String"} for name in FIELDS.values()],
}

EndpointKind = Literal["legacy", "ats", "other"]


def indexing_hint() -> str:
    """How to turn on the indexing the census needs (the message of its exit 2)."""
    return (
        "turn on fleet indexing of the ca-migration shadow, e.g.\n"
        "  aws iot update-indexing-configuration --thing-indexing-configuration "
        f"'{json.dumps(INDEXING_CONFIGURATION, separators=(',', ':'))}'\n"
        "(keep any custom fields you already have; building the index takes a while on AWS)"
    )


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def base_query(groups: Sequence[str]) -> str:
    """Every thing, or the things of the given groups."""
    if not groups:
        return "thingName:*"
    terms = " OR ".join(f"{GROUP_FIELD}:{_quote(g)}" for g in groups)
    return f"({terms})"


def reported_query(base: str) -> str:
    return f"{base} AND {FIELDS['endpoint']}:*"


def never_reported_query(base: str) -> str:
    return f"{base} AND NOT {FIELDS['endpoint']}:*"


def endpoint_query(base: str, endpoint: str) -> str:
    return f"{base} AND {FIELDS['endpoint']}:{_quote(endpoint)}"


def classify_endpoint(host: str, region: str) -> EndpointKind:
    """ATS when the host is an ATS data endpoint of the region, legacy when it is the legacy one."""
    try:
        check_ats_endpoint(host, region)
    except EndpointRejected as exc:
        return "legacy" if exc.code == "endpoint-legacy" else "other"
    return "ats"


@dataclass(frozen=True, slots=True)
class GroupCount:
    total: int
    legacy: int = 0
    ats: int = 0
    other: int = 0

    @property
    def never_reported(self) -> int:
        return max(0, self.total - self.legacy - self.ats - self.other)


@dataclass(frozen=True, slots=True)
class Census:
    """One census of the fleet (or of the given groups)."""

    region: str
    groups_asked: tuple[str, ...]
    total: int
    reported: int
    by_endpoint_kind: Mapping[str, int]
    endpoints: Mapping[str, int]
    roots: Mapping[str, int]
    phases: Mapping[str, int]
    agent_versions: Mapping[str, int]
    groups: Mapping[str, GroupCount]
    never_reported_names: tuple[str, ...] = ()
    calls: int = 0
    notes: tuple[str, ...] = field(default=())
    waves: Mapping[str, GroupCount] = field(default_factory=dict)

    @property
    def never_reported(self) -> int:
        return self.total - self.reported


def assemble(
    *,
    region: str,
    groups_asked: Sequence[str],
    total: int,
    reported: int,
    endpoints: Mapping[str, int],
    roots: Mapping[str, int],
    phases: Mapping[str, int],
    agent_versions: Mapping[str, int],
    group_totals: Mapping[str, int],
    group_endpoints: Mapping[str, Mapping[str, int]],
    never_reported_names: Sequence[str] = (),
    calls: int = 0,
    bucket_limit: int | None = None,
    waves: Mapping[str, tuple[int, Mapping[str, int]]] | None = None,
) -> Census:
    """The census from the answers; `group_endpoints` is endpoint -> group -> count.

    `waves` is, per wave of a campaign, its device count and its endpoint buckets.
    """
    kinds = {"legacy": 0, "ats": 0, "other": 0}
    per_group: dict[str, dict[str, int]] = {
        g: {"legacy": 0, "ats": 0, "other": 0} for g in group_totals
    }
    for host, count in endpoints.items():
        kind = classify_endpoint(host, region)
        kinds[kind] += count
        for group, in_group in group_endpoints.get(host, {}).items():
            per_group.setdefault(group, {"legacy": 0, "ats": 0, "other": 0})[kind] += in_group
    notes: list[str] = []
    if sum(endpoints.values()) != reported:
        notes.append(
            f"{reported} devices report an endpoint but the endpoint buckets hold "
            f"{sum(endpoints.values())}: more distinct endpoints than one aggregation returns"
        )
    if bucket_limit is not None and len(group_totals) >= bucket_limit:
        notes.append(f"only the {bucket_limit} largest thing groups are shown")
    groups = {
        g: GroupCount(total=group_totals.get(g, 0), **counts) for g, counts in per_group.items()
    }
    if groups_asked:
        groups = {g: c for g, c in groups.items() if g in groups_asked}
    return Census(
        region=region,
        groups_asked=tuple(groups_asked),
        total=total,
        reported=reported,
        by_endpoint_kind=kinds,
        endpoints=dict(endpoints),
        roots=dict(roots),
        phases=dict(phases),
        agent_versions=dict(agent_versions),
        groups=dict(sorted(groups.items())),
        never_reported_names=tuple(never_reported_names),
        calls=calls,
        notes=tuple(notes),
        waves={
            name: count_by_kind(total, hosts, region)
            for name, (total, hosts) in (waves or {}).items()
        },
    )


def count_by_kind(total: int, endpoints: Mapping[str, int], region: str) -> GroupCount:
    """A group's (or wave's) devices by endpoint kind, from its total and endpoint buckets."""
    kinds = {"legacy": 0, "ats": 0, "other": 0}
    for host, count in endpoints.items():
        kinds[classify_endpoint(host, region)] += count
    return GroupCount(total=total, **kinds)


def counts_json(count: GroupCount) -> dict[str, int]:
    return {
        "total": count.total,
        "legacy": count.legacy,
        "ats": count.ats,
        "other": count.other,
        "neverReported": count.never_reported,
    }


def as_json(census: Census) -> dict[str, Any]:
    return {
        "region": census.region,
        "groups": list(census.groups_asked),
        "total": census.total,
        "reported": census.reported,
        "byEndpoint": {
            "legacy": census.by_endpoint_kind["legacy"],
            "ats": census.by_endpoint_kind["ats"],
            "other": census.by_endpoint_kind["other"],
            "neverReported": census.never_reported,
        },
        "endpoints": dict(census.endpoints),
        "roots": dict(census.roots),
        "phases": dict(census.phases),
        "agentVersions": dict(census.agent_versions),
        "thingGroups": {name: counts_json(c) for name, c in census.groups.items()},
        "waves": {name: counts_json(c) for name, c in census.waves.items()},
        "neverReportedNames": list(census.never_reported_names),
        "calls": census.calls,
        "notes": list(census.notes),
    }


def _table(title: str, counts: Mapping[str, int]) -> list[str]:
    if not counts:
        return [f"{title}: none"]
    width = max(len(k) for k in counts)
    lines = [f"{title}:"]
    lines.extend(f"  {key:<{width}}  {count}" for key, count in counts.items())
    return lines


def _group_table(title: str, groups: Mapping[str, GroupCount]) -> list[str]:
    """One line per group of `groups` with its endpoint counts; nothing when there are none."""
    if not groups:
        return []
    width = max(len(name) for name in groups)
    lines = [f"{title} (total / legacy / ATS / other / never reported):"]
    lines.extend(
        f"  {name:<{width}}  {c.total} / {c.legacy} / {c.ats} / {c.other} / {c.never_reported}"
        for name, c in groups.items()
    )
    return lines


def name_roots(roots: Mapping[str, int], catalog: Mapping[str, str]) -> dict[str, int]:
    """Root buckets keyed by catalog name where the catalog knows the root.

    Devices report a root by the name their own catalog gives it, else as
    `sha256:<first 16 hex>`; `catalog` (full SHA-256 -> name) names the latter when one
    of its fingerprints starts with those hex digits. Unknown roots keep their hash.
    """
    named: dict[str, int] = {}
    for key, count in roots.items():
        name = key
        if key.startswith("sha256:") and len(key) > len("sha256:"):
            prefix = key.removeprefix("sha256:").lower()
            matches = {n for sha, n in catalog.items() if sha.startswith(prefix)}
            if len(matches) == 1:
                name = matches.pop()
        named[name] = named.get(name, 0) + count
    return named


def render_text(census: Census, root_names: Mapping[str, str] | None = None) -> str:
    """The census as text; `root_names` (SHA-256 -> catalog name) names reported hashes."""
    scope = ", ".join(census.groups_asked) if census.groups_asked else "all things"
    kinds = census.by_endpoint_kind
    lines = [
        f"census of {scope} in {census.region}: {census.total} devices",
        f"  legacy endpoint   {kinds['legacy']}",
        f"  ATS endpoint      {kinds['ats']}",
        f"  other endpoint    {kinds['other']}",
        f"  never reported    {census.never_reported}",
    ]
    lines += _table("roots held", name_roots(census.roots, root_names or {}))
    lines += _table("phases", census.phases)
    lines += _table("agent versions", census.agent_versions)
    lines += _group_table("thing groups", census.groups)
    lines += _group_table("waves", census.waves)
    if census.never_reported_names:
        shown = len(census.never_reported_names)
        more = census.never_reported - shown
        lines.append(
            "never reported: "
            + ", ".join(census.never_reported_names)
            + (f" (and {more} more; --list-file writes all)" if more > 0 else "")
        )
    lines.extend(f"note: {note}" for note in census.notes)
    lines.append(f"({census.calls} fleet indexing calls)")
    return "\n".join(lines)
