"""Exposure before a halt: gated waves vs one AWS IoT job with native abort and exponential rollout.

The fleet (default 10k devices, the bundled campaign's five groups) has a
fleet-wide fault in 30% of its devices, so the canary fails at 30%: either
fast (the new endpoint refuses them: FAILED within seconds) or slowly (their
probe hangs: the execution only times out after the 30-minute in-progress
timeout). Both contenders run on the same sandbox code, the same simulated
devices (real transaction, manual clock), the same job document:

- ours: the bundled campaign through the orchestrator (canary wave first,
  itself paced 50 per minute doubling every 100, halt at > 10% failures after
  5 executed, which is also set as the wave job's abortConfig);
- native: ONE job over all five groups, with `exponentialRate` (base 50 per
  minute, x2 every 100 notified, capped at 1000 per minute) and `abortConfig`
  (ALL failures > 10%), once with `minNumberOfExecutedThings` 100 and once
  with 5 (the same as ours).

Exposure = devices whose transaction started (they touched their
configuration) before the halt or abort; notified = executions rolled out.
Devices take the simulated fleet's default time (`FleetTiming`): each acts
1-120 s after its notification and reports 5-60 s after it starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import structlog
from _common import peak_rss_mib, quiet_logging, write_result

import job_documents as jd
from infra.sandbox.fleet import MemoryFleet, Profile, assign_profiles
from infra.sandbox.pki import SandboxPki
from infra.sandbox.runtime import Sandbox
from job_documents.clock import ManualClock
from orchestrator.demo.runner import RunSettings, run_campaign
from orchestrator.demo.scenarios import CAMPAIGN_FILE, Scenario, demo_fleet

DEVICES = int(os.environ.get("BENCH_EXPOSURE_DEVICES", "10000"))
FAILING = 0.3
FAULTS = {
    # fails fast: the probe is refused, the device reports FAILED within seconds
    "fast": Scenario(
        name="fails-fast",
        description="30% of every group cannot reach the new endpoint",
        canary={Profile.PROBE_FAILS: FAILING},
        rest={Profile.PROBE_FAILS: FAILING},
        expected="HALTED",
    ),
    # fails slowly: the probe hangs, the execution only times out after 30 minutes
    "slow": Scenario(
        name="hangs",
        description="30% of every group wedges in the probe",
        canary={Profile.HANG: FAILING},
        rest={Profile.HANG: FAILING},
        expected="HALTED",
    ),
}


def ours(fault: Scenario) -> dict[str, Any]:
    result = run_campaign(
        CAMPAIGN_FILE.read_text(),
        demo_fleet(fault, DEVICES),
        RunSettings(time_scale=0.0, worker_setup=quiet_logging),
        source=str(CAMPAIGN_FILE),
    )
    notified = sum(sum((w["executions"] or {}).values()) for w in result.waves)
    return {
        "status": result.status,
        "exposure": result.exposure,
        "notified": notified,
        "halted_after_minutes": result.halted_after_minutes,
    }


def native(fault: Scenario, min_executed: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-native-", dir="/dev/shm"))
    try:
        clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
        fleet_spec = demo_fleet(fault, DEVICES)
        with Sandbox(mqtt=False, clock=clock, work_dir=work / "sandbox") as sandbox:
            pki = SandboxPki.create_or_load(work / "pki")
            groups = [(g.name, g.size) for g in fleet_spec.groups]
            provisioned = sandbox.provision(DEVICES, groups)
            fleet = MemoryFleet(
                sandbox.engine,
                pki,
                assign_profiles(fleet_spec, provisioned.groups),
                root=work / "devices",
            ).start()
            catalog = jd.load_catalog(pki.ats_catalog)
            iot = sandbox.iot_client()
            host = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
            document = jd.build_document(
                operation="migrate",
                region="us-east-1",
                campaign="native",
                wave="all",
                endpoint=jd.Endpoint(host=host),
                roots=[catalog.get("amazon-root-ca-1"), catalog.get("amazon-root-ca-3")],
                catalog=catalog,
            )
            arns = [iot.describe_thing_group(thingGroupName=g)["thingGroupArn"] for g, _ in groups]
            iot.create_job(
                jobId="native",
                targets=arns,
                document=document.text,
                jobExecutionsRolloutConfig={
                    "maximumPerMinute": 1000,
                    "exponentialRate": {
                        "baseRatePerMinute": 50,
                        "incrementFactor": 2.0,
                        "rateIncreaseCriteria": {"numberOfNotifiedThings": 100},
                    },
                },
                abortConfig={
                    "criteriaList": [
                        {
                            "failureType": "ALL",
                            "action": "CANCEL",
                            "thresholdPercentage": 10.0,
                            "minNumberOfExecutedThings": min_executed,
                        }
                    ]
                },
                timeoutConfig={"inProgressTimeoutInMinutes": 30},
            )
            started = clock.now()
            job: dict[str, Any] = {}
            for _ in range(10_000):
                fleet.run_due()
                job = iot.describe_job(jobId="native")["job"]
                if job["status"] != "IN_PROGRESS":
                    break
                # As the demo's driver does: on to the next device timer or rollout batch,
                # looking at the job at least every 30 s (a fixed 30 s step would make
                # every device wait for the next multiple of it).
                now = clock.now().timestamp()
                wakes = (fleet.next_wakeup(), sandbox.engine.next_deadline())
                target = min([now + 30.0, *(w for w in wakes if w is not None)])
                sandbox.engine.advance(max(1.0, target - now))
            fleet.run_due()
            details = job["jobProcessDetails"]
            notified = sum(v for k, v in details.items() if k.startswith("numberOf"))
            return {
                "status": job["status"],
                "reason_code": job.get("reasonCode"),
                "exposure": fleet.exposed(),
                "notified": notified,
                "aborted_after_minutes": round((clock.now() - started).total_seconds() / 60, 2),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compare(key: str, fault: Scenario) -> dict[str, Any]:
    gated = ours(fault)
    native_100 = native(fault, 100)
    native_5 = native(fault, 5)
    if gated["status"] != "HALTED":
        raise SystemExit(f"the gated campaign did not halt ({fault.name}): {gated}")
    out: dict[str, Any] = {
        f"{key}_ours_status": gated["status"],
        f"{key}_ours_exposure": gated["exposure"],
        f"{key}_ours_notified": gated["notified"],
        f"{key}_ours_halted_after_minutes": gated["halted_after_minutes"],
    }
    for name, run in (("native_min100", native_100), ("native_min5", native_5)):
        out |= {
            f"{key}_{name}_status": run["status"],
            f"{key}_{name}_exposure": run["exposure"],
            f"{key}_{name}_notified": run["notified"],
            f"{key}_{name}_aborted_after_minutes": run["aborted_after_minutes"],
            f"{key}_exposure_ratio_ours_over_{name}": round(
                gated["exposure"] / max(1, run["exposure"]), 3
            ),
            f"{key}_notified_ratio_ours_over_{name}": round(
                gated["notified"] / max(1, run["notified"]), 3
            ),
        }
    return out


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    wall = time.perf_counter()
    figures: dict[str, Any] = {"devices": DEVICES, "failing_share": FAILING}
    for key, fault in FAULTS.items():
        figures |= compare(key, fault)
    figures["wall_s"] = round(time.perf_counter() - wall, 1)
    figures["peak_rss_mib"] = round(peak_rss_mib(), 1)
    write_result("demo_exposure", figures)


if __name__ == "__main__":
    main()
