"""The update transaction's pure core: phases, the journal record, the recovery table.

The shell (`device_handler.agent`) persists a `Journal` with the next phase
*before* each side effect of that phase, so after a power cut the last
persisted phase says what may be half-done. `RECOVERY` maps that phase to
what a booting agent does (as mender's client does): discard and retry
while the live configuration is untouched, roll back while it may be
partly replaced, resume once the new one is complete.

Phases of one transaction, in order (each persisted before its effect):

| phase        | effect that follows                                 | live config          |
|--------------|-----------------------------------------------------|----------------------|
| idle         | none; `last_*` remembers the previous job           | old or new, complete |
| accepted     | report IN_PROGRESS                                  | old                  |
|              | write `<bundle>.staged`, `<endpoint>.staged`, fsync | old                  |
| staged       | TLS probe of the target with the staged bundle;     | old                  |
| (not saved)  | write `rollback.json` (live endpoint + bundle)      |                      |
| committing   | rename staged files over the live ones              | old, mixed or new    |
| committed    | reconnect on the new endpoint (dead-man window)     | new, unverified      |
| rolling-back | restore live files from `rollback.json`             | mixed -> old         |
| reporting    | send the pending terminal status; promote (success) | old or new, complete |
|              | or drop `rollback.json`; then idle                  |                      |

Phases are persisted only where recovery must act differently: staging
files and `rollback.json` are thrown away by the same discard, so `staged`
is kept in memory only (it names the step of a failed probe's report; a
journal that says `staged`, written by an older version, recovers as
`accepted` does); a reconnect that succeeded is recorded as the pending
SUCCEEDED report itself.

Invariants:
- Every function here is pure; no file, socket or clock is touched.
- `Journal` is immutable; the next one is built with `Journal.evolve`.
- A journal that does not parse is a `JournalError`, never a silent reset.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from device_handler.errors import JournalError

__all__ = [
    "FINAL_REJECTIONS",
    "RECOVERY",
    "RETRYABLE_REJECTIONS",
    "Journal",
    "Phase",
    "Recovery",
    "Rejection",
    "classify_rejection",
    "recovery_for",
]


_FORMAT = "ca-migrate-journal/1"


class Phase(StrEnum):
    IDLE = "idle"
    ACCEPTED = "accepted"
    STAGED = "staged"
    COMMITTING = "committing"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling-back"
    REPORTING = "reporting"


class Recovery(StrEnum):
    """What a booting agent does about the last persisted phase."""

    NOTHING = "nothing"
    DISCARD = "discard"  # remove staged files and rollback.json, back to idle; job retried
    ROLL_BACK = "roll-back"  # restore rollback.json, then report FAILED
    RESUME_RECONNECT = "resume-reconnect"  # connect on the new config; dead-man switch applies
    RESEND_REPORT = "resend-report"  # send the pending terminal status again
    ABANDON = "abandon"  # loop guard: drop the pending report, go idle


RECOVERY: dict[Phase, Recovery] = {
    Phase.IDLE: Recovery.NOTHING,
    Phase.ACCEPTED: Recovery.DISCARD,
    Phase.STAGED: Recovery.DISCARD,
    Phase.COMMITTING: Recovery.ROLL_BACK,
    Phase.COMMITTED: Recovery.RESUME_RECONNECT,
    Phase.ROLLING_BACK: Recovery.ROLL_BACK,
    Phase.REPORTING: Recovery.RESEND_REPORT,
}


class Rejection(StrEnum):
    """What the agent does when the service refuses a status update."""

    RETRY = "retry"  # keep the pending report; send it again later
    FINAL = "final"  # the service will never take it: record that, go idle, take new jobs


#: Refusals that say nothing about the execution: the same request may succeed later.
RETRYABLE_REJECTIONS = frozenset(
    {"RequestThrottled", "InternalError", "ServiceUnavailable", "ThrottlingException"}
)
#: Refusals that the same request will always get again: the execution has ended or been
#: removed (a force-cancel, a deleted job, a timeout), or the service refuses the request.
FINAL_REJECTIONS = frozenset(
    {
        "TerminalStateReached",
        "InvalidStateTransition",
        "ResourceNotFound",
        "InvalidRequest",
        "InvalidJson",
        "InvalidTopic",
    }
)


def classify_rejection(code: str) -> Rejection:
    """Retry or give up on a refused status update.

    `VersionMismatch` is retried (the shell re-reads the execution first); a code this
    table does not know is retried too, as a report that lands late does no harm.
    """
    return Rejection.FINAL if code in FINAL_REJECTIONS else Rejection.RETRY


@dataclass(frozen=True)
class Journal:
    """The persisted state of the device's current (or last) transaction.

    Frozen, and without slots on purpose: a transaction makes a record at every
    step, and copying an instance's `__dict__` (`evolve`, `from_bytes`) costs a
    fraction of calling the generated `__init__` with every field.
    """

    phase: Phase = Phase.IDLE
    job_id: str | None = None
    execution_number: int | None = None
    version: int | None = None
    operation: str | None = None
    document_sha256: str | None = None
    attempts: int = 0  # times this (job, execution number) was started (loop guard)
    recoveries: int = 0  # how many boots found this transaction unfinished (loop guard)
    started_at: float | None = None  # epoch seconds, for the totalMs figure
    probe_ms: int | None = None
    reason: str | None = None
    message: str | None = None
    report_status: str | None = None
    report_details: dict[str, str] = field(default_factory=dict)
    last_job_id: str | None = None
    last_status: str | None = None
    last_at: float | None = None
    last_refused: str | None = None  # the service's final refusal of the last report, if any

    def to_bytes(self) -> bytes:
        """The record as stored: fields left at None (and empty details) are not written.

        They read back as their defaults, so the record means the same and is about half
        as long to encode, write and parse: most fields are unset in most phases.
        """
        body: dict[str, Any] = {
            name: value for name, value in self.__dict__.items() if value is not None
        }
        if self.report_details:
            body["report_details"] = dict(self.report_details)
        else:
            del body["report_details"]
        body["phase"] = str(self.phase)
        body["format"] = _FORMAT
        return (_ENCODER.encode(body) + "\n").encode()

    def as_dict(self) -> dict[str, Any]:
        """Every field, unset ones as None: for display (`ca-migrate-device status`)."""
        body: dict[str, Any] = {name: getattr(self, name) for name in _FIELD_NAMES}
        body["report_details"] = dict(self.report_details)
        body["phase"] = str(self.phase)
        return body

    @classmethod
    def from_bytes(cls, data: bytes) -> Journal:
        try:
            body: Any = json.loads(data)
            is_journal = body.pop("format", None) == _FORMAT
            body["phase"] = Phase(body["phase"] if is_journal else "(not a journal record)")
            body["report_details"] = dict(body.get("report_details") or {})
            return _journal(_DEFAULTS, body)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise JournalError(
                f"the transaction journal is unreadable ({exc}); the live configuration was "
                "written atomically, inspect the state directory and remove journal.json "
                "only once the live endpoint and bundle are known to be good"
            ) from exc

    def next_attempt(self, job_id: str, execution_number: int | None) -> int:
        """The attempt number of starting this execution now (1 for one not seen before).

        Counted per (job id, execution number): a job that AWS retries under its
        retry configuration comes back with a new execution number, and is a new
        execution with attempts of its own, not a loop of the old one.
        """
        if (job_id, execution_number) == (self.job_id, self.execution_number):
            return self.attempts + 1
        return 1

    def finished(self, status: str, at: float, *, refused: str | None = None) -> Journal:
        """Back to idle after a terminal report; the loop-guard counter is kept per execution.

        `refused`: the code of a final refusal when the service would not take the report.
        """
        return Journal(
            last_refused=refused,
            job_id=self.job_id,
            execution_number=self.execution_number,
            attempts=self.attempts,
            last_job_id=self.job_id,
            last_status=status,
            last_at=at,
        )

    def evolve(self, **changes: Any) -> Journal:
        """`dataclasses.replace` for this flat record, without its per-call field inspection.

        The transaction makes a new journal record at every step; `replace` walks
        the dataclass fields and calls `__init__` with all of them each time, which
        costs more than encoding the record.
        """
        return _journal(self.__dict__, changes)

    def discarded(self) -> Journal:
        """Back to idle without a report: the job will be picked up (and counted) again."""
        return replace(
            Journal(last_job_id=self.last_job_id, last_status=self.last_status),
            job_id=self.job_id,
            execution_number=self.execution_number,
            attempts=self.attempts,
            last_at=self.last_at,
        )


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Journal))
_FIELD_SET = frozenset(_FIELD_NAMES)
#: The fields with a default value; `report_details` (a new dict each time) is always given.
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Journal) if f.default is not MISSING}
#: The bytes of `json.dumps(body, sort_keys=True)`, from one encoder built once. A record
#: is a flat dict of plain values, so the encoder's check for cycles has nothing to find.
_ENCODER = json.JSONEncoder(sort_keys=True, check_circular=False)


def _journal(base: dict[str, Any], changes: dict[str, Any]) -> Journal:
    """A journal with the fields of `base` (every one), then `changes` (any of them)."""
    if not _FIELD_SET.issuperset(changes):
        unknown = sorted(set(changes) - _FIELD_SET)
        raise TypeError(f"Journal has no field {', '.join(map(repr, unknown))}")
    journal: Journal = object.__new__(Journal)
    values = journal.__dict__
    values.update(base)
    values.update(changes)
    return journal


def recovery_for(journal: Journal, *, max_recoveries: int) -> Recovery:
    """The recovery table with its loop guard.

    After `max_recoveries` boots that found the same transaction unfinished, a
    resume that needs the new configuration is turned into a roll-back, and a
    report that keeps failing is abandoned, so a device never cycles forever.
    """
    action = RECOVERY[journal.phase]
    if journal.recoveries < max_recoveries:
        return action
    if action is Recovery.RESUME_RECONNECT:
        return Recovery.ROLL_BACK
    if action is Recovery.RESEND_REPORT:
        return Recovery.ABANDON
    return action
