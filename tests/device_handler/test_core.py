"""The pure parts: recovery table and loop guard, journal records, statusDetails limits."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_handler.errors import JournalError
from device_handler.status import details
from device_handler.transaction import (
    RECOVERY,
    Journal,
    Phase,
    Recovery,
    Rejection,
    classify_rejection,
    recovery_for,
)
from device_handler.trust import EndpointConfig


def test_every_phase_has_a_recovery():
    assert set(RECOVERY) == set(Phase)


@pytest.mark.parametrize(
    ("phase", "recoveries", "expected"),
    [
        (Phase.IDLE, 0, Recovery.NOTHING),
        (Phase.ACCEPTED, 0, Recovery.DISCARD),
        (Phase.STAGED, 0, Recovery.DISCARD),
        (Phase.COMMITTING, 0, Recovery.ROLL_BACK),
        (Phase.COMMITTED, 0, Recovery.RESUME_RECONNECT),
        (Phase.COMMITTED, 2, Recovery.RESUME_RECONNECT),
        (Phase.COMMITTED, 3, Recovery.ROLL_BACK),
        (Phase.ROLLING_BACK, 9, Recovery.ROLL_BACK),
        (Phase.REPORTING, 0, Recovery.RESEND_REPORT),
        (Phase.REPORTING, 3, Recovery.ABANDON),
        (Phase.STAGED, 3, Recovery.DISCARD),
    ],
)
def test_recovery_table_with_its_loop_guard(phase: Phase, recoveries: int, expected: Recovery):
    journal = Journal(phase=phase, job_id="j", recoveries=recoveries)
    assert recovery_for(journal, max_recoveries=3) is expected


def test_journal_round_trips():
    journal = Journal(
        phase=Phase.REPORTING,
        job_id="job-1",
        version=3,
        attempts=2,
        report_status="SUCCEEDED",
        report_details={"step": "done"},
    )
    assert Journal.from_bytes(journal.to_bytes()) == journal


def test_journal_records_leave_out_unset_fields_and_read_back_the_same():
    journal = Journal(phase=Phase.ACCEPTED, job_id="j", execution_number=1, attempts=1)
    body = json.loads(journal.to_bytes())
    assert body["format"] == "ca-migrate-journal/1"
    assert body["phase"] == "accepted"
    assert "probe_ms" not in body
    assert "report_details" not in body
    assert Journal.from_bytes(journal.to_bytes()) == journal
    # A record with every field written out (as earlier versions wrote) means the same.
    full = {**journal.as_dict(), "format": "ca-migrate-journal/1"}
    assert full["probe_ms"] is None
    assert Journal.from_bytes(json.dumps(full).encode()) == journal


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"[]", b'{"phase": "idle"}', b'{"format": "ca-migrate-journal/1", "phase": "x"}'],
)
def test_unreadable_journal_is_an_error_that_says_what_to_check(data: bytes):
    with pytest.raises(JournalError, match="inspect the state directory"):
        Journal.from_bytes(data)


def test_evolve_changes_only_what_it_is_given_and_leaves_the_record_alone():
    journal = Journal(phase=Phase.ACCEPTED, job_id="j", attempts=1, report_details={"a": "b"})
    later = journal.evolve(phase=Phase.COMMITTED, probe_ms=12)
    assert later == Journal(
        phase=Phase.COMMITTED, job_id="j", attempts=1, probe_ms=12, report_details={"a": "b"}
    )
    assert (journal.phase, journal.probe_ms) == (Phase.ACCEPTED, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        later.phase = Phase.IDLE  # type: ignore[misc]
    with pytest.raises(TypeError, match="no field 'phaze'"):
        journal.evolve(phaze=Phase.IDLE)


def test_every_journal_has_every_field_however_it_was_made():
    fields = {f.name for f in dataclasses.fields(Journal)}
    made = Journal(phase=Phase.ACCEPTED, job_id="j")
    for journal in (
        made,
        made.evolve(probe_ms=3),
        Journal.from_bytes(made.to_bytes()),
        Journal.from_bytes(b'{"format": "ca-migrate-journal/1", "phase": "idle"}'),
    ):
        assert set(vars(journal)) == fields
    assert Journal.from_bytes(made.to_bytes()).report_details == {}


def test_a_record_with_a_field_this_version_does_not_know_is_unreadable():
    record = {"format": "ca-migrate-journal/1", "phase": "idle", "surprise": 1}
    with pytest.raises(JournalError, match="surprise"):
        Journal.from_bytes(json.dumps(record).encode())


def test_finished_and_discarded_keep_the_loop_guard_counter():
    journal = Journal(phase=Phase.STAGED, job_id="j", attempts=2, recoveries=1)
    assert journal.discarded().attempts == 2
    assert journal.discarded().phase is Phase.IDLE
    done = journal.finished("FAILED", 1.0)
    assert (done.phase, done.attempts, done.last_status, done.recoveries) == (
        Phase.IDLE,
        2,
        "FAILED",
        0,
    )


_KEY = re.compile(r"[a-zA-Z0-9:_-]{1,128}")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=140), st.none() | st.text(max_size=2000) | st.integers()))
def test_status_details_always_fit_aws_limits(pairs: dict[str, object]):
    out = details(pairs)
    assert len(out) <= 10
    for key, value in out.items():
        assert _KEY.fullmatch(key)
        assert 1 <= len(value) <= 1024
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(max_codepoint=0x7F), max_size=60))
def test_ascii_values_are_cleaned_as_the_control_character_rule_says(text: str):
    # The printable fast path must give what replacing control characters and trimming gives.
    expected = re.sub(r"[\x00-\x1f\x7f]", " ", text).strip()
    assert details({"message": text}).get("message", "") == expected


def test_an_invalid_key_stays_invalid_after_valid_ones_were_seen():
    assert details({"step": "a", "bad key": "b", "step2": "c"}) == {"step": "a", "step2": "c"}
    assert details({"bad key": "b"}) == {}


def test_long_tls_messages_are_truncated_not_dropped():
    out = details({"message": "certificate verify failed: " + "x" * 5000})
    assert len(out["message"]) == 1024
    assert out["message"].endswith("...")


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b'{"port": 8883}', b'{"host": "", "port": 8883}', b'{"host": "h", "port": "x"}'],
)
def test_bad_endpoint_file_is_a_config_error(data: bytes):
    from device_handler.errors import ConfigError

    with pytest.raises(ConfigError):
        EndpointConfig.parse(data)


@pytest.mark.parametrize(
    ("job_id", "execution_number", "expected"),
    [("j", 1, 3), ("j", 2, 1), ("k", 1, 1), ("j", None, 1)],
)
def test_attempts_are_counted_per_job_and_execution_number(
    job_id: str, execution_number: int | None, expected: int
):
    journal = Journal(job_id="j", execution_number=1, attempts=2)
    assert journal.next_attempt(job_id, execution_number) == expected
    assert journal.finished("FAILED", 1.0).next_attempt(job_id, execution_number) == expected
    assert journal.discarded().next_attempt(job_id, execution_number) == expected


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("TerminalStateReached", Rejection.FINAL),
        ("InvalidStateTransition", Rejection.FINAL),
        ("ResourceNotFound", Rejection.FINAL),
        ("InvalidRequest", Rejection.FINAL),
        ("RequestThrottled", Rejection.RETRY),
        ("InternalError", Rejection.RETRY),
        ("VersionMismatch", Rejection.RETRY),
        ("SomethingNew", Rejection.RETRY),
    ],
)
def test_refusals_are_classified_retryable_or_final(code: str, kind: Rejection):
    assert classify_rejection(code) is kind


def test_a_final_refusal_is_kept_in_the_idle_journal():
    journal = Journal(phase=Phase.REPORTING, job_id="j", report_status="SUCCEEDED")
    done = journal.finished("SUCCEEDED", 1.0, refused="TerminalStateReached")
    assert Journal.from_bytes(done.to_bytes()).last_refused == "TerminalStateReached"
    assert journal.finished("SUCCEEDED", 1.0).last_refused is None
