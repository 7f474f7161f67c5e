"""The live campaign view: the table `demo`, `rehearse` and `run --follow` draw on a terminal.

Waves, phase, a progress bar coloured by execution status, counts and the
gate's verdict, redrawn in place; below it, what the campaign waits for in
words. Piped output gets one JSON line per change instead (never redraws).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Self

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.model import CampaignSpec, CampaignState, Counts
from orchestrator.report import follow_record, status_text, waits

__all__ = ["FollowView", "bar", "wave_table"]


_BAR = (
    ("succeeded", "green"),
    ("failed", "red"),
    ("rejected", "magenta"),
    ("timed_out", "yellow"),
    ("in_progress", "blue"),
    ("queued", "grey50"),
)


def bar(counts: Counts, width: int = 28) -> Text:
    total = counts.targeted
    text = Text()
    if total <= 0:
        return Text("·" * width, style="grey30")
    used = 0
    for name, style in _BAR:
        cells = round(width * getattr(counts, name) / total)
        cells = min(cells, width - used)
        text.append("█" * cells, style=style)
        used += cells
    text.append("·" * (width - used), style="grey30")
    return text


def wave_table(state: CampaignState, title: str, regions: Mapping[str, str] | None = None) -> Table:
    """The waves as a table; a `region` column when `regions` (wave -> region) holds several."""
    table = Table(title=title, title_justify="left", expand=False)
    several = regions is not None and len(set(regions.values())) > 1
    columns = ("wave", "region") if several else ("wave",)
    for column in (*columns, "phase", "progress", "ok", "failed", "pending", "verdict"):
        table.add_column(column, overflow="fold" if column == "verdict" else "ellipsis")
    for wave in state.waves:
        c = wave.counts
        where = (regions.get(wave.name, "") if regions is not None else "",) if several else ()
        table.add_row(
            wave.name,
            *where,
            wave.phase.value,
            bar(c),
            str(c.succeeded),
            str(c.failures),
            str(c.queued + c.in_progress),
            (wave.verdict[:70] + "…") if len(wave.verdict) > 70 else wave.verdict,  # noqa: PLR2004
        )
    return table


class FollowView:
    """What `run --follow` shows: a live table on a terminal, else a line per change.

    `output` is "live" (terminal), "json" (one JSON object per change) or
    "text" (the waiting lines and statuses per change). Only changes print:
    a reconcile that moved nothing adds no line.
    """

    def __init__(
        self, spec: CampaignSpec, output: str, time_label: str = "", console: Console | None = None
    ) -> None:
        self._spec = spec
        self._output = output
        self._label = time_label
        self._console = console or Console()
        self._live: Live | None = None
        self._last: dict[str, object] | None = None

    def __enter__(self) -> Self:
        if self._output == "live":
            self._live = Live(console=self._console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def show(self, state: CampaignState, now: datetime) -> None:
        if self._live is not None:
            title = f"campaign {state.name} {state.status.value} — {self._clock(now)}"
            lines = [Text(f"  {line}") for line in waits(self._spec, state, now, self._label)]
            regions = {w.name: self._spec.region_of(w) for w in self._spec.waves}
            self._live.update(Group(wave_table(state, title, regions), *lines))
            return
        record = follow_record(self._spec, state, self._label)
        if record == self._last:
            return
        self._last = record
        if self._output == "json":
            print(json.dumps({"at": now.isoformat(timespec="seconds"), **record}), flush=True)
        else:
            print(f"{now.isoformat(timespec='seconds')} {status_text(state)}", flush=True)
            for line in record["waiting"]:
                print(f"  {line}", flush=True)

    def _clock(self, now: datetime) -> str:
        return now.strftime("%H:%M:%S") + (f" ({self._label})" if self._label else " UTC")
