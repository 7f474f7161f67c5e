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

Modules, by mechanism: `run_types` (settings, progress, result), `campaign_text`
(the operator's YAML made runnable in the sandbox), `worlds` (sandbox and fleet),
`regional_world` (a campaign over several regions), `driver` (the loop), `summary` (what
the run ended with); this one puts them together.

Invariants:
- The sandbox, the fleet and every temporary directory are stopped or removed
  before `run_campaign` returns, whatever happens.
- The loop is bounded: at most `max_simulated_hours` of simulated time.
- Devices report their own job statuses; the driver never writes one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from infra.sandbox.fleet import FleetSpec
from infra.sandbox.fleet.device_client import LAYOUT
from infra.sandbox.pki import SandboxPki
from orchestrator.aws.iot import RETRY_CONFIG, IotJobsAdapter
from orchestrator.demo.backoff import telling_backoffs
from orchestrator.demo.campaign_text import prepare_campaign_text
from orchestrator.demo.driver import drive
from orchestrator.demo.regional_world import regional_memory_world
from orchestrator.demo.run_types import CampaignRun, Progress, RunResult, RunSettings
from orchestrator.demo.signed import DemoSigning, make_demo_signing, pin_public_key, with_signing
from orchestrator.demo.summary import counting, minutes, unfinished_reason, wave_rows
from orchestrator.demo.worlds import (
    default_work_dir,
    fleet_workers,
    memory_world,
    mqtt_world,
    removed_when_gone,
    say,
)
from orchestrator.errors import SpecError, SpecProblem, UsageError
from orchestrator.model import STOPPED_STATUSES, CampaignSpec, CampaignState, SigningSpec
from orchestrator.reconcile import DocumentKey, Reconciler, SignerOpener
from orchestrator.regional import RegionalJobs
from orchestrator.report import render_html, report_data
from orchestrator.signing import open_signer
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


def _check_groups(spec: CampaignSpec, fleet: FleetSpec) -> None:
    known = {g.name: g.runtime for g in fleet.groups}
    problems = [
        SpecProblem(
            f"waves.{wave.name}.thing_groups",
            f"group {group} is not in the fleet file (it has: {', '.join(sorted(known))})",
        )
        for wave in spec.waves
        for group in wave.thing_groups
        if group not in known
    ]
    problems += _runtime_problems(spec, known)
    if problems:
        raise SpecError(spec.name, tuple(problems))


def _runtime_problems(spec: CampaignSpec, runtimes: Mapping[str, str]) -> list[SpecProblem]:
    """A wave whose devices would not take its document, said before the run, not by it.

    The simulated Device Client devices keep the handler and its files where
    `LAYOUT` says; a Device Client wave must name those paths.
    """
    problems: list[SpecProblem] = []
    for wave in spec.waves:
        runtime = spec.runtime_for(wave).value
        problems.extend(
            SpecProblem(
                f"waves.{wave.name}.device_runtime",
                f"the wave runs {runtime} but the fleet file's group {group} runs "
                f"{runtimes[group]}: set `runtime: {runtime}` on the group, or the "
                "wave's device_runtime to match it",
            )
            for group in wave.thing_groups
            if group in runtimes and runtimes[group] != runtime
        )
        settings = spec.device_client_for(wave)
        if settings is not None:
            problems += [
                SpecProblem(
                    f"waves.{wave.name}.device_client.{key}",
                    f"is {getattr(settings, key)!r}; the simulated Device Client devices keep "
                    f"it at {value!r}: use that path for the rehearsal",
                )
                for key, value in LAYOUT.items()
                if getattr(settings, key) != value
            ]
    return problems


def _write_report(
    path: Path | None, final: CampaignState, store: SqliteStateStore, spec: CampaignSpec
) -> str | None:
    """The run's HTML report at `path` (if asked for); where it was written."""
    if path is None:
        return None
    # the stand-in catalog lives in the run's temporary directory, gone once the run ends:
    # the report says what it was rather than point at a deleted file
    note = "the sandbox's stand-in roots, generated for this run and deleted with it"
    data = report_data(final, store.events(final.name), note, spec=spec)
    for decision in data["decisions"]:
        decision["reason"] = decision["reason"].replace(str(spec.catalog), f"({note})")
        if "catalog" in decision["data"]:
            decision["data"]["catalog"] = note
    path.write_text(render_html(data), encoding="utf-8")
    return str(path)


def _campaign_signer(
    spec: CampaignSpec, fleet: FleetSpec, directory: Path, profile: str | None
) -> tuple[SignerOpener | None, FleetSpec]:
    """The signer of a campaign that signs (as `start` opens it), and the fleet pinning it.

    Opened once, before anything runs: a key that cannot sign stops the run with the
    `SigningKeyError` `start` would raise. A fleet that pins a key of its own keeps it (a
    rehearsal of devices that pin another key shows them refusing every document).
    """
    if spec.signing is None:
        return None, fleet
    key = open_signer(spec.signing, spec.region, profile)
    if fleet.signing_public_key is None:
        fleet = replace(fleet, signing_public_key=pin_public_key(key, directory))

    def opened(_signing: SigningSpec, _region: str) -> DocumentKey:
        return key

    return opened, fleet


def _signed(spec: CampaignSpec, demo: DemoSigning | None) -> dict[str, Any]:
    """The summary's `signed` member: the demo key's, or the campaign's own signer's."""
    if demo is not None:
        return {"signed": {"key_id": demo.key_id, "algorithm": "Ed25519"}}
    if spec.signing is None:
        return {}
    source = "kms" if spec.signing.kms_key is not None else "key-file"
    return {"signed": {"key_id": spec.signing.key_id, "source": source}}


def _watched(stack: ExitStack, settings: RunSettings, clients: list[Any]) -> dict[str, int]:
    """Count the clients' calls for the summary; tell the display when they back off."""
    stack.enter_context(telling_backoffs(functools.partial(say, settings), *clients))
    return stack.enter_context(counting(*clients))


def run_campaign(
    campaign_text: str,
    fleet: FleetSpec,
    settings: RunSettings,
    *,
    source: str = "<campaign>",
    on_progress: Callable[[Progress], None] | None = None,
    inspect: Callable[[CampaignRun], None] | None = None,
    work_dir: Path | None = None,
    base_dir: Path | None = None,
) -> RunResult:
    """Run `campaign_text` against `fleet` in a fresh sandbox; return the summary.

    `base_dir`: where the campaign file is (its relative `signing.key_file` is read from
    there, as `start` reads it).
    """
    if settings.transport not in ("memory", "mqtt"):
        raise UsageError(f"unknown transport {settings.transport!r}; use memory or mqtt")
    first = parse_spec(campaign_text, source, base_dir)
    _check_groups(first, fleet)
    started_wall = time.monotonic()
    with ExitStack() as stack:
        owned = work_dir is None
        work = work_dir if work_dir is not None else default_work_dir()
        work.mkdir(parents=True, exist_ok=True)
        if owned:
            stack.enter_context(removed_when_gone(work))
        signing = make_demo_signing(work / "signing") if settings.signed else None
        signer: SignerOpener | None = None
        if signing is not None:
            fleet = replace(fleet, signing_public_key=signing.public_key)
            # the demo key is a file in this run's directory: no KMS, no profile
            signer = open_signer
        else:
            signer, fleet = _campaign_signer(first, fleet, work / "signing", settings.profile)
        if len({first.region, *first.regions}) > 1:
            sandbox, sim = regional_memory_world(stack, work, first, fleet, settings)
        elif settings.transport == "mqtt":
            sandbox, sim = mqtt_world(stack, work, first.region, fleet, settings)
        else:
            sandbox, sim = memory_world(
                stack, work, first.region, fleet, settings, remove_files=owned
            )
        clock = sandbox.engine.clock
        start = clock.now()
        # the memory world keeps its stand-in roots in work/pki; the MQTT one in the sandbox's
        pki = sandbox.pki or SandboxPki.create_or_load(work / "pki", region=first.region)
        text = prepare_campaign_text(campaign_text, source, catalog=pki.ats_catalog)
        if signing is not None:
            text = with_signing(text, source, signing)
        spec = parse_spec(text, source, base_dir)
        if settings.throttle_rate:
            assert sandbox.faults is not None  # noqa: S101 - set by start()
            sandbox.faults.update(throttle_rate=settings.throttle_rate)
        clients = {r: sandbox.iot_client(config=RETRY_CONFIG, region=r) for r in sandbox.regions}
        counts = _watched(stack, settings, list(clients.values()))
        store = SqliteStateStore(work / "state.sqlite")
        stack.callback(store.close)
        rec = Reconciler(
            store,
            RegionalJobs(lambda r: IotJobsAdapter(clients[r])),
            clock,
            signer=signer,
        )
        state = rec.start(spec, text, None if base_dir is None else str(base_dir))
        # unwinding runs this first: the devices and the sandbox stop after it
        stack.callback(say, settings, f"stopping {fleet.size} devices and the sandbox")
        halted_at = drive(rec, spec, state.name, sim, sandbox, settings, on_progress)
        final = store.load(state.name).state
        report_path = _write_report(settings.report, final, store, spec)
        if inspect is not None:
            inspect(CampaignRun(sandbox, sim, rec, spec, work))
        simulated = (clock.now() - start).total_seconds() / 60
        finished = final.status in STOPPED_STATUSES
        return RunResult(
            campaign=final.name,
            status=final.status.value,
            reason=final.reason
            if finished
            else unfinished_reason(final, settings.max_simulated_hours),
            finished=finished,
            devices=fleet.size,
            waves=wave_rows(final, sandbox),
            endpoints=sim.endpoint_counts(),
            exposure=sim.exposed(None if halted_at is None else halted_at.timestamp()),
            halted_after_minutes=minutes(final, halted_at),
            simulated_minutes=round(simulated, 2),
            wall_seconds=round(time.monotonic() - started_wall, 2),
            api_calls=counts["api_calls"],
            http_requests=counts["http_requests"],
            profiles=sim.profile_counts(),
            report=report_path,
            extra={"fleet_workers": getattr(sim, "workers", 0)} | _signed(spec, signing),
        )
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack re-raises or returns
