"""The shadow census of passed waves in `status --census` and `report --census` (pure rendering)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.model import CampaignState, CampaignStatus, WaveState
from orchestrator.report import render_html, render_markdown, report_data
from orchestrator.report_census import (
    census_data,
    census_html,
    census_markdown,
    census_status_lines,
)
from orchestrator.verify import WaveResult

ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
WAVE = WaveResult(
    "canary<b>", "job", ATS, devices=10, reported=9, on_target=7, succeeded=8, drift=()
)


def test_the_figures_split_each_wave_into_on_target_elsewhere_and_never_reported() -> None:
    data = census_data([WAVE])
    assert data == {
        "waves": {
            "canary<b>": {
                "endpoint": ATS,
                "devices": 10,
                "onTarget": 7,
                "elsewhere": 2,
                "neverReported": 1,
                "succeeded": 8,
            }
        },
        "unavailable": None,
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (census_data([WAVE]), f"canary<b>: 7 of 10 devices on {ATS} by their shadow"),
        (census_data([]), "no wave has passed yet"),
        (census_data(None, "fleet indexing is off"), "unavailable (fleet indexing is off)"),
    ],
)
def test_status_lines_say_what_the_census_found_or_why_there_is_none(
    data: dict[str, object], expected: str
) -> None:
    assert expected in "\n".join(census_status_lines(data))  # type: ignore[arg-type]


def test_the_markdown_section_fits_80_columns_and_is_absent_unless_asked() -> None:
    assert census_markdown(None) == []
    lines = census_markdown(census_data([WAVE]))
    assert lines[0] == "## Shadow census of passed waves"
    assert all(len(line) <= 80 for line in lines)
    assert "2 elsewhere, 1 never reported" in " ".join(lines)


def test_the_html_section_escapes_names_and_is_absent_unless_asked() -> None:
    assert census_html(None) == ""
    section = census_html(census_data([WAVE]))
    assert "<td>canary&lt;b&gt;</td>" in section
    assert "canary<b>" not in section


def test_the_report_carries_the_section_only_with_the_census() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    state = CampaignState("c", CampaignStatus.COMPLETED, (WaveState("w", "c-w-m1"),), now, now)
    data = report_data(state, [], None)
    assert "Shadow census" not in render_markdown(data)
    data["shadowCensus"] = census_data(None, "indexing off")
    assert "Unavailable: indexing off" in render_markdown(data)
    assert "<h2>Shadow census of passed waves</h2><p>Unavailable: indexing off</p>" in render_html(
        data
    )
