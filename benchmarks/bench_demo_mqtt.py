"""The main job over MQTT/TLS: the bundled campaign over 1k SDK devices (target: < 120 s).

Every device is a thread running the real agent on the AWS IoT Device SDK v2
(MQTT 5, mutual TLS with its own sandbox certificate) against the sandbox's
mosquitto listeners, probing the new endpoint with a real TLS handshake;
the orchestrator reconciles through boto3 against the sandbox over HTTP. The
sandbox clock runs `BENCH_MQTT_TIME_SCALE` (default 60, the demo's) times real time.
Run after `source scripts/env.sh` (the SDK resolves the sandbox host names
through nss_wrapper). Scenario `happy`.

`BENCH_MQTT_FLEET_DEVICES` (default 1000) changes the fleet size.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import structlog
from _common import peak_rss_mib, write_result

from orchestrator.demo.runner import RunSettings, run_campaign
from orchestrator.demo.scenarios import CAMPAIGN_FILE, demo_fleet, scenario

DEVICES = int(os.environ.get("BENCH_MQTT_FLEET_DEVICES", "1000"))
TIME_SCALE = float(os.environ.get("BENCH_MQTT_TIME_SCALE", "60"))
TARGET_WALL_S = 120.0


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    started = time.perf_counter()
    result = run_campaign(
        CAMPAIGN_FILE.read_text(),
        demo_fleet(scenario("happy"), DEVICES),
        RunSettings(transport="mqtt", time_scale=TIME_SCALE),
        source=str(CAMPAIGN_FILE),
    )
    wall = time.perf_counter() - started
    write_result(
        "demo_mqtt",
        {
            "devices": DEVICES,
            "transport": "MQTT 5 (SDK v2 IotJobsClientV2), mutual TLS, real TLS probe",
            "time_scale": TIME_SCALE,
            "status": result.status,
            "endpoints": result.endpoints,
            "wall_s": round(wall, 1),
            "target_wall_s": TARGET_WALL_S,
            "within_wall_target": wall < TARGET_WALL_S,
            "simulated_minutes": result.simulated_minutes,
            "api_calls": result.api_calls,
            "peak_rss_mib": round(peak_rss_mib(), 1),
        },
    )
    if result.status != "COMPLETED":
        raise SystemExit(f"the campaign did not complete: {result.to_json()}")


if __name__ == "__main__":
    main()
