"""The live campaign view: the table `demo`, `rehearse` and `run --follow` draw on a terminal.

Waves, phase, a progress bar coloured by execution status, counts and the
gate's verdict, redrawn in place; below it, what the campaign waits for in
words. Piped output gets one JSON line per change instead (never redraws).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Final, Self, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.model import ACTIVE_PHASES, CampaignSpec, CampaignState, Counts, WavePhase
from orchestrator.report import follow_record, status_text, waits

__all__ = ["ChangeLines", "FollowView", "bar", "wave_table"]

#: Without a change, `ChangeLines` still says where the run is this often (real seconds).
HEARTBEAT_SECONDS: Final = 5.0


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


class ChangeLines:
    """A run's progress as plain lines, for output that is not a terminal (a pipe, CI, a file).

    One line when the campaign's status or a wave's phase changes, e.g.
    `t+16 min canary PASSED; wave-1 LAUNCHING`, with the halt's reason and the
    wave waiting for approval; else, every `heartbeat` real seconds, where the
    active waves stand. Never a terminal control code.
    """

    def __init__(self, stream: TextIO, heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self.stream = stream
        self._heartbeat = heartbeat
        self._status = ""
        self._phases: dict[str, WavePhase] = {}
        self._last_line = 0.0

    def show(self, state: CampaignState, simulated_seconds: float, note: str = "") -> None:
        """Print a line if something changed, or if nothing was printed for a while."""
        at = f"t+{simulated_seconds / 60:.0f} min"
        parts: list[str] = []
        verdicts: list[str] = []
        for wave in state.waves:
            if self._phases.get(wave.name) is wave.phase:
                continue
            before = self._phases.get(wave.name)
            self._phases[wave.name] = wave.phase
            if before is None and wave.phase is WavePhase.PENDING:
                continue
            text = f"{wave.name} {wave.phase.value}"
            if wave.phase is WavePhase.AWAITING_APPROVAL:
                text += " (waiting for approval)"
            elif wave.phase is WavePhase.HALTED and wave.verdict:
                text += f": {wave.verdict}"
                verdicts.append(wave.verdict)
            parts.append(text)
        if state.status.value != self._status:
            self._status = state.status.value
            told = not state.reason or self._status == "RUNNING"
            told = told or any(v in state.reason for v in verdicts)
            reason = "" if told else f" ({state.reason})"
            parts.insert(0, f"campaign {state.name} {self._status}{reason}")
        now = time.monotonic()
        if not parts and now - self._last_line < self._heartbeat:
            return
        if not parts:
            parts = [
                f"{w.name} {w.phase.value} {w.counts.succeeded}/{w.counts.targeted} ok, "
                f"{w.counts.failures} failed"
                for w in state.waves
                if w.phase in ACTIVE_PHASES
            ] or [f"campaign {state.name} {state.status.value}"]
        if note:
            parts.append(note)
        self._last_line = now
        print(f"{at} {'; '.join(parts)}", file=self.stream, flush=True)
