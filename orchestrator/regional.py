"""One AWS IoT Jobs client per region: a campaign's waves may run in several regions.

AWS IoT keeps jobs, things and thing groups per region, so every call about a wave
goes to the wave's region. `RegionalJobs` hands out one `JobsApi` per region, made on
first use by the factory it was given (the CLI and the runner build boto3 adapters;
tests hand in fakes), and `check_job_region` is the guard the reconciler applies to
every job it observes: a job whose ARN names another region than its wave's means a
client of the wrong region, and nothing is written on such a reading.

Invariants:
- At most one `JobsApi` per region for the life of a `RegionalJobs`.
- `RegionalJobs.single(api)` serves every region with the one `api` (a fake, or a
  campaign of one region); the ARN check still holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from orchestrator.errors import WrongRegionError
from orchestrator.jobs import JobsApi
from orchestrator.model import CampaignSpec
from orchestrator.planner import JobObservation

__all__ = ["RegionalJobs", "arn_region", "check_job_region", "resolve_endpoints"]


class RegionalJobs:
    """The `JobsApi` of each region, made once per region by `make(region)`."""

    def __init__(self, make: Callable[[str], JobsApi]) -> None:
        self._make = make
        self._apis: dict[str, JobsApi] = {}
        self._lock = threading.Lock()

    @classmethod
    def single(cls, api: JobsApi) -> RegionalJobs:
        """Every region answered by one `api`."""
        return cls(lambda _region: api)

    def api(self, region: str) -> JobsApi:
        """The region's `JobsApi` (made on first use)."""
        with self._lock:
            found = self._apis.get(region)
            if found is None:
                found = self._make(region)
                self._apis[region] = found
            return found

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions asked for so far, in order."""
        with self._lock:
            return tuple(self._apis)


def resolve_endpoints(spec: CampaignSpec, api_for: Callable[[str], JobsApi]) -> dict[str, str]:
    """Each region's iot:Data-ATS host: DescribeEndpoint in that region, or the file's host."""
    if spec.endpoint != "auto":
        return dict.fromkeys(spec.regions, spec.endpoint)
    return {region: api_for(region).resolve_endpoint() for region in spec.regions}


def arn_region(arn: str) -> str | None:
    """The region field of an ARN (`arn:partition:service:region:account:resource`)."""
    parts = arn.split(":", 5)
    if len(parts) < 6 or parts[0] != "arn":  # noqa: PLR2004 - the ARN's six fields
        return None
    return parts[3] or None


def check_job_region(observation: JobObservation, wave: str, region: str) -> None:
    """`WrongRegionError` when an existing job's ARN names another region than its wave's."""
    if not observation.exists or observation.arn is None:
        return
    found = arn_region(observation.arn)
    if found is not None and found != region:
        raise WrongRegionError(
            f"job {observation.job_id} of wave {wave} answered from {found} "
            f"({observation.arn}), but the wave runs in {region}: the client for {region} "
            "reaches another region. Check --endpoint-url and the AWS_ENDPOINT_URL_IOT "
            "variables (one endpoint per region, or none), then run again",
            code="WrongRegion",
        )
