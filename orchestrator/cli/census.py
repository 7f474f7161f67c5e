"""`ca-migrate census`: where the fleet stands, from fleet indexing of the `ca-migration` shadow.

Exit codes: 0 census printed; 2 bad arguments, or fleet indexing is off / lacks
a field the census needs (the message gives the command that turns it on);
1 AWS failed otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Protocol

import typer

from orchestrator import census as c
from orchestrator.cli._output import OutputOption, output_format
from orchestrator.errors import (
    AwsError,
    IndexingUnavailableError,
    OrchestratorError,
    UsageError,
)
from orchestrator.targets import wave_groups

__all__ = ["app", "take_census"]

EXIT_FAILURE = 1
EXIT_INVALID = 2
DEFAULT_SHOWN = 20

app = typer.Typer(no_args_is_help=True)


class _Index(Protocol):
    """What the census asks of fleet indexing (`orchestrator.aws.indexing.FleetIndexAdapter`)."""

    @property
    def calls(self) -> int:
        """Calls made so far."""
        ...

    def count(self, query: str) -> int:
        """Things matching `query`."""
        ...

    def buckets(self, query: str, field: str) -> dict[str, int]:
        """Things per value of `field` among those matching `query`."""
        ...

    def names(self, query: str, limit: int | None) -> list[str]:
        """Names of things matching `query`, at most `limit` (None: all)."""
        ...


def take_census(
    index: _Index,
    *,
    region: str,
    groups: list[str],
    shown: int,
    list_all: bool,
    waves: Mapping[str, Sequence[str]] | None = None,
) -> tuple[c.Census, list[str]]:
    """Ask the index; the answers make the census.

    A fixed number of aggregation calls, one more per distinct endpoint, and two
    per wave (`waves`: wave name -> its thing groups).
    """
    base = c.base_query(groups)
    total = index.count(base)
    reported = index.count(c.reported_query(base))
    endpoints = index.buckets(base, c.FIELDS["endpoint"])
    roots = index.buckets(base, c.FIELDS["roots"])
    phases = index.buckets(base, c.FIELDS["phase"])
    versions = index.buckets(base, c.FIELDS["agentVersion"])
    group_totals = index.buckets(base, c.GROUP_FIELD)
    group_endpoints = {
        host: index.buckets(c.endpoint_query(base, host), c.GROUP_FIELD) for host in endpoints
    }
    per_wave = {
        name: (
            index.count(c.base_query(list(wave_groups))),
            index.buckets(c.base_query(list(wave_groups)), c.FIELDS["endpoint"]),
        )
        for name, wave_groups in (waves or {}).items()
    }
    names: list[str] = []
    if total > reported:
        names = index.names(c.never_reported_query(base), None if list_all else shown)
    census = c.assemble(
        region=region,
        groups_asked=groups,
        total=total,
        reported=reported,
        endpoints=endpoints,
        roots=roots,
        phases=phases,
        agent_versions=versions,
        group_totals=group_totals,
        group_endpoints=group_endpoints,
        never_reported_names=names[:shown],
        calls=index.calls,
        waves=per_wave,
    )
    return census, names


def _write_list(path: Path, names: list[str]) -> None:
    """All never-reported names, one a line, written atomically."""
    directory = path.parent if str(path.parent) else Path()
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{name}\n" for name in names))
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _campaign_waves(
    ctx: typer.Context, name: str
) -> tuple[dict[str, list[str]], str, dict[str, str], str | None]:
    """Each wave's thing groups, the campaign's region, each wave's, and its catalog file.

    Exit 2 when the campaign is unknown.
    """
    from orchestrator.cli.campaign import _options, _spec_of, _store

    try:
        spec = _spec_of(_store(_options(ctx)), name)
    except OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from exc
    return (
        {w.name: list(wave_groups(spec, w)) for w in spec.waves},
        spec.region,
        {w.name: spec.region_of(w) for w in spec.waves},
        spec.catalog,
    )


def _root_names(catalog_file: str | None) -> dict[str, str]:
    """SHA-256 -> catalog name of the campaign's catalog (else the packaged one); exit 2."""
    from job_documents import JobDocumentError, load_catalog

    try:
        catalog = load_catalog(Path(catalog_file) if catalog_file else None)
    except JobDocumentError as exc:
        print(f"error: the campaign's catalog: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from exc
    return {root.sha256: root.name for root in catalog.roots}


def _waves_here(
    waves: dict[str, list[str]], regions: dict[str, str], where: str
) -> dict[str, list[str]]:
    """The waves whose groups are in `where` (fleet indexing is per region); others named."""
    elsewhere = {name: region for name, region in regions.items() if region != where}
    for name, region in elsewhere.items():
        print(
            f"note: wave {name} runs in {region}, not counted here; "
            f"run census --region {region} for it",
            file=sys.stderr,
        )
    return {name: groups for name, groups in waves.items() if name not in elsewhere}


@app.command("census")
def census_command(
    ctx: typer.Context,
    region: Annotated[
        str | None, typer.Option(help="AWS region of the fleet (default: the global --region).")
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option(help="Count only the things of this thing group (repeat for several)."),
    ] = None,
    output: OutputOption = "text",
    show: Annotated[
        int, typer.Option(min=0, help="How many never-reported devices to name.")
    ] = DEFAULT_SHOWN,
    list_file: Annotated[
        Path | None, typer.Option(help="Write the names of all never-reported devices here.")
    ] = None,
    campaign: Annotated[
        str | None,
        typer.Option(help="Also count each wave of this stored campaign (from --state)."),
    ] = None,
) -> None:
    """Devices by endpoint, roots held, phase, agent version and thing group (fleet indexing)."""
    from orchestrator.aws.indexing import FleetIndexAdapter
    from orchestrator.aws.iot import make_client

    try:
        output = output_format(output)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from exc
    root = ctx.find_root().obj
    waves: dict[str, list[str]] = {}
    campaign_region: str | None = None
    wave_regions: dict[str, str] = {}
    catalog_file: str | None = None
    if campaign is not None:
        waves, campaign_region, wave_regions, catalog_file = _campaign_waves(ctx, campaign)
    where = region or campaign_region or (root.region if root is not None else None)
    if not where:
        print("error: give --region (or AWS_REGION)", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID)
    waves = _waves_here(waves, wave_regions, where)
    if list_file is not None and list_file.is_dir():
        print(f"error: --list-file {list_file} is a directory; give a file path", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID)
    client = make_client(
        region=where,
        endpoint_url=root.endpoint_url if root is not None else None,
        profile=root.profile if root is not None else None,
    )
    try:
        census, names = take_census(
            FleetIndexAdapter(client),
            region=where,
            groups=list(group or []),
            shown=show,
            list_all=list_file is not None,
            waves=waves,
        )
    except IndexingUnavailableError as exc:
        print(f"error: {exc}\n{c.indexing_hint()}", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from exc
    except AwsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILURE) from exc
    if list_file is not None:
        try:
            _write_list(list_file, names)
        except OSError as exc:
            print(f"error: cannot write --list-file {list_file}: {exc}", file=sys.stderr)
            raise typer.Exit(EXIT_INVALID) from exc
    if output == "json":
        print(json.dumps(c.as_json(census), indent=2, sort_keys=True))
    else:
        print(c.render_text(census, _root_names(catalog_file)))
