from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from orchestrator.model import CampaignStatus, Counts, WavePhase
from orchestrator.planner import initial_state
from orchestrator.report import (
    progress_bar,
    render_html,
    render_json,
    render_markdown,
    report_data,
    status_text,
)
from orchestrator.spec import parse_spec
from orchestrator.store import StoredEvent

from .conftest import README_CAMPAIGN

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SPEC = parse_spec(README_CAMPAIGN)


def sample():
    state = initial_state(SPEC, {w.name: ("{}", "a" * 64) for w in SPEC.waves}, T0)
    canary = replace(
        state.waves[0],
        phase=WavePhase.HALTED,
        launched_at=T0,
        counts=Counts(succeeded=90, failed=8, rejected=1, timed_out=1),
        never_started=3,
        verdict="failure rate 10.0% (10/100) exceeds max_failure_rate 5.0%",
    )
    state = replace(
        state.with_wave(canary), status=CampaignStatus.HALTED, reason="wave canary <halted>"
    )
    events = [
        StoredEvent(1, 0, T0, "campaign-started", "endpoint x"),
        StoredEvent(2, 0, T0, "job-observed", "noise"),
        StoredEvent(3, 0, T0, "wave-halted", "rate <script>alert(1)</script>", "canary"),
        StoredEvent(
            3,
            1,
            T0,
            "failures-explained",
            "1 sampled",
            "canary",
            {"samples": [{"thing": "t-7", "status": "FAILED", "details": {"step": "probe"}}]},
        ),
    ]
    return report_data(state, events, "/srv/sandbox/catalog.json")


def test_report_data_keeps_decisions_only_and_sums_failures() -> None:
    data = sample()
    assert [d["kind"] for d in data["decisions"]] == [
        "campaign-started",
        "wave-halted",
        "failures-explained",
    ]
    assert data["failed_devices"] == 10
    assert data["waves"][0]["never_started"] == 3
    assert json.loads(render_json(data))["status"] == "HALTED"


def test_html_report_is_self_contained_escaped_and_charted() -> None:
    page = render_html(sample())
    assert page.count("<svg") == 3
    assert "<title>succeeded: 90</title>" in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "src=" not in page
    assert "href=" not in page
    assert "/srv/sandbox/catalog.json" in page
    assert "<li>t-7 FAILED: {&quot;step&quot;: &quot;probe&quot;}</li>" in page


def test_markdown_report_lists_waves_and_reasons() -> None:
    text = render_markdown(sample())
    assert "| canary | HALTED | 90 | 8 | 1 | 1 | 0 | 0 | 3 |" in text
    assert "**wave-halted** [canary]" in text
    assert "not the packaged Amazon roots" in text


def test_progress_bar_and_status_text() -> None:
    assert progress_bar(Counts(succeeded=5, queued=5), width=10) == "[#####.....]  50%"
    assert progress_bar(Counts(), width=4) == "[....]    -"
    data_state = initial_state(SPEC, {w.name: ("{}", "b" * 64) for w in SPEC.waves}, T0)
    text = status_text(data_state, "/x/catalog.json")
    assert "CATALOG: /x/catalog.json" in text
    assert "canary" in text
    assert "PENDING" in text
