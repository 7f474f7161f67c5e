"""The main job at scale: the bundled five-wave campaign over 100k simulated devices.

Memory transport, manual (accelerated) clock: every device runs the real
device transaction (files on tmpfs, journal, real validator, simulated TLS
decided from the staged bundle); the orchestrator reconciles through the real
boto3 adapter against the sandbox over HTTP. Scenario `happy` (late, slow,
power-cut and RSA-only devices among them).

The devices run in worker processes (`ShardedFleet`, the default 3)
against the one engine in this process. The run uses the collector settings
the CLI's `demo` and `rehearse` use (`simulation_gc`).

Figures: wall time and peak RSS of the whole run (targets: < 60 s and < 1 GiB
on 2 cores; RSS is this process's peak plus each worker's), CPU of all the
processes, devices per second, simulated campaign duration against the
minimum the waves' rollout rates and bake times allow, control-plane calls.

`BENCH_FLEET_DEVICES` (default 100000) changes the fleet size;
`BENCH_FLEET_WORKERS` the worker processes (0: every device in this process);
`BENCH_FLEET_DURABLE=0` skips fsync (device files live on tmpfs either way).

The host's speed varies (this machine's moved by a third within an hour), so
the run is bracketed by a fixed reference: the CPU of one plain migrate
transaction (engine included) over 2,000 devices in one process, before and
after. Compare runs by it, not by the clock alone.
"""

from __future__ import annotations

import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib, quiet_logging, write_result

import job_documents as jd
from infra.sandbox import decisions
from infra.sandbox.engine import JobsEngine
from infra.sandbox.fleet import FleetTiming, MemoryFleet, Profile, simulation_gc
from infra.sandbox.fleet.sharded import GC_THRESHOLDS
from infra.sandbox.pki import SandboxPki
from job_documents.clock import ManualClock
from orchestrator.demo.runner import CampaignRun, RunSettings, run_campaign
from orchestrator.demo.scenarios import CAMPAIGN_FILE, demo_fleet, group_sizes, scenario
from orchestrator.spec import parse_spec

DEVICES = int(os.environ.get("BENCH_FLEET_DEVICES", "100000"))
DURABLE = os.environ.get("BENCH_FLEET_DURABLE", "1") != "0"
WORKERS = int(os.environ["BENCH_FLEET_WORKERS"]) if "BENCH_FLEET_WORKERS" in os.environ else None
TARGET_WALL_S = 60.0
TARGET_RSS_MIB = 1024.0


def rollout_minutes(size: int, wave: Any) -> int:
    """Minutes from the first batch to the last, one batch a minute (as the sandbox paces).

    A wave without a rollout rate goes at AWS's default pace, as the sandbox does.
    """
    cap = float(wave.rollout.maximum_per_minute or decisions.DEFAULT_PER_MINUTE)
    exp = wave.rollout.exponential
    rate = float(exp.base_rate_per_minute) if exp else cap
    step = (exp.notified_things or exp.succeeded_things or 0) if exp else 0
    notified = baseline = batches = 0
    while notified < size:
        while exp and step and notified - baseline >= step and rate < cap:
            rate = min(rate * exp.increment_factor, cap)
            baseline += step
        notified += max(1, math.floor(min(rate, cap)))
        batches += 1
    return max(0, batches - 1)


def minimum_minutes(devices: int) -> float:
    """The fastest the bundled campaign can go: its rollout batches and bake times."""
    spec = parse_spec(CAMPAIGN_FILE.read_text())
    sizes = group_sizes(devices)
    total = 0.0
    for wave in spec.waves:
        size = sum(sizes[g] for g in wave.thing_groups)
        total += rollout_minutes(size, wave) + wave.gate.bake_minutes
    return total


REFERENCE_DEVICES = 2000


