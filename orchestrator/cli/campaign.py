"""`ca-migrate plan|start|run|status|approve|pause|resume|abort|rollback|events|report`.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer

from job_documents import JobDocumentError, Operation, SystemClock
from orchestrator.cli import seams
from orchestrator.errors import (
    CampaignExistsError,
    CampaignNotFoundError,
    LeaseHeldError,
    OrchestratorError,
    SpecError,
    UnknownThingGroupError,
    UsageError,
    VersionConflictError,
)
from orchestrator.model import CampaignSpec, CampaignStatus
from orchestrator.planner import Abort, Approve, Command, Pause, Resume, job_config
from orchestrator.reconcile import Reconciler, StepResult
from orchestrator.report import (
    progress_bar,
    render_html,
    render_json,
    render_markdown,
    report_data,
    status_text,
)
from orchestrator.spec import load_spec, parse_spec, read_campaign_text
from orchestrator.store import StateStore

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


@contextmanager
def _exit_codes() -> Iterator[None]:
    try:
        yield
    except (
        SpecError,
        UsageError,
        CampaignNotFoundError,
        CampaignExistsError,
        UnknownThingGroupError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from exc
    except JobDocumentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from exc
    except OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILURE) from exc


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


def _reconciler(opts: _Options, region: str, store: StateStore | None = None) -> Reconciler:
    from orchestrator.aws.iot import IotJobsAdapter, make_client
    from orchestrator.jobs import JobsApi

    if opts.region and opts.region != region:
        raise UsageError(
            f"the campaign runs in {region} but --region says {opts.region}; drop --region"
        )
    api: JobsApi = seams.wrap_jobs_api(
        IotJobsAdapter(
            make_client(region=region, endpoint_url=opts.endpoint_url, profile=opts.profile)
        )
    )
    store = store or _store(opts)
    return Reconciler(store, api, SystemClock())


def _campaign_reconciler(opts: _Options, name: str) -> Reconciler:
    store = _store(opts)
    stored = store.load(name)
    spec = parse_spec(stored.spec_text, f"campaign {name}")
    return _reconciler(opts, spec.region, store)


def _catalog_note(spec: CampaignSpec) -> str | None:
    return spec.catalog


def _spec_of(store: StateStore, name: str) -> CampaignSpec:
    stored = store.load(name)
    base = Path(stored.spec_dir) if stored.spec_dir else None
    return parse_spec(stored.spec_text, f"campaign {name}", base_dir=base)


# -- plan / start ----------------------------------------------------------------------------


@app.command()
def plan(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Campaign file (YAML).")],
    output: Annotated[str, typer.Option(help="text or json.")] = "text",
) -> None:
    """Validate a campaign, resolve the endpoint, count devices, show the jobs (no writes)."""
    from orchestrator.aws.iot import IotJobsAdapter, create_job_request, make_client
    from orchestrator.jobdocs import build_wave_documents
    from orchestrator.planner import job_id_for

    with _exit_codes():
        spec = load_spec(file)
        opts = _options(ctx)
        if opts.region and opts.region != spec.region:
            raise UsageError(
                f"the campaign runs in {spec.region} but --region says {opts.region}; drop --region"
            )
        api = IotJobsAdapter(
            make_client(region=spec.region, endpoint_url=opts.endpoint_url, profile=opts.profile)
        )
        host = api.resolve_endpoint() if spec.endpoint == "auto" else spec.endpoint
        built = build_wave_documents(spec, host)
        waves: list[dict[str, Any]] = []
        for wave in spec.waves:
            doc = built.documents[wave.name]
            job_id = job_id_for(spec.name, wave.name, doc.sha256, Operation.MIGRATE)
            arns = [api.group_arn(g) for g in wave.thing_groups]
            devices = {g: api.count_things(g) for g in wave.thing_groups}
            request = create_job_request(
                job_id, f"<{doc.size} characters>", job_config(spec, wave, Operation.MIGRATE), arns
            )
            waves.append(
                {
                    "wave": wave.name,
                    "devices": devices,
                    "job_id": job_id,
                    "document_size": doc.size,
                    "document_sha256": doc.sha256,
                    "approval": wave.approval.value,
                    "create_job": request,
                }
            )
        result: dict[str, Any] = {
            "campaign": spec.name,
            "region": spec.region,
            "endpoint": host,
            "catalog": built.catalog.source,
            "catalog_is_default": built.catalog.is_default,
            "roots": list(spec.trust.add),
            "waves": waves,
        }
    if output == "json":
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    print(f"campaign {spec.name} in {spec.region}: endpoint {host}")
    if not built.catalog.is_default:
        print(f"!! CATALOG {built.catalog.source}: NOT the packaged Amazon Trust Services roots")
    else:
        print(f"catalog {built.catalog.source}")
    print(f"roots to add: {', '.join(spec.trust.add)}")
    for w in waves:
        total = sum(w["devices"].values())
        groups = ", ".join(f"{g} ({n})" for g, n in w["devices"].items())
        print(f"- wave {w['wave']}: {total} devices in {groups}; approval {w['approval']}")
        print(f"  job {w['job_id']}, document {w['document_size']} characters")
        settings = {k: v for k, v in w["create_job"].items() if k not in ("jobId", "document")}
        print(f"  CreateJob {json.dumps(settings, sort_keys=True)}")


@app.command()
def start(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Campaign file (YAML).")],
) -> None:
    """Store a new campaign (endpoint resolved, documents built) and run its first reconcile."""
    with _exit_codes():
        text = read_campaign_text(file)  # once: what is stored is exactly what was validated
        spec = parse_spec(text, str(file), base_dir=file.parent)
        rec = _reconciler(_options(ctx), spec.region)
        state = rec.start(spec, text, str(file.resolve().parent))
        result = rec.step(state.name)
        print(status_text(result.state, _catalog_note(spec)))


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
) -> None:
    """Reconcile once (or, with --follow, until the campaign completes, halts or is aborted)."""
    with _exit_codes():
        rec = _campaign_reconciler(_options(ctx), name)
        deadline = time.monotonic() + max_hours * 3600
        while True:
            try:
                state = rec.step(name).state
            except (LeaseHeldError, VersionConflictError) as exc:
                if not follow:
                    raise
                log.info("reconcile-skipped", campaign=name, detail=str(exc))
                state = rec.store.load(name).state
            if not follow or state.status in STOPPED or time.monotonic() > deadline:
                break
            time.sleep(interval)
        print(status_text(state))
    if follow and state.status in (CampaignStatus.HALTED, CampaignStatus.ABORTED):
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def status(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    output: Annotated[str, typer.Option(help="text or json.")] = "text",
) -> None:
    """Waves, counts, gate verdicts and progress, from the state store (no AWS calls)."""
    with _exit_codes():
        store = _store(_options(ctx))
        spec = _spec_of(store, name)
        state = store.load(name).state
    if output == "json":
        data = report_data(state, [], spec.catalog)
        data.pop("decisions")
        for wave, w in zip(state.waves, data["waves"], strict=True):
            w["progress"] = progress_bar(wave.counts).split("] ")[-1].strip()
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    print(status_text(state, spec.catalog))


@app.command()
def events(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    output: Annotated[str, typer.Option(help="text or json.")] = "text",
) -> None:
    """The campaign's event log: every decision with its reason, oldest first."""
    with _exit_codes():
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
            print(f"{e.at.isoformat()} {e.kind}{wave}: {e.reason}")


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


