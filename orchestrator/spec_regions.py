"""The campaign file's regions: the campaign's `region` and each wave's own `region`.

A wave may run in another region than the campaign's (a canary region first, then
the others). Kept beside `orchestrator.spec`, which composes these checks into the
campaign and wave models.

Invariants:
- Every region, the campaign's and the waves', is one of the regions this version
  knows (`job_documents/data/regions.json`), checked with the line of the key.
- A campaign stays in one partition: a wave of another partition (China, GovCloud)
  needs other accounts and credentials, so it is its own campaign.
- A wave in another region than the campaign's needs `endpoint: auto`: an explicit
  endpoint is a host of one region, and each region's documents name its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from job_documents import EndpointRejected, check_region
from orchestrator.campaign_yaml import Marks
from orchestrator.errors import SpecProblem

__all__ = ["checked_region", "region_problems"]


class _Wave(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def region(self) -> str | None: ...


def checked_region(value: str) -> str:
    """`value` when it is a region this version knows; ValueError saying what to fix."""
    try:
        check_region(value)
    except EndpointRejected as exc:
        # The documents would be refused for it anyway (region-invalid): say so here,
        # with the line, before any AWS call goes to a host that does not exist.
        raise ValueError(
            f"{value!r} is not an AWS region of the commercial, China or GovCloud "
            "partitions known to this version (job_documents/data/regions.json); check "
            "the spelling"
            + ("" if "isolated" not in str(exc) else "; isolated partitions are not supported")
        ) from None
    return value


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


def region_problems(
    region: str, endpoint: str, waves: Sequence[_Wave], marks: Marks
) -> list[SpecProblem]:
    """A wave in another region needs `endpoint: auto` and the campaign's partition."""
    problems: list[SpecProblem] = []
    for index, wave in enumerate(waves):
        if wave.region is None or wave.region == region:
            continue
        message = None
        if _partition(wave.region) != _partition(region):
            message = (
                f"wave {wave.name} is in {wave.region}, another partition than the campaign's "
                f"{region} (other accounts and credentials): run it as its own campaign"
            )
        elif endpoint != "auto":
            message = (
                f"wave {wave.name} is in {wave.region} but the campaign names one endpoint "
                f"({endpoint}), a host of one region: write endpoint: auto so each "
                "region's iot:Data-ATS endpoint is resolved in that region"
            )
        if message is not None:
            where = marks.get(("waves", index, "region"))
            problems.append(
                SpecProblem(
                    f"waves[{index}].region",
                    message,
                    line=where[0] if where else None,
                    column=where[1] if where else None,
                )
            )
    return problems
