"""Campaign reports (JSON, Markdown, HTML) and the status view, rendered from stored state.

Pure rendering: state and event log in, text out. The HTML report is one
self-contained file: per-wave success/failure charts are inline SVG, styles
are inline, nothing is fetched from anywhere. Every value is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import textwrap
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
from orchestrator.report_census import census_html, census_markdown
from orchestrator.store import StoredEvent
from orchestrator.targets import wave_groups

__all__ = [
    "endpoint_split",
    "follow_record",
    "progress_bar",
    "render_html",
    "render_markdown",
    "report_data",
    "settings_data",
    "status_text",
    "waits",
]

DECISION_KINDS = frozenset(
    {
        "campaign-started",
        "endpoint-checked",
        "endpoint-check-skipped",
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
        "drift-found",
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
        "launched_at": _at(wave.launched_at),
        "finished_at": _at(wave.finished_at),
        "bake_until": _at(wave.bake_until),
        "counts": _counts(wave.counts),
        "completed": wave.counts.completed,
        "targeted": wave.counts.targeted,
        "never_started": wave.never_started,
        "verdict": wave.verdict,
        "restore_job_id": wave.restore_job_id,
        "restore_status": wave.restore_status,
        "restore_counts": _counts(wave.restore_counts) if wave.restore_job_id else None,
    }


def _at(at: datetime | None) -> str | None:
    return at.isoformat(timespec="seconds") if at is not None else None


def settings_data(spec: CampaignSpec) -> dict[str, Any]:
    """The campaign's settings as a report shows them (what the operator wrote, resolved)."""
    ex = spec.execution
    return {
        "region": spec.region,
        "endpoint": spec.endpoint,
        "roots_added": list(spec.trust.add),
        "keep_existing_roots": spec.trust.keep_existing,
        "in_progress_timeout_minutes": ex.in_progress_timeout_minutes,
        "retries": {"failed": ex.retry_failed, "timed_out": ex.retry_timed_out},
        "max_failure_rate": spec.halt.max_failure_rate,
        "fleet_failure_budget": spec.halt.fleet_failure_budget,
        "min_executed": spec.halt.min_executed,
        "waves": [
            {
                "name": w.name,
                "region": spec.region_of(w),
                "thing_groups": list(wave_groups(spec, w)),  # the campaign's own too
                "approval": w.approval.value,
                "gate": {
                    "min_success_rate": w.gate.min_success_rate,
                    "confidence": w.gate.confidence,
                    "min_completed": w.gate.min_completed,
                    "min_completed_fraction": w.gate.min_completed_fraction,
                    "bake_minutes": w.gate.bake_minutes,
                },
                "max_failure_rate": spec.halt_for(w).max_failure_rate,
                "maximum_per_minute": w.rollout.maximum_per_minute,
                "deadline_minutes": w.deadline_minutes,
                "offline": w.offline.value,
            }
            for w in spec.waves
        ],
    }


def endpoint_split(state: CampaignState) -> dict[str, Any]:
    """Where the targeted devices connect now, from the job counts.

    A migrate execution that succeeded moved its device to the ATS endpoint; a
    restore that succeeded moved it back. Every other targeted device (failed,
    rejected, timed out, not yet run) is still on the legacy endpoint: the device
    rolls back what it did not commit.
    """
    targeted = sum(w.counts.targeted for w in state.waves)
    restored = sum(w.restore_counts.succeeded for w in state.waves if w.restore_job_id)
    ats = max(0, sum(w.counts.succeeded for w in state.waves) - restored)
    return {
        "ats": ats,
        "legacy": targeted - ats,
        "targeted": targeted,
        "waves_not_launched": [w.name for w in state.waves if w.launched_at is None],
    }


