"""`ChangeLines`: the plain progress lines of a run whose output is not a terminal."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from orchestrator.cli._live import SETTLING, ChangeLines
from orchestrator.model import CampaignState, CampaignStatus, Counts, WavePhase, WaveState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _state(status: CampaignStatus, *waves: tuple[str, WavePhase, Counts]) -> CampaignState:
    return CampaignState(
        "c",
        status,
        tuple(WaveState(n, f"c-{n}", phase=p, counts=c) for n, p, c in waves),
        T0,
        T0,
    )


def test_a_change_prints_once_and_quiet_ticks_print_nothing_until_the_heartbeat() -> None:
    out = io.StringIO()
    lines = ChangeLines(out, heartbeat=3600)
    running = _state(
        CampaignStatus.RUNNING,
        ("canary", WavePhase.AWAITING_APPROVAL, Counts()),
        ("wave-1", WavePhase.PENDING, Counts()),
    )
    lines.show(running, 60)
    lines.show(running, 120)  # nothing changed: no line
    assert out.getvalue().splitlines() == [
        "t+1 min campaign c RUNNING; canary AWAITING_APPROVAL (waiting for approval)"
    ]


def test_without_a_change_the_heartbeat_says_where_the_active_waves_stand() -> None:
    out = io.StringIO()
    lines = ChangeLines(out, heartbeat=0)
    state = _state(
        CampaignStatus.RUNNING, ("canary", WavePhase.RUNNING, Counts(queued=2, succeeded=3))
    )
    lines.show(state, 0)
    lines.show(state, 300)
    assert out.getvalue().splitlines()[-1] == "t+5 min canary RUNNING 3/5 ok, 0 failed"


def test_settling_is_told_once_when_it_starts() -> None:
    out = io.StringIO()
    lines = ChangeLines(out, heartbeat=3600)
    done = _state(CampaignStatus.COMPLETED, ("canary", WavePhase.PASSED, Counts(succeeded=5)))
    lines.show(done, 600)
    lines.show(done, 660, settling=True)
    lines.show(done, 720, settling=True)
    assert out.getvalue().splitlines()[1:] == [f"t+11 min COMPLETED: {SETTLING}"]
    assert "\x1b" not in out.getvalue()
