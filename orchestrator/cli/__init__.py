"""`ca-migrate`, the operators' command.

Exit codes, for every command: 0 ok, 2 invalid input (bad file, bad
argument, invalid document), 1 anything else (AWS or sandbox unreachable,
internal error).

Sub-commands live in sibling modules, one per area, each exposing a
`typer.Typer` that this module mounts.

The global options (`--endpoint-url`, `--region`, `--profile`, `--state`,
`--log-format`, `-v`) are also accepted after the sub-command, as the AWS CLI
and kubectl accept theirs, unless that sub-command has an option of the same
name (then it is the sub-command's).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from infra.sandbox.cli import sandbox_app
from orchestrator.cli import campaign, census, demo, documents, report, verify
from orchestrator.cli._logging import LogFormat, configure_logging
from orchestrator.cli.exits import EXIT_OK

__all__ = ["Globals", "app", "main"]


@dataclass(frozen=True, slots=True)
class Globals:
    """Options every sub-command may read from `ctx.obj`."""

    endpoint_url: str | None
    region: str | None
    profile: str | None
    state: Path
    log_format: LogFormat


_GLOBAL_VALUED = frozenset({"--endpoint-url", "--region", "--profile", "--state", "--log-format"})
_GLOBAL_FLAGS = frozenset({"-v", "--verbose"})


def _hoist_globals(group: Any, ctx: Any, args: Sequence[str]) -> list[str]:
    """Move global options given after the sub-command in front of it.

    Options the chosen sub-command defines itself (`document build --region`)
    stay where they are, and so does everything after `--`.
    """
    rest = list(args)
    head: list[str] = []
    while rest and rest[0].startswith("-"):  # the group's own options, before the command
        token = rest.pop(0)
        head.append(token)
        if token in _GLOBAL_VALUED and rest:
            head.append(rest.pop(0))
    # typer's (vendored) click types stay duck-typed here: a group has get_command
    command: Any = group
    path: list[str] = []
    while hasattr(command, "get_command") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        path.append(name)
        command = command.get_command(ctx, name)
    if command is None or command is group:
        return [*head, *path, *rest]
    own = {opt for param in command.params for opt in getattr(param, "opts", ())}
    hoisted: list[str] = []
    kept: list[str] = []
    while rest:
        token = rest.pop(0)
        if token == "--":  # noqa: S105 - the end-of-options marker, not a secret
            kept += [token, *rest]
            break
        name, has_value, _ = token.partition("=")
        if name in _GLOBAL_VALUED and name not in own:
            hoisted.append(token)
            if not has_value and rest:
                hoisted.append(rest.pop(0))
        elif token in _GLOBAL_FLAGS and token not in own:
            hoisted.append(token)
        else:
            kept.append(token)
    return [*head, *hoisted, *path, *kept]


class _RootGroup(TyperGroup):
    """The root command: global options are accepted after the sub-command too."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _hoist_globals(self, ctx, args))


def _version(value: bool) -> None:
    if not value:
        return
    try:
        found = version("ca-migrate")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "unknown (not installed)"
    print(f"ca-migrate {found}")
    raise typer.Exit(EXIT_OK)


app = typer.Typer(
    name="ca-migrate",
    cls=_RootGroup,
    help="Move an AWS IoT Core fleet to the Amazon Trust Services roots and the iot:Data-ATS "
    "endpoint, in gated waves. The options below may also follow the command.",
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
        str,
        typer.Option(
            help="Log events as json or console (default: console on a terminal, json otherwise)."
        ),
    ] = "auto",
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show info log events on a terminal too (warnings only without).",
        ),
    ] = False,
    _show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    if log_format not in ("json", "console", "auto"):
        raise typer.BadParameter("use json or console", param_hint="--log-format")
    fmt: LogFormat = (
        "json" if log_format == "json" else "console" if log_format == "console" else "auto"
    )
    configure_logging(fmt, level=logging.INFO if verbose else None)
    ctx.obj = Globals(
        endpoint_url=endpoint_url, region=region, profile=profile, state=state, log_format=fmt
    )


app.add_typer(documents.ca_app, name="ca")
app.add_typer(documents.document_app, name="document")
app.add_typer(campaign.app)
app.add_typer(report.app)
app.add_typer(census.app)
app.add_typer(verify.app)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(demo.app)


def main() -> None:
    """Console-script entry point."""
    app()
