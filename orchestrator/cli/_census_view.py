"""`status --census` and `report --census`: each passed wave's devices on its endpoint, by shadow.

The only AWS calls `status` and `report` ever make, and only when asked: three
fleet-indexing counts per passed wave. A census that cannot be taken (fleet
indexing off, AWS unreachable) never fails the command: it shows as unavailable,
with the reason.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from orchestrator.errors import AwsError, IndexingUnavailableError
from orchestrator.model import CampaignSpec, CampaignState
from orchestrator.report_census import census_data, census_status_lines

__all__ = ["CensusOption", "print_status_with_census", "shadow_census"]

CensusOption = Annotated[
    bool,
    typer.Option(
        "--census",
        help="Also ask fleet indexing how many of each passed wave's devices the "
        "ca-migration shadow shows on its endpoint (3 calls per passed wave).",
    ),
]


def shadow_census(
    spec: CampaignSpec,
    state: CampaignState,
    *,
    endpoint_url: str | None,
    profile: str | None,
) -> dict[str, Any]:
    """The census data of the passed waves (`orchestrator.report_census.census_data`)."""
    from orchestrator.aws.readers import cli_readers
    from orchestrator.drift_survey import passed_wave_census

    print("asking fleet indexing where each passed wave's devices are...", file=sys.stderr)
    readers = cli_readers(endpoint_url=endpoint_url, profile=profile)
    try:
        waves = passed_wave_census(spec, state, readers.index)
    except IndexingUnavailableError as exc:
        return census_data(None, f"{exc}; see `ca-migrate census` for how to turn it on")
    except AwsError as exc:
        return census_data(None, str(exc))
    return census_data(waves)


def print_status_with_census(
    status: str, state_json: dict[str, Any], census: dict[str, Any], output: str
) -> None:
    """`status --census`: the status (text or its JSON) with the census beside it."""
    if output == "json":
        print(json.dumps(state_json | {"shadowCensus": census}, indent=2, sort_keys=True))
    else:
        print("\n".join([status, *census_status_lines(census)]))
