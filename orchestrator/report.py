"""Campaign reports (JSON, Markdown, HTML) and the status view, rendered from stored state.

Pure rendering: state and event log in, text out. The HTML report is one
self-contained file: per-wave success/failure charts are inline SVG, styles
are inline, nothing is fetched from anywhere. Every value is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from orchestrator.model import (
    CampaignSpec,
    CampaignState,
    CampaignStatus,
    Counts,
    WavePhase,
    WaveState,
)
from orchestrator.store import StoredEvent

__all__ = [
    "follow_record",
    "progress_bar",
    "render_html",
    "render_markdown",
    "report_data",
    "status_text",
    "waits",
]

DECISION_KINDS = frozenset(
    {
        "campaign-started",
        "wave-launching",
        "wave-approved",
        "gate-passed",
        "gate-lost",
        "bake-finished",
        "wave-passed",
        "wave-halted",
        "deadline-reached",
        "campaign-halted",
        "campaign-paused",
        "campaign-resumed",
        "campaign-aborted",
        "campaign-completed",
        "rollback-started",
        "rollback-finished",
        "failures-explained",
        "action-failed",
    }
)
_SEGMENTS = (
    ("succeeded", "#2e7d32"),
    ("failed", "#c62828"),
    ("rejected", "#6a1b9a"),
    ("timed_out", "#ef6c00"),
    ("in_progress", "#1565c0"),
    ("queued", "#9e9e9e"),
)


def _counts(counts: Counts) -> dict[str, int]:
    return {name: getattr(counts, name) for name, _ in _SEGMENTS} | {
        "canceled": counts.canceled,
        "removed": counts.removed,
    }


def _wave(wave: WaveState) -> dict[str, Any]:
    return {
        "name": wave.name,
        "phase": wave.phase.value,
        "job_id": wave.job_id,
        "job_status": wave.job_status,
        "approved": wave.approved,
        "launched_at": wave.launched_at.isoformat() if wave.launched_at else None,
        "finished_at": wave.finished_at.isoformat() if wave.finished_at else None,
        "bake_until": wave.bake_until.isoformat() if wave.bake_until else None,
        "counts": _counts(wave.counts),
        "completed": wave.counts.completed,
        "targeted": wave.counts.targeted,
        "never_started": wave.never_started,
        "verdict": wave.verdict,
        "restore_job_id": wave.restore_job_id,
        "restore_status": wave.restore_status,
        "restore_counts": _counts(wave.restore_counts) if wave.restore_job_id else None,
    }


def report_data(
    state: CampaignState, events: Sequence[StoredEvent], catalog: str | None = None
) -> dict[str, Any]:
    """Everything a report shows, as JSON-ready data."""
    return {
        "campaign": state.name,
        "status": state.status.value,
        "reason": state.reason,
        "catalog": catalog,
        "created_at": state.created_at.isoformat(),
        "updated_at": state.updated_at.isoformat(),
        "failed_devices": sum(w.counts.failures for w in state.waves),
        "waves": [_wave(w) for w in state.waves],
        "decisions": [
            {
                "at": e.at.isoformat(),
                "kind": e.kind,
                "wave": e.wave,
                "reason": e.reason,
                "data": dict(e.data),
            }
            for e in events
            if e.kind in DECISION_KINDS
        ],
    }


def progress_bar(counts: Counts, width: int = 30) -> str:
    """`[####....] 50%` of completed executions over targeted ones."""
    total = counts.targeted
    done = counts.completed
    filled = round(width * done / total) if total else 0
    percent = f"{done / total:.0%}" if total else "-"
    return f"[{'#' * filled}{'.' * (width - filled)}] {percent:>4}"


def _clock_time(at: datetime, now: datetime | None, time_label: str) -> str:
    when = at.strftime("%H:%M") + (f" ({time_label})" if time_label else " UTC")
    if now is None:
        return when
    minutes = (at - now).total_seconds() / 60
    if minutes >= 1:
        return f"{when}, in {minutes:.0f} min"
    return f"{when}, due now" if minutes >= -1 else f"{when}, passed"


def waits(
    spec: CampaignSpec, state: CampaignState, now: datetime | None, time_label: str = ""
) -> list[str]:
    """What the campaign waits for, in words: approvals (with the command), bakes, deadlines.

    `time_label` names the clock when it is not the wall clock ("sandbox time");
    with `now`, times also say how far off they are.
    """
    name = state.name
    if state.status is CampaignStatus.PAUSED:
        return [f"{name} is paused: run `ca-migrate resume {name}` to go on"]
    if state.status is CampaignStatus.ROLLING_BACK:
        return [f"{name} rolls back: waiting for the restore jobs"]
    if state.status is not CampaignStatus.RUNNING:
        return []
    lines: list[str] = []
    for wave in state.waves:
        planned = spec.wave(wave.name)
        if wave.phase is WavePhase.AWAITING_APPROVAL:
            lines.append(
                f"{wave.name} waits for approval: run `ca-migrate approve {name} {wave.name}`"
            )
        elif wave.phase is WavePhase.BAKING and wave.bake_until is not None:
            lines.append(
                f"{wave.name} baking until {_clock_time(wave.bake_until, now, time_label)}"
            )
        elif wave.phase is WavePhase.LAUNCHING:
            lines.append(f"{wave.name} is launching: creating job {wave.job_id}")
        elif wave.phase is WavePhase.RUNNING:
            c = wave.counts
            line = f"{wave.name} runs: {c.completed} of {c.targeted} completed"
            if planned.deadline_minutes is not None and wave.launched_at is not None:
                deadline = wave.launched_at + timedelta(minutes=planned.deadline_minutes)
                line += f"; deadline {_clock_time(deadline, now, time_label)}"
            lines.append(line)
    return lines


def follow_record(spec: CampaignSpec, state: CampaignState, time_label: str = "") -> dict[str, Any]:
    """One `run --follow` JSON line: status, each wave's phase and counts, what it waits for.

    Times are absolute (no "in 9 min"), so a line is new only when the campaign changed.
    """
    return {
        "campaign": state.name,
        "status": state.status.value,
        "reason": state.reason,
        "waves": [
            {
                "name": w.name,
                "phase": w.phase.value,
                "counts": _counts(w.counts),
                "verdict": w.verdict,
                "bake_until": _seconds(w.bake_until),
            }
            for w in state.waves
        ],
        "waiting": waits(spec, state, None, time_label),
    }


def _seconds(at: datetime | None) -> str | None:
    return at.isoformat(timespec="seconds") if at is not None else None


def status_text(state: CampaignState, catalog: str | None = None) -> str:
    """The human status view."""
    lines = [f"campaign {state.name}: {state.status.value}"]
    if state.reason:
        lines.append(f"  reason: {state.reason}")
    if catalog:
        lines.append(f"  CATALOG: {catalog} (not the packaged Amazon Trust Services roots)")
    for wave in state.waves:
        c = wave.counts
        lines.append(
            f"  {wave.name:<16} {wave.phase.value:<18} {progress_bar(c)}  job {wave.job_id}"
        )
        if wave.launched_at is not None:
            lines.append(
                f"    succeeded {c.succeeded}  failed {c.failed}  rejected {c.rejected}  "
                f"timed out {c.timed_out}  in progress {c.in_progress}  queued {c.queued}"
            )
        if wave.bake_until is not None:
            lines.append(f"    baking until {wave.bake_until.isoformat(timespec='seconds')}")
        if wave.phase.value == "AWAITING_APPROVAL":
            lines.append(f"    waiting for `ca-migrate approve {state.name} {wave.name}`")
        if wave.never_started is not None:
            lines.append(f"    never started by the deadline: {wave.never_started}")
        if wave.verdict:
            lines.append(f"    gate: {wave.verdict}")
        if wave.restore_job_id:
            lines.append(
                f"    restore job {wave.restore_job_id}: {wave.restore_status or 'creating'} "
                f"({wave.restore_counts.succeeded} restored)"
            )
    return "\n".join(lines)


def render_markdown(data: dict[str, Any]) -> str:
    """The report as Markdown."""
    out = [f"# Campaign {data['campaign']}: {data['status']}", ""]
    if data["reason"]:
        out += [f"**Reason:** {data['reason']}", ""]
    if data.get("catalog"):
        out += [f"**Catalog:** `{data['catalog']}` (not the packaged Amazon roots)", ""]
    out += [
        (
            "| wave | phase | succeeded | failed | rejected | timed out | in progress | queued | "
            "never started |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in data["waves"]:
        c = w["counts"]
        out.append(
            f"| {w['name']} | {w['phase']} | {c['succeeded']} | {c['failed']} | {c['rejected']} "
            f"| {c['timed_out']} | {c['in_progress']} | {c['queued']} | "
            f"{'' if w['never_started'] is None else w['never_started']} |"
        )
    out += ["", "## Decisions", ""]
    for d in data["decisions"]:
        wave = f" [{d['wave']}]" if d["wave"] else ""
        out.append(f"- {d['at']} **{d['kind']}**{wave}: {d['reason']}")
    return "\n".join(out) + "\n"


def _svg_bar(counts: dict[str, int], width: int = 480, height: int = 22) -> str:
    total = sum(counts[name] for name, _ in _SEGMENTS)
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="executions by status">'
        ),
        f'<rect width="{width}" height="{height}" fill="#eeeeee"/>',
    ]
    x = 0.0
    for name, colour in _SEGMENTS:
        value = counts[name]
        if not value or not total:
            continue
        w = width * value / total
        parts.append(
            f'<rect x="{x:.2f}" width="{w:.2f}" height="{height}" fill="{colour}">'
            f"<title>{name}: {value}</title></rect>"
        )
        x += w
    parts.append("</svg>")
    return "".join(parts)


def _samples_html(decision: dict[str, Any]) -> str:
    samples = decision.get("data", {}).get("samples") or []
    if not samples:
        return ""
    items = []
    for sample in samples:
        details = sample.get("details")
        text = f"{sample.get('thing')} {sample.get('status')}"
        if details:
            text += f": {json.dumps(details, sort_keys=True)}"
        items.append(f"<li>{html.escape(text)}</li>")
    return f"<ul>{''.join(items)}</ul>"


def render_html(data: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (inline SVG charts, no external assets)."""
    e = html.escape
    legend = " ".join(
        f'<span style="color:{colour}">&#9632; {e(name.replace("_", " "))}</span>'
        for name, colour in _SEGMENTS
    )
    rows = []
    for w in data["waves"]:
        c = w["counts"]
        rate = f"{c['succeeded'] / w['completed']:.1%}" if w["completed"] else "-"
        rows.append(
            f"<tr><td>{e(w['name'])}</td><td>{e(w['phase'])}</td><td>{_svg_bar(c)}</td>"
            f"<td>{c['succeeded']}</td><td>{c['failed'] + c['rejected'] + c['timed_out']}</td>"
            f"<td>{rate}</td><td>{'' if w['never_started'] is None else w['never_started']}</td>"
            f"<td>{e(w['verdict'])}</td></tr>"
        )
    decisions = "".join(
        f"<tr><td>{e(d['at'])}</td><td>{e(d['kind'])}</td><td>{e(d['wave'] or '')}</td>"
        f"<td>{e(d['reason'])}{_samples_html(d)}</td></tr>"
        for d in data["decisions"]
    )
    catalog = (
        f'<p class="warn">Catalog: {e(data["catalog"])} (not the packaged Amazon roots)</p>'
        if data.get("catalog")
        else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Campaign {e(data['campaign'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
        ".warn{color:#b00;font-weight:bold}</style></head><body>"
        f"<h1>Campaign {e(data['campaign'])}: {e(data['status'])}</h1>"
        f"<p>{e(data['reason'])}</p>{catalog}"
        f"<p>Failed devices across all waves: {data['failed_devices']}</p>"
        f"<h2>Waves</h2><p>{legend}</p><table><tr><th>wave</th><th>phase</th><th>executions</th>"
        "<th>succeeded</th><th>failed</th><th>success rate</th><th>never started</th>"
        f"<th>gate</th></tr>{''.join(rows)}</table>"
        "<h2>Decisions</h2><table><tr><th>when</th><th>what</th><th>wave</th><th>why</th></tr>"
        f"{decisions}</table></body></html>\n"
    )


def render_json(data: dict[str, Any]) -> str:
    """The report as JSON."""
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
