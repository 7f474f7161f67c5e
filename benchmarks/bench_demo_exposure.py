"""Exposure before a halt: gated waves vs one AWS IoT job with native abort and exponential rollout.

The fleet (default 10k devices, the bundled campaign's five groups) has a
fleet-wide fault: 30% of devices cannot reach the new endpoint, so the canary
fails at 30%. Both contenders run on the same sandbox code, the same simulated
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
from _common import peak_rss_mib, write_result

import job_documents as jd
from infra.sandbox.fleet import MemoryFleet, Profile, assign_profiles
from infra.sandbox.pki import SandboxPki
from infra.sandbox.runtime import Sandbox
from job_documents.clock import ManualClock
from orchestrator.demo.runner import RunSettings, run_campaign
from orchestrator.demo.scenarios import CAMPAIGN_FILE, Scenario, demo_fleet

DEVICES = int(os.environ.get("BENCH_EXPOSURE_DEVICES", "10000"))
FAILING = 0.3
FAULT = Scenario(
    name="fleet-wide-fault",
    description="30% of every group cannot reach the new endpoint",
    canary={Profile.PROBE_FAILS: FAILING},
    rest={Profile.PROBE_FAILS: FAILING},
    expected="HALTED",
)


def ours() -> dict[str, Any]:
    result = run_campaign(
        CAMPAIGN_FILE.read_text(),
        demo_fleet(FAULT, DEVICES),
        RunSettings(time_scale=0.0),
        source=str(CAMPAIGN_FILE),
    )
    notified = sum(sum((w["executions"] or {}).values()) for w in result.waves)
    return {
        "status": result.status,
        "exposure": result.exposure,
        "notified": notified,
        "halted_after_minutes": result.halted_after_minutes,
    }


def native(min_executed: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-native-", dir="/dev/shm"))
    try:
        clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
        fleet_spec = demo_fleet(FAULT, DEVICES)
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
                sandbox.engine.advance(30.0)
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


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    wall = time.perf_counter()
    gated = ours()
    native_100 = native(100)
    native_5 = native(5)
    if gated["status"] != "HALTED":
        raise SystemExit(f"the gated campaign did not halt: {gated}")
    write_result(
        "demo_exposure",
        {
            "devices": DEVICES,
            "failing_share": FAILING,
            "ours_status": gated["status"],
            "ours_exposure": gated["exposure"],
            "ours_notified": gated["notified"],
            "ours_halted_after_minutes": gated["halted_after_minutes"],
            "native_min100_status": native_100["status"],
            "native_min100_exposure": native_100["exposure"],
            "native_min100_notified": native_100["notified"],
            "native_min5_status": native_5["status"],
            "native_min5_exposure": native_5["exposure"],
            "native_min5_notified": native_5["notified"],
            "exposure_ratio_ours_over_native_min100": round(
                gated["exposure"] / max(1, native_100["exposure"]), 3
            ),
            "exposure_ratio_ours_over_native_min5": round(
                gated["exposure"] / max(1, native_5["exposure"]), 3
            ),
            "notified_ratio_ours_over_native_min100": round(
                gated["notified"] / max(1, native_100["notified"]), 3
            ),
            "notified_ratio_ours_over_native_min5": round(
                gated["notified"] / max(1, native_5["notified"]), 3
            ),
            "wall_s": round(time.perf_counter() - wall, 1),
            "peak_rss_mib": round(peak_rss_mib(), 1),
        },
    )


if __name__ == "__main__":
    main()