def reference_transaction_ms() -> float:
    """CPU ms of one plain migrate (device and engine) in one process: the host's speed now."""
    with tempfile.TemporaryDirectory(prefix="bench-ref-") as tmp:
        pki = SandboxPki.create_or_load(Path(tmp) / "pki")
        # All at once and devices without timing: the same work as the references recorded
        # before the sandbox paced jobs and devices took time (CPU per transaction).
        engine = JobsEngine(
            clock=ManualClock(datetime.now(UTC).replace(microsecond=0)), default_per_minute=None
        )
        names = [f"ref-{i:05d}" for i in range(REFERENCE_DEVICES)]
        engine.create_things(names)
        engine.create_thing_group({"thingGroupName": "ref"})
        engine.add_things_to_group("ref", names)
        profiles = dict.fromkeys(names, Profile.OK)
        # no root: the fleet makes its own on tmpfs, as the demo's does, and removes it
        with MemoryFleet(engine, pki, profiles, timing=FleetTiming.immediate()) as fleet:
            catalog = jd.load_catalog(pki.ats_catalog)
            document = jd.build_document(
                operation="migrate",
                region=pki.region,
                campaign="reference",
                wave="all",
                endpoint=jd.Endpoint(host=pki.hosts["ats"]),
                roots=[catalog.get("amazon-root-ca-1"), catalog.get("amazon-root-ca-3")],
                catalog=catalog,
            )
            arn = f"arn:aws:iot:{pki.region}:123456789012:thinggroup/ref"
            engine.create_job({"jobId": "ref", "targets": [arn], "document": document.text})
            began = time.process_time()
            fleet.run_due()
            cpu = time.process_time() - began
            if engine.counts("ref")["SUCCEEDED"] != REFERENCE_DEVICES:
                raise SystemExit(f"the reference run did not succeed: {engine.counts('ref')}")
    return cpu / REFERENCE_DEVICES * 1000


def main() -> None:
    quiet_logging()
    reference_before = reference_transaction_ms()
    chosen = scenario("happy")
    files: dict[str, float] = {}
    live: dict[str, Any] = {}

    def measure(run: CampaignRun) -> None:
        began = time.perf_counter()
        live["fleet"] = run.fleet
        # device files live on tmpfs: memory the process RSS does not show
        du = subprocess.run(
            ["du", "-sk", str(run.work_dir / "devices")], capture_output=True, text=True, check=True
        )
        files["mib"] = int(du.stdout.split()[0]) / 1024
        files["seconds"] = time.perf_counter() - began  # measuring is not part of the run

    started = time.perf_counter()
    with simulation_gc():  # as `ca-migrate demo` and `rehearse` run
        result = run_campaign(
            CAMPAIGN_FILE.read_text(),
            demo_fleet(chosen, DEVICES),
            RunSettings(
                time_scale=0.0,
                durable_device_files=DURABLE,
                workers=WORKERS,
                worker_setup=quiet_logging,
            ),
            source=str(CAMPAIGN_FILE),
            inspect=measure,
        )
    wall = time.perf_counter() - started - files.get("seconds", 0.0)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    workers: list[dict[str, float]] = getattr(live.get("fleet"), "worker_usage", [])
    cpu = usage.ru_utime + usage.ru_stime + sum(w["cpu_s"] for w in workers)
    # every process of the run: the parent and each worker (at its own peak)
    rss = peak_rss_mib() + sum(w["peak_rss_mib"] for w in workers)
    reference_after = reference_transaction_ms()
    floor = minimum_minutes(DEVICES)
    if result.status != "COMPLETED" or result.endpoints.get("ats") != DEVICES:
        raise SystemExit(f"the campaign did not complete on every device: {result.to_json()}")
    write_result(
        "fleet",
        {
            "devices": DEVICES,
            "waves": len(result.waves),
            "transport": "memory (real agent, files on tmpfs, simulated TLS)",
            "worker_processes": len(workers),
            "fsync": DURABLE,
            "gc_thresholds": list(GC_THRESHOLDS),
            "status": result.status,
            "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "devices_per_s": round(DEVICES / wall, 1),
            "cpu_ms_per_device": round(cpu / DEVICES * 1000, 2),
            "peak_rss_mib": round(rss, 1),
            "peak_rss_mib_per_process": [round(peak_rss_mib(), 1)]
            + [round(w["peak_rss_mib"], 1) for w in workers],
            "device_files_mib": round(files.get("mib", 0.0), 1),
            "rss_plus_device_files_mib": round(rss + files.get("mib", 0.0), 1),
            "target_wall_s": TARGET_WALL_S,
            "target_rss_mib": TARGET_RSS_MIB,
            "within_wall_target": wall < TARGET_WALL_S,
            "within_rss_target": rss < TARGET_RSS_MIB,
            "simulated_minutes": result.simulated_minutes,
            "minimum_minutes_by_rollout_and_bake": floor,
            "duration_over_minimum": round(result.simulated_minutes / floor, 2) if floor else None,
            "reference_transaction_cpu_ms_before_after": [
                round(reference_before, 3),
                round(reference_after, 3),
            ],
            "api_calls": result.api_calls,
            "http_requests": result.http_requests,
            "profiles": result.profiles,
        },
    )


if __name__ == "__main__":
    main()
