"""Control-plane calls per reconcile, at 1k, 10k and 100k simulated devices.

The orchestrator's gates read DescribeJob counts only, so the number of AWS
calls per reconcile must stay flat as the fleet grows. The baseline is a naive
strategy that lists every execution of every active job
(ListJobExecutionsForJob, 250 per page) to compute the same counts.

Both run the same three-wave campaign through the real `Reconciler` and an
SQLite store, over `orchestrator.testing.FakeJobs` (jobs as counts, so 100k
devices cost nothing); each reconcile, half of every job's queued devices
report SUCCEEDED.
"""

from __future__ import annotations

import logging
import math
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result

from job_documents import ManualClock
from orchestrator.model import CampaignStatus, Counts, WavePhase
from orchestrator.planner import Approve, JobObservation
from orchestrator.reconcile import Reconciler
from orchestrator.spec import parse_spec
from orchestrator.store.sqlite import SqliteStateStore
from orchestrator.testing import FakeJobs

CAMPAIGN = """\
name: bench
region: us-east-1
trust: {add: [amazon-root-ca-1]}
halt: {max_failure_rate: 0.05, fleet_failure_budget: 1000}
waves:
  - {name: canary, thing_groups: [canary], gate: {min_success_rate: 0.9, min_completed: 10}}
  - name: wave-1
    thing_groups: [fleet-a]
    gate: {min_success_rate: 0.98, min_completed_fraction: 0.9}
    approval: manual
  - {name: wave-2, thing_groups: [fleet-b, fleet-c], gate: {min_success_rate: 0.98}}
"""
PAGE = 250


class NaiveJobs(FakeJobs):
    """Same fake, but counts come from listing every execution (the baseline)."""

    def describe_job(self, job_id: str) -> JobObservation:
        seen = super().describe_job(job_id)
        if seen.exists:
            total = seen.counts.targeted + seen.counts.canceled + seen.counts.removed
            self.calls["ListJobExecutionsForJob"] += max(1, math.ceil(total / PAGE))
        return seen


def groups_for(devices: int) -> dict[str, int]:
    canary = max(50, devices // 100)
    rest = devices - canary
    return {
        "canary": canary,
        "fleet-a": rest // 2,
        "fleet-b": rest // 4,
        "fleet-c": rest - rest // 2 - rest // 4,
    }


def progress(api: FakeJobs) -> None:
    for job in api.jobs.values():
        if job.status != "IN_PROGRESS":
            continue
        moved = math.ceil(job.counts.queued / 2)
        counts = Counts(queued=job.counts.queued - moved, succeeded=job.counts.succeeded + moved)
        job.counts = counts
        if counts.queued == 0:
            job.status = "COMPLETED"


def run(devices: int, api: FakeJobs, workdir: Path) -> dict[str, float]:
    clock = ManualClock()
    rec = Reconciler(
        SqliteStateStore(workdir / f"{type(api).__name__}-{devices}.sqlite"), api, clock
    )
    rec.start(parse_spec(CAMPAIGN), CAMPAIGN, None)
    per_step: list[int] = []
    seconds: list[float] = []
    for _ in range(200):
        before = sum(api.calls.values())
        began = time.perf_counter()
        state = rec.step("bench").state
        seconds.append(time.perf_counter() - began)
        per_step.append(sum(api.calls.values()) - before)
        if state.status is not CampaignStatus.RUNNING:
            break
        if state.wave("wave-1").phase is WavePhase.AWAITING_APPROVAL:
            rec.command("bench", lambda _s, _st: Approve("wave-1"))
        progress(api)
        clock.advance(timedelta(minutes=5))
    if state.status is not CampaignStatus.COMPLETED:
        raise SystemExit(f"campaign did not complete at {devices} devices: {state.reason}")
    return {
        "reconciles": len(per_step),
        "calls_mean": round(statistics.mean(per_step), 2),
        "calls_max": max(per_step),
        "ms_per_reconcile": round(1000 * statistics.mean(seconds), 2),
    }


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for devices in (1_000, 10_000, 100_000):
            ours = run(devices, FakeJobs(groups_for(devices)), Path(tmp))
            naive = run(devices, NaiveJobs(groups_for(devices)), Path(tmp))
            label = f"{devices // 1000}k"
            figures[f"{label}_counts_calls_per_reconcile_mean"] = ours["calls_mean"]
            figures[f"{label}_counts_calls_per_reconcile_max"] = ours["calls_max"]
            figures[f"{label}_naive_calls_per_reconcile_mean"] = naive["calls_mean"]
            figures[f"{label}_naive_calls_per_reconcile_max"] = naive["calls_max"]
            figures[f"{label}_reconciles"] = ours["reconciles"]
            figures[f"{label}_ms_per_reconcile"] = ours["ms_per_reconcile"]
    flat = len({figures[f"{k}_counts_calls_per_reconcile_max"] for k in ("1k", "10k", "100k")})
    figures["counts_strategy_flat"] = flat == 1
    write_result("orchestrator", figures)


if __name__ == "__main__":
    main()
