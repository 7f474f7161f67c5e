"""`ca-migrate plan|start|run|status|approve|pause|resume|abort|rollback|events`.

The operators' commands for campaigns. Each builds the state store and the
AWS adapter from the global options, runs one reconcile-layer call, and maps
errors to exit codes: 2 for invalid input (campaign file, unknown wave, a
command that does not apply now), 1 for everything else.

`--state` is a SQLite file, or `dynamodb://TABLE` for the DynamoDB store.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer

from job_documents import Operation
from orchestrator.cli import seams
from orchestrator.cli._census_view import CensusOption, print_status_with_census, shadow_census
from orchestrator.cli._output import OutputOption, output_format
from orchestrator.cli._plan_census import census_lines, plan_census
from orchestrator.cli._preflight import ConnectToOption, EndpointCheck, SkipEndpointCheckOption
from orchestrator.cli._regions import RegionalClients, endpoints, region_lines, regions_plan
from orchestrator.cli._signing import signing_plan
from orchestrator.cli._survey import already_started, print_plan, refuse, survey
from orchestrator.cli.exits import exit_codes
from orchestrator.clock import clock_from_env, clock_note
from orchestrator.errors import (
    IndexingUnavailableError,
    LeaseHeldError,
    UsageError,
    VersionConflictError,
)
from orchestrator.feasibility import devices_needed
from orchestrator.model import (
    Approval,
    CampaignSpec,
    CampaignState,
    CampaignStatus,
    EventKind,
    SigningSpec,
    WaveSpec,
)
from orchestrator.notify import announce_step, cli_announcer
from orchestrator.planner import Abort, Approve, Command, Pause, Resume, job_config
from orchestrator.reconcile import DocumentKey, Reconciler, SignerOpener, StepResult
from orchestrator.report import progress_bar, report_data, status_text
from orchestrator.spec import load_spec, parse_spec, read_campaign_text
from orchestrator.store import StateStore

if TYPE_CHECKING:
    from orchestrator.jobdocs import WaveDocuments

__all__ = ["app"]

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2
STOPPED = frozenset(
    {
        CampaignStatus.COMPLETED,
        CampaignStatus.HALTED,
        CampaignStatus.ABORTED,
        CampaignStatus.ROLLED_BACK,
    }
)

app = typer.Typer(no_args_is_help=True)


@dataclass(frozen=True, slots=True)
class _Options:
    endpoint_url: str | None
    region: str | None
    profile: str | None
    state: Path


def _options(ctx: typer.Context) -> _Options:
    obj = ctx.find_root().obj
    if obj is None:
        return _Options(None, None, None, Path("ca-migrate.sqlite"))
    return _Options(obj.endpoint_url, obj.region, obj.profile, obj.state)


def _store(opts: _Options) -> StateStore:
    raw = str(opts.state)
    store: StateStore
    # --state arrives as a Path, which folds "dynamodb://TABLE" into "dynamodb:/TABLE"
    if raw.startswith("dynamodb:"):
        from orchestrator.aws.dynamodb import DynamoDbStateStore

        table = raw.removeprefix("dynamodb:").lstrip("/")
        if not table:
            raise UsageError("--state dynamodb://TABLE needs a table name")
        store = DynamoDbStateStore.connect(table, region=opts.region, profile=opts.profile)
    else:
        from orchestrator.store.sqlite import SqliteStateStore

        store = SqliteStateStore(opts.state)
    return seams.wrap_store(store)


def _clients(opts: _Options) -> RegionalClients:
    return RegionalClients(opts.endpoint_url, opts.profile, opts.region)


def _reconciler(opts: _Options, spec: CampaignSpec, store: StateStore | None = None) -> Reconciler:
    """A reconciler with one Jobs API per region of the campaign (made on first use)."""
    clients = _clients(opts)
    clients.check(spec)
    store = store or _store(opts)
    return Reconciler(
        store,
        clients.jobs(),
        clock_from_env(opts.endpoint_url),
        signer=_signer_opener(opts),
        groups=clients.groups,
    )


def _signer_opener(opts: _Options) -> SignerOpener:
    from orchestrator.signing import open_signer

    def opener(signing: SigningSpec, region: str) -> DocumentKey:
        return open_signer(signing, region, opts.profile)

    return opener


def _campaign_reconciler(opts: _Options, name: str) -> Reconciler:
    store = _store(opts)
    stored = store.load(name)
    spec = parse_spec(stored.spec_text, f"campaign {name}")
    return _reconciler(opts, spec, store)


def _spec_of(store: StateStore, name: str) -> CampaignSpec:
    stored = store.load(name)
    base = Path(stored.spec_dir) if stored.spec_dir else None
    return parse_spec(stored.spec_text, f"campaign {name}", base_dir=base)


# -- plan / start ----------------------------------------------------------------------------


def _runtime_plan(spec: CampaignSpec, wave: WaveSpec, built: WaveDocuments) -> dict[str, Any]:
    """What runs the wave's job; for Device Client, its runHandler document (PEMs left out)."""
    from orchestrator.device_client_docs import redacted

    runtime = spec.runtime_for(wave)
    inner = built.embedded.get(wave.name)
    if inner is None:
        return {"device_runtime": runtime.value}
    return {
        "device_runtime": runtime.value,
        "embedded_document_size": inner.size,
        "embedded_document_sha256": inner.sha256,
        "job_document": redacted(built.documents[wave.name].document, inner),
    }


