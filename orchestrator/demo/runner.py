"""Run a campaign end to end against the sandbox and a simulated fleet.

`run_campaign` is what `ca-migrate demo` and `ca-migrate rehearse` share: it
starts the sandbox (control plane over HTTP, driven with the real boto3
adapter), provisions the described fleet's things and groups, starts the
simulated devices, then alternates reconcile steps with device activity on
one simulated clock until the campaign stops, lets the devices settle, and
summarizes what the sandbox's job executions and the devices' files say.

Time: with the memory transport the sandbox runs on a `ManualClock` that the
driver moves forward (to the next reconcile, device timer, engine deadline,
bake end or wave deadline, whichever comes first), so a two-hour campaign
takes as long as its device work; `time_scale` only paces the run for people
watching (simulated seconds per real second; 0 means as fast as possible).
With the MQTT transport the SDK devices live in real time, so the sandbox runs
a scaled clock (`time_scale` times real time) and the driver reconciles every
interval of it. The orchestrator's `Reconciler` reads the sandbox's clock in
both cases. Nothing sleeps in proportion to simulated minutes.

Invariants:
- The sandbox, the fleet and every temporary directory are stopped or removed
  before `run_campaign` returns, whatever happens.
- The loop is bounded: at most `max_simulated_hours` of simulated time.
- Devices report their own job statuses; the driver never writes one.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import structlog
import yaml

from infra.sandbox.errors import ServiceError
from infra.sandbox.fleet import (
    FleetSpec,
    MemoryFleet,
    ShardedFleet,
    WorkerProcesses,
    assign_profiles,
)
from infra.sandbox.pki import SandboxPki
from infra.sandbox.runtime import Sandbox
from job_documents.clock import ManualClock
from orchestrator.aws.iot import RETRY_CONFIG, IotJobsAdapter
from orchestrator.errors import AwsError, SpecError, SpecProblem, UsageError
from orchestrator.model import CampaignSpec, CampaignState, CampaignStatus, WavePhase
from orchestrator.planner import Approve
from orchestrator.reconcile import Reconciler
from orchestrator.report import render_html, report_data
from orchestrator.spec import parse_spec
from orchestrator.store.sqlite import SqliteStateStore

__all__ = [
    "CampaignRun",
    "Progress",
    "RunResult",
    "RunSettings",
    "fleet_workers",
    "prepare_campaign_text",
    "run_campaign",
]

log = structlog.get_logger(__name__)

STOPPED = frozenset(
    {
        CampaignStatus.COMPLETED,
        CampaignStatus.HALTED,
        CampaignStatus.ABORTED,
        CampaignStatus.ROLLED_BACK,
    }
)
SETTLE_SECONDS = 3600.0
QUIET_SECONDS = 900.0
MQTT_TIME_SCALE = 60.0
MIN_REAL_INTERVAL = 0.25
BOOT_TIMEOUT_SECONDS = 300.0
AUTO_WORKERS_FROM = 5000
# Three: on two cores one worker waiting for the engine's answers leaves its core to another.
AUTO_WORKERS = 3


class _Fleet(Protocol):
    """What the driver needs of a simulated fleet (memory or MQTT)."""

    def start(self) -> Any: ...
    def close(self) -> None: ...
    def run_due(self) -> int: ...
    def next_wakeup(self) -> float | None: ...
    def endpoint_counts(self) -> dict[str, int]: ...
    def exposed(self, before: float | None = None) -> int: ...
    def profile_counts(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How to run: fleet transport, pacing, reconcile interval, bounds."""

    transport: str = "memory"
    time_scale: float = 0.0  # simulated seconds per real second; 0: as fast as possible
    interval_seconds: float = 30.0  # simulated seconds between reconciles
    throttle_rate: float = 0.0
    rollback_on_halt: bool = False
    auto_approve: bool = True
    max_simulated_hours: float = 48.0
    report: Path | None = None
    durable_device_files: bool = True
    # Worker processes for the memory fleet's devices; None: one per core for large fleets.
    workers: int | None = None
    # Runs first in each worker process (a spawned process has no logging set-up); picklable.
    worker_setup: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """One tick of a run, for live displays."""

    state: CampaignState
    simulated_seconds: float
    devices: int


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run ended with: campaign, waves, devices, costs."""

    campaign: str
    status: str
    reason: str
    devices: int
    waves: list[dict[str, Any]]
    endpoints: dict[str, int]
    exposure: int
    halted_after_minutes: float | None
    simulated_minutes: float
    wall_seconds: float
    api_calls: int
    http_requests: int
    profiles: dict[str, int]
    report: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "status": self.status,
            "reason": self.reason,
            "devices": self.devices,
            "waves": self.waves,
            "endpoints": self.endpoints,
            "exposure": self.exposure,
            "halted_after_minutes": self.halted_after_minutes,
            "simulated_minutes": self.simulated_minutes,
            "wall_seconds": self.wall_seconds,
            "api_calls": self.api_calls,
            "http_requests": self.http_requests,
            "profiles": self.profiles,
            "report": self.report,
            **self.extra,
        }


@dataclass(slots=True)
class CampaignRun:
    """The live parts of a run, handed to `inspect` before they are torn down (tests use it)."""

    sandbox: Sandbox
    fleet: _Fleet
    reconciler: Reconciler
    spec: CampaignSpec
    work_dir: Path


def prepare_campaign_text(text: str, source: str, *, catalog: Path) -> str:
    """The campaign as the sandbox can run it: its roots from the sandbox's stand-in catalog.

    The sandbox cannot serve certificates that chain to the real Amazon roots,
    so a run points the campaign at the stand-ins of the same names and lets
    the sandbox answer the endpoint (`endpoint: auto`). Only those two
    top-level lines change; the rest of the operator's text stays as written.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise SpecError(source, (SpecProblem("", f"not valid YAML: {exc}"),)) from exc
    if not isinstance(root, yaml.MappingNode):
        raise SpecError(source, (SpecProblem("", "a campaign file is a YAML mapping"),))
    if root.flow_style:
        data = yaml.safe_load(text)
        data.update(catalog=str(catalog), endpoint="auto")
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    for key, value in (("catalog", json.dumps(str(catalog))), ("endpoint", "auto")):
        line = f"{key}: {value}"
        pattern = re.compile(rf"^{key}:.*$", re.MULTILINE)
        text, found = pattern.subn(line, text, count=1)
        if not found:
            text = text.rstrip("\n") + "\n" + line + "\n"
    return text


