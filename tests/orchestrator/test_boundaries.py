"""The planner's and the gates' edges: the inclusive halt minimum and the 64-character job id."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from job_documents import Operation
from orchestrator.gates import GateVerdict, evaluate_gate, wilson_bounds
from orchestrator.job_settings import MAX_JOB_ID, job_config, job_id_for
from orchestrator.model import CampaignSpec, Counts, Gate, Halt, OfflinePolicy
from orchestrator.spec import parse_spec

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
    job_id = job_id_for(campaign, wave, SHA_A, Operation.MIGRATE)
    assert job_id == f"{campaign}-{wave}-m{SHA_A[:12]}"
    assert len(job_id) == MAX_JOB_ID == 64


@pytest.mark.parametrize("total", [65, 66, 100, 64 + 64 + 15])
@pytest.mark.parametrize("operation", [Operation.MIGRATE, Operation.RESTORE])
def test_a_job_id_past_64_characters_is_shortened_and_keeps_the_document_hash(
    total: int, operation
) -> None:
    campaign, wave = _names(total)
    tag = "m" if operation is Operation.MIGRATE else "r"
    job_id = job_id_for(campaign, wave, SHA_A, operation)
    assert JOB_ID.fullmatch(job_id), job_id
    assert job_id.endswith(f"-{tag}{SHA_A[:12]}")
    assert job_id != job_id_for(campaign, wave, SHA_B, operation)
    assert job_id == job_id_for(campaign, wave, SHA_A, operation)


@pytest.mark.parametrize("total", [64, 65])
def test_a_new_document_gets_a_new_job_id_at_the_boundary(total: int) -> None:
    campaign, wave = _names(total)
    ids = {
        job_id_for(campaign, wave, sha, Operation.MIGRATE)
        for sha in (SHA_A, SHA_B, "ab" * 6 + "0" * 52)
    }
    assert len(ids) == 2  # the id carries the first 12 hex digits of the document hash
    assert all(JOB_ID.fullmatch(i) for i in ids)


def test_two_long_campaigns_with_a_common_prefix_never_share_a_job_id() -> None:
    first = job_id_for("fleet-" + "x" * 40 + "-a", "canary", SHA_A, Operation.MIGRATE)
    second = job_id_for("fleet-" + "x" * 40 + "-b", "canary", SHA_A, Operation.MIGRATE)
    wave_first = job_id_for("ats", "wave-" + "y" * 60 + "1", SHA_A, Operation.MIGRATE)
    wave_second = job_id_for("ats", "wave-" + "y" * 60 + "2", SHA_A, Operation.MIGRATE)
    assert first != second
    assert wave_first != wave_second
    assert all(JOB_ID.fullmatch(i) for i in (first, second, wave_first, wave_second))


# -- the whole verdict, not only its flags (what `make mutate` found unchecked) --------------

GATE95 = Gate(min_success_rate=0.95, min_completed=1)


def _bounds(succeeded: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    return wilson_bounds(succeeded, n, confidence)


def _figures(succeeded: int, n: int, need: float, fraction: float, denominator: int) -> str:
    lower, upper = _bounds(succeeded, n)
    return (
        f"{succeeded}/{n} succeeded, success lower bound {lower:.3f} upper {upper:.3f} "
        f"(need {need:.3f}), completed {fraction:.1%} of {denominator}"
    )


def test_a_failure_rate_halt_carries_the_bounds_and_the_fraction() -> None:
    counts = Counts(succeeded=3, failed=2, queued=5)
    verdict = evaluate_gate(Gate(min_success_rate=0.5), HALT, counts)
    lower, upper = _bounds(3, 5)
    assert verdict == GateVerdict(
        passed=False,
        halt=True,
        reason="failure rate 40.0% (2/5) reaches max_failure_rate 20.0%",
        lower=lower,
        upper=upper,
        completed_fraction=0.5,
    )


def test_a_gate_that_can_no_longer_pass_says_so_with_its_figures() -> None:
    verdict = evaluate_gate(GATE95, Halt(), Counts(succeeded=8, failed=2))
    lower, upper = _bounds(8, 10)
    assert verdict == GateVerdict(
        passed=False,
        halt=True,
        reason=f"gate can no longer pass: {_figures(8, 10, 0.95, 1.0, 10)}",
        lower=lower,
        upper=upper,
        completed_fraction=1.0,
    )


def test_a_waiting_verdict_lists_everything_still_missing() -> None:
    gate = Gate(min_success_rate=0.95, min_completed=20, min_completed_fraction=0.5)
    verdict = evaluate_gate(gate, Halt(), Counts(succeeded=5, queued=15), rollout_done=False)
    lower, upper = _bounds(5, 5)
    missing = (
        f"5 of 20 completed executions; completed fraction 25.0% < 50.0%; "
        f"success lower bound {lower:.3f} < 0.950; the job is still rolling out to its targets"
    )
    assert verdict == GateVerdict(
        passed=False,
        halt=False,
        reason=f"waiting: {missing} ({_figures(5, 5, 0.95, 0.25, 20)})",
        lower=lower,
        upper=upper,
        completed_fraction=0.25,
    )


def test_a_met_gate_says_so_with_its_figures() -> None:
    verdict = evaluate_gate(GATE95, Halt(), Counts(succeeded=60))
    lower, upper = _bounds(60, 60)
    assert verdict == GateVerdict(
        passed=True,
        halt=False,
        reason=f"gate met: {_figures(60, 60, 0.95, 1.0, 60)}",
        lower=lower,
        upper=upper,
        completed_fraction=1.0,
    )


def test_a_perfect_record_never_halts_a_gate_of_one_hundred_percent() -> None:
    # upper = 1.0 is not below min_success_rate = 1.0: the gate waits (lower < 1), never halts
    verdict = evaluate_gate(Gate(min_success_rate=1.0), Halt(), Counts(succeeded=3))
    assert verdict.halt is False
    assert verdict.reason.startswith("waiting: success lower bound")


def test_a_lower_bound_equal_to_the_minimum_passes() -> None:
    # lower = 0.0 with every execution failed, against a gate of 0: lower >= min passes
    verdict = evaluate_gate(Gate(min_success_rate=0.0), Halt(), Counts(failed=2))
    assert verdict.passed is True


def test_queued_executions_count_in_the_fraction_until_the_deadline() -> None:
    gate = Gate(min_success_rate=0.5, min_completed_fraction=0.9)
    counts = Counts(succeeded=10, queued=5)
    before = evaluate_gate(gate, Halt(), counts)
    assert before.completed_fraction == pytest.approx(10 / 15)
    assert before.passed is False
    after = evaluate_gate(gate, Halt(), counts, deadline_reached=True)
    assert after.completed_fraction == 1.0
    assert after.passed is True
    blocked = evaluate_gate(
        gate, Halt(), counts, deadline_reached=True, offline=OfflinePolicy.BLOCK
    )
    assert blocked.completed_fraction == pytest.approx(10 / 15)


@pytest.mark.parametrize(
    ("counts", "fraction"),
    [(Counts(), 0.0), (Counts(succeeded=1), 1.0), (Counts(canceled=3), 0.0)],
)
def test_the_completed_fraction_at_zero_and_one_target(counts: Counts, fraction: float) -> None:
    assert evaluate_gate(GATE95, Halt(), counts).completed_fraction == fraction


# -- job_config: the CreateJob settings a wave's spec becomes ------------------------------

SPEC_TEXT = (Path(__file__).parent / "data" / "readme-campaign.yaml").read_text()


def _spec(halt: str = "max_failure_rate: 0.05") -> CampaignSpec:
    text = SPEC_TEXT.replace("max_failure_rate: 0.05", halt).replace(
        "    rollout: {maximum_per_minute: 100}\n",
        "    rollout:\n      maximum_per_minute: 100\n      exponential:\n"
        "        base_rate_per_minute: 5\n        increment_factor: 2\n"
        "        notified_things: 50\n"
        "    maintenance_windows: [{start: 'cron(0 2 ? * * *)', duration_minutes: 120}]\n",
    )
    return parse_spec(text)


def test_a_migrate_job_carries_rollout_windows_and_the_abort_rule() -> None:
    spec = _spec("max_failure_rate: 0.12345")
    wave = spec.wave("wave-1")
    config = job_config(spec, wave, Operation.MIGRATE)
    assert config.description == "ca-migrate ats-2026/wave-1 migrate"
    assert config.maximum_per_minute == 100
    assert config.exponential == wave.rollout.exponential
    assert config.exponential is not None
    assert config.maintenance_windows == wave.maintenance_windows
    assert len(config.maintenance_windows) == 1
    assert config.abort_threshold_percentage == 12.35  # two decimals, as AWS takes them
    assert config.abort_min_executed == 10
    assert config.thing_groups == ("fleet-a",)


def test_a_restore_job_has_no_abort_rule_and_no_maintenance_windows() -> None:
    spec = _spec()
    config = job_config(spec, spec.wave("wave-1"), Operation.RESTORE)
    assert config.description == "ca-migrate ats-2026/wave-1 restore"
    assert config.maintenance_windows == ()
    assert config.abort_threshold_percentage is None
    assert config.abort_min_executed is None


def test_a_failure_rate_of_one_sends_no_abort_rule() -> None:
    spec = _spec("max_failure_rate: 1.0")
    config = job_config(spec, spec.wave("canary"), Operation.MIGRATE)
    assert config.abort_threshold_percentage is None
    assert config.abort_min_executed is None


def test_the_shortened_job_id_has_its_documented_shape() -> None:
    campaign, wave = "c" * 40, "w" * 40
    pair = hashlib.sha256(f"{campaign}\0{wave}".encode()).hexdigest()[:10]
    assert job_id_for(campaign, wave, SHA_A, Operation.MIGRATE) == (
        f"{'c' * 18}-{'w' * 18}-{pair}-m{SHA_A[:12]}"
    )
