from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from orchestrator.model import CampaignState, CampaignStatus, Counts, WavePhase
from orchestrator.planner import initial_state
from orchestrator.report import (
    progress_bar,
    render_html,
    render_json,
    render_markdown,
    report_data,
    status_text,
    waits,
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
    return report_data(state, events, "/srv/sandbox/catalog.json", spec=SPEC)


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
    assert page.count('aria-label="executions by status"') == 3  # one bar per wave
    assert page.count('aria-label="timeline of wave') == 1  # only canary launched
    assert page.count('aria-label="endpoint split"') == 1
    assert "<h2>Settings</h2>" in page
    assert "90 of 100 targeted devices on the ATS endpoint" in page
    assert "<title>succeeded: 90</title>" in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "src=" not in page
    assert "href=" not in page
    assert "/srv/sandbox/catalog.json" in page
    assert "<li>t-7 FAILED: {&quot;step&quot;: &quot;probe&quot;}</li>" in page


def test_markdown_report_lists_waves_and_reasons() -> None:
    text = render_markdown(sample())
    assert "### canary: HALTED" in text
    assert (
        "- 90 succeeded, 8 failed, 1 rejected, 1 timed out, 0 in progress, 0 queued, 3\n"
        "  never started"
    ) in text
    assert "- wave canary: groups canary; approval auto; gate 0.95 at confidence 0.95" in text
    assert "- 90 of 100 targeted devices on the ATS endpoint, 10 still on the legacy" in text
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


def _running() -> CampaignState:
    state = initial_state(SPEC, {w.name: ("{}", "a" * 64) for w in SPEC.waves}, T0)
    return replace(state, status=CampaignStatus.RUNNING)


def test_waits_names_the_approval_command_and_the_bake_in_the_clocks_time() -> None:
    state = _running()
    canary = replace(
        state.waves[0],
        phase=WavePhase.BAKING,
        launched_at=T0,
        bake_until=T0 + timedelta(minutes=19),
        counts=Counts(succeeded=10),
    )
    wave1 = replace(state.waves[1], phase=WavePhase.AWAITING_APPROVAL)
    state = state.with_wave(canary).with_wave(wave1)
    now = T0 + timedelta(minutes=10)
    assert waits(SPEC, state, now, "sandbox time") == [
        "canary baking until 00:19 (sandbox time), in 9 min",
        "wave-1 waits for approval: run `ca-migrate approve ats-2026 wave-1`",
    ]
    assert waits(SPEC, state, None)[0] == "canary baking until 00:19 UTC"


def test_waits_gives_a_running_waves_deadline_and_a_paused_campaigns_command() -> None:
    spec = parse_spec(README_CAMPAIGN.replace("approval: manual", "deadline_minutes: 60"))
    state = _running()
    wave1 = replace(
        state.waves[1], phase=WavePhase.RUNNING, launched_at=T0, counts=Counts(queued=5)
    )
    state = state.with_wave(wave1)
    assert waits(spec, state, T0) == [
        "wave-1 runs: 0 of 5 completed; deadline 01:00 UTC, in 60 min"
    ]
    paused = replace(state, status=CampaignStatus.PAUSED)
    assert waits(spec, paused, T0) == [
        "ats-2026 is paused: run `ca-migrate resume ats-2026` to go on"
    ]
    assert waits(spec, replace(state, status=CampaignStatus.COMPLETED), T0) == []


def test_follow_view_prints_one_json_line_per_change_only(capsys) -> None:
    from orchestrator.cli._live import FollowView

    state = _running()
    with FollowView(SPEC, "json") as view:
        view.show(state, T0)
        view.show(state, T0 + timedelta(minutes=1))  # nothing changed: no line
        moved = state.with_wave(replace(state.waves[0], phase=WavePhase.RUNNING))
        view.show(moved, T0 + timedelta(minutes=2))
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["waves"][0]["phase"] for line in lines] == ["PENDING", "RUNNING"]
    assert json.loads(lines[1])["at"] == "2026-03-01T00:02:00+00:00"


def test_follow_view_on_a_terminal_draws_the_table_and_the_waits() -> None:
    import io

    from rich.console import Console

    from orchestrator.cli._live import FollowView

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    state = _running().with_wave(replace(_running().waves[1], phase=WavePhase.AWAITING_APPROVAL))
    with FollowView(SPEC, "live", "sandbox time", console=console) as view:
        view.show(state, T0)
    screen = out.getvalue()
    assert "campaign ats-2026 RUNNING — 00:00:00 (sandbox time)" in screen
    assert "AWAITING_APPROVAL" in screen
    assert "wave-1 waits for approval: run `ca-migrate approve ats-2026 wave-1`" in screen