@app.command()
def plan(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Campaign file (YAML).")],
    output: OutputOption = "text",
    skip_endpoint_check: SkipEndpointCheckOption = False,
    connect_to: ConnectToOption = None,
) -> None:
    """Validate a campaign, check every gate can pass, count devices, show the jobs (no writes).

    Exit 2 when the campaign cannot succeed: a gate its wave is too small to
    reach, a thing two waves target, an empty wave, or a new endpoint that does
    not serve a certificate chaining to the roots the campaign pushes.
    """
    from orchestrator.aws.iot import create_job_request
    from orchestrator.jobdocs import build_wave_documents
    from orchestrator.planner import job_id_for

    with exit_codes(invalid=(IndexingUnavailableError,)):  # a query or sample wave's index
        output = output_format(output)
        check = EndpointCheck(skip_endpoint_check, tuple(connect_to or ()))
        spec = load_spec(file)
        opts = _options(ctx)
        adapters = _clients(opts).adapters(spec)
        signer = None if spec.signing is None else _signer_opener(opts)(spec.signing, spec.region)
        built = build_wave_documents(spec, endpoints(spec, adapters), signer)
        host = built.endpoint
        checked = check(spec, built.endpoints, built.catalog)
        found = survey(adapters, spec, _clients(opts).groups)
        waves: list[dict[str, Any]] = []
        for wave in spec.waves:
            doc = built.documents[wave.name]
            job_id = job_id_for(spec.name, wave.name, doc.sha256, Operation.MIGRATE)
            config = job_config(spec, wave, Operation.MIGRATE)
            request = create_job_request(
                job_id,
                f"<{doc.size} characters>",
                config,
                [found.arns[spec.region_of(wave), g] for g in config.thing_groups],
            )
            waves.append(
                found.chosen(spec, wave.name)
                | {
                    "wave": wave.name,
                    "region": spec.region_of(wave),
                    "devices": {g: len(t) for g, t in found.members[wave.name].items()},
                    "distinct_devices": found.devices(wave.name),
                    "gate_needs_devices": devices_needed(wave.gate),
                    "job_id": job_id,
                    "document_size": doc.size,
                    "document_sha256": doc.sha256,
                    "approval": wave.approval.value,
                    "create_job": request,
                    **_runtime_plan(spec, wave, built),
                }
            )
        regions = regions_plan(spec, built.endpoints)
        counted, census_note = plan_census(
            spec, endpoint_url=opts.endpoint_url, profile=opts.profile
        )
        for entry in waves:
            entry["census"] = counted.get(entry["wave"])
        result: dict[str, Any] = {
            "campaign": spec.name,
            "region": spec.region,
            "census_note": census_note,
            "endpoint": host,
            "endpoints": built.endpoints,
            "regions": regions,
            "endpoint_port": spec.endpoint_port,
            "signing": signing_plan(spec),
            "catalog": built.catalog.source,
            "catalog_is_default": built.catalog.is_default,
            "roots": list(spec.trust.add),
            "endpoint_check": {
                "passed": checked.kind is EventKind.ENDPOINT_CHECKED,
                "skipped": checked.kind is EventKind.ENDPOINT_CHECK_SKIPPED,
                **checked.data,
            },
            "waves": waves,
            "problems": [
                {"code": p.code, "wave": p.wave, "message": p.message} for p in found.problems
            ],
        }
        if output == "json":
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            print_plan(
                spec,
                host,
                built.catalog.source,
                built.catalog.is_default,
                waves,
                region_lines(regions),
                checked,
            )
            for line in census_lines(waves, census_note):
                print(line)
        refuse(found.problems)


