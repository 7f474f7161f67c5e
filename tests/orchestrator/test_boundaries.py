"""The planner's and the gates' edges: the inclusive halt minimum and the 64-character job id."""

from __future__ import annotations

import re

import pytest

from orchestrator.gates import evaluate_gate
from orchestrator.model import Counts, Gate, Halt
from orchestrator.planner import MAX_JOB_ID, job_id_for

# min_success_rate 0: the Wilson "can no longer pass" halt never fires, only the failure-rate
# rule; min_completed 100: the gate never passes either, so a wave either halts or waits
OPEN_GATE = Gate(min_success_rate=0.0, min_completed=100)
HALT = Halt(max_failure_rate=0.2, min_executed=5)
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SHA_A = "ab" * 32
SHA_B = "cd" * 32


def test_the_failure_rate_halts_a_wave_at_exactly_min_executed() -> None:
    verdict = evaluate_gate(OPEN_GATE, HALT, Counts(succeeded=3, failed=2))  # n = 5, 40% > 20%
    assert verdict.halt
    assert not verdict.passed
    assert verdict.reason.startswith("failure rate 40.0% (2/5)")


def test_one_execution_short_of_min_executed_the_failure_rate_waits() -> None:
    verdict = evaluate_gate(OPEN_GATE, HALT, Counts(succeeded=2, failed=2))  # n = 4, 50%
    assert not verdict.halt
    assert not verdict.passed
    assert verdict.reason.startswith("waiting: 4 of 100 completed executions")


@pytest.mark.parametrize("counts", [Counts(failed=1), Counts(rejected=1), Counts(timed_out=1)])
def test_min_executed_of_one_halts_on_the_first_failure_of_any_kind(counts: Counts) -> None:
    verdict = evaluate_gate(OPEN_GATE, Halt(max_failure_rate=0.5, min_executed=1), counts)
    assert verdict.halt
    assert verdict.reason.startswith("failure rate 100.0% (1/1)")


def _names(total: int) -> tuple[str, str]:
    """A campaign and a wave name whose unshortened job id is `total` characters long."""
    # f"{campaign}-{wave}-m{sha[:12]}": two dashes, the tag and twelve hex digits
    names = total - 15
    return "c" * (names // 2), "w" * (names - names // 2)


def test_a_job_id_of_exactly_64_characters_is_kept_whole() -> None:
    campaign, wave = _names(64)
    job_id = job_id_for(campaign, wave, SHA_A, "migrate")
    assert job_id == f"{campaign}-{wave}-m{SHA_A[:12]}"
    assert len(job_id) == MAX_JOB_ID == 64


@pytest.mark.parametrize("total", [65, 66, 100, 64 + 64 + 15])
@pytest.mark.parametrize("operation", ["migrate", "restore"])
def test_a_job_id_past_64_characters_is_shortened_and_keeps_the_document_hash(
    total: int, operation
) -> None:
    campaign, wave = _names(total)
    tag = "m" if operation == "migrate" else "r"
    job_id = job_id_for(campaign, wave, SHA_A, operation)
    assert JOB_ID.fullmatch(job_id), job_id
    assert job_id.endswith(f"-{tag}{SHA_A[:12]}")
    assert job_id != job_id_for(campaign, wave, SHA_B, operation)
    assert job_id == job_id_for(campaign, wave, SHA_A, operation)


@pytest.mark.parametrize("total", [64, 65])
def test_a_new_document_gets_a_new_job_id_at_the_boundary(total: int) -> None:
    campaign, wave = _names(total)
    ids = {
        job_id_for(campaign, wave, sha, "migrate") for sha in (SHA_A, SHA_B, "ab" * 6 + "0" * 52)
    }
    assert len(ids) == 2  # the id carries the first 12 hex digits of the document hash
    assert all(JOB_ID.fullmatch(i) for i in ids)


def test_two_long_campaigns_with_a_common_prefix_never_share_a_job_id() -> None:
    first = job_id_for("fleet-" + "x" * 40 + "-a", "canary", SHA_A, "migrate")
    second = job_id_for("fleet-" + "x" * 40 + "-b", "canary", SHA_A, "migrate")
    wave_first = job_id_for("ats", "wave-" + "y" * 60 + "1", SHA_A, "migrate")
    wave_second = job_id_for("ats", "wave-" + "y" * 60 + "2", SHA_A, "migrate")
    assert first != second
    assert wave_first != wave_second
    assert all(JOB_ID.fullmatch(i) for i in (first, second, wave_first, wave_second))
