"""Asks fleet indexing and the Jobs API what `orchestrator.verify` compares.

For each wave to check: three index calls for its figures (devices, devices
reporting, devices on the wave's endpoint), one SearchIndex page per 100
off-target devices, then their executions, the cheapest of three ways
(`orchestrator.verify.lookup_plan`). The number of calls
grows with the number of off-target devices, never with the wave's size where
the devices are where they should be.

The index and the executions come in through the two Protocols below
(`orchestrator.aws.indexing.FleetIndexAdapter`,
`orchestrator.aws.executions.ExecutionReader`); this module holds the order of
the questions, not their wire form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from orchestrator import verify as v
from orchestrator.model import CampaignSpec, CampaignState

__all__ = [
    "ExecutionLookup",
    "Readers",
    "ShadowIndex",
    "passed_wave_census",
    "survey_drift",
    "wave_figures",
]


class ShadowIndex(Protocol):
    """What verification asks of fleet indexing."""

    @property
    def calls(self) -> int:
        """Calls made so far."""
        ...

    def count(self, query: str) -> int:
        """Things matching `query` (GetStatistics)."""
        ...

    def documents(self, query: str) -> list[dict[str, Any]]:
        """Every matching thing's document (SearchIndex, all pages)."""
        ...


class ExecutionLookup(Protocol):
    """What verification asks of AWS IoT Jobs."""

    @property
    def calls(self) -> int:
        """Calls made so far."""
        ...

    def status(self, job_id: str, thing: str) -> str | None:
        """The thing's execution status for the job; None when it has none."""
        ...

    def listed(self, job_id: str, status: str) -> set[str]:
        """Things whose execution of the job has this status."""
        ...


def wave_figures(index: ShadowIndex, check: v.WaveCheck) -> tuple[int, int, int]:
    """Devices of the wave, how many report, how many report the wave's endpoint (3 calls)."""
    from orchestrator.census import base_query

    devices = index.count(base_query(check.thing_groups))
    reported = index.count(v.reported_in_wave_query(check))
    on_target = index.count(v.on_target_query(check))
    return devices, reported, on_target


def _statuses(
    executions: ExecutionLookup, check: v.WaveCheck, things: list[str]
) -> Mapping[str, str | None]:
    if not things:
        return {}
    plan = v.lookup_plan(len(things), check)
    if plan == "list-succeeded":
        succeeded = executions.listed(check.job_id, "SUCCEEDED")
        return {t: "SUCCEEDED" if t in succeeded else None for t in things}
    known: dict[str, str | None] = {}
    if plan == "list-others":
        for status in check.others:
            listed = executions.listed(check.job_id, status)
            known.update({t: status for t in things if t in listed})
    return {t: known[t] if t in known else executions.status(check.job_id, t) for t in things}


class Readers:
    """The index and the executions of each region, made on first use; their calls added up."""

    def __init__(
        self,
        index: Callable[[str], ShadowIndex],
        executions: Callable[[str], ExecutionLookup],
    ) -> None:
        self._make_index = index
        self._make_executions = executions
        self._indexes: dict[str, ShadowIndex] = {}
        self._executions: dict[str, ExecutionLookup] = {}

    @classmethod
    def single(cls, index: ShadowIndex, executions: ExecutionLookup) -> Readers:
        """Every region answered by the same two readers."""
        return cls(lambda _region: index, lambda _region: executions)

    def index(self, region: str) -> ShadowIndex:
        if region not in self._indexes:
            self._indexes[region] = self._make_index(region)
        return self._indexes[region]

    def executions(self, region: str) -> ExecutionLookup:
        if region not in self._executions:
            self._executions[region] = self._make_executions(region)
        return self._executions[region]

    @property
    def calls(self) -> int:
        readers: list[ShadowIndex | ExecutionLookup] = [
            *self._indexes.values(),
            *self._executions.values(),
        ]
        return sum(r.calls for r in {id(r): r for r in readers}.values())


def survey_drift(
    spec: CampaignSpec,
    state: CampaignState,
    readers: Readers,
    *,
    passed_only: bool = False,
) -> v.Verification:
    """Verify the campaign's waves (see `orchestrator.verify.wave_checks` for which)."""
    checks, skipped = v.wave_checks(spec, state, passed_only=passed_only)
    results: list[v.WaveResult] = []
    for check in checks:
        index = readers.index(check.region)
        executions = readers.executions(check.region)
        devices, reported, on_target = wave_figures(index, check)
        off_target: list[v.DeviceReport] = []
        if reported > on_target:
            for document in index.documents(v.off_target_query(check)):
                report = v.device_report(document)
                if report is not None:
                    off_target.append(report)
        statuses = _statuses(executions, check, [r.thing for r in off_target])
        results.append(
            v.WaveResult(
                wave=check.wave,
                job_id=check.job_id,
                endpoint=check.endpoint,
                devices=devices,
                reported=reported,
                on_target=on_target,
                succeeded=check.succeeded,
                drift=v.find_drift(check, off_target, statuses),
            )
        )
    return v.Verification(
        campaign=spec.name,
        region=spec.region,
        waves=tuple(results),
        skipped=skipped,
        calls=readers.calls,
    )


def passed_wave_census(
    spec: CampaignSpec, state: CampaignState, index: Callable[[str], ShadowIndex]
) -> list[v.WaveResult]:
    """Each PASSED wave's devices, reporting devices and devices on its endpoint (3 calls each).

    What `status --census` and `report --census` show; no execution is read.
    """
    checks, _ = v.wave_checks(spec, state, passed_only=True)
    out = []
    for check in checks:
        devices, reported, on_target = wave_figures(index(check.region), check)
        out.append(
            v.WaveResult(
                wave=check.wave,
                job_id=check.job_id,
                endpoint=check.endpoint,
                devices=devices,
                reported=reported,
                on_target=on_target,
                succeeded=check.succeeded,
            )
        )
    return out
