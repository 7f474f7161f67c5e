"""`plan`'s census: each wave's devices by the endpoint their `ca-migration` shadow reports.

Two fleet-indexing calls per wave (a count and the endpoint buckets of its thing
groups), made only when indexing answers: with indexing off (or not allowed, or
AWS refusing) the plan carries a note instead and is otherwise unchanged, since
a campaign never needs indexing to run. A wave without thing groups (chosen by
query) is not counted here: the plan shows its match count instead.
"""

from __future__ import annotations

from typing import Any

from orchestrator import census as c
from orchestrator.errors import AwsError, IndexingUnavailableError
from orchestrator.model import CampaignSpec

__all__ = ["OFF_NOTE", "census_lines", "plan_census"]

OFF_NOTE = (
    "fleet indexing of the ca-migration shadow is off, so no census "
    "(`ca-migrate census` prints how to turn it on)"
)


def plan_census(
    spec: CampaignSpec, *, endpoint_url: str | None, profile: str | None
) -> tuple[dict[str, dict[str, int]], str | None]:
    """Per wave name, its counts (`census.counts_json`); and why there are none, if so."""
    from orchestrator.aws.indexing import FleetIndexAdapter
    from orchestrator.aws.iot import make_client

    indexes: dict[str, FleetIndexAdapter] = {}
    out: dict[str, dict[str, int]] = {}
    try:
        for wave in spec.waves:
            if not wave.thing_groups:
                continue
            region = spec.region_of(wave)  # each wave is counted in its own region
            if region not in indexes:
                client = make_client(region=region, endpoint_url=endpoint_url, profile=profile)
                indexes[region] = FleetIndexAdapter(client)
            index = indexes[region]
            base = c.base_query(list(wave.thing_groups))
            total = index.count(base)
            endpoints = index.buckets(base, c.FIELDS["endpoint"])
            out[wave.name] = c.counts_json(c.count_by_kind(total, endpoints, region))
    except IndexingUnavailableError:
        return {}, OFF_NOTE
    except AwsError as exc:
        return {}, f"no census: {exc}"
    return out, None


def census_lines(waves: list[dict[str, Any]], note: str | None) -> list[str]:
    """The text plan's census lines."""
    if note is not None:
        return [f"census: {note}"]
    counted = [w for w in waves if w.get("census") is not None]
    if not counted:
        return []
    lines = ["census by shadow (devices / legacy / ATS / other endpoint / never reported):"]
    for w in counted:
        n = w["census"]
        lines.append(
            f"- wave {w['wave']}: {n['total']} / {n['legacy']} / {n['ats']} / {n['other']} / "
            f"{n['neverReported']}"
        )
    return lines
