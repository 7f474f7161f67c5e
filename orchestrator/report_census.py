"""The shadow census of passed waves, as `status --census` and `report --census` show it (pure).

For each PASSED wave: its devices (fleet indexing, by its thing groups), how
many the `ca-migration` shadow shows on the endpoint the wave's document set,
how many report another endpoint, how many never report. The report's job
counts say what the executions claimed; this says where the devices are now.
`census_data` is the JSON shape (the report's `shadowCensus` key); the other
functions render it.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from typing import Any

from orchestrator.verify import WaveResult

__all__ = ["census_data", "census_html", "census_markdown", "census_status_lines"]


def census_data(
    waves: Sequence[WaveResult] | None, unavailable: str | None = None
) -> dict[str, Any]:
    """The JSON shape; `unavailable` says why there are no figures (fleet indexing off)."""
    return {
        "waves": {
            w.wave: {
                "endpoint": w.endpoint,
                "devices": w.devices,
                "onTarget": w.on_target,
                "elsewhere": w.reported - w.on_target,
                "neverReported": w.unverifiable,
                "succeeded": w.succeeded,
            }
            for w in waves or ()
        },
        "unavailable": unavailable,
    }


def _line(name: str, figures: dict[str, Any]) -> str:
    return (
        f"{name}: {figures['onTarget']} of {figures['devices']} devices on "
        f"{figures['endpoint']} by their shadow ({figures['succeeded']} succeeded), "
        f"{figures['elsewhere']} elsewhere, {figures['neverReported']} never reported"
    )


def census_status_lines(data: dict[str, Any]) -> list[str]:
    """Lines for `status --census`."""
    if data["unavailable"]:
        return [f"  shadow census: unavailable ({data['unavailable']})"]
    if not data["waves"]:
        return ["  shadow census: no wave has passed yet"]
    return ["  shadow census of passed waves:"] + [
        f"    {_line(name, figures)}" for name, figures in data["waves"].items()
    ]


def census_markdown(data: dict[str, Any] | None) -> list[str]:
    """The report's Markdown section; nothing when the census was not asked for."""
    if data is None:
        return []
    out = ["## Shadow census of passed waves", ""]
    if data["unavailable"]:
        out += [*_wrap(f"Unavailable: {data['unavailable']}", ""), ""]
    elif not data["waves"]:
        out += ["No wave has passed yet.", ""]
    else:
        for name, figures in data["waves"].items():
            out += _wrap(f"- {_line(name, figures)}")
        out.append("")
    return out


def _wrap(text: str, indent: str = "  ") -> list[str]:
    """Within 80 columns, as the rest of the Markdown report."""
    return textwrap.wrap(text, width=80, subsequent_indent=indent, break_on_hyphens=False) or [""]


def census_html(data: dict[str, Any] | None) -> str:
    """The report's HTML section; empty when the census was not asked for."""
    if data is None:
        return ""
    e = html.escape
    if data["unavailable"]:
        body = f"<p>Unavailable: {e(data['unavailable'])}</p>"
    elif not data["waves"]:
        body = "<p>No wave has passed yet.</p>"
    else:
        rows = "".join(
            f"<tr><td>{e(name)}</td><td>{e(f['endpoint'])}</td><td class=num>{f['devices']}</td>"
            f"<td class=num>{f['onTarget']}</td><td class=num>{f['elsewhere']}</td>"
            f"<td class=num>{f['neverReported']}</td><td class=num>{f['succeeded']}</td></tr>"
            for name, f in data["waves"].items()
        )
        body = (
            "<table><tr><th>wave</th><th>endpoint</th><th>devices</th><th>on it (shadow)</th>"
            f"<th>elsewhere</th><th>never reported</th><th>succeeded (job)</th></tr>{rows}</table>"
        )
    return f"<h2>Shadow census of passed waves</h2>{body}"
