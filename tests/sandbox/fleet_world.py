"""A Jobs engine on a manual clock, one thing group, and a simulated fleet over it (in this
process or in worker processes): what the fleet tests drive."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import job_documents as jd
from infra.sandbox.engine import JobsEngine
from infra.sandbox.fleet import FleetTiming, MemoryFleet, Profile, ShardedFleet, WorkerProcesses
from infra.sandbox.pki import SandboxPki
from job_documents.clock import ManualClock

ARN = "arn:aws:iot:us-east-1:123456789012:thinggroup/"


class World:
    """An engine on a manual clock, a group of things with given profiles, and a fleet.

    `workers` > 0 runs the devices in that many worker processes (`ShardedFleet`).
    """

    def __init__(
        self,
        pki: SandboxPki,
        root: Path,
        profiles: dict[str, Profile],
        workers: int = 0,
        timing: FleetTiming | None = None,
        processes: WorkerProcesses | None = None,
    ) -> None:
        self.clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
        self.engine = JobsEngine(clock=self.clock)
        self.pki = pki
        names = sorted(profiles)
        self.engine.create_things(names)
        self.engine.create_thing_group({"thingGroupName": "g"})
        self.engine.add_things_to_group("g", names)
        # devices act at once unless a test asks for time (arrival, transaction)
        timing = timing or FleetTiming(late=(600, 600), arrival=(0, 0), transaction=(0, 0))
        self.fleet: MemoryFleet | ShardedFleet
        if workers:
            self.fleet = ShardedFleet(
                self.engine,
                pki,
                profiles,
                workers=workers,
                root=root,
                timing=timing,
                processes=processes,
            )
        else:
            self.fleet = MemoryFleet(self.engine, pki, profiles, root=root, timing=timing)
        self.fleet.start()
        self.catalog = jd.load_catalog(pki.ats_catalog)

    def job(self, job_id: str, roots: tuple[str, ...], **config: object) -> None:
        doc = jd.build_document(
            operation="migrate",
            region="us-east-1",
            campaign="t",
            wave=job_id,
            endpoint=jd.Endpoint(host=self.pki.hosts["ats"]),
            roots=[self.catalog.get(r) for r in roots],
            catalog=self.catalog,
        )
        self.engine.create_job(
            {"jobId": job_id, "targets": [ARN + "g"], "document": doc.text, **config}
        )

    def statuses(self, job_id: str) -> dict[str, dict[str, Any]]:
        return {h["thingName"]: h for h in self.engine.execution_history(job_id=job_id)}

    def outcome(self, job_id: str) -> dict[str, tuple[str, str | None, str | None]]:
        """Per thing: status, statusDetails reason, and the connection of the last update."""
        return {
            thing: (
                h["status"],
                h.get("statusDetails", {}).get("reason"),
                h["history"][-1].get("via") if h["history"] else None,
            )
            for thing, h in self.statuses(job_id).items()
        }

    def run_for(self, seconds: float, step: float = 30.0) -> None:
        elapsed = 0.0
        while elapsed < seconds:
            self.fleet.run_due()
            self.engine.advance(step)
            elapsed += step
        self.fleet.run_due()