def _default_work_dir() -> Path:
    shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp below it, not a fixed name
    base = str(shm) if shm.is_dir() else None
    return Path(tempfile.mkdtemp(prefix="ca-migrate-run-", dir=base))


@contextmanager
def _counting(adapter_client: Any) -> Iterator[dict[str, int]]:
    counts = {"api_calls": 0, "http_requests": 0}

    def on_call(**_: Any) -> None:
        counts["api_calls"] += 1

    def on_send(**_: Any) -> None:
        counts["http_requests"] += 1

    adapter_client.meta.events.register("before-call.iot", on_call)
    adapter_client.meta.events.register("before-send.iot", on_send)
    yield counts


def _minutes(state: CampaignState, when: datetime | None) -> float | None:
    if when is None:
        return None
    return round((when - state.created_at).total_seconds() / 60, 2)


def _sandbox_counts(sandbox: Sandbox, job_id: str | None) -> dict[str, int] | None:
    """The job's execution counts as the sandbox holds them now (None: no such job)."""
    if job_id is None:
        return None
    try:
        counts = sandbox.engine.counts(job_id)
    except ServiceError:
        return None
    return {status.lower(): n for status, n in counts.items()}


def _wave_rows(state: CampaignState, sandbox: Sandbox) -> list[dict[str, Any]]:
    rows = []
    for wave in state.waves:
        c = wave.counts
        rows.append(
            {
                "name": wave.name,
                "phase": wave.phase.value,
                "job_id": wave.job_id,
                "launched_after_minutes": _minutes(state, wave.launched_at),
                "finished_after_minutes": _minutes(state, wave.finished_at),
                "executions": _sandbox_counts(sandbox, wave.job_id),
                "restore_executions": _sandbox_counts(sandbox, wave.restore_job_id),
                "gate_counts": {
                    "succeeded": c.succeeded,
                    "failed": c.failed,
                    "rejected": c.rejected,
                    "timed_out": c.timed_out,
                    "in_progress": c.in_progress,
                    "queued": c.queued,
                    "canceled": c.canceled,
                    "removed": c.removed,
                },
                "never_started": wave.never_started,
                "verdict": wave.verdict,
            }
        )
    return rows


def _check_groups(spec: CampaignSpec, fleet: FleetSpec) -> None:
    known = {g.name for g in fleet.groups}
    problems = [
        SpecProblem(
            f"waves.{wave.name}.thing_groups",
            f"group {group} is not in the fleet file (it has: {', '.join(sorted(known))})",
        )
        for wave in spec.waves
        for group in wave.thing_groups
        if group not in known
    ]
    if problems:
        raise SpecError(spec.name, tuple(problems))