@app.command()
def start(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Campaign file (YAML).")],
    output: OutputOption = "text",
    skip_endpoint_check: SkipEndpointCheckOption = False,
    connect_to: ConnectToOption = None,
) -> None:
    """Check the campaign as `plan` does (the new endpoint too), store it, run its first reconcile.

    Nothing is stored and no job is created when a check fails (exit 2).
    """
    with exit_codes(invalid=(IndexingUnavailableError,)):
        output = output_format(output)
        check = EndpointCheck(skip_endpoint_check, tuple(connect_to or ()))
        text = read_campaign_text(file)  # once: what is stored is exactly what was validated
        spec = parse_spec(text, str(file), base_dir=file.parent)
        opts = _options(ctx)
        rec = _reconciler(opts, spec)
        if not already_started(rec.store, spec.name, text):
            clients = _clients(opts)
            refuse(survey(clients.adapters(spec), spec, clients.groups).problems)
            rec.start(spec, text, str(file.resolve().parent), preflight=check)
        result = rec.step(spec.name)
    _print_state(result.state, spec.catalog, output, rec)


# -- run / status / events -------------------------------------------------------------------


@app.command()
def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    follow: Annotated[
        bool, typer.Option(help="Keep reconciling until the campaign stops.")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between reconciles.", min=0.05)] = 30.0,
    max_hours: Annotated[float, typer.Option(help="Give up following after this long.")] = 72.0,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="text or json; with --follow the default is a live table on a terminal and "
            "one JSON line per change when piped.",
        ),
    ] = None,
    notify: Annotated[
        list[str] | None,
        typer.Option(
            help="Announce halts, completions and approvals: sns:TOPIC_ARN or webhook:URL "
            "(Slack-compatible JSON). Repeatable."
        ),
    ] = None,
) -> None:
    """Reconcile once (or, with --follow, until the campaign completes, halts or is aborted)."""
    from orchestrator.cli._live import FollowView

    with exit_codes():
        chosen = output_format(output) if output is not None else None
        announcer = cli_announcer(notify or [], profile=_options(ctx).profile)
        rec = _campaign_reconciler(_options(ctx), name)
        spec = _spec_of(rec.store, name)
        mode = chosen or ("json" if follow else "text")
        if follow and chosen is None and sys.stdout.isatty():
            mode = "live"
        deadline = time.monotonic() + max_hours * 3600
        with FollowView(spec, mode if follow else "quiet", _time_label(rec.clock)) as view:
            while True:
                try:
                    result = rec.step(name)
                    announce_step(announcer, result)
                    state = result.state
                except (LeaseHeldError, VersionConflictError) as exc:
                    if not follow:
                        raise
                    log.info("reconcile-skipped", campaign=name, detail=str(exc))
                    state = rec.store.load(name).state
                if follow:
                    view.show(state, rec.clock.now())
                if not follow or state.status in STOPPED or time.monotonic() > deadline:
                    break
                time.sleep(interval)
    if not follow or mode != "json":
        _print_state(state, None, "json" if mode == "json" else "text", rec)
    if follow and state.status in (CampaignStatus.HALTED, CampaignStatus.ABORTED):
        raise typer.Exit(EXIT_FAILURE)


def _time_label(clock: object) -> str:
    """The clock's name when it is not the wall clock ("sandbox time"), else "".

    A clock that is not the wall clock says so with a `label` attribute.
    """
    label = getattr(clock, "label", "")
    return label if isinstance(label, str) else ""


def _state_json(state: CampaignState, catalog: str | None) -> dict[str, Any]:
    data = report_data(state, [], catalog)
    for key in ("decisions", "settings", "timelines"):  # the report's, not the status's
        data.pop(key)
    for wave, w in zip(state.waves, data["waves"], strict=True):
        w["progress"] = progress_bar(wave.counts).split("] ")[-1].strip()
    return data


def _print_state(
    state: CampaignState, catalog: str | None, output: str, rec: Reconciler | None = None
) -> None:
    if output == "json":
        print(json.dumps(_state_json(state, catalog), indent=2, sort_keys=True))
    else:
        print(status_text(state, catalog) + (clock_note(rec.clock) if rec else ""))


