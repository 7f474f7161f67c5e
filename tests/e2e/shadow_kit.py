"""Devices that answer their jobs and report their trust state to the `ca-migration` shadow.

The sandbox (no MQTT) runs the campaign of `campaign_kit`; these devices answer
their jobs over iot-jobs-data and write their shadow through the sandbox's shadow
service (the code the MQTT bridge runs), as the agent does at start-up and after
each transaction. `report` writes one device's shadow as the agent would (a test
moves a device back to legacy with it).
"""

from __future__ import annotations

import json
import threading
from typing import Any, Self

from infra.sandbox.mqtt._shadow import ShadowStore

from .campaign_kit import DEVICE_RETRIES, THINGS

LEGACY = "a1sandbox2demo.iot.us-east-1.amazonaws.com"
LEGACY_ROOTS = ["sha256:c4ce74aa692acf26"]
ATS_ROOTS = ["amazon-root-ca-1", "amazon-root-ca-3"]


class ReportingFleet:
    """Devices that answer their jobs and keep their ca-migration shadow up to date.

    `silent` devices never report (old firmware); `failing` ones fail their
    migration, last of their job's devices, and stay on legacy.
    """

    def __init__(
        self,
        sandbox: Any,
        ats_host: str,
        *,
        silent: frozenset[str] = frozenset(),
        failing: frozenset[str] = frozenset(),
    ) -> None:
        self._jobs = sandbox.jobs_data_client(config=DEVICE_RETRIES)
        self._iot = sandbox.iot_client(config=DEVICE_RETRIES)
        self._shadows = ShadowStore(lambda: 0, sandbox.engine.named_shadows)
        self._ats = ats_host
        self._silent = silent
        self._failing = failing
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        for thing in THINGS:
            self.report(thing, LEGACY, LEGACY_ROOTS, None)

    def report(self, thing: str, endpoint: str, roots: list[str], job: str | None) -> None:
        """Write the device's trust state to its shadow, as the agent does."""
        if thing in self._silent:
            return
        state = {"endpoint": endpoint, "port": 8883, "roots": roots, "phase": "idle"}
        state["lastJob"] = {"jobId": job, "status": "SUCCEEDED"} if job else None
        topic = f"$aws/things/{thing}/shadow/name/ca-migration/update"
        self._shadows.handle(topic, json.dumps({"state": {"reported": state}}).encode())

    def _last_pending(self, job_id: str) -> bool:
        """Whether every other execution of the job has finished (a failing device fails last:
        a job seen mid-pass must not let it fail before the rest of its wave)."""
        details = self._iot.describe_job(jobId=job_id)["job"].get("jobProcessDetails", {})
        pending = details.get("numberOfQueuedThings", 0) + details.get(
            "numberOfInProgressThings", 0
        )
        return pending <= 1

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            for thing in THINGS:
                pending = self._jobs.get_pending_job_executions(thingName=thing)
                for job in pending.get("queuedJobs", []) + pending.get("inProgressJobs", []):
                    fail = thing in self._failing
                    if fail and not self._last_pending(job["jobId"]):
                        continue  # fail after the others, so no early failure rate halts
                    self._jobs.update_job_execution(
                        thingName=thing,
                        jobId=job["jobId"],
                        status="FAILED" if fail else "SUCCEEDED",
                        statusDetails={"reason": "probe-failed" if fail else "committed"},
                    )
                    if not fail:
                        self.report(thing, self._ats, ATS_ROOTS, job["jobId"])
