# ruff: noqa: INP001, E501 (a script, not a package; keys are mutated lines, verbatim)
"""Merge `make mutate` target results into benchmarks/results/mutation.json and print the scores.

Usage: python scripts/mutation_report.py OUT RESULT.json [RESULT.json ...]

The score of a target is killed / (killed + survived - equivalent): mutmut's "killed",
"timeout" and "segfault" count as killed (the tests noticed), "survived" and "no tests" as
survivors. A survivor is matched to its reason by target and its mutated line (the "+" line
of its diff, stripped), which stays stable when mutmut renumbers mutants. Kinds:
"equivalent" (no test can tell it from the original: left out of the score), "tested" (a
test written after the run names it: still a survivor until the next run counts it) and
"open" (no reason yet: write the test that kills it).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KILLED = ("killed", "timeout", "segfault")
SURVIVED = ("survived", "no tests")
EQUIVALENT = "equivalent"
TESTED = "tested"

_ABSENT_VALUE = (
    "a signature member without a value decodes to some fixed bytes ('', 'None' or 'XXXX'), "
    "none of which verifies: the same signature-invalid, same message"
)
_FOLDED = (
    "_fold already moved a LAUNCHING wave whose job exists to RUNNING, so a wave still "
    "LAUNCHING here has no existing job: CreateJob is due whatever the lookup says"
)
_CODEC = "Python's codec names are case-insensitive"
_SAME_LENGTH = (
    "the model's invariant (one WaveState per WaveSpec, in the same order) makes the two "
    "tuples the same length: strictness never decides"
)


#: target -> stripped "+" line of the mutant -> ("equivalent" | "accepted", why)
REASONS: dict[str, dict[str, tuple[str, str]]] = {
    "sampling": {
        "allocate: if count > total:": (
            EQUIVALENT,
            (
                "at count == total every quota is exactly its stratum's size (no remainder), "
                "so the proportional path takes every device too"
            ),
        ),
        "allocate: if count < 0:": (
            EQUIVALENT,
            (
                "at count 0 every quota is 0 and nothing is short: the proportional path takes "
                "no device either (and a campaign's sample.count is at least 1)"
            ),
        ),
    },
    "verify": {
        "for wave_spec, wave in zip(spec.waves, state.waves, strict=False):": (
            EQUIVALENT,
            _SAME_LENGTH,
        ),
        "for wave_spec, wave in zip(spec.waves, state.waves, strict=None):": (
            EQUIVALENT,
            _SAME_LENGTH,
        ),
        "for wave_spec, wave in zip(spec.waves, state.waves, ):": (EQUIVALENT, _SAME_LENGTH),
        "shadow = None": (
            EQUIVALENT,
            (
                "an unparseable shadow string then reads as None instead of {}: both are not a "
                "dict, so the named-shadow lookup that follows reads nothing either way"
            ),
        ),
    },
    "gates": {
        "if n >= 0 and upper < gate.min_success_rate:": (
            EQUIVALENT,
            (
                "at n = 0 wilson_bounds returns upper = 1.0, never below a min_success_rate "
                "the spec admits (a fraction, at most 1)"
            ),
        ),
    },
    "signature": {
        'member = {"algorithm": algorithm, "value": base64.b64encode(raw).decode("ASCII")}': (
            EQUIVALENT,
            "Python's codec names are case-insensitive: ASCII is ascii",
        ),
        'raw = base64.b64decode(str(member.get("value", None)), validate=True)': (
            EQUIVALENT,
            _ABSENT_VALUE,
        ),
        'raw = base64.b64decode(str(member.get("value", )), validate=True)': (
            EQUIVALENT,
            _ABSENT_VALUE,
        ),
        'raw = base64.b64decode(str(member.get("value", "XXXX")), validate=True)': (
            EQUIVALENT,
            _ABSENT_VALUE,
        ),
    },
    "status": {
        "text = _printable(value if (type(value) is str) and False else str(value))": (
            EQUIVALENT,
            "str(value) of a str is the same str",
        ),
        "text = _printable(value if type(None) is str else str(value))": (
            EQUIVALENT,
            "str(value) of a str is the same str",
        ),
        "if len(_GOOD_KEYS) <= _GOOD_KEYS_LIMIT:": (
            EQUIVALENT,
            "the bound of a cache of keys already found valid: 256 or 257 entries, same output",
        ),
        "_GOOD_KEYS.add(None)": (
            EQUIVALENT,
            (
                "a cache that never hits: every key is checked against the pattern again, "
                "same output"
            ),
        ),
    },
    "planner-halt": {
        "return": (
            EQUIVALENT,
            (
                "_advance's promotion loop breaks only at a wave that has not passed, so the "
                "every-wave-passed check after it is false either way"
            ),
        ),
        "_judge_running_wave: )": (
            TESTED,
            (
                "the mutant drops rollout_done from evaluate_gate: tests/orchestrator/"
                "test_planner_events.py::test_a_gate_met_while_the_job_still_rolls_out_waits "
                "(planted: fails)"
            ),
        ),
        "seen = None": (EQUIVALENT, _FOLDED),
        "seen = obs.jobs.get(None)": (EQUIVALENT, _FOLDED),
    },
    "pem": {
        'text = text.decode("LATIN-1")': (EQUIVALENT, _CODEC),
        'text = pem.decode("LATIN-1") if isinstance(pem, bytes) else pem': (EQUIVALENT, _CODEC),
        'cert = _load_pem_certificate(cert.encode("ASCII") if isinstance(cert, str) else cert)': (
            EQUIVALENT,
            _CODEC,
        ),
        'return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ASCII")': (
            EQUIVALENT,
            _CODEC,
        ),
        'label = value.decode("UTF-8", "replace") if isinstance(value, bytes) else value': (
            EQUIVALENT,
            _CODEC,
        ),
        **dict.fromkeys(
            [
                'label = value.decode(None, "replace") if isinstance(value, bytes) else value',
                'label = value.decode("utf-8", None) if isinstance(value, bytes) else value',
                'label = value.decode("replace") if isinstance(value, bytes) else value',
                'label = value.decode("utf-8", ) if isinstance(value, bytes) else value',
                'label = value.decode("XXutf-8XX", "replace") if isinstance(value, bytes) else value',
                'label = value.decode("utf-8", "XXreplaceXX") if isinstance(value, bytes) else value',
                'label = value.decode("utf-8", "REPLACE") if isinstance(value, bytes) else value',
                (
                    'label = value.decode("utf-8", "replace") if (isinstance(value, bytes)) and False '
                    "else value"
                ),
            ],
            (
                EQUIVALENT,
                (
                    "dead branch: cryptography gives a common name (and an RFC 4514 subject) as "
                    "text; only X.500 unique identifiers are bytes, and they are never read here"
                ),
            ),
        ),
        'warnings.simplefilter("ignore", )': (
            EQUIVALENT,
            (
                "ignoring every warning instead of cryptography's deprecation warnings while one "
                "certificate loads: loading raises no other warning"
            ),
        ),
    },
    "sandbox-policy": {  # keys "function: line" where a line alone is ambiguous
        'maybe_retry: fallback: int | None = ""': (
            EQUIVALENT,
            "an absent ALL criterion reads as '' instead of None: (fallback or 0) is 0 either way",
        ),
        **dict.fromkeys(
            [
                'state.push_deadline(job.cancel_due_at, "cancel", job, None)',
                'state.push_deadline(job.cancel_due_at, "cancel", job, 1)',
                'state.push_deadline(until, "window-end", job, None)',
                'state.push_deadline(until, "window-end", job, 1)',
                'state.push_deadline(job.next_rollout_at, "rollout", job, None)',
                'state.push_deadline(job.next_rollout_at, "rollout", job, 1)',
                'state.push_deadline(job.delete_due_at, "delete", job, None)',
                'state.push_deadline(job.delete_due_at, "delete", job, 1)',
            ],
            (
                EQUIVALENT,
                (
                    "a job deadline's token is never read: only an execution timeout compares "
                    "its token, and the heap orders by time, then by a unique sequence number"
                ),
            ),
        ),
        'return job.status == "IN_PROGRESS" or (job.status == "SCHEDULED" or job.rollout)': (
            EQUIVALENT,
            (
                "a job with its rollout running is IN_PROGRESS or SCHEDULED between windows; a "
                "SCHEDULED one without it waits for its startTime: no execution to retry or "
                "abort on, and its endTime falls after its start"
            ),
        ),
        "delete: job.rollout = True": (
            EQUIVALENT,
            (
                "a job being deleted has no pending things: a rollout deadline that still "
                "fires notifies nobody, and nothing else reads the flag of a job that is not "
                "IN_PROGRESS or SCHEDULED"
            ),
        ),
        "maybe_complete: job.rollout = True": (
            EQUIVALENT,
            (
                "a snapshot job completes only with nothing pending, after release_batch set "
                "rollout False and armed no further batch; a COMPLETED job's flag is never read"
            ),
        ),
        'finish_deletion: job.delete_due_at = ""': (
            EQUIVALENT,
            "the job has just left state.jobs: nothing reads its delete_due_at again",
        ),
        "maybe_retry: ex.previous.append(state.snapshot(ex, None))": (
            EQUIVALENT,
            (
                "snapshot reads the time only for an IN_PROGRESS execution's remaining seconds; "
                "a retried execution is FAILED or TIMED_OUT"
            ),
        ),
        "job.rollout = None": (
            EQUIVALENT,
            (
                "job.rollout is read only for its truth (running, the rollout deadline, "
                "enqueue_targets, the export's bool()): None is False"
            ),
        ),
        "cancel: job.rollout = True": (
            EQUIVALENT,
            (
                "after a cancel the pending things are cleared and the job is CANCELED: a "
                "rollout deadline that still fires notifies nobody and completes nothing, "
                "running() and enqueue_targets need IN_PROGRESS or SCHEDULED, and the import "
                "resumes only a SCHEDULED job"
            ),
        ),
        "release_batch: while progress - job.rate_baseline >= step and job.rate <= cap:": (
            EQUIVALENT,
            (
                "at the cap another pass leaves the rate at the cap (min with cap) and moves "
                "only rate_baseline, which only this loop reads; the rate never falls"
            ),
        ),
        **dict.fromkeys(
            [
                "release_batch: if thing is None or not state.notifiable(job, None):",
                "_release: if thing is None or not state.notifiable(job, None):",
            ],
            (
                EQUIVALENT,
                (
                    "a name waits in rollout_pending only while notifiable: enqueue_targets adds "
                    "only notifiable names and only this loop gives them an execution"
                ),
            ),
        ),
        **dict.fromkeys(
            [
                "enqueue_targets: if state.notifiable(job, None):",
                "enqueue_targets: state.notify(job, state.things[name], None)",
                "enqueue_targets: if state.notifiable(job, name) or name not in job.rollout_queued:",
                "enqueue_targets: if state.notifiable(job, None) and name not in job.rollout_queued:",
                "_default_budget: return 1",
            ],
            (
                TESTED,
                "tests/sandbox/test_rollout_pace.py::test_a_thing_that_already_has_the_job_is_not_notified_again (planted: fails)",
            ),
        ),
        **dict.fromkeys(
            [
                "enqueue_targets: if job.rollout_pending and was_idle or not job.rollout:",
                "enqueue_targets: if job.rollout_pending or was_idle and not job.rollout:",
            ],
            (
                TESTED,
                "tests/sandbox/test_rollout_pace.py::test_late_things_take_the_next_slot_exactly_one_batch_at_a_time (planted: fails)",
            ),
        ),
        **dict.fromkeys(
            [
                "enqueue_targets: if job.end_at is not None and now > job.end_at:",
            ],
            (
                TESTED,
                "tests/sandbox/test_rollout_pace.py::test_a_thing_joining_at_the_scheduled_end_is_not_notified (planted: fails)",
            ),
        ),
        **dict.fromkeys(
            [
                "enqueue_targets: if job.next_rollout_at is not None and now <= job.next_rollout_at:",
            ],
            (
                TESTED,
                "tests/sandbox/test_rollout_pace.py::test_things_joining_exactly_at_a_default_batch_start_a_new_minute (planted: fails)",
            ),
        ),
        **dict.fromkeys(
            [
                "enqueue_targets: if job.rollout_config is not None and job.windows is None and state.default_per_minute is None:",
                "enqueue_targets: if job.rollout_config is None and job.windows is not None and state.default_per_minute is None:",
                "release_batch: batch = None",
            ],
            (
                TESTED,
                "tests/sandbox/test_rollout_pace.py::test_without_the_default_pace_rates_and_windows_still_apply (planted: fails)",
            ),
        ),
        "_default_budget: if job.rollout_config is not None or job.windows is not None and per_minute is None:": (
            TESTED,
            (
                "tests/sandbox/test_rollout_pace.py::"
                "test_a_thing_joining_a_windowed_job_between_batches_waits_for_the_next_batch"
                " (planted: fails)"
            ),
        ),
        "process_due: _membership.settle(state, None)": (
            TESTED,
            (
                "tests/sandbox/test_rollout_pace.py::"
                "test_a_thing_a_shadow_moves_into_a_dynamic_target_is_queued_when_the_clock_settles_it"
                " (planted: fails)"
            ),
        ),
        "enqueue_targets: was_idle = job.rollout_pending": (
            EQUIVALENT,
            (
                "was_idle is then the pending deque itself, true once the names are appended; "
                "it differs only when things were pending with the rollout not running, which "
                "never happens: pending things always have their batch armed (job.rollout)"
            ),
        ),
        "enqueue_targets: _after_release(state, job, None)": (
            EQUIVALENT,
            (
                "the time is read only by maybe_complete, to complete a SNAPSHOT job; only a "
                "CONTINUOUS job takes things between batches (_membership.join)"
            ),
        ),
    },
    "endpoint": {
        "check_region: *": (
            TESTED,
            (
                "tests/job_documents/test_boundaries.py: test_an_unknown_region_is_refused_with_how_"
                "to_allow_it, test_a_region_that_is_not_text_is_refused (the region check of the "
                "merged main; planted: fail)"
            ),
        ),
        "check_ats_endpoint: suffix = partition_suffix(region, )": (
            TESTED,
            (
                "tests/job_documents/test_boundaries.py::"
                "test_a_region_allowed_explicitly_is_checked_as_known_everywhere (planted: fails)"
            ),
        ),
        "partition_suffix: check_region(region, )": (
            TESTED,
            (
                "tests/job_documents/test_boundaries.py::"
                "test_a_region_allowed_explicitly_is_checked_as_known_everywhere"
            ),
        ),
        "known_regions: return _region_data()[2]": (
            TESTED,
            (
                "tests/job_documents/test_boundaries.py::"
                "test_the_known_regions_are_the_packaged_commercial_china_and_govcloud_ones "
                "(planted: fails)"
            ),
        ),
        'if match["suffix"] == _CHINA_SUFFIX and head.endswith(".ats") and "XX.XX" not in '
        "head[:-4]:": (
            EQUIVALENT,
            (
                "converting a head that has a dot before .ats leaves that dot in it, so the "
                "extra-labels rule refuses it exactly as without the conversion"
            ),
        ),
        'if match["suffix"] == _CHINA_SUFFIX and head.endswith(".ats") and "." not in head[:-5]:': (
            EQUIVALENT,
            (
                "head[:-4] and head[:-5] differ only when the head ends in '..ats', and a host "
                "with '..' is refused as an empty label before this line"
            ),
        ),
    },
}


def _added(diff: list[str]) -> str:
    return next((line[1:].strip() for line in diff if line.startswith("+")), "")


def _reason(target: str, survivor: dict[str, Any]) -> tuple[str, str]:
    reasons = REASONS.get(target, {})
    function = survivor["mutant"].rsplit("__mutmut_", 1)[0].rsplit(".", 1)[-1]
    function = function.rsplit("\u01c1", 1)[-1].removeprefix("x_")
    line = _added(survivor["diff"])
    known = (
        reasons.get(f"{function}: {line}")
        or reasons.get(line)
        or reasons.get(f"{function}: *")  # every survivor of the function
    )
    return known or ("open", "no reason yet: write the test that kills it")


def _judged(entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` with each survivor's reason and the score (re)computed from REASONS."""
    target = entry["target"]
    survivors = []
    for survivor in entry["survivors"]:
        kind, why = _reason(target, survivor)
        survivors.append({**survivor, "kind": kind, "reason": why})
    equivalent = sum(1 for s in survivors if s["kind"] == EQUIVALENT)
    relevant = entry["killed"] + len(survivors) - equivalent
    return {
        **entry,
        "survived": len(survivors),
        "equivalent": equivalent,
        "score": round(entry["killed"] / relevant, 4) if relevant else 1.0,
        "survivors": survivors,
    }


