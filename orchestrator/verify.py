"""Drift after a campaign: devices whose shadow disagrees with their job execution (pure).

A wave's migrate job says, per device, that the move succeeded; the device's
`ca-migration` named shadow says where it connects now. The two disagree when
an execution is SUCCEEDED but the shadow reports an endpoint other than the one
the wave's document moved it to:

- `moved-back`: the shadow names this wave's job as the device's last one, so
  the device itself reported the move, and it is on another endpoint since (a
  factory reset, a firmware image with the old configuration, a hand edit);
- `not-moved`: the shadow never reported this job (it names another job, or
  none), yet the execution says SUCCEEDED.

A device that reports nothing (old firmware, no shadow) is not drift: it is
counted as unverifiable. A device off the target whose execution is not
SUCCEEDED (it failed, was canceled, never ran) is what the gates already
counted, not drift.

Cost: a wave's off-target devices come from fleet indexing (one SearchIndex
page per 100 of them), never from one shadow read per device. Their
executions are then read the cheapest of three ways (`lookup_plan`): one by
one (DescribeJobExecution); by listing the job's SUCCEEDED executions
(ListJobExecutionsForJob, 250 a page); or by listing the job's other
executions (FAILED, QUEUED, ...: the gates' counts say how many) and reading
one by one only the off-target devices not among them, the suspects.

No I/O here: `wave_checks` says which waves to check and against which
endpoint, the query helpers say what to ask, `find_drift` compares the
answers, `render_text` / `as_json` show the result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from orchestrator.census import FIELDS, SHADOW, base_query, classify_endpoint
from orchestrator.model import CampaignSpec, CampaignState, Counts, WavePhase
from orchestrator.targets import wave_groups

__all__ = [
    "LIST_PAGE",
    "DeviceReport",
    "Drift",
    "DriftKind",
    "Verification",
    "WaveCheck",
    "WaveResult",
    "as_json",
    "device_report",
    "find_drift",
    "lookup_plan",
    "off_target_query",
    "on_target_query",
    "render_text",
    "reported_in_wave_query",
    "target_endpoint",
    "wave_checks",
]

LIST_PAGE = 250  # ListJobExecutionsForJob maxResults' maximum in the service model
_SUCCEEDED = "SUCCEEDED"


class DriftKind(StrEnum):
    """How a device's shadow disagrees with its SUCCEEDED execution."""

    MOVED_BACK = "moved-back"
    NOT_MOVED = "not-moved"


@dataclass(frozen=True, slots=True)
class WaveCheck:
    """One wave to verify: its job, its thing groups and the endpoint its document sets."""

    wave: str
    job_id: str
    thing_groups: tuple[str, ...]
    endpoint: str
    succeeded: int
    others: Mapping[str, int] = field(default_factory=dict)  # other status -> executions
    region: str = ""  # the wave's region (its index and its job live there)


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """What a device's `ca-migration` shadow reports, as the index returns it."""

    thing: str
    endpoint: str | None
    last_job: str | None = None


@dataclass(frozen=True, slots=True)
class Drift:
    """One device whose shadow disagrees with its SUCCEEDED execution."""

    wave: str
    thing: str
    kind: DriftKind
    endpoint: str
    endpoint_kind: str  # legacy, ats (another ATS endpoint), other
    job_id: str


@dataclass(frozen=True, slots=True)
class WaveResult:
    """One wave's figures: devices, how many the shadow shows on target, and the drift."""

    wave: str
    job_id: str
    endpoint: str
    devices: int
    reported: int
    on_target: int
    succeeded: int
    drift: tuple[Drift, ...] = ()

    @property
    def unverifiable(self) -> int:
        """Devices of the wave whose shadow reports nothing."""
        return max(0, self.devices - self.reported)


@dataclass(frozen=True, slots=True)
class Verification:
    """The whole campaign's verification."""

    campaign: str
    region: str
    waves: tuple[WaveResult, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)  # wave -> why it was not checked
    calls: int = 0

    @property
    def drift(self) -> tuple[Drift, ...]:
        return tuple(d for w in self.waves for d in w.drift)


