"""A wave's story over time, for reports: counts, the gate's Wilson lower bound, decisions.

The points come from the event log: the wave's launch (nothing completed),
every event that carries the wave's counts (`wave-progress`, recorded each
time another tenth of its executions completed or failed, and the gate and
outcome events), and the stored state as the last point. The lower bound at
each point is computed with the gate's own `wilson_bounds` and confidence, so
the chart shows the number the gate compared with its threshold.

Pure: state, events and spec in, JSON-ready data and SVG text out. The SVG is
inline (no script, no external asset); every text is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from orchestrator.gates import wilson_bounds
from orchestrator.model import CampaignSpec, CampaignState, WaveState
from orchestrator.store import StoredEvent

__all__ = ["MARK_KINDS", "render_timeline_svg", "wave_timelines"]

MARK_KINDS = frozenset(
    {
        "wave-approved",
        "wave-launching",
        "gate-passed",
        "gate-lost",
        "bake-finished",
        "wave-passed",
        "wave-halted",
        "deadline-reached",
    }
)
_WIDTH, _HEIGHT = 960, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 48, 16, 34


def _seconds(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def _point(at: datetime, counts: Mapping[str, Any], confidence: float) -> dict[str, Any]:
    succeeded = int(counts.get("succeeded", 0))
    failed = sum(int(counts.get(k, 0)) for k in ("failed", "rejected", "timed_out"))
    lower, _ = wilson_bounds(succeeded, succeeded + failed, confidence)
    return {
        "at": _seconds(at),
        "succeeded": succeeded,
        "failed": failed,
        "lower": round(lower, 4),
    }


def _final_counts(wave: WaveState) -> dict[str, int]:
    c = wave.counts
    return {
        "succeeded": c.succeeded,
        "failed": c.failed,
        "rejected": c.rejected,
        "timed_out": c.timed_out,
    }


def wave_timelines(
    spec: CampaignSpec, state: CampaignState, events: Sequence[StoredEvent]
) -> list[dict[str, Any]]:
    """One timeline per wave that launched: points, marks, the gate's threshold."""
    timelines: list[dict[str, Any]] = []
    for wave in state.waves:
        if wave.launched_at is None:
            continue
        gate = spec.wave(wave.name).gate
        points = [_point(wave.launched_at, {}, gate.confidence)]
        marks: list[dict[str, str]] = []
        for e in events:
            if e.wave != wave.name or e.kind.startswith("rollback"):
                continue
            counts = e.data.get("counts")
            if isinstance(counts, Mapping):
                points.append(_point(e.at, counts, gate.confidence))
            if e.kind in MARK_KINDS:
                marks.append({"at": _seconds(e.at), "kind": e.kind, "reason": e.reason})
        end = wave.finished_at or state.updated_at
        points.append(_point(max(end, wave.launched_at), _final_counts(wave), gate.confidence))
        points.sort(key=lambda p: p["at"])
        timelines.append(
            {
                "wave": wave.name,
                "start": _seconds(wave.launched_at),
                "end": points[-1]["at"],
                "targeted": wave.counts.targeted,
                "threshold": gate.min_success_rate,
                "confidence": gate.confidence,
                "points": points,
                "marks": marks,
            }
        )
    return timelines


def _parse(at: str) -> float:
    return datetime.fromisoformat(at).timestamp()


def render_timeline_svg(timeline: Mapping[str, Any]) -> str:
    """The wave's chart, scaled to the page's width.

    Succeeded and failed on the left axis (devices), the lower bound and the
    threshold on the right one (rate), decisions as marked vertical lines.
    """
    e = html.escape
    points: list[dict[str, Any]] = list(timeline["points"])
    t0 = _parse(timeline["start"])
    span = max(_parse(timeline["end"]) - t0, 1.0)
    top = max(int(timeline["targeted"]), max((p["succeeded"] for p in points), default=0), 1)
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM

    def x(at: str) -> float:
        return _LEFT + plot_w * min(max((_parse(at) - t0) / span, 0.0), 1.0)

    def y_count(n: float) -> float:
        return _TOP + plot_h * (1 - n / top)

    def y_rate(r: float) -> float:
        return _TOP + plot_h * (1 - r)

    def steps(key: str, y: Any) -> str:
        out: list[str] = []
        for i, p in enumerate(points):
            if i:
                out.append(f"{x(p['at']):.1f},{y(points[i - 1][key]):.1f}")
            out.append(f"{x(p['at']):.1f},{y(p[key]):.1f}")
        return " ".join(out)

    threshold = float(timeline["threshold"])
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
            f'width="100%" role="img" aria-label="timeline of wave {e(timeline["wave"])}" '
            'style="max-width:960px;font:11px sans-serif">'
        ),
        (
            f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
            'stroke="#ccc"/>'
        ),
        (
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y_rate(threshold):.1f}" '
            f'y2="{y_rate(threshold):.1f}" stroke="#555" stroke-dasharray="6 4">'
            f"<title>gate threshold {threshold:g}</title></line>"
        ),
        (
            f'<text x="{_LEFT + plot_w + 4}" y="{y_rate(threshold) + 4:.1f}" fill="#555">'
            f"{threshold:g}</text>"
        ),
    ]
    for i, mark in enumerate(timeline["marks"]):
        mx = x(mark["at"])
        label_y = _TOP + 10 + 11 * (i % 4)  # marks close in time would write over each other
        # near the right edge the label goes to the left of its line
        anchor = (
            f'x="{mx - 2:.1f}" text-anchor="end"'
            if mx > _LEFT + plot_w * 0.7
            else f'x="{mx + 2:.1f}"'
        )
        parts.append(
            f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{_TOP}" y2="{_TOP + plot_h}" stroke="#888" '
            f'stroke-width="1"><title>{e(mark["at"])} {e(mark["kind"])}: {e(mark["reason"])}'
            f'</title></line><text {anchor} y="{label_y}" fill="#444">{e(mark["kind"])}</text>'
        )
    parts += [
        (
            f'<polyline fill="none" stroke="#2e7d32" stroke-width="2" '
            f'points="{steps("succeeded", y_count)}"><title>succeeded</title></polyline>'
        ),
        (
            f'<polyline fill="none" stroke="#c62828" stroke-width="2" '
            f'points="{steps("failed", y_count)}"><title>failed</title></polyline>'
        ),
        (
            f'<polyline fill="none" stroke="#1565c0" stroke-width="2" stroke-dasharray="3 2" '
            f'points="{steps("lower", y_rate)}"><title>Wilson lower bound</title></polyline>'
        ),
        f'<text x="4" y="{_TOP + 8}" fill="#333">{top}</text>',
        f'<text x="4" y="{_TOP + plot_h}" fill="#333">0</text>',
        f'<text x="{_LEFT + plot_w + 4}" y="{_TOP + 8}" fill="#1565c0">1.0</text>',
        f'<text x="{_LEFT}" y="{_HEIGHT - 8}" fill="#333">{e(timeline["start"])}</text>',
        (
            f'<text x="{_LEFT + plot_w}" y="{_HEIGHT - 8}" fill="#333" text-anchor="end">'
            f"{e(timeline['end'])}</text>"
        ),
        "</svg>",
    ]
    return "".join(parts)
