"""Making the thing groups of waves chosen by query or sample: the `PrepareTargets` action.

The reconcile performs `PrepareTargets` right before the wave's CreateJob, through the
`WaveGroupsApi` of the wave's region (made on first use by the factory the CLI or the
runner hands in). Everything here is idempotent: the groups are adopted when they are
the campaign's own, the sample is drawn again with the same seed and only the devices
still missing are added (`docs/orchestrator.md`, "Waves chosen by query or sample").

`prepare` answers the event to record (`wave-targets-ready`), or None while a new
dynamic group is still BUILDING: the reconcile then leaves the wave's CreateJob for a
later step, so a SNAPSHOT job never sees a half-built group.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from orchestrator.errors import UsageError
from orchestrator.jobs import WaveGroupsApi
from orchestrator.model import CampaignSpec, Event, EventKind
from orchestrator.planner import PrepareTargets
from orchestrator.sampling import select

__all__ = ["REFUSED_NAMED", "WaveGroupMaker"]

log = structlog.get_logger(__name__)

#: At most this many devices AWS would not add to a sample are named in the event.
REFUSED_NAMED = 25


class WaveGroupMaker:
    """The groups of a campaign's waves, made through each region's `WaveGroupsApi`."""

    def __init__(self, make: Callable[[str], WaveGroupsApi] | None) -> None:
        self._make = make
        self._apis: dict[str, WaveGroupsApi] = {}

    def _api(self, region: str, wave: str) -> WaveGroupsApi:
        if self._make is None:
            raise UsageError(
                f"wave {wave} is chosen by query or sample, and this reconciler cannot make "
                "thing groups: run the campaign with the ca-migrate CLI or the runner"
            )
        found = self._apis.get(region)
        if found is None:
            found = self._apis[region] = self._make(region)
        return found

    def prepare(self, spec: CampaignSpec, campaign: str, action: PrepareTargets) -> Event | None:
        """Make (or adopt) the wave's dynamic and sample groups; None while one is building."""
        groups = self._api(spec.region_of(action.wave), action.wave)
        targets = action.targets
        about = f"ca-migrate campaign {campaign}, wave {action.wave}"
        bound = log.bind(campaign=campaign, wave=action.wave)
        data: dict[str, object] = {"groups": list(targets.groups)}
        if targets.dynamic_group is not None and targets.query is not None:
            status = groups.ensure_dynamic_group(
                targets.dynamic_group, targets.query, f"{about}: devices its query matches"
            )
            if status != "ACTIVE":
                bound.info("wave-group-building", group=targets.dynamic_group, status=status)
                return None
            data["query"] = targets.query
        sample = targets.sample
        if sample is not None:
            present = set(groups.ensure_static_group(sample.group, f"{about}: stratified sample"))
            bound.info("wave-sample-drawing", group=sample.group, population=sample.population)
            chosen = select(
                groups.indexed_values(sample.population, sample.stratify_by),
                sample.count,
                sample.seed,
            )
            missing = [t for t in chosen.things if t not in present]
            bound.info("wave-sample-filling", group=sample.group, adding=len(missing))
            refused = groups.add_things(sample.group, missing)
            drawn: dict[str, object] = {
                "group": sample.group,
                "devices": len(chosen.things) - len(refused),
                "stratify_by": sample.stratify_by,
                "strata": chosen.as_dict(),
            }
            if refused:  # already in ten groups: left out of the sample
                drawn["refused"] = sorted(refused)[:REFUSED_NAMED]
            data["sample"] = drawn
        return Event(
            kind=EventKind.WAVE_TARGETS_READY,
            reason=f"thing groups ready: {', '.join(targets.groups)}",
            wave=action.wave,
            data=data,
        )
