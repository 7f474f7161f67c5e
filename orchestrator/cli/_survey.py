"""What `plan` and `start` learn from the account before anything exists, and how they say it.

Each wave's thing groups are resolved (a missing one is exit 2) and their
things listed through the adapter; `orchestrator.feasibility` decides whether
the campaign can succeed; a campaign that cannot is refused with every
problem on its own line (exit 2).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.cli._signing import signing_lines
from orchestrator.errors import CampaignExistsError, CampaignNotFoundError, UsageError
from orchestrator.feasibility import Problem, check_campaign, wave_devices
from orchestrator.model import CampaignSpec, Event, EventKind
from orchestrator.store import StateStore

if TYPE_CHECKING:
    from orchestrator.aws.iot import IotJobsAdapter

__all__ = ["Survey", "already_started", "print_plan", "refuse", "survey"]


@dataclass(frozen=True, slots=True)
class Survey:
    """What the account holds for a campaign: group ARNs, each wave's things, the problems."""

    arns: dict[str, str]
    members: dict[str, dict[str, list[str]]]
    problems: list[Problem]

    def devices(self, wave: str) -> int:
        return len(wave_devices(self.members[wave]))


def survey(api: IotJobsAdapter, spec: CampaignSpec) -> Survey:
    """Resolve every group (a missing one is exit 2) and its things; check the campaign can pass."""
    arns: dict[str, str] = {}
    things: dict[str, list[str]] = {}
    members: dict[str, dict[str, list[str]]] = {}
    for wave in spec.waves:
        members[wave.name] = {}
        for group in wave.thing_groups:
            if group not in arns:
                arns[group] = api.group_arn(group)
                things[group] = api.thing_names(group)
            members[wave.name][group] = things[group]
    return Survey(arns, members, check_campaign(spec, members))


def refuse(problems: list[Problem]) -> None:
    if problems:
        lines = "\n".join(f"  - {p.message}" for p in problems)
        raise UsageError(f"the campaign cannot succeed as written:\n{lines}")


def print_plan(
    spec: CampaignSpec,
    host: str,
    catalog: str,
    is_default: bool,
    waves: list[dict[str, Any]],
    checked: Event,
) -> None:
    print(f"campaign {spec.name} in {spec.region}: endpoint {host}")
    if checked.kind is EventKind.ENDPOINT_CHECK_SKIPPED:
        print(f"!! ENDPOINT NOT CHECKED (--skip-endpoint-check): {host}:{spec.endpoint_port}")
    else:
        print(f"endpoint check passed: {checked.reason}")
    if not is_default:
        print(f"!! CATALOG {catalog}: NOT the packaged Amazon Trust Services roots")
    else:
        print(f"catalog {catalog}")
    print(f"roots to add: {', '.join(spec.trust.add)}")
    for line in signing_lines(spec):
        print(line)
    for w in waves:
        groups = ", ".join(f"{g} ({n})" for g, n in w["devices"].items())
        needs = w["gate_needs_devices"]
        gate = (
            f"its gate can pass with {needs}+ devices" if needs is not None else "gate cannot pass"
        )
        print(
            f"- wave {w['wave']}: {w['distinct_devices']} devices in {groups}; {gate}; "
            f"approval {w['approval']}"
        )
        print(f"  job {w['job_id']}, document {w['document_size']} characters")
        if "job_document" in w:
            step = w["job_document"]["steps"][0]["action"]
            print(
                f"  Device Client runHandler {step['input']['path']}/{step['input']['handler']} "
                f"around the ca-migration/1 document ({w['embedded_document_size']} characters)"
            )
        settings = {k: v for k, v in w["create_job"].items() if k not in ("jobId", "document")}
        print(f"  CreateJob {json.dumps(settings, sort_keys=True)}")


def already_started(store: StateStore, name: str, text: str) -> bool:
    """True when the campaign exists with this very file (a re-run); exit 2 with another."""
    try:
        existing = store.load(name)
    except CampaignNotFoundError:
        return False
    started = existing.state.created_at.isoformat(timespec="seconds")
    if existing.spec_text != text:
        raise CampaignExistsError(
            f"campaign {name} exists (started {started}) with another campaign file; "
            f"give the new campaign another name, or see it with `ca-migrate status {name}`"
        )
    print(
        f"campaign {name} exists (started {started}) with this file: nothing new to start; "
        f"follow it with `ca-migrate run {name} --follow`",
        file=sys.stderr,
    )
    return True