def run_campaign(
    campaign_text: str,
    fleet: FleetSpec,
    settings: RunSettings,
    *,
    source: str = "<campaign>",
    on_progress: Callable[[Progress], None] | None = None,
    inspect: Callable[[CampaignRun], None] | None = None,
    work_dir: Path | None = None,
) -> RunResult:
    """Run `campaign_text` against `fleet` in a fresh sandbox; return the summary."""
    if settings.transport not in ("memory", "mqtt"):
        raise UsageError(f"unknown transport {settings.transport!r}; use memory or mqtt")
    first = parse_spec(campaign_text, source)
    _check_groups(first, fleet)
    started_wall = time.monotonic()
    with ExitStack() as stack:
        owned = work_dir is None
        work = work_dir if work_dir is not None else _default_work_dir()
        work.mkdir(parents=True, exist_ok=True)
        if owned:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        if settings.transport == "mqtt":
            sandbox, sim = _mqtt_world(stack, work, first.region, fleet, settings)
        else:
            sandbox, sim = _memory_world(
                stack, work, first.region, fleet, settings, remove_files=owned
            )
        clock = sandbox.engine.clock
        start = clock.now()
        # the memory world keeps its stand-in roots in work/pki; the MQTT one in the sandbox's
        pki = sandbox.pki or SandboxPki.create_or_load(work / "pki", region=first.region)
        text = prepare_campaign_text(campaign_text, source, catalog=pki.ats_catalog)
        spec = parse_spec(text, source)
        if settings.throttle_rate:
            assert sandbox.faults is not None  # noqa: S101 - set by start()
            sandbox.faults.update(throttle_rate=settings.throttle_rate)
        client = sandbox.iot_client(config=RETRY_CONFIG)
        counts = stack.enter_context(_counting(client))
        store = SqliteStateStore(work / "state.sqlite")
        stack.callback(store.close)
        rec = Reconciler(store, IotJobsAdapter(client), clock)
        state = rec.start(spec, text, None)
        halted_at = _drive(rec, spec, state.name, sim, sandbox, settings, on_progress)
        final = store.load(state.name).state
        report_path: str | None = None
        if settings.report is not None:
            # the stand-in catalog lives in the run's temporary directory, gone once the run ends:
            # the report says what it was rather than point at a deleted file
            note = "the sandbox's stand-in roots, generated for this run and deleted with it"
            data = report_data(final, store.events(state.name), note, spec=spec)
            for decision in data["decisions"]:
                decision["reason"] = decision["reason"].replace(str(spec.catalog), f"({note})")
                if "catalog" in decision["data"]:
                    decision["data"]["catalog"] = note
            settings.report.write_text(render_html(data), encoding="utf-8")
            report_path = str(settings.report)
        if inspect is not None:
            inspect(CampaignRun(sandbox, sim, rec, spec, work))
        simulated = (clock.now() - start).total_seconds() / 60
        return RunResult(
            campaign=final.name,
            status=final.status.value,
            reason=final.reason,
            devices=fleet.size,
            waves=_wave_rows(final, sandbox),
            endpoints=sim.endpoint_counts(),
            exposure=sim.exposed(None if halted_at is None else halted_at.timestamp()),
            halted_after_minutes=_minutes(final, halted_at),
            simulated_minutes=round(simulated, 2),
            wall_seconds=round(time.monotonic() - started_wall, 2),
            api_calls=counts["api_calls"],
            http_requests=counts["http_requests"],
            profiles=sim.profile_counts(),
            report=report_path,
            extra={"fleet_workers": getattr(sim, "workers", 0)},
        )
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack re-raises or returns


def fleet_workers(devices: int, requested: int | None) -> int:
    """Worker processes for a memory fleet: as asked, else `AUTO_WORKERS` from 5,000 devices.

    0 runs the devices in this process; below a few thousand devices, starting
    workers costs more than it saves. The default does not follow the machine's
    cores: a rehearsal of the same files must give the same answer everywhere, and
    where the service decides from the order of updates across devices (native
    abort thresholds), that order depends on how many workers run the devices.
    """
    if requested is not None:
        if requested < 0:
            raise UsageError(f"--workers must be 0 or more, not {requested}")
        return requested
    return AUTO_WORKERS if devices >= AUTO_WORKERS_FROM else 0