def report_data(
    state: CampaignState,
    events: Sequence[StoredEvent],
    catalog: str | None = None,
    spec: CampaignSpec | None = None,
) -> dict[str, Any]:
    """Everything a report shows, as JSON-ready data (times to the second, UTC)."""
    from orchestrator.timeline import wave_timelines

    return {
        "campaign": state.name,
        "status": state.status.value,
        "reason": state.reason,
        "catalog": catalog,
        "created_at": _at(state.created_at),
        "updated_at": _at(state.updated_at),
        "failed_devices": sum(w.counts.failures for w in state.waves),
        "endpoints": endpoint_split(state),
        "settings": settings_data(spec) if spec is not None else None,
        "waves": [_wave(w) for w in state.waves],
        "timelines": wave_timelines(spec, state, events) if spec is not None else [],
        "decisions": [
            {
                "at": _at(e.at),
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


def _wrap(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, width=80, subsequent_indent=indent, break_on_hyphens=False) or [""]


def _settings_lines(settings: dict[str, Any]) -> list[str]:
    timeout = settings["in_progress_timeout_minutes"]
    budget = settings["fleet_failure_budget"]
    lines = [
        f"- region {settings['region']}, endpoint {settings['endpoint']}",
        (
            f"- roots added: {', '.join(settings['roots_added'])} "
            f"({'keeping' if settings['keep_existing_roots'] else 'replacing'} existing roots)"
        ),
        (
            f"- execution timeout {'none' if timeout is None else f'{timeout} min'}, retries "
            f"{settings['retries']['failed']} failed / {settings['retries']['timed_out']} timed out"
        ),
        (
            f"- halt above {settings['max_failure_rate']:.1%} failures per wave (after "
            f"{settings['min_executed']} executions); fleet failure budget "
            f"{'none' if budget is None else budget}"
        ),
    ]
    for w in settings["waves"]:
        g = w["gate"]
        text = (
            f"- wave {w['name']}: groups {', '.join(w['thing_groups'])}; approval "
            f"{w['approval']}; gate {g['min_success_rate']:g} at confidence {g['confidence']:g}, "
            f"min {g['min_completed']} completed, {g['min_completed_fraction']:.0%} of targets, "
            f"bake {g['bake_minutes']:g} min"
        )
        if w.get("region", settings["region"]) != settings["region"]:
            text += f"; in {w['region']}"
        if w["maximum_per_minute"] is not None:
            text += f"; {w['maximum_per_minute']} per minute"
        if w["deadline_minutes"] is not None:
            text += f"; deadline {w['deadline_minutes']:g} min, offline {w['offline']}"
        lines.append(text)
    return [wrapped for line in lines for wrapped in _wrap(line)]


def render_markdown(data: dict[str, Any]) -> str:
    """The report as Markdown, every line within 80 columns."""
    out = [f"# Campaign {data['campaign']}: {data['status']}", ""]
    if data["reason"]:
        out += [*_wrap(f"**Reason:** {data['reason']}", ""), ""]
    if data.get("catalog"):
        out += [*_wrap(f"**Catalog:** `{data['catalog']}` (not the packaged Amazon roots)", ""), ""]
    out += [f"Started {data['created_at']}, last change {data['updated_at']} (UTC).", ""]
    split = data.get("endpoints")
    if split:
        out += ["## Fleet endpoints", ""]
        out += _wrap(
            f"- {split['ats']} of {split['targeted']} targeted devices on the ATS endpoint, "
            f"{split['legacy']} still on the legacy endpoint"
        )
        if split["waves_not_launched"]:
            out += _wrap(f"- not launched: {', '.join(split['waves_not_launched'])}")
        out.append("")
    out += census_markdown(data.get("shadowCensus"))
    if data.get("settings"):
        out += ["## Settings", "", *_settings_lines(data["settings"]), ""]
    out += ["## Waves", ""]
    for w in data["waves"]:
        c = w["counts"]
        out.append(f"### {w['name']}: {w['phase']}")
        out.append("")
        out += _wrap(
            f"- {c['succeeded']} succeeded, {c['failed']} failed, {c['rejected']} rejected, "
            f"{c['timed_out']} timed out, {c['in_progress']} in progress, {c['queued']} queued"
            + ("" if w["never_started"] is None else f", {w['never_started']} never started")
        )
        if w["launched_at"]:
            out += _wrap(f"- launched {w['launched_at']}, finished {w['finished_at'] or '-'}")
        if w["verdict"]:
            out += _wrap(f"- gate: {w['verdict']}")
        out.append("")
    out += ["## Decisions", ""]
    for d in data["decisions"]:
        wave = f" [{d['wave']}]" if d["wave"] else ""
        out += _wrap(f"- {d['at']} **{d['kind']}**{wave}: {d['reason']}")
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


_CSS = (
    "body{font-family:sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;width:100%;margin-bottom:1em}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    "td.num{text-align:right;white-space:nowrap}td.bar{width:330px}td:first-child,td.nw{white-space:nowrap}"
    "td.why{overflow-wrap:anywhere}.warn{color:#b00;font-weight:bold}"
    "dl{display:grid;grid-template-columns:max-content auto;gap:2px 1em}dt{font-weight:bold}"
    ".legend span{margin-right:1em}h3{margin-bottom:.2em}"
)


def _settings_html(settings: dict[str, Any]) -> str:
    e = html.escape
    timeout = settings["in_progress_timeout_minutes"]
    budget = settings["fleet_failure_budget"]
    pairs = [
        ("region", settings["region"]),
        ("endpoint", settings["endpoint"]),
        (
            "roots added",
            (
                f"{', '.join(settings['roots_added'])} "
                f"({'keeping' if settings['keep_existing_roots'] else 'replacing'} existing roots)"
            ),
        ),
        ("execution timeout", "none" if timeout is None else f"{timeout} min"),
        (
            "retries",
            f"{settings['retries']['failed']} failed, {settings['retries']['timed_out']} timed out",
        ),
        (
            "halt",
            (
                f"above {settings['max_failure_rate']:.1%} failures per wave (after "
                f"{settings['min_executed']} executions); fleet failure budget "
                f"{'none' if budget is None else budget}"
            ),
        ),
    ]
    dl = "".join(f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in pairs)
    rows = []
    for w in settings["waves"]:
        g = w["gate"]
        extra = [] if w.get("region", settings["region"]) == settings["region"] else [w["region"]]
        if w["maximum_per_minute"] is not None:
            extra.append(f"{w['maximum_per_minute']}/min")
        if w["deadline_minutes"] is not None:
            extra.append(f"deadline {w['deadline_minutes']:g} min (offline {w['offline']})")
        rows.append(
            f"<tr><td>{e(w['name'])}</td><td>{e(', '.join(w['thing_groups']))}</td>"
            f"<td>{e(w['approval'])}</td>"
            f"<td>{g['min_success_rate']:g} at {g['confidence']:g}; min {g['min_completed']} "
            f"completed, {g['min_completed_fraction']:.0%} of targets</td>"
            f"<td class=num>{g['bake_minutes']:g} min</td>"
            f"<td class=num>{w['max_failure_rate']:.1%}</td><td>{e('; '.join(extra))}</td></tr>"
        )
    return (
        f"<h2>Settings</h2><dl>{dl}</dl><table><tr><th>wave</th><th>thing groups</th>"
        "<th>approval</th><th>gate (success rate at confidence)</th><th>bake</th>"
        f"<th>halt above</th><th>rollout</th></tr>{''.join(rows)}</table>"
    )


def _endpoints_html(split: dict[str, Any]) -> str:
    total = split["targeted"]
    if total <= 0:
        bar = ""
    else:
        ats_w = 480 * split["ats"] / total
        bar = (
            '<svg xmlns="http://www.w3.org/2000/svg" width="480" height="18" role="img" '
            'aria-label="endpoint split">'
            f'<rect width="480" height="18" fill="#9e9e9e"/>'
            f'<rect width="{ats_w:.1f}" height="18" fill="#2e7d32"/></svg>'
        )
    waiting = (
        f" Not launched yet: {html.escape(', '.join(split['waves_not_launched']))}."
        if split["waves_not_launched"]
        else ""
    )
    return (
        f'<h2>Fleet endpoints</h2><p>{bar}</p><p><span style="color:#2e7d32">&#9632;</span> '
        f"{split['ats']} of {total} targeted devices on the ATS endpoint; "
        f'<span style="color:#9e9e9e">&#9632;</span> {split["legacy"]} still on the legacy '
        f"endpoint.{waiting}</p>"
    )


def _timelines_html(timelines: list[dict[str, Any]]) -> str:
    from orchestrator.timeline import render_timeline_svg

    if not timelines:
        return ""
    legend = (
        '<p class="legend"><span style="color:#2e7d32">&#9632; succeeded</span>'
        '<span style="color:#c62828">&#9632; failed</span>'
        '<span style="color:#1565c0">&#9632; Wilson lower bound (right axis)</span>'
        '<span style="color:#555">- - gate threshold</span>'
        '<span style="color:#888">| decision (hover for the reason)</span></p>'
    )
    charts = "".join(
        f"<h3>{html.escape(t['wave'])}</h3>{render_timeline_svg(t)}" for t in timelines
    )
    return f"<h2>Timelines</h2>{legend}{charts}"


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
            f"<tr><td>{e(w['name'])}</td><td>{e(w['phase'])}</td>"
            f"<td class=bar>{_svg_bar(c, width=320)}</td><td class=num>{c['succeeded']}</td>"
            f"<td class=num>{c['failed'] + c['rejected'] + c['timed_out']}</td>"
            f"<td class=num>{rate}</td>"
            f"<td class=num>{'' if w['never_started'] is None else w['never_started']}</td>"
            f"<td class=why>{e(w['verdict'])}</td></tr>"
        )
    decisions = "".join(
        f"<tr><td class=num>{e(d['at'])}</td><td class=nw>{e(d['kind'])}</td>"
        f"<td class=nw>{e(d['wave'] or '')}</td>"
        f"<td class=why>{e(d['reason'])}{_samples_html(d)}</td></tr>"
        for d in data["decisions"]
    )
    catalog = (
        f'<p class="warn">Catalog: {e(data["catalog"])} (not the packaged Amazon roots)</p>'
        if data.get("catalog")
        else ""
    )
    settings = _settings_html(data["settings"]) if data.get("settings") else ""
    split = _endpoints_html(data["endpoints"]) if data.get("endpoints") else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Campaign {e(data['campaign'])}</title><style>{_CSS}</style></head><body>"
        f"<h1>Campaign {e(data['campaign'])}: {e(data['status'])}</h1>"
        f"<p>{e(data['reason'])}</p>{catalog}"
        f"<p>Started {e(str(data.get('created_at')))}, last change "
        f"{e(str(data.get('updated_at')))} (UTC). "
        f"Failed devices across all waves: {data['failed_devices']}.</p>"
        f"{split}{census_html(data.get('shadowCensus'))}{settings}"
        f'<h2>Waves</h2><p class="legend">{legend}</p><table><tr><th>wave</th><th>phase</th>'
        "<th>executions</th><th>succeeded</th><th>failed</th><th>success rate</th>"
        f"<th>never started</th><th>gate</th></tr>{''.join(rows)}</table>"
        f"{_timelines_html(data.get('timelines') or [])}"
        "<h2>Decisions</h2><table><tr><th>when (UTC)</th><th>what</th><th>wave</th><th>why</th>"
        f"</tr>{decisions}</table></body></html>\n"
    )


def render_json(data: dict[str, Any]) -> str:
    """The report as JSON."""
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