@app.command()
def status(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    output: OutputOption = "text",
    census: CensusOption = False,
) -> None:
    """Waves, counts, gate verdicts and progress, from the state store (no AWS calls).

    With --census, also each passed wave's devices on its endpoint, by their shadow.
    """
    with exit_codes():
        output = output_format(output)
        opts = _options(ctx)
        store = _store(opts)
        spec = _spec_of(store, name)
        state = store.load(name).state
    if census:
        seen = shadow_census(spec, state, endpoint_url=opts.endpoint_url, profile=opts.profile)
        text = status_text(state, spec.catalog)
        print_status_with_census(text, _state_json(state, spec.catalog), seen, output)
        return
    _print_state(state, spec.catalog, output)


@app.command()
def events(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    output: OutputOption = "text",
) -> None:
    """The campaign's event log: every decision with its reason, oldest first."""
    with exit_codes():
        output = output_format(output)
        log_entries = _store(_options(ctx)).events(name)
    for e in log_entries:
        if output == "json":
            print(
                json.dumps(
                    {
                        "at": e.at.isoformat(),
                        "version": e.version,
                        "kind": e.kind,
                        "wave": e.wave,
                        "reason": e.reason,
                        "data": dict(e.data),
                    },
                    sort_keys=True,
                )
            )
        else:
            wave = f" [{e.wave}]" if e.wave else ""
            print(f"{e.at.isoformat(timespec='seconds')} {e.kind}{wave}: {e.reason}")


# -- commands --------------------------------------------------------------------------------


LEASE_WAITS = 20
LEASE_WAIT_SECONDS = 0.5


def _waiting_for_the_lease(call: Callable[[], StepResult]) -> StepResult:
    """Operator commands wait briefly for a reconcile that holds the lease (one is short)."""
    for _ in range(LEASE_WAITS):
        try:
            return call()
        except LeaseHeldError:
            time.sleep(LEASE_WAIT_SECONDS)
    return call()


def _command(
    ctx: typer.Context,
    name: str,
    make: Callable[[], Command],
    output: str,
    check: Callable[[CampaignSpec, CampaignState], None] | None = None,
) -> None:
    with exit_codes():
        output = output_format(output)
        rec = _campaign_reconciler(_options(ctx), name)
        if check is not None:
            check(_spec_of(rec.store, name), rec.store.load(name).state)
        result = _waiting_for_the_lease(lambda: rec.command(name, lambda _spec, _state: make()))
    _print_state(result.state, None, output, rec)


def _approvable(wave: str) -> Callable[[CampaignSpec, CampaignState], None]:
    def check(spec: CampaignSpec, state: CampaignState) -> None:
        if state.status not in (CampaignStatus.RUNNING, CampaignStatus.PAUSED):
            raise UsageError(
                f"campaign {state.name} is {state.status.value}: it launches no more waves, "
                "so there is nothing to approve"
            )
        try:
            planned = spec.wave(wave)
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from exc
        if planned.approval is not Approval.MANUAL:
            raise UsageError(
                f"wave {wave} has approval auto: it launches by itself once the previous wave "
                "passes; only manual waves wait for `approve`"
            )

    return check


@app.command()
def approve(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    wave: Annotated[str, typer.Argument(help="The wave to let launch.")],
    output: OutputOption = "text",
) -> None:
    """Approve a manual wave that waits (or will wait); it launches on this reconcile."""
    _command(ctx, name, lambda: Approve(wave), output, _approvable(wave))


@app.command()
def pause(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    output: OutputOption = "text",
) -> None:
    """Stop launching and promoting waves (running jobs continue)."""
    _command(ctx, name, Pause, output)


@app.command()
def resume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    output: OutputOption = "text",
) -> None:
    """Resume a paused campaign."""
    _command(ctx, name, Resume, output)


@app.command()
def abort(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    output: OutputOption = "text",
) -> None:
    """Cancel every running job of the campaign (queued executions) and stop it for good."""
    _command(ctx, name, Abort, output)


@app.command()
def rollback(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    wave: Annotated[
        list[str] | None, typer.Option("--wave", help="Only these waves (repeatable).")
    ] = None,
    output: OutputOption = "text",
) -> None:
    """Create `restore` jobs for the waves that ran (or the named ones)."""
    with exit_codes():
        output = output_format(output)
        rec = _campaign_reconciler(_options(ctx), name)
        result = _waiting_for_the_lease(lambda: rec.rollback(name, tuple(wave or ())))
    _print_state(result.state, None, output, rec)