def main(out: Path, paths: list[Path]) -> int:
    previous: dict[str, Any] = {}
    if out.is_file():
        previous = {t["target"]: t for t in json.loads(out.read_text()).get("targets", [])}
    for path in paths:
        result = json.loads(path.read_text())
        counts = result["counts"]
        previous[result["target"]] = {
            "target": result["target"],
            "mutants": sum(counts.values()),
            "killed": sum(counts.get(k, 0) for k in KILLED),
            "seconds": result["seconds"],
            "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "survivors": result["survivors"],
        }
    previous = {name: _judged(entry) for name, entry in previous.items()}
    report = {
        "tool": "mutmut 3.8.1",
        "score": "killed / (killed + survived - equivalent); timeouts count as killed",
        "target_score": 0.9,
        "targets": sorted(previous.values(), key=lambda t: t["target"]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    width = max(len(t["target"]) for t in report["targets"])
    for t in report["targets"]:
        open_ = sum(1 for s in t["survivors"] if s["kind"] == "open")
        sys.stdout.write(
            f"{t['target']:<{width}}  {t['score']:6.1%}  killed {t['killed']:4d} of "
            f"{t['mutants']:4d}  equivalent {t['equivalent']:3d}  open {open_:3d}  "
            f"({t['seconds']} s)\n"
        )
    sys.stdout.write(f"written: {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]))
