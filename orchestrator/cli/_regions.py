"""The campaign commands' AWS clients, one per region, and what `plan` says about regions.

A campaign's waves may run in several regions (`region:` on a wave). Each command
builds one `IotJobsAdapter` per region through `RegionalJobs`, all from the same
global options (`--endpoint-url` is a single endpoint that serves every region, as the
sandbox does, or none: botocore then picks each region's AWS host); the embedder's
wrapper (`seams.wrap_jobs_api`) wraps each one.

`plan` reports every region with its iot:Data-ATS endpoint and whether the region can
have a legacy iot:Data endpoint at all (docs/regions.md): one that cannot has nothing
to migrate, and `plan` says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from job_documents import legacy_endpoint
from orchestrator.cli import seams
from orchestrator.errors import UsageError
from orchestrator.model import CampaignSpec
from orchestrator.regional import RegionalJobs, resolve_endpoints

if TYPE_CHECKING:
    from orchestrator.aws.groups import ThingGroupsAdapter
    from orchestrator.aws.iot import IotJobsAdapter

__all__ = ["RegionalClients", "endpoints", "region_lines", "regions_plan"]


@dataclass(frozen=True, slots=True)
class RegionalClients:
    """How the campaign commands reach AWS IoT in any region."""

    endpoint_url: str | None
    profile: str | None
    region_option: str | None = None

    def check(self, spec: CampaignSpec) -> None:
        """`--region` may only name the campaign's own region (its waves carry the rest)."""
        if self.region_option and self.region_option != spec.region:
            raise UsageError(
                f"the campaign runs in {spec.region} but --region says {self.region_option}; "
                "drop --region (waves name their own regions in the campaign file)"
            )

    def adapter(self, region: str) -> IotJobsAdapter:
        from orchestrator.aws.iot import IotJobsAdapter, make_client

        return IotJobsAdapter(
            make_client(region=region, endpoint_url=self.endpoint_url, profile=self.profile)
        )

    def groups(self, region: str) -> ThingGroupsAdapter:
        """The region's fleet index and the campaign's own groups (waves by query or sample)."""
        from orchestrator.aws.groups import ThingGroupsAdapter
        from orchestrator.aws.iot import make_client

        return ThingGroupsAdapter(
            make_client(region=region, endpoint_url=self.endpoint_url, profile=self.profile)
        )

    def jobs(self) -> RegionalJobs:
        """One wrapped `JobsApi` per region, made on first use."""
        return RegionalJobs(lambda region: seams.wrap_jobs_api(self.adapter(region)))

    def adapters(self, spec: CampaignSpec) -> dict[str, IotJobsAdapter]:
        """plan/start: each region's adapter, after one quick call proving it can be used."""
        from orchestrator.aws.iot import preflight

        self.check(spec)
        found: dict[str, IotJobsAdapter] = {}
        for region in spec.regions:
            preflight(region=region, endpoint_url=self.endpoint_url, profile=self.profile)
            found[region] = self.adapter(region)
        return found


def endpoints(spec: CampaignSpec, adapters: Mapping[str, IotJobsAdapter]) -> dict[str, str]:
    """Each region's iot:Data-ATS host, through that region's adapter."""
    return resolve_endpoints(spec, adapters.__getitem__)


def regions_plan(spec: CampaignSpec, endpoints: dict[str, str]) -> list[dict[str, Any]]:
    """Per region: its endpoint, its waves, and whether there can be anything to migrate."""
    rows: list[dict[str, Any]] = []
    for region in spec.regions:
        legacy = legacy_endpoint(region)
        rows.append(
            {
                "region": region,
                "endpoint": endpoints[region],
                "waves": [w.name for w in spec.waves if spec.region_of(w) == region],
                "legacy_endpoint": legacy,
                "nothing_to_migrate": legacy == "no",
            }
        )
    return rows


def region_lines(rows: list[dict[str, Any]]) -> list[str]:
    """`plan`'s text lines for the regions: when there are several, or nothing to migrate."""
    if len(rows) == 1 and not rows[0]["nothing_to_migrate"]:
        return []
    lines: list[str] = []
    for row in rows:
        line = (
            f"region {row['region']}: endpoint {row['endpoint']}; waves {', '.join(row['waves'])}"
        )
        if row["nothing_to_migrate"]:
            line += (
                " -- nothing to migrate: this region never had a legacy iot:Data endpoint "
                "(ATS only since it launched; docs/regions.md)"
            )
        elif row["legacy_endpoint"] != "yes":
            line += f" (legacy iot:Data endpoint: {row['legacy_endpoint']}; docs/regions.md)"
        lines.append(line)
    return lines
