"""AWS IoT calls per `ca-migrate verify`, at 1k, 10k and 100k devices in one passed wave.

The wave's job ran on the sandbox's Jobs engine (in-process: 2% of the devices
FAILED and stayed on legacy, the rest SUCCEEDED); the devices' `ca-migration`
shadows report ATS, except the failed ones (legacy), 0.5% that moved back to
legacy after succeeding (the drift to find; `_few_drift`: five devices only)
and a tenth that never report.
Verification then runs as the CLI does: the production adapters
(`FleetIndexAdapter`, `ExecutionReader`, boto3 over HTTP) through
`orchestrator.drift_survey.survey_drift`. The figure that matters is the call
count against the naive way (one GetThingShadow and one DescribeJobExecution per
device): it grows with the off-target devices, 100 a SearchIndex page, and
their executions are read one by one or listed 250 a page, whichever is fewer.
The wall time is the sandbox's pure-Python index, not AWS's.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import peak_rss_mib, quiet_logging, write_result
from infra.sandbox.runtime import Sandbox
from job_documents import ManualClock
from orchestrator.aws.executions import ExecutionReader
from orchestrator.aws.indexing import FleetIndexAdapter
from orchestrator.census import INDEXING_CONFIGURATION
from orchestrator.drift_survey import Readers, survey_drift
from orchestrator.model import (
    CampaignSpec,
    CampaignState,
    CampaignStatus,
    Counts,
    Gate,
    TrustSpec,
    WavePhase,
    WaveSpec,
    WaveState,
)

SIZES = {"1k": 1_000, "10k": 10_000, "100k": 100_000}
LEGACY = "a1sandbox2demo.iot.us-east-1.amazonaws.com"
ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
JOB = "bench-wave-m1"
ARN = "arn:aws:iot:us-east-1:123456789012"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _fate(index: int, drift_every: int) -> str:
    if index % 50 == 7:  # 2%
        return "failed"
    if index % drift_every == 3:
        return "drift"
    return "ok"


def _run_job(
    sandbox: Sandbox, clock: ManualClock, things: tuple[str, ...], drift_every: int
) -> int:
    """Every execution to its end; the clock jumps a minute when the rollout (AWS's default
    pace, about 1000 things a minute) has not reached the next device yet."""
    engine = sandbox.engine
    engine.create_job(
        {
            "jobId": JOB,
            "targets": [f"{ARN}:thinggroup/wave"],
            "document": json.dumps({"endpoint": {"host": ATS, "port": 8883}}),
        }
    )
    succeeded = 0
    for index, thing in enumerate(things):
        execution = None
        for _ in range(3):
            execution = engine.start_next(
                thing, status_details=None, step_timeout_minutes=None, via="ats"
            )
            if execution is not None:
                break
            clock.advance(60)
        if execution is None:
            raise SystemExit(f"{thing} had nothing pending")
        status = "FAILED" if _fate(index, drift_every) == "failed" else "SUCCEEDED"
        succeeded += status == "SUCCEEDED"
        engine.update_execution(
            thing,
            JOB,
            status=status,
            status_details=None,
            expected_version=execution.version_number,
            execution_number=None,
            step_timeout_minutes=None,
            via="ats",
        )
    return succeeded


def _report(sandbox: Sandbox, things: tuple[str, ...], drift_every: int) -> int:
    table = sandbox.engine.named_shadows
    drifted = 0
    with table.lock:
        for index, thing in enumerate(things):
            if index % 10 == 9:
                continue  # never reports
            fate = _fate(index, drift_every)
            drifted += fate == "drift"
            reported = {
                "endpoint": ATS if fate == "ok" else LEGACY,
                "lastJob": None if fate == "failed" else {"jobId": JOB, "status": "SUCCEEDED"},
            }
            table.documents[(thing, "ca-migration")] = {
                "state": {"reported": reported},
                "metadata": {},
                "version": 1,
            }
        table.changed()
    return drifted


def _campaign(succeeded: int, failed: int) -> tuple[CampaignSpec, CampaignState]:
    wave = WaveSpec(name="wave", thing_groups=("wave",), gate=Gate(min_success_rate=0.9))
    spec = CampaignSpec(
        name="bench",
        region="us-east-1",
        endpoint=ATS,
        trust=TrustSpec(add=("amazon-root-ca-1",)),
        waves=(wave,),
    )
    state = CampaignState(
        name="bench",
        status=CampaignStatus.COMPLETED,
        waves=(
            WaveState(
                name="wave",
                job_id=JOB,
                phase=WavePhase.PASSED,
                launched_at=NOW,
                counts=Counts(succeeded=succeeded, failed=failed),
            ),
        ),
        created_at=NOW,
        updated_at=NOW,
        documents={JOB: json.dumps({"endpoint": {"host": ATS, "port": 8883}})},
    )
    return spec, state


def measure(size: int, drift_every: int) -> dict[str, float | int]:
    clock = ManualClock(NOW)
    with Sandbox(mqtt=False, clock=clock) as sandbox:
        things = sandbox.provision(size, [("wave", None)]).things
        succeeded = _run_job(sandbox, clock, things, drift_every)
        planted = _report(sandbox, things, drift_every)
        client = sandbox.iot_client()
        client.update_indexing_configuration(thingIndexingConfiguration=INDEXING_CONFIGURATION)
        spec, state = _campaign(succeeded, size - succeeded)
        started = time.perf_counter()
        readers = Readers.single(FleetIndexAdapter(client), ExecutionReader(client))
        result = survey_drift(spec, state, readers)
        seconds = time.perf_counter() - started
        found = len(result.drift)
        assert found == planted, (found, planted)  # noqa: S101 - the benchmark checks itself
        return {"calls": result.calls, "drift": found, "seconds": round(seconds, 2)}


def main() -> None:
    quiet_logging()
    figures: dict[str, float | int | bool] = {}
    for label, size in SIZES.items():
        for scenario, drift_every in (("", 200), ("_few_drift", size // 5)):
            ours = measure(size, drift_every)
            figures[f"{label}{scenario}_verify_calls"] = ours["calls"]
            figures[f"{label}{scenario}_drift_found"] = ours["drift"]
            figures[f"{label}{scenario}_sandbox_seconds"] = ours["seconds"]
        figures[f"{label}_naive_calls"] = 2 * size
    figures["peak_rss_mib"] = round(peak_rss_mib(), 1)
    write_result("verify", figures)


if __name__ == "__main__":
    main()
