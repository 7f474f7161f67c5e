"""`ca-migrate`, the operators' command.

Exit codes, for every command: 0 ok, 2 invalid input (bad file, bad
argument, invalid document), 1 anything else (AWS or sandbox unreachable,
internal error).

Sub-commands live in sibling modules, one per area, each exposing a
`typer.Typer` that this module mounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from infra.sandbox.cli import sandbox_app
from orchestrator.cli import campaign, census, demo, documents
from orchestrator.cli._logging import LogFormat, configure_logging

__all__ = ["Globals", "app", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2


@dataclass(frozen=True, slots=True)
class Globals:
    """Options every sub-command may read from `ctx.obj`."""

    endpoint_url: str | None
    region: str | None
    profile: str | None
    state: Path
    log_format: LogFormat


app = typer.Typer(
    name="ca-migrate",
    help="Move an AWS IoT Core fleet to the Amazon Trust Services roots and the iot:Data-ATS "
    "endpoint, in gated waves.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    endpoint_url: Annotated[
        str | None,
        typer.Option(
            help="AWS IoT control-plane URL (e.g. the sandbox's).", envvar="AWS_ENDPOINT_URL_IOT"
        ),
    ] = None,
    region: Annotated[str | None, typer.Option(help="AWS region.", envvar="AWS_REGION")] = None,
    profile: Annotated[str | None, typer.Option(help="AWS profile.", envvar="AWS_PROFILE")] = None,
    state: Annotated[
        Path, typer.Option(help="Campaign state store (SQLite file).", envvar="CA_MIGRATE_STATE")
    ] = Path("ca-migrate.sqlite"),
    log_format: Annotated[
        str, typer.Option(help="Log events as json or console (default: console on a terminal).")
    ] = "auto",
) -> None:
    if log_format not in ("json", "console", "auto"):
        raise typer.BadParameter("use json or console", param_hint="--log-format")
    fmt: LogFormat = (
        "json" if log_format == "json" else "console" if log_format == "console" else "auto"
    )
    configure_logging(fmt)
    ctx.obj = Globals(
        endpoint_url=endpoint_url, region=region, profile=profile, state=state, log_format=fmt
    )


app.add_typer(documents.ca_app, name="ca")
app.add_typer(documents.document_app, name="document")
app.add_typer(campaign.app)
app.add_typer(census.app)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(demo.app)


def main() -> None:
    """Console-script entry point."""
    app()