def target_endpoint(document: str | None) -> str | None:
    """The endpoint host a migrate document moves devices to; None when it names none."""
    if not document:
        return None
    try:
        parsed = json.loads(document)
    except ValueError:
        return None
    endpoint = parsed.get("endpoint") if isinstance(parsed, dict) else None
    host = endpoint.get("host") if isinstance(endpoint, dict) else None
    return host if isinstance(host, str) and host else None


def wave_checks(
    spec: CampaignSpec, state: CampaignState, *, passed_only: bool = False
) -> tuple[list[WaveCheck], dict[str, str]]:
    """The waves to verify, and why each other wave is not verified.

    A wave is verified once its migrate job has SUCCEEDED executions (every
    launched wave; only PASSED ones with `passed_only`), unless it was rolled
    back (its restore job moved devices back on purpose). Its devices are those
    of every group its job targets, the campaign's own query and sample groups
    included (`orchestrator.targets.wave_groups`), as they are now.
    """
    checks: list[WaveCheck] = []
    skipped: dict[str, str] = {}
    for wave_spec, wave in zip(spec.waves, state.waves, strict=True):
        endpoint = target_endpoint(state.documents.get(wave.job_id))
        if wave.restore_job_id is not None:
            skipped[wave.name] = "rolled back: its devices were moved back on purpose"
        elif passed_only and wave.phase is not WavePhase.PASSED:
            skipped[wave.name] = f"not passed ({wave.phase.value.lower()})"
        elif wave.launched_at is None or wave.counts.succeeded == 0:
            skipped[wave.name] = "no device has succeeded yet"
        elif endpoint is None:
            skipped[wave.name] = "its job document is not stored, so its endpoint is unknown"
        elif not wave_groups(spec, wave_spec):
            skipped[wave.name] = "it targets no thing group"
        else:
            checks.append(
                WaveCheck(
                    wave=wave.name,
                    job_id=wave.job_id,
                    thing_groups=wave_groups(spec, wave_spec),
                    endpoint=endpoint,
                    succeeded=wave.counts.succeeded,
                    others=_other_statuses(wave.counts),
                    region=spec.region_of(wave_spec),
                )
            )
    return checks, skipped


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def reported_in_wave_query(check: WaveCheck) -> str:
    """The wave's devices that report any endpoint."""
    return f"{base_query(check.thing_groups)} AND {FIELDS['endpoint']}:*"


def on_target_query(check: WaveCheck) -> str:
    """The wave's devices whose shadow reports the endpoint the wave moved them to."""
    return f"{base_query(check.thing_groups)} AND {FIELDS['endpoint']}:{_quote(check.endpoint)}"


def off_target_query(check: WaveCheck) -> str:
    """The wave's devices that report an endpoint other than the wave's target."""
    return f"{reported_in_wave_query(check)} AND NOT {FIELDS['endpoint']}:{_quote(check.endpoint)}"


def _other_statuses(counts: Counts) -> dict[str, int]:
    return {
        status: n
        for status, n in (
            ("QUEUED", counts.queued),
            ("IN_PROGRESS", counts.in_progress),
            ("FAILED", counts.failed),
            ("REJECTED", counts.rejected),
            ("TIMED_OUT", counts.timed_out),
            ("CANCELED", counts.canceled),
            ("REMOVED", counts.removed),
        )
        if n > 0
    }