def _command(ctx: typer.Context, name: str, make: Callable[[], Command]) -> None:
    with _exit_codes():
        rec = _campaign_reconciler(_options(ctx), name)
        result = _waiting_for_the_lease(lambda: rec.command(name, lambda _spec, _state: make()))
        print(status_text(result.state))


@app.command()
def approve(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    wave: Annotated[str, typer.Argument(help="The wave to let launch.")],
) -> None:
    """Approve a wave that waits for manual approval (it launches on this reconcile)."""
    _command(ctx, name, lambda: Approve(wave))


@app.command()
def pause(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Campaign name.")]) -> None:
    """Stop launching and promoting waves (running jobs continue)."""
    _command(ctx, name, Pause)


@app.command()
def resume(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Campaign name.")]) -> None:
    """Resume a paused campaign."""
    _command(ctx, name, Resume)


@app.command()
def abort(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Campaign name.")]) -> None:
    """Cancel every running job of the campaign (queued executions) and stop it for good."""
    _command(ctx, name, Abort)


@app.command()
def rollback(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    wave: Annotated[
        list[str] | None, typer.Option("--wave", help="Only these waves (repeatable).")
    ] = None,
) -> None:
    """Create `restore` jobs for the waves that ran (or the named ones)."""
    with _exit_codes():
        rec = _campaign_reconciler(_options(ctx), name)
        result = _waiting_for_the_lease(lambda: rec.rollback(name, tuple(wave or ())))
        print(status_text(result.state))


@app.command()
def report(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    format_: Annotated[str, typer.Option("--format", help="md, json or html.")] = "md",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to FILE.")] = None,
) -> None:
    """A report of the campaign: waves, counts, charts (html) and every decision with its reason."""
    renderers = {"md": render_markdown, "json": render_json, "html": render_html}
    with _exit_codes():
        if format_ not in renderers:
            raise UsageError(f"unknown --format {format_!r}; use md, json or html")
        store = _store(_options(ctx))
        spec = _spec_of(store, name)
        data = report_data(store.load(name).state, store.events(name), spec.catalog)
        text = renderers[format_](data)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        print(f"report written to {output}")
