"""`ca-migrate demo` and `ca-migrate rehearse`: whole campaigns against the local sandbox.

`demo` runs the bundled campaign over a simulated fleet shaped by a scenario
(happy, bad-canary, offline, throttled, device-client, rollback, multi-region,
real-fleet) and shows it live; it answers "what does a gated rollout look like,
and would the gates stop a bad one?" without touching AWS. `rehearse` runs the
operator's own campaign file against a described fleet (groups, sizes, fault
profiles) and reports when each gate would promote or halt, and how many
devices a halt would have exposed.

Both exit 0 when the run finished (`demo`: and reached the outcome its
scenario is built for), 2 on invalid input, 1 otherwise (for `rehearse` that
includes a run that stopped at the simulated-time limit with the campaign not in a
final state, which it says wave by wave with a hint); SIGINT (Ctrl-C) and
SIGTERM stop the devices and the sandbox, then exit 130 and 143. With `--output json`
the last line of stdout is one JSON object.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Self

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from infra.sandbox.errors import SandboxError
from orchestrator.cli._live import SETTLING, ChangeLines, wave_table
from orchestrator.cli._logging import LogFormat, configure_logging
from orchestrator.cli._signals import stops_on_signals
from orchestrator.cli.exits import EXIT_FAILURE, exit_codes
from orchestrator.errors import UsageError
from orchestrator.model import CampaignState

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)


@contextlib.contextmanager
def _exit_codes() -> Iterator[None]:
    from infra.sandbox.fleet import FleetSpecError

    with exit_codes(invalid=(FleetSpecError,), failure=(SandboxError,)):
        yield


def _quiet_logs(ctx: typer.Context, verbose: bool) -> Callable[[], None]:
    """Thousands of simulated devices log every step (power cuts warn by design): errors only.

    Returns the same set-up as a picklable callable, for the fleet's worker processes.
    """
    obj = ctx.find_root().obj
    fmt: LogFormat = obj.log_format if obj is not None else "auto"
    setup = functools.partial(
        configure_logging, fmt, level=logging.INFO if verbose else logging.ERROR
    )
    setup()
    return setup


_STOPPING = "stopping devices and the sandbox"

_WORKERS_HELP = (
    "Worker processes for the memory transport's devices (0: all in this process; "
    "default: 3 from 5,000 devices, on any machine, so that runs compare)."
)


class _LiveView:
    """Redraws the campaign at most ten times a second while a run goes on."""

    def __init__(self, console: Console, heading: str) -> None:
        self._console = console
        self._heading = heading
        self._live: Live | None = None
        self._last = 0.0
        self._table: Table | None = None

    def __enter__(self) -> Self:
        self._live = Live(console=self._console, refresh_per_second=10, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def step(self, text: str) -> None:
        """A set-up step until the campaign starts; after it, a line under the last table."""
        if self._live is None:
            return
        line = Text(f"{self._heading} — {text}…")
        self._live.update(line if self._table is None else Group(self._table, line), refresh=True)

    def __call__(self, progress: Any) -> None:
        now = time.monotonic()
        if self._live is None or now - self._last < 0.1:  # noqa: PLR2004
            return
        self._last = now
        state: CampaignState = progress.state
        minutes = progress.simulated_seconds / 60
        title = (
            f"{self._heading} — campaign {state.name} {state.status.value} — "
            f"{progress.devices} devices — t+{minutes:.0f} min (simulated)"
        )
        self._table = wave_table(state, title)
        if progress.settling:
            self._live.update(Group(self._table, Text(f"{state.status.value}: {SETTLING}")))
        else:
            self._live.update(Group(self._table))


def _summary(console: Console, result: Any, extra: list[str]) -> None:
    console.print(f"[bold]campaign {result.campaign}: {result.status}[/bold] — {result.reason}")
    table = Table(show_header=True)
    for column in (
        "wave",
        "phase",
        "succeeded",
        "failed",
        "rejected",
        "queued",
        "launched",
        "done",
    ):
        table.add_column(column)
    for wave in result.waves:
        ex = wave["executions"] or {}
        table.add_row(
            wave["name"],
            wave["phase"],
            str(ex.get("succeeded", 0)),
            str(ex.get("failed", 0) + ex.get("timed_out", 0)),
            str(ex.get("rejected", 0)),
            str(ex.get("queued", 0) + ex.get("in_progress", 0)),
            _at(wave["launched_after_minutes"]),
            _at(wave["finished_after_minutes"]),
        )
    console.print(table)
    endpoints = ", ".join(f"{n} on {k}" for k, n in sorted(result.endpoints.items()))
    workers = result.extra.get("fleet_workers") or 0
    where = f"; run in {workers} worker processes" if workers else ""
    console.print(f"devices: {result.devices} ({endpoints}{where})")
    console.print(f"exposure: {result.exposure} devices received a job", end="")
    if result.halted_after_minutes is not None:
        console.print(f" before the halt at t+{result.halted_after_minutes:.0f} min")
    else:
        console.print()
    console.print(
        f"simulated {result.simulated_minutes:.0f} min in {result.wall_seconds:.1f} s; "
        f"{result.api_calls} control-plane calls ({result.http_requests} HTTP requests)"
    )
    for line in extra:
        console.print(line)
    if result.report:
        console.print(f"report: {result.report}")


def _at(minutes: float | None) -> str:
    return "-" if minutes is None else f"t+{minutes:.0f} min"


def _run(
    output: str,
    heading: str,
    job: Callable[[Callable[[Any], None], Callable[[str], None]], Any],
) -> Any:
    """Run `job(on_progress, on_setup)` with a live view on a terminal, else plain lines."""
    if output not in ("text", "json"):
        raise UsageError(f"unknown --output {output!r}; use text or json")
    console = Console(stderr=output == "json")
    if not console.is_terminal:
        # a pipe, CI, a file: plain lines, on stderr when stdout carries the JSON
        lines = ChangeLines(sys.stderr if output == "json" else sys.stdout)
        print(f"{heading}: starting", file=lines.stream, flush=True)
        return job(
            lambda p: lines.show(p.state, p.simulated_seconds, p.settling),
            lambda step: print(f"{heading}: {step}", file=lines.stream, flush=True),
        )
    with _LiveView(console, heading) as view:
        return job(view, view.step)


@app.command()
def demo(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(help="Simulated devices (50 or more).")] = 1000,
    transport: Annotated[
        str, typer.Option(help="memory (thousands of devices) or mqtt (real SDK over TLS).")
    ] = "memory",
    scenario: Annotated[
        str,
        typer.Option(
            help="happy, bad-canary, offline, throttled, device-client, rollback, multi-region "
            "or real-fleet."
        ),
    ] = "happy",
    time_scale: Annotated[
        float | None,
        typer.Option(
            help="Simulated seconds per real second (memory: pacing for the eye, 0 = as fast "
            "as possible, default 600; mqtt: the sandbox clock, default 60).",
            min=0,
        ),
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    report: Annotated[
        Path | None, typer.Option(help="Write the HTML report here (default: a temp file).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fault-profile draw.")] = 7,
    workers: Annotated[int | None, typer.Option(help=_WORKERS_HELP, min=0)] = None,
    verbose: Annotated[bool, typer.Option(help="Log every device event.")] = False,
    signed: Annotated[
        bool,
        typer.Option(
            "--signed",
            help="Sign every document with a fresh demo key (Ed25519) that the devices pin: "
            "they take only documents it signed.",
        ),
    ] = False,
) -> None:
    """Run the bundled campaign on the sandbox with a simulated fleet, live, then summarize."""
    from infra.sandbox.fleet import simulation_gc
    from orchestrator.demo.runner import RunSettings, run_campaign
    from orchestrator.demo.scenarios import campaign_text, demo_fleet
    from orchestrator.demo.scenarios import scenario as find_scenario

    setup = _quiet_logs(ctx, verbose)
    # The collector thresholds suit the memory transport only: the MQTT fleet's SDK clients
    # hold native connections that a collection frees, and fewer collections slow it.
    collector = simulation_gc() if transport == "memory" else contextlib.nullcontext()
    with stops_on_signals(_STOPPING), _exit_codes(), collector:
        chosen = find_scenario(scenario)
        signed = signed or chosen.signed  # a scenario may be signed by design
        fleet = demo_fleet(chosen, devices, seed)
        # one file per scenario and transport: an MQTT run never overwrites a memory run's report
        path = report or Path(tempfile.gettempdir()) / (
            f"ca-migrate-demo-{chosen.name}{'-signed' if signed else ''}-{transport}.html"
        )
        if time_scale is None:
            time_scale = 60.0 if transport == "mqtt" else 600.0
        settings = RunSettings(
            transport=transport,
            time_scale=time_scale,
            throttle_rate=chosen.throttle_rate,
            rollback_on_halt=chosen.rollback,
            report=path,
            workers=workers,
            worker_setup=setup,
            signed=signed,
        )
        result = _run(
            output,
            f"demo {chosen.name}{' (signed)' if signed else ''}",
            lambda view, step: run_campaign(
                campaign_text(chosen),
                fleet,
                replace(settings, on_setup=step),
                source=str(chosen.campaign),
                on_progress=view,
            ),
        )
    as_expected = result.status == chosen.expected
    if output == "json":
        body = {
            "scenario": chosen.name,
            "transport": transport,
            "expected": chosen.expected,
            "as_expected": as_expected,
            **result.to_json(),
        }
        print(json.dumps(body, sort_keys=True))
    else:
        console = Console()
        verdict = "as expected" if as_expected else f"NOT the expected {chosen.expected}"
        lines = [f"scenario {chosen.name}: {chosen.description} — {verdict}"]
        if signed:
            lines.append(
                f"signed: every document carries an Ed25519 signature (key id "
                f"{result.extra['signed']['key_id']}); every device (agent or Device Client) pins "
                "the demo public key and verified it before acting"
            )
        _summary(console, result, lines)
    if not as_expected:
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def rehearse(
    ctx: typer.Context,
    campaign: Annotated[Path, typer.Argument(help="Your campaign file (YAML).")],
    fleet: Annotated[
        Path, typer.Option(help="Fleet file: groups, sizes and fault profiles (YAML).")
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    report: Annotated[Path | None, typer.Option(help="Write the HTML report here.")] = None,
    throttle_rate: Annotated[
        float, typer.Option(help="Share of control-plane calls throttled.", min=0, max=1)
    ] = 0.0,
    time_scale: Annotated[
        float, typer.Option(help="Simulated seconds per real second (0: as fast as possible).")
    ] = 0.0,
    workers: Annotated[int | None, typer.Option(help=_WORKERS_HELP, min=0)] = None,
    verbose: Annotated[bool, typer.Option(help="Log every device event.")] = False,
) -> None:
    """Rehearse your campaign against a described fleet: when each gate promotes or halts."""
    from infra.sandbox.fleet import load_fleet_spec, simulation_gc
    from orchestrator.demo.runner import RunSettings, run_campaign

    setup = _quiet_logs(ctx, verbose)
    with stops_on_signals(_STOPPING), _exit_codes(), simulation_gc():
        try:
            text = campaign.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the campaign file {campaign}: {exc.strerror}") from exc
        spec = load_fleet_spec(fleet)
        obj = ctx.find_root().obj
        settings = RunSettings(
            time_scale=time_scale,
            throttle_rate=throttle_rate,
            report=report,
            workers=workers,
            worker_setup=setup,
            # a campaign that signs is signed as `start` would: its key file, or its KMS key
            profile=obj.profile if obj is not None else None,
        )
        result = _run(
            output,
            f"rehearsal of {campaign.name}",
            lambda view, step: run_campaign(
                text,
                spec,
                replace(settings, on_setup=step),
                source=str(campaign),
                on_progress=view,
                base_dir=campaign.parent,
            ),
        )
    if output == "json":
        print(json.dumps({"rehearsal": str(campaign), **result.to_json()}, sort_keys=True))
        if not result.finished:
            raise typer.Exit(EXIT_FAILURE)
        return
    lines = []
    signed = result.extra.get("signed")
    if signed:
        lines.append(
            f"signed as start would sign (key id {signed['key_id']}, {signed['source']}); "
            "every simulated device pinned its public key"
        )
    lines.extend(_wave_line(wave) for wave in result.waves)
    if not result.finished:
        lines.append(UNFINISHED_HINT)
    _summary(Console(), result, lines)
    if not result.finished:
        raise typer.Exit(EXIT_FAILURE)


#: What to change when a rehearsal ends with waves still waiting (typically for devices
#: that never complete: offline, or fewer than the gate's min_completed).
UNFINISHED_HINT = (
    "hint: a gate that waits for devices that never complete decides only at a deadline: "
    "give the wave deadline_minutes (with offline: ignore, the default, never-started "
    "devices then leave the completed fraction; a gate still unmet halts the wave), or a "
    "gate.min_completed the reachable devices can meet"
)


def _wave_line(wave: dict[str, Any]) -> str:
    """One wave of a rehearsal: promoted, halted, still undecided, or never launched."""
    name, phase = wave["name"], wave["phase"]
    if phase == "PASSED":
        return f"- {name}: promoted at {_at(wave['finished_after_minutes'])}"
    if phase == "HALTED":
        return f"- {name}: HALTED at {_at(wave['finished_after_minutes'])}: {wave['verdict']}"
    if wave["launched_after_minutes"] is None:
        return f"- {name}: {phase} (never launched)"
    verdict = wave["verdict"] or "no gate verdict yet"
    return f"- {name}: {phase} since {_at(wave['launched_after_minutes'])}, unfinished: {verdict}"
