"""A refused first CreateJob halts the campaign; a kill between CreateJob and its event is adopted.

The reconciler runs over an in-memory jobs fake that refuses CreateJob or "dies" (as SIGKILL
would) right after it; the campaign must end halted with AWS's reason, or adopt the job that
was created but not recorded, never create it twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.spec import parse_spec

from .conftest import README_CAMPAIGN


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs but `finally` blocks."""


def _world(tmp_path: Path, api: Any) -> tuple[Any, Any]:
    from job_documents import ManualClock
    from orchestrator.reconcile import Reconciler
    from orchestrator.store.sqlite import SqliteStateStore

    store = SqliteStateStore(tmp_path / "state.sqlite")
    rec = Reconciler(store, api, ManualClock())
    rec.start(parse_spec(README_CAMPAIGN), README_CAMPAIGN, None)
    return rec, store


def _fake_jobs(*, die_after_create: bool = False, refuse: bool = False) -> Any:
    from orchestrator.errors import AwsError
    from orchestrator.testing import FakeJobs

    class Jobs(FakeJobs):
        def create_job(self, job_id: str, document: str, config: Any) -> None:
            if refuse:
                raise AwsError(
                    "AWS IoT CreateJob failed (InvalidRequestException: bad cron)",
                    code="InvalidRequestException",
                )
            super().create_job(job_id, document, config)
            if die_after_create:
                raise _Killed

    return Jobs({"canary": 10, "fleet-a": 10, "fleet-b": 10, "fleet-c": 10})


def test_a_kill_between_createjob_and_its_event_is_adopted_on_the_next_step(
    tmp_path: Path,
) -> None:
    from orchestrator.model import WavePhase
    from orchestrator.reconcile import Reconciler

    api = _fake_jobs(die_after_create=True)
    rec, store = _world(tmp_path, api)
    with pytest.raises(_Killed):
        rec.step("ats-2026")
    job_id = store.load("ats-2026").state.wave("canary").job_id
    assert job_id in api.jobs
    assert [e.kind for e in store.events("ats-2026")][-1] == "wave-launching"
    again = Reconciler(store, api, rec.clock)
    state = again.step("ats-2026").state
    assert state.wave("canary").phase is WavePhase.RUNNING
    made = [e for e in store.events("ats-2026") if e.kind in ("job-created", "job-adopted")]
    assert [(e.kind, e.data["job_id"]) for e in made] == [("job-adopted", job_id)]
    assert "creation was not recorded" in made[0].reason
    again.step("ats-2026")  # recorded once: a later step adds nothing
    assert sum(e.kind == "job-adopted" for e in store.events("ats-2026")) == 1


def test_an_unrecorded_job_with_another_document_is_a_conflict_not_an_adoption(
    tmp_path: Path,
) -> None:
    from orchestrator.errors import JobConflictError

    api = _fake_jobs(die_after_create=True)
    rec, store = _world(tmp_path, api)
    with pytest.raises(_Killed):
        rec.step("ats-2026")
    job_id = store.load("ats-2026").state.wave("canary").job_id
    api.jobs[job_id].document = '{"schema":"something else"}'
    with pytest.raises(JobConflictError, match="different document"):
        rec.step("ats-2026")
    assert "job-adopted" not in [e.kind for e in store.events("ats-2026")]


def test_a_createjob_refused_as_invalid_halts_the_campaign_with_the_reason(
    tmp_path: Path,
) -> None:
    from orchestrator.errors import JobRefusedError, UsageError
    from orchestrator.model import CampaignStatus, WavePhase

    rec, store = _world(tmp_path, _fake_jobs(refuse=True))
    with pytest.raises(JobRefusedError, match="refused CreateJob for wave canary") as caught:
        rec.step("ats-2026")
    assert isinstance(caught.value, UsageError)  # the CLI's exit 2
    state = store.load("ats-2026").state
    assert state.status is CampaignStatus.HALTED
    assert state.wave("canary").phase is WavePhase.HALTED
    assert "bad cron" in state.reason
    kinds = [e.kind for e in store.events("ats-2026")]
    assert kinds[-3:] == ["action-failed", "wave-halted", "campaign-halted"]
    rec.step("ats-2026")  # a halted campaign stays halted and asks nothing more
    assert store.load("ats-2026").state.status is CampaignStatus.HALTED