def _memory_world(
    stack: ExitStack,
    work: Path,
    region: str,
    fleet: FleetSpec,
    settings: RunSettings,
    *,
    remove_files: bool,
) -> tuple[Sandbox, _Fleet]:
    """A sandbox on a manual clock (no brokers) and an in-memory fleet on its engine."""
    workers = fleet_workers(fleet.size, settings.workers)
    # Worker interpreters import the device code while this process provisions the things.
    processes = stack.enter_context(WorkerProcesses(workers)) if workers else None
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    sandbox = Sandbox(mqtt=False, clock=clock, region=region, work_dir=work / "sandbox").start()
    stack.callback(sandbox.stop)
    pki = SandboxPki.create_or_load(work / "pki", region=region)
    provisioned = sandbox.provision(fleet.size, [(g.name, g.size) for g in fleet.groups])
    profiles = assign_profiles(fleet, provisioned.groups)
    sim: MemoryFleet | ShardedFleet
    if workers:
        sharded = ShardedFleet(
            sandbox.engine,
            pki,
            profiles,
            workers=workers,
            root=work / "devices",
            seed=fleet.seed,
            durable=settings.durable_device_files,
            worker_setup=settings.worker_setup,
            processes=processes,
        )
        # the workers remove their own devices' files, in parallel, when the run owns them
        stack.callback(sharded.close, remove_files=remove_files)
        sim = sharded
    else:
        memory = MemoryFleet(
            sandbox.engine,
            pki,
            profiles,
            root=work / "devices",
            seed=fleet.seed,
            durable=settings.durable_device_files,
        )
        stack.callback(memory.close)
        sim = memory
    sim.start()
    log.info("memory_fleet_started", devices=fleet.size, workers=workers)
    return sandbox, sim


def _mqtt_world(
    stack: ExitStack, work: Path, region: str, fleet: FleetSpec, settings: RunSettings
) -> tuple[Sandbox, _Fleet]:
    """A sandbox on a scaled clock with its brokers, and SDK devices connected to them."""
    from infra.sandbox.fleet.mqtt import MqttFleet

    scale = settings.time_scale if settings.time_scale > 0 else MQTT_TIME_SCALE
    sandbox = Sandbox(mqtt=True, time_scale=scale, region=region, work_dir=work / "sandbox")
    sandbox.start()
    stack.callback(sandbox.stop)
    assert sandbox.pki is not None  # noqa: S101 - mqtt=True creates it
    _check_name_resolution(sandbox.pki.hosts["ats"])
    provisioned = sandbox.provision(fleet.size, [(g.name, g.size) for g in fleet.groups])
    sim = MqttFleet(
        sandbox.pki,
        assign_profiles(fleet, provisioned.groups),
        ports={kind: endpoint.port for kind, endpoint in sandbox.endpoints.items()},
        alpn_ports={k: e.alpn_port for k, e in sandbox.endpoints.items() if e.alpn_port},
        credentials=provisioned.credentials,
        clock=sandbox.engine.clock,
        time_scale=scale,
        root=work / "devices",
        seed=fleet.seed,
    )
    stack.callback(sim.close)
    sim.start()
    booted = sim.wait_booted(BOOT_TIMEOUT_SECONDS)
    log.info("mqtt_fleet_booted", devices=booted)
    return sandbox, sim


def _check_name_resolution(host: str) -> None:
    try:
        addresses = {a[4][0] for a in socket.getaddrinfo(host, 8883)}
    except OSError:
        addresses = set()
    if "127.0.0.1" not in addresses:
        raise UsageError(
            f"{host} does not resolve to 127.0.0.1 in this process, so the AWS IoT Device SDK "
            "cannot reach the sandbox; run through `make demo` or `source scripts/env.sh` first "
            "(it preloads libnss_wrapper with infra/sandbox/data/hosts)"
        )