def _pages(executions: int) -> int:
    return -(-executions // LIST_PAGE)


LookupPlan = Literal["describe", "list-succeeded", "list-others"]


def lookup_plan(candidates: int, check: WaveCheck) -> LookupPlan:
    """How to read the off-target devices' executions in the fewest calls (estimated).

    Listing the other executions costs their pages plus one read per suspect; at
    least `candidates - others` devices are suspects, so that is the estimate.
    """
    others = sum(check.others.values())
    costs: dict[LookupPlan, int] = {
        "describe": candidates,
        "list-succeeded": _pages(check.succeeded),
        "list-others": sum(_pages(n) for n in check.others.values()) + max(0, candidates - others),
    }
    return min(costs, key=costs.__getitem__)  # ties go to the first: reading one by one


def device_report(thing_document: Mapping[str, Any]) -> DeviceReport | None:
    """A SearchIndex thing document's `ca-migration` state; None when it has no thing name.

    The `shadow` field is a JSON string holding the classic shadow's sections and,
    under `name`, each indexed named shadow's (fleet indexing's document shape).
    """
    thing = thing_document.get("thingName")
    if not isinstance(thing, str) or not thing:
        return None
    reported: Mapping[str, Any] = {}
    raw = thing_document.get("shadow")
    try:
        shadow = json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        shadow = {}
    named = shadow.get("name") if isinstance(shadow, dict) else None
    ours = named.get(SHADOW) if isinstance(named, dict) else None
    if isinstance(ours, dict) and isinstance(ours.get("reported"), dict):
        reported = ours["reported"]
    endpoint = reported.get("endpoint")
    last = reported.get("lastJob")
    last_job = last.get("jobId") if isinstance(last, dict) else None
    return DeviceReport(
        thing=thing,
        endpoint=endpoint if isinstance(endpoint, str) and endpoint else None,
        last_job=last_job if isinstance(last_job, str) and last_job else None,
    )


def find_drift(
    check: WaveCheck,
    off_target: Sequence[DeviceReport],
    statuses: Mapping[str, str | None],
) -> tuple[Drift, ...]:
    """The wave's off-target devices whose execution is SUCCEEDED, sorted by thing name.

    `statuses` maps a thing to its execution status for the wave's job (None or
    absent: it has no execution, it joined the group after the job).
    """
    found: list[Drift] = []
    for report in sorted(off_target, key=lambda r: r.thing):
        if report.endpoint is None or report.endpoint == check.endpoint:
            continue
        if statuses.get(report.thing) != _SUCCEEDED:
            continue
        kind = DriftKind.MOVED_BACK if report.last_job == check.job_id else DriftKind.NOT_MOVED
        found.append(
            Drift(
                wave=check.wave,
                thing=report.thing,
                kind=kind,
                endpoint=report.endpoint,
                endpoint_kind=classify_endpoint(report.endpoint, check.region),
                job_id=check.job_id,
            )
        )
    return tuple(found)


def _drift_json(drift: Drift) -> dict[str, str]:
    return {
        "wave": drift.wave,
        "thing": drift.thing,
        "kind": drift.kind.value,
        "endpoint": drift.endpoint,
        "endpointKind": drift.endpoint_kind,
        "jobId": drift.job_id,
    }


def as_json(verification: Verification) -> dict[str, Any]:
    return {
        "campaign": verification.campaign,
        "region": verification.region,
        "drift": [_drift_json(d) for d in verification.drift],
        "waves": {
            w.wave: {
                "jobId": w.job_id,
                "endpoint": w.endpoint,
                "devices": w.devices,
                "reported": w.reported,
                "onTarget": w.on_target,
                "succeeded": w.succeeded,
                "unverifiable": w.unverifiable,
                "drift": len(w.drift),
            }
            for w in verification.waves
        },
        "skipped": dict(verification.skipped),
        "calls": verification.calls,
    }


_KIND_TEXT = {
    DriftKind.MOVED_BACK: "moved back after its job succeeded",
    DriftKind.NOT_MOVED: "execution SUCCEEDED but the shadow never left",
}


def render_text(verification: Verification) -> str:
    drift = verification.drift
    lines = [f"verify {verification.campaign} in {verification.region}"]
    lines.extend(
        f"  {w.wave}: {w.on_target} of {w.devices} devices on {w.endpoint}, "
        f"{w.succeeded} succeeded, {len(w.drift)} drifted, {w.unverifiable} never reported"
        for w in verification.waves
    )
    lines.extend(f"  {wave}: not checked, {why}" for wave, why in verification.skipped.items())
    if drift:
        lines.append(f"{len(drift)} device(s) disagree with their job execution:")
        width = max(len(d.thing) for d in drift)
        lines.extend(
            f"  {d.thing:<{width}}  {d.wave}  {_KIND_TEXT[d.kind]}: reports {d.endpoint} "
            f"({d.endpoint_kind})"
            for d in drift
        )
    elif not verification.waves:
        lines.append("nothing to verify yet: no wave has a device that succeeded")
    else:
        lines.append("no drift: every device that reports agrees with its job execution")
    lines.append(f"({verification.calls} AWS IoT calls)")
    return "\n".join(lines)