def test_markdown_fits_80_columns_and_times_have_no_microseconds() -> None:
    data = sample()
    long_reason = "gate can no longer pass: " + "figures " * 40
    data["waves"][0]["verdict"] = long_reason
    data["decisions"].append(
        {
            "at": "2026-03-01T00:00:00+00:00",
            "kind": "wave-halted",
            "wave": "canary",
            "reason": long_reason,
            "data": {},
        }
    )
    text = render_markdown(data)
    assert max(len(line) for line in text.splitlines()) <= 80
    late = T0.replace(microsecond=123456)
    state = replace(_running(), created_at=late, updated_at=late)
    events = [StoredEvent(1, 0, late, "campaign-started", "go")]
    fresh = report_data(state, events, spec=SPEC)
    assert fresh["created_at"] == fresh["decisions"][0]["at"] == "2026-03-01T00:00:00+00:00"
    assert "123456" not in render_json(fresh) + render_html(fresh) + render_markdown(fresh)


def test_the_timeline_plots_counts_and_the_gates_own_lower_bound_with_decisions() -> None:
    from orchestrator.gates import wilson_bounds
    from orchestrator.timeline import wave_timelines

    state = _running()
    canary = replace(
        state.waves[0],
        phase=WavePhase.PASSED,
        launched_at=T0,
        finished_at=T0 + timedelta(minutes=30),
        counts=Counts(succeeded=58, failed=2),
    )
    state = state.with_wave(canary)
    at = [T0 + timedelta(minutes=m) for m in (5, 10, 30)]
    events = [
        StoredEvent(1, 0, T0, "wave-launching", "creating job", "canary"),
        StoredEvent(
            2,
            0,
            at[0],
            "wave-progress",
            "6 of 60",
            "canary",
            {"counts": {"succeeded": 6, "failed": 0}},
        ),
        StoredEvent(
            3,
            0,
            at[1],
            "wave-progress",
            "30 of 60",
            "canary",
            {"counts": {"succeeded": 29, "failed": 1, "rejected": 0}},
        ),
        StoredEvent(
            4,
            0,
            at[2],
            "gate-passed",
            "gate met",
            "canary",
            {"counts": {"succeeded": 58, "failed": 2}},
        ),
        StoredEvent(
            4,
            1,
            at[2],
            "wave-passed",
            "gate met",
            "canary",
            {"counts": {"succeeded": 58, "failed": 2}},
        ),
        StoredEvent(
            5, 0, at[2], "wave-progress", "other wave", "wave-1", {"counts": {"succeeded": 1}}
        ),
    ]
    (timeline,) = wave_timelines(SPEC, state, events)
    assert timeline["threshold"] == 0.95
    assert [(p["succeeded"], p["failed"]) for p in timeline["points"]] == [
        (0, 0),
        (6, 0),
        (29, 1),
        (58, 2),
        (58, 2),
        (58, 2),
    ]
    lower, _ = wilson_bounds(29, 30, 0.95)
    assert timeline["points"][2]["lower"] == round(lower, 4)
    assert [m["kind"] for m in timeline["marks"]] == [
        "wave-launching",
        "gate-passed",
        "wave-passed",
    ]
    page = render_html(report_data(state, events, spec=SPEC))
    assert page.count("<polyline") == 3
    assert "<title>2026-03-01T00:30:00+00:00 gate-passed: gate met</title>" in page


def test_the_endpoint_split_counts_restored_devices_as_legacy_again() -> None:
    from orchestrator.report import endpoint_split

    state = _running()
    canary = replace(
        state.waves[0],
        launched_at=T0,
        counts=Counts(succeeded=8, failed=2),
        restore_job_id="r",
        restore_counts=Counts(succeeded=3),
    )
    split = endpoint_split(state.with_wave(canary))
    assert split == {
        "ats": 5,
        "legacy": 5,
        "targeted": 10,
        "waves_not_launched": ["wave-1", "wave-2"],
    }


def test_the_planner_records_a_timeline_point_per_tenth_and_never_twice() -> None:
    from orchestrator.planner import JobObservation, Observations, decide

    state = decide(SPEC, _running(), Observations(jobs={}), T0).state
    job = state.wave("canary").job_id
    progress = []
    for done in range(0, 1001, 7):  # a thousand-device canary observed 143 times
        failed = done // 50
        seen = JobObservation(
            job_id=job,
            exists=True,
            status="IN_PROGRESS",
            counts=Counts(succeeded=done - failed, failed=failed, queued=1000 - done),
            rollout_done=False,
        )
        for _ in range(2):  # the same observation twice records nothing new
            decision = decide(SPEC, state, Observations(jobs={job: seen}), T0)
            state = decision.state
            progress += [e for e in decision.events if e.kind == "wave-progress"]
    # nine tenths completed (1000 is not a multiple of 7), and the first tenth failed
    assert len(progress) == 10
    first = progress[0]
    assert first.wave == "canary"
    assert first.data["counts"] == {
        "succeeded": 55, "failed": 1, "rejected": 0, "timed_out": 0,
        "queued": 944, "in_progress": 0, "canceled": 0, "removed": 0,
    }  # fmt: skip  # the first failure starts the first tenth failed
