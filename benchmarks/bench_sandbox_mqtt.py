"""Executions per second through the sandbox's MQTT data plane with 200 connected SDK devices.

Each device is the AWS IoT Device SDK v2 (IotJobsClientV2 over MQTT 5, mutual
TLS to the ATS listener) doing notify-next -> start-next -> update SUCCEEDED
for one job that targets a thing group of all of them, created with boto3
through the sandbox's HTTP control plane. Run after `source scripts/env.sh`.

Figures: connect time for the fleet, time from CreateJob until every
execution is SUCCEEDED (and executions/s over it), per-device latency
percentiles, wall time of the whole run.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib, write_result

from infra.sandbox.mqtt.sdkdevice import SdkJobsDevice
from infra.sandbox.runtime import Sandbox

DEVICES = int(os.environ.get("BENCH_MQTT_DEVICES", "200"))
GROUP = "bench-fleet"
TIMEOUT = 120.0


def main() -> None:
    wall = time.perf_counter()
    with Sandbox() as sandbox:
        if sandbox.pki is None:
            raise SystemExit("the sandbox started without its MQTT data plane")
        provisioned = sandbox.provision(things=DEVICES, groups=[(GROUP, None)], prefix="bench")
        iot = sandbox.iot_client()
        endpoint = sandbox.endpoints["ats"]
        ca = sandbox.pki.ats_root_pems["amazon-root-ca-1"]
        devices = [
            SdkJobsDevice(
                thing_name=thing,
                host=endpoint.host,
                port=endpoint.port,
                cert_pem=Path(provisioned.credentials[thing]["cert_pem"]),
                key_pem=Path(provisioned.credentials[thing]["key_pem"]),
                ca_pem=ca,
                timeout=TIMEOUT,
            )
            for thing in provisioned.things
        ]
        with ThreadPoolExecutor(max_workers=DEVICES) as pool:
            started = time.perf_counter()
            list(pool.map(SdkJobsDevice.start, devices))
            connect_s = time.perf_counter() - started
            try:
                group_arn = iot.describe_thing_group(thingGroupName=GROUP)["thingGroupArn"]
                finished: list[float] = []

                def work(device: SdkJobsDevice) -> str:
                    job = device.run_one("SUCCEEDED")
                    finished.append(time.perf_counter())
                    return job

                futures = [pool.submit(work, d) for d in devices]
                created = time.perf_counter()
                iot.create_job(
                    jobId="bench-mqtt", targets=[group_arn], document=json.dumps({"bench": True})
                )
                jobs = [f.result(TIMEOUT) for f in futures]
                elapsed = time.perf_counter() - created
            finally:
                list(pool.map(SdkJobsDevice.stop, devices))
        counts = iot.describe_job(jobId="bench-mqtt")["job"]["jobProcessDetails"]
        if set(jobs) != {"bench-mqtt"} or counts.get("numberOfSucceededThings") != DEVICES:
            raise SystemExit(f"not every device succeeded: {counts}")
    latencies = sorted(t - created for t in finished)
    write_result(
        "sandbox_mqtt",
        {
            "devices": DEVICES,
            "protocol": "MQTT 5 (IotJobsClientV2), mutual TLS, ATS listener",
            "fleet_connect_s": round(connect_s, 3),
            "create_job_to_all_succeeded_s": round(elapsed, 3),
            "executions_per_s": round(DEVICES / elapsed, 1),
            "device_latency_p50_s": round(statistics.median(latencies), 3),
            "device_latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
            "device_latency_max_s": round(latencies[-1], 3),
            "wall_time_s": round(time.perf_counter() - wall, 3),
            "peak_rss_mib": round(peak_rss_mib(), 1),
        },
    )


if __name__ == "__main__":
    main()
