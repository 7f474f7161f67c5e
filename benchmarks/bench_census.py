"""Fleet-indexing calls per `ca-migrate census`, at 1k, 10k and 100k devices.

The census asks the sandbox's fleet indexing through the production adapter
(`orchestrator.aws.indexing.FleetIndexAdapter`, boto3 over HTTP). The fleet
reports two endpoints (legacy and ATS) and a tenth never reports; the figure
that matters is the call count, which must stay flat as the fleet grows (the
naive way, one GetThingShadow per device, is the fleet size). The wall time
is the sandbox's, a pure-Python index scanning every thing per query, not AWS's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import peak_rss_mib, quiet_logging, write_result
from infra.sandbox.runtime import Sandbox
from orchestrator.aws.indexing import FleetIndexAdapter
from orchestrator.census import INDEXING_CONFIGURATION
from orchestrator.cli.census import take_census

SIZES = {"1k": 1_000, "10k": 10_000, "100k": 100_000}
LEGACY = "a1sandbox2demo.iot.us-east-1.amazonaws.com"
ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"


def _populate(sandbox: Sandbox, size: int) -> None:
    result = sandbox.provision(size, [("canary", size // 100), ("fleet", None)])
    table = sandbox.engine.named_shadows
    with table.lock:
        for index, thing in enumerate(result.things):
            if index % 10 == 9:
                continue
            ats = index % 3 == 0
            reported = {
                "endpoint": ATS if ats else LEGACY,
                "roots": ["amazon-root-ca-1"] if ats else ["sha256:c4ce74aa692acf26"],
                "phase": "idle",
                "agentVersion": "0.1.0",
            }
            table.documents[(thing, "ca-migration")] = {
                "state": {"reported": reported},
                "metadata": {},
                "version": 1,
            }
        table.changed()


def measure(size: int) -> dict[str, float | int]:
    with Sandbox(mqtt=False) as sandbox:
        _populate(sandbox, size)
        client = sandbox.iot_client()
        client.update_indexing_configuration(thingIndexingConfiguration=INDEXING_CONFIGURATION)
        adapter = FleetIndexAdapter(client)
        started = time.perf_counter()
        census, _ = take_census(adapter, region="us-east-1", groups=[], shown=20, list_all=False)
        seconds = time.perf_counter() - started
        assert census.total == size, census.total  # noqa: S101 - the benchmark checks itself
        return {"calls": adapter.calls, "seconds": round(seconds, 2)}


def main() -> None:
    quiet_logging()
    figures: dict[str, float | int | bool] = {}
    for label, size in SIZES.items():
        ours = measure(size)
        figures[f"{label}_census_calls"] = ours["calls"]
        figures[f"{label}_naive_calls"] = size
        figures[f"{label}_sandbox_seconds"] = ours["seconds"]
    figures["calls_flat"] = len({figures[f"{k}_census_calls"] for k in SIZES}) == 1
    figures["peak_rss_mib"] = round(peak_rss_mib(), 1)
    write_result("census", figures)


if __name__ == "__main__":
    main()
