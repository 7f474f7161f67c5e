"""`ca-migrate verify CAMPAIGN`: devices whose shadow disagrees with their job execution.

Exit codes: 0 no drift; 1 drift (the devices are listed); 2 the check could not
be made (unknown campaign, bad option, fleet indexing off, AWS refused a call).
Unlike the other commands, every failure is 2, so that a script can read 1 as
"drift found" and nothing else.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import structlog
import typer

from orchestrator import verify as v
from orchestrator.census import indexing_hint
from orchestrator.cli._output import OutputOption, output_format
from orchestrator.errors import IndexingUnavailableError, OrchestratorError, UsageError

__all__ = ["app"]

EXIT_DRIFT = 1
EXIT_ERROR = 2

log = structlog.get_logger(__name__)

app = typer.Typer(no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(EXIT_ERROR)


@app.command("verify")
def verify_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name (from --state).")],
    output: OutputOption = "text",
    passed_only: Annotated[
        bool,
        typer.Option(
            help="Check only the waves that passed their gate (default: every wave "
            "whose job has SUCCEEDED executions)."
        ),
    ] = False,
) -> None:
    """List devices whose ca-migration shadow disagrees with their SUCCEEDED execution.

    Exit 0 when none does, 1 when any does, 2 when the check cannot be made.
    """
    from orchestrator.aws.readers import cli_readers
    from orchestrator.cli.campaign import _options, _spec_of, _store
    from orchestrator.drift_survey import survey_drift

    try:
        output = output_format(output)
        opts = _options(ctx)
        store = _store(opts)
        spec = _spec_of(store, name)
        state = store.load(name).state
        if opts.region and opts.region != spec.region:
            raise UsageError(
                f"the campaign runs in {spec.region} but --region says {opts.region}; drop --region"
            )
        readers = cli_readers(endpoint_url=opts.endpoint_url, profile=opts.profile)
        print(f"verifying {name}: asking fleet indexing and AWS IoT Jobs...", file=sys.stderr)
        result = survey_drift(spec, state, readers, passed_only=passed_only)
    except IndexingUnavailableError as exc:
        raise _fail(f"{exc}\n{indexing_hint()}") from exc
    except OrchestratorError as exc:
        raise _fail(str(exc)) from exc
    log.info(
        "verify-finished",
        campaign=name,
        drift=len(result.drift),
        waves=len(result.waves),
        calls=result.calls,
    )
    if output == "json":
        print(json.dumps(v.as_json(result), indent=2, sort_keys=True))
    else:
        print(v.render_text(result))
    if result.drift:
        raise typer.Exit(EXIT_DRIFT)