def _drive(
    rec: Reconciler,
    spec: CampaignSpec,
    name: str,
    fleet: _Fleet,
    sandbox: Sandbox,
    settings: RunSettings,
    on_progress: Callable[[Progress], None] | None,
) -> datetime | None:
    """Reconcile, let devices act, move the clock; until the campaign stops and devices settle."""
    engine = sandbox.engine
    clock = engine.clock
    manual = isinstance(clock, ManualClock)
    start = clock.now()
    limit = start + timedelta(hours=settings.max_simulated_hours)
    wall0 = time.monotonic()
    halted_at: datetime | None = None
    devices = sum(fleet.profile_counts().values())
    settle_until: datetime | None = None
    interval = timedelta(seconds=settings.interval_seconds)
    quiet = timedelta(seconds=max(settings.interval_seconds, QUIET_SECONDS))
    last_reconcile = start - quiet
    revision_seen = -1  # the engine's revision at the last reconcile
    state = rec.store.load(name).state
    while clock.now() < limit:
        now = clock.now()
        # Reconcile every interval while executions change; when nothing changed since the
        # last reconcile, only for a time-based decision (bake end, deadline) or rarely.
        changed = engine.revision != revision_seen
        planner_due = _planner_wakeup(spec, state)
        due = (
            (changed and now >= last_reconcile + interval)
            or (planner_due is not None and now.timestamp() >= planner_due)
            or now >= last_reconcile + quiet
        )
        if due and (state.status not in STOPPED or state.status is CampaignStatus.HALTED):
            revision_seen = engine.revision
            state = _reconcile(rec, name, state)
            last_reconcile = now
        fleet.run_due()
        state = _operator(rec, spec, name, state, settings)
        if state.status in (CampaignStatus.HALTED, CampaignStatus.ROLLING_BACK) and (
            halted_at is None
        ):
            halted_at = now
        if on_progress is not None:
            on_progress(Progress(state, (now - start).total_seconds(), devices))
        if state.status in STOPPED and not (
            state.status is CampaignStatus.HALTED and settings.rollback_on_halt
        ):
            settle_until = settle_until or now + timedelta(seconds=SETTLE_SECONDS)
            wake = fleet.next_wakeup()
            if wake is None or now >= settle_until:
                break
        if not manual:  # the clock runs by itself: wait one reconcile interval in real time
            time.sleep(max(MIN_REAL_INTERVAL, settings.interval_seconds / engine.time_scale))
            continue
        changed = engine.revision != revision_seen
        next_reconcile = last_reconcile + (interval if changed else quiet)
        wakeups = [fleet.next_wakeup(), engine.next_deadline(), _planner_wakeup(spec, state)]
        target = min([next_reconcile.timestamp(), *(w for w in wakeups if w is not None)])
        engine.advance(max(1.0, target - now.timestamp()))
        _pace(wall0, (clock.now() - start).total_seconds(), settings.time_scale)
    # Devices keep finishing after the last gate passed (a wave promotes at 95%): one more
    # observation, so that the summary and the report show where every execution ended.
    # On a stopped campaign the planner only records the counts.
    _reconcile(rec, name, state)
    return halted_at


def _reconcile(rec: Reconciler, name: str, state: CampaignState) -> CampaignState:
    try:
        return rec.step(name).state
    except AwsError as exc:
        log.warning("reconcile_failed", campaign=name, error=str(exc))
        return state


def _approval(wave: str) -> Callable[[CampaignSpec, CampaignState], Approve]:
    def make(_spec: CampaignSpec, _state: CampaignState) -> Approve:
        return Approve(wave)

    return make


def _operator(
    rec: Reconciler, spec: CampaignSpec, name: str, state: CampaignState, settings: RunSettings
) -> CampaignState:
    """What the demo's operator does: approve waiting waves, roll back a halted campaign."""
    try:
        if settings.auto_approve:
            for wave in state.waves:
                if wave.phase is WavePhase.AWAITING_APPROVAL:
                    state = rec.command(name, _approval(wave.name)).state
        if settings.rollback_on_halt and state.status is CampaignStatus.HALTED:
            state = rec.rollback(name).state
    except AwsError as exc:
        log.warning("operator_command_failed", campaign=name, error=str(exc))
    del spec
    return state


def _planner_wakeup(spec: CampaignSpec, state: CampaignState) -> float | None:
    """When the planner's next time-based decision falls due: a bake end or a wave deadline."""
    times: list[float] = []
    for wave in state.waves:
        if wave.phase is WavePhase.BAKING and wave.bake_until is not None:
            times.append(wave.bake_until.timestamp())
        deadline = spec.wave(wave.name).deadline_minutes
        if (
            wave.phase is WavePhase.RUNNING
            and deadline is not None
            and wave.launched_at is not None
            and wave.never_started is None
        ):
            times.append((wave.launched_at + timedelta(minutes=deadline)).timestamp())
    return min(times) if times else None


def _pace(wall0: float, simulated: float, time_scale: float) -> None:
    if time_scale <= 0:
        return
    ahead = simulated / time_scale - (time.monotonic() - wall0)
    if ahead > 0:
        time.sleep(min(ahead, 5.0))
