"""Verification's readers in every region: one boto3 IoT client per region, made on first use.

A campaign's waves may run in several regions; each wave's fleet index and job
executions are read in its own region (`orchestrator.drift_survey.Readers`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

from orchestrator.aws.executions import ExecutionReader
from orchestrator.aws.indexing import FleetIndexAdapter
from orchestrator.drift_survey import Readers

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient

__all__ = ["cli_readers", "regional_readers"]


def regional_readers(make_client: Callable[[str], IoTClient]) -> Readers:
    """The index and executions readers of each region, over `make_client(region)` (once each)."""
    client = cache(make_client)
    return Readers(
        lambda region: FleetIndexAdapter(client(region)),
        lambda region: ExecutionReader(client(region)),
    )


def cli_readers(*, endpoint_url: str | None, profile: str | None) -> Readers:
    """`regional_readers` with the CLI's clients (`--endpoint-url`, `--profile`)."""
    from orchestrator.aws.iot import make_client

    return regional_readers(
        lambda region: make_client(region=region, endpoint_url=endpoint_url, profile=profile)
    )
