"""`ca-migrate report NAME`: the campaign's story, from the state store.

Markdown, JSON or one self-contained HTML page (`orchestrator.report`); the format
follows `-o`, else `--output-file`'s suffix, else Markdown. Exit codes as every
campaign command's (`orchestrator.cli.campaign`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli._census_view import CensusOption, shadow_census
from orchestrator.cli._output import OutputFileOption, output_format, write_output_file
from orchestrator.cli.campaign import _options, _spec_of, _store
from orchestrator.cli.exits import exit_codes
from orchestrator.errors import UsageError
from orchestrator.report import render_html, render_json, render_markdown, report_data

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

_REPORT_SUFFIXES = {
    ".md": "md",
    ".markdown": "md",
    ".json": "json",
    ".html": "html",
    ".htm": "html",
}


@app.command()
def report(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="md (also: text), json or html; default: from --output-file's suffix, else md.",
        ),
    ] = None,
    output_file: OutputFileOption = None,
    format_: Annotated[
        str | None, typer.Option("--format", help="Same as --output (older spelling).")
    ] = None,
    census: CensusOption = False,
) -> None:
    """A report of the campaign: settings, waves, timelines (html), every decision and why.

    With --census, also each passed wave's devices on its endpoint, by their shadow.
    """
    renderers = {"md": render_markdown, "json": render_json, "html": render_html}
    with exit_codes():
        chosen = _report_format(output, format_, output_file)
        opts = _options(ctx)
        store = _store(opts)
        spec = _spec_of(store, name)
        state = store.load(name).state
        data = report_data(state, store.events(name), spec.catalog, spec=spec)
        if census:
            data["shadowCensus"] = shadow_census(
                spec, state, endpoint_url=opts.endpoint_url, profile=opts.profile
            )
        text = renderers[chosen](data)
        if output_file is not None:
            write_output_file(output_file, text)
    if output_file is None:
        sys.stdout.write(text)
    else:
        print(f"report written to {output_file}", file=sys.stderr)


def _report_format(output: str | None, format_: str | None, output_file: Path | None) -> str:
    if output is not None and format_ is not None and output != format_:
        raise UsageError(f"--output {output} and --format {format_} disagree; give one")
    given = output if output is not None else format_
    if given is None:
        suffix = output_file.suffix.lower() if output_file is not None else ""
        return _REPORT_SUFFIXES.get(suffix, "md")
    chosen = output_format(given, ("md", "text", "json", "html"))
    return "md" if chosen == "text" else chosen
