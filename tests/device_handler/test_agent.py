"""The transaction end to end through the in-memory channel, with real files and real TLS."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from device_handler.agent import Agent
from device_handler.fsops import StrPath
from device_handler.memory import MemoryConnector
from device_handler.testing import JobsRejection, MemoryJobs
from device_handler.transaction import Journal, Phase
from device_handler.trust import EndpointConfig, TrustBundle

from .conftest import ATS_HOST, LEGACY_HOST, THING, Device, fingerprint, migrate_doc, order_from


def _run(device: Device, document: str, **agent_args: object) -> tuple[str, str | None]:
    device.jobs.add_job(THING, "job-1", document)
    agent = device.agent(**agent_args)  # type: ignore[arg-type]
    agent.recover()
    outcome = agent.poll()
    return outcome.status, outcome.reason


def test_migrate_commits_reconnects_and_acknowledges_over_the_new_connection(device: Device):
    status, _ = _run(device, migrate_doc(device.world))
    assert status == "SUCCEEDED"
    execution = device.jobs.execution(THING, "job-1")
    assert execution.status == "SUCCEEDED"
    assert execution.history[0] == ("IN_PROGRESS", "legacy")
    assert execution.history[-1] == ("SUCCEEDED", "ats")
    assert json.loads(device.paths.endpoint_file.read_bytes())["host"] == ATS_HOST
    bundle = TrustBundle.parse(device.paths.trust_bundle.read_bytes())
    assert bundle.fingerprints() == (
        fingerprint(device.world.legacy_root),
        fingerprint(device.world.ats_root),
    )
    details = execution.status_details
    assert details["endpoint"] == f"{ATS_HOST}:8883"
    assert len(details["bundleSha256"]) == 64
    assert int(details["probeMs"]) >= 0
    assert int(details["totalMs"]) >= 0
    assert device.paths.previous.exists()
    assert not device.paths.rollback.exists()
    assert not device.paths.staged_bundle.exists()


def test_migrate_without_keep_existing_trusts_only_the_new_roots(device: Device):
    status, _ = _run(device, migrate_doc(device.world, keep_existing=False))
    assert status == "SUCCEEDED"
    bundle = TrustBundle.parse(device.paths.trust_bundle.read_bytes())
    assert bundle.fingerprints() == (fingerprint(device.world.ats_root),)


def test_probe_with_a_root_the_endpoint_does_not_chain_to_fails_and_changes_nothing(
    device: Device,
):
    before = device.live()
    status, reason = _run(
        device, migrate_doc(device.world, root=device.world.other_root, keep_existing=False)
    )
    assert (status, reason) == ("FAILED", "tls-verify")
    assert device.live() == before
    execution = device.jobs.execution(THING, "job-1")
    assert execution.status == "FAILED"
    assert execution.history[-1] == ("FAILED", "legacy")
    assert "certificate verify failed" in execution.status_details["message"]
    assert not device.paths.staged_bundle.exists()
    assert not device.paths.staged_endpoint.exists()


def test_dead_man_switch_restores_the_old_configuration_and_reports_on_it(device: Device):
    before = device.live()
    status, reason = _run(
        device, migrate_doc(device.world), refuse=frozenset({ATS_HOST}), dead_man_seconds=0.3
    )
    assert (status, reason) == ("FAILED", "dead-man")
    assert device.live() == before
    execution = device.jobs.execution(THING, "job-1")
    assert execution.history[-1] == ("FAILED", "legacy")
    assert "no connection on the new configuration" in execution.status_details["message"]
    assert device.agent().read_journal().phase is Phase.IDLE


def test_invalid_document_is_rejected_with_a_reason_and_nothing_is_written(device: Device):
    before = sorted(p.name for p in device.root.rglob("*"))
    status, reason = _run(device, '{"operation": "migrate"')
    assert (status, reason) == ("REJECTED", "schema")
    assert sorted(p.name for p in device.root.rglob("*")) == before
    execution = device.jobs.execution(THING, "job-1")
    assert execution.status == "REJECTED"
    assert execution.status_details["reason"] == "schema"


def test_restore_goes_back_to_the_configuration_before_the_last_change(device: Device):
    before = device.live()
    assert _run(device, migrate_doc(device.world))[0] == "SUCCEEDED"
    device.jobs.add_job(THING, "job-2", json.dumps({"operation": "restore"}))
    outcome = device.agent().poll()
    assert outcome.status == "SUCCEEDED"
    assert device.live() == before
    assert device.jobs.execution(THING, "job-2").history[-1] == ("SUCCEEDED", "legacy")


def test_restore_without_a_previous_configuration_fails_with_a_reason(device: Device):
    status, reason = _run(device, json.dumps({"operation": "restore"}))
    assert (status, reason) == ("FAILED", "nothing-to-restore")


def test_prune_drops_a_root_only_after_probing_the_current_endpoint_without_it(device: Device):
    world = device.world
    assert _run(device, migrate_doc(world))[0] == "SUCCEEDED"
    device.jobs.add_job(
        THING,
        "job-2",
        json.dumps({"operation": "prune", "remove": [fingerprint(world.legacy_root)]}),
    )
    assert device.agent().poll().status == "SUCCEEDED"
    bundle = TrustBundle.parse(device.paths.trust_bundle.read_bytes())
    assert bundle.fingerprints() == (fingerprint(world.ats_root),)


def test_prune_of_the_root_the_current_endpoint_needs_fails_and_keeps_it(device: Device):
    world = device.world
    assert _run(device, migrate_doc(world))[0] == "SUCCEEDED"
    before = device.live()
    device.jobs.add_job(
        THING, "job-2", json.dumps({"operation": "prune", "remove": [fingerprint(world.ats_root)]})
    )
    outcome = device.agent().poll()
    assert (outcome.status, outcome.reason) == ("FAILED", "tls-verify")
    assert device.live() == before


def test_prune_of_roots_the_device_does_not_hold_succeeds_without_writing(device: Device):
    before = device.live()
    status, _ = _run(device, json.dumps({"operation": "prune", "remove": ["ab" * 32]}))
    assert status == "SUCCEEDED"
    assert device.live() == before
    assert device.jobs.execution(THING, "job-1").status_details["step"] == "nothing-to-do"


def test_loop_guard_fails_a_job_that_keeps_being_interrupted(device: Device):
    device.jobs.add_job(THING, "job-1", migrate_doc(device.world))
    agent = device.agent()
    for _ in range(3):
        journal = agent.read_journal()
        attempts = journal.next_attempt("job-1", 1)
        agent._persist(
            Journal(phase=Phase.STAGED, job_id="job-1", execution_number=1, attempts=attempts)
        )
        assert agent.recover().status == "DEFERRED"
    outcome = agent.poll()
    assert (outcome.status, outcome.reason) == ("FAILED", "loop-guard")


def test_trust_state_is_reported_to_the_named_shadow(device: Device):
    shadows: dict[str, dict[str, object]] = {}
    from device_handler.memory import MemoryConnector

    connector = MemoryConnector(device.jobs, THING, vias={LEGACY_HOST: "legacy"}, shadows=shadows)
    device.jobs.add_job(THING, "job-1", migrate_doc(device.world))
    assert device.agent(connector=connector).poll().status == "SUCCEEDED"
    reported = shadows["ca-migration"]["state"]["reported"]  # type: ignore[index]
    assert reported["endpoint"] == ATS_HOST  # type: ignore[index]
    assert reported["lastJob"]["status"] == "SUCCEEDED"  # type: ignore[index]
    assert fingerprint(device.world.ats_root) in reported["rootSha256"]  # type: ignore[index]


def test_trust_state_is_published_at_start_up(device: Device):
    shadows: dict[str, dict[str, object]] = {}
    from device_handler.memory import MemoryConnector

    connector = MemoryConnector(device.jobs, THING, shadows=shadows)
    device.agent(connector=connector).publish_trust_state()
    reported = shadows["ca-migration"]["state"]["reported"]  # type: ignore[index]
    assert reported["endpoint"] == LEGACY_HOST  # type: ignore[index]
    assert reported["phase"] == "idle"  # type: ignore[index]
    assert reported["lastJob"] is None  # type: ignore[index]


def test_trust_state_is_written_only_when_it_differs_from_the_shadow(device: Device):
    shadows: dict[str, dict[str, object]] = {}
    from device_handler.memory import MemoryConnector

    connector = MemoryConnector(device.jobs, THING, shadows=shadows)
    device.agent(connector=connector).publish_trust_state()
    shadows["ca-migration"]["marker"] = "kept while nothing changes"
    device.agent(connector=connector).publish_trust_state()
    assert shadows["ca-migration"]["marker"] == "kept while nothing changes"
    device.jobs.add_job(THING, "job-1", migrate_doc(device.world))
    assert device.agent(connector=connector).poll().status == "SUCCEEDED"
    assert "marker" not in shadows["ca-migration"]
    reported = shadows["ca-migration"]["state"]["reported"]  # type: ignore[index]
    assert reported["lastJob"]["jobId"] == "job-1"  # type: ignore[index]


def test_roots_are_reported_by_catalog_name(device: Device):
    shadows: dict[str, dict[str, object]] = {}
    from device_handler.memory import MemoryConnector

    connector = MemoryConnector(device.jobs, THING, shadows=shadows)
    agent = device.agent(connector=connector)
    legacy = agent.trust_state()["rootSha256"][0]
    named = replace(agent.settings, root_names={legacy: "verisign-class3-g5"})
    assert Agent(named, order_from, connector).trust_state()["roots"] == ["verisign-class3-g5"]
    assert agent.trust_state()["roots"] == [f"sha256:{legacy[:16]}"]


def test_a_report_that_cannot_be_sent_yet_is_retried_without_tripping_the_boot_loop_guard(
    device: Device,
):
    device.jobs.add_job(THING, "job-1", migrate_doc(device.world))
    agent = device.agent()
    agent._persist(
        Journal(
            phase=Phase.REPORTING,
            job_id="job-1",
            report_status="FAILED",
            report_details={"reason": "x"},
        )
    )
    offline = device.agent(refuse=frozenset({LEGACY_HOST}))
    for _ in range(5):
        assert offline.poll().status == "DEFERRED"
    journal = offline.read_journal()
    assert (journal.phase, journal.recoveries) == (Phase.REPORTING, 0)
    assert device.agent().poll().status == "FAILED"
    assert device.jobs.execution(THING, "job-1").status == "FAILED"


def test_an_unreadable_live_bundle_fails_the_job_without_touching_anything(device: Device):
    device.paths.trust_bundle.write_bytes(
        b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    )
    before = device.live()
    device.jobs.add_job(THING, "job-1", migrate_doc(device.world))
    from device_handler.memory import MemoryConnector

    # A bundle the TLS stack may still load but the handler cannot parse: no handshake here.
    outcome = device.agent(connector=MemoryConnector(device.jobs, THING)).poll()
    assert (outcome.status, outcome.reason) == ("FAILED", "live-config")
    assert device.live() == before


def test_loop_guard_counts_per_execution_so_a_retried_job_runs_again(device: Device):
    """AWS's retry config re-runs a job under a new executionNumber: not a loop of the old one."""
    execution = device.jobs.add_job(THING, "job-1", migrate_doc(device.world))
    agent = device.agent()
    for _ in range(3):
        attempts = agent.read_journal().next_attempt("job-1", 1)
        agent._persist(
            Journal(phase=Phase.STAGED, job_id="job-1", execution_number=1, attempts=attempts)
        )
        assert agent.recover().status == "DEFERRED"
    assert agent.read_journal().attempts == 3
    # The service retried the job: same id, execution number 2, queued again.
    execution.execution_number = 2
    outcome = agent.poll()
    assert (outcome.status, outcome.reason) == ("SUCCEEDED", None)
    journal = agent.read_journal()
    assert (journal.execution_number, journal.attempts) == (2, 1)
    assert json.loads(device.paths.endpoint_file.read_bytes())["host"] == ATS_HOST


def test_device_client_config_follows_the_endpoint_and_keeps_its_other_settings(
    world_device_client: Device,
):
    device = world_device_client
    assert device.paths.device_client_config is not None
    settings = json.loads(device.paths.device_client_config.read_bytes())
    status, _ = _run(device, migrate_doc(device.world, keep_existing=False))
    assert status == "SUCCEEDED"
    after = json.loads(device.paths.device_client_config.read_bytes())
    assert after == {**settings, "endpoint": ATS_HOST}
    rollback = json.loads(device.paths.previous.read_bytes())
    assert json.loads(rollback["deviceClientConfig"]["content"])["endpoint"] == LEGACY_HOST
    device.jobs.add_job(THING, "job-2", json.dumps({"operation": "restore"}))
    assert device.agent().poll().status == "SUCCEEDED"
    assert json.loads(device.paths.device_client_config.read_bytes()) == settings


def test_dead_man_roll_back_restores_the_device_client_config_too(world_device_client: Device):
    device = world_device_client
    before = device.live()
    status, reason = _run(
        device, migrate_doc(device.world), refuse=frozenset({ATS_HOST}), dead_man_seconds=0.5
    )
    assert (status, reason) == ("FAILED", "dead-man")
    assert device.live() == before
    assert device.device_client_endpoint() == LEGACY_HOST


def test_an_unreadable_device_client_config_fails_the_job_before_any_write(
    world_device_client: Device,
):
    device = world_device_client
    assert device.paths.device_client_config is not None
    device.paths.device_client_config.write_text("[1, 2]")
    before = device.live()
    status, reason = _run(device, migrate_doc(device.world))
    assert (status, reason) == ("FAILED", "live-config")
    assert device.live() == before


class _RefusingJobs:
    """MemoryJobs that refuses terminal reports with `code`, `times` times (None: always)."""

    def __init__(self, inner: MemoryJobs, code: str, times: int | None) -> None:
        self.inner = inner
        self.code = code
        self.times = times
        self.refused = 0

    def describe_execution(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.describe_execution(*args, **kwargs)

    def update_execution(self, *args: Any, status: str, **kwargs: Any) -> Any:
        if status != "IN_PROGRESS" and (self.times is None or self.refused < self.times):
            self.refused += 1
            raise JobsRejection(self.code, "refused (test)")
        return self.inner.update_execution(*args, status=status, **kwargs)


def _connector(device: Device, backend: Any, on_connect: Any = None) -> MemoryConnector:
    def check(endpoint: EndpointConfig, ca_file: StrPath) -> None:
        device.world.handshake(endpoint, ca_file)
        if on_connect is not None:
            on_connect(endpoint)

    return MemoryConnector(
        backend, THING, vias={LEGACY_HOST: "legacy", ATS_HOST: "ats"}, check=check
    )


def test_a_report_refused_after_a_force_cancel_is_recorded_and_new_jobs_are_taken(
    device: Device,
):
    """Force-cancel while the device reconnects: its SUCCEEDED can never be delivered."""
    execution = device.jobs.add_job(THING, "job-1", migrate_doc(device.world))

    def force_cancel(endpoint: EndpointConfig) -> None:
        if endpoint.host == ATS_HOST:
            execution.status = "CANCELED"

    agent = device.agent(connector=_connector(device, device.jobs, force_cancel))
    outcome = agent.poll()
    assert (outcome.status, outcome.refused) == ("SUCCEEDED", "InvalidStateTransition")
    journal = agent.read_journal()
    assert journal.phase is Phase.IDLE
    assert (journal.last_job_id, journal.last_status, journal.last_refused) == (
        "job-1",
        "SUCCEEDED",
        "InvalidStateTransition",
    )
    assert device.jobs.execution(THING, "job-1").status == "CANCELED"
    # The migrate stands (it was probed and reconnected) and its backup is kept for restore.
    assert json.loads(device.paths.endpoint_file.read_bytes())["host"] == ATS_HOST
    assert device.paths.previous.exists()
    device.jobs.add_job(THING, "job-2", json.dumps({"operation": "restore"}))
    assert agent.poll().status == "SUCCEEDED"
    assert device.jobs.execution(THING, "job-2").status == "SUCCEEDED"
    assert json.loads(device.paths.endpoint_file.read_bytes())["host"] == LEGACY_HOST


@pytest.mark.parametrize("code", ["TerminalStateReached", "InvalidRequest", "ResourceNotFound"])
def test_a_final_refusal_of_the_report_returns_the_device_to_idle(device: Device, code: str):
    backend = _RefusingJobs(device.jobs, code, times=None)
    device.jobs.add_job(THING, "job-1", migrate_doc(device.world))
    agent = device.agent(connector=_connector(device, backend))
    outcome = agent.poll()
    assert (outcome.status, outcome.refused) == ("SUCCEEDED", code)
    assert backend.refused == 1
    journal = agent.read_journal()
    assert (journal.phase, journal.last_refused) == (Phase.IDLE, code)
    # Here the service still offers the execution: the device neither runs it again nor
    # writes anything, it waits for the execution to end (timeout, cancel).
    before = device.paths.journal.read_bytes()
    assert (agent.poll().status, agent.poll().reason) == ("DEFERRED", "report-refused")
    assert backend.refused == 1
    assert device.paths.journal.read_bytes() == before
    device.jobs.execution(THING, "job-1").status = "CANCELED"
    device.jobs.add_job(THING, "job-2", json.dumps({"operation": "restore"}))
    backend.times = 0
    assert agent.poll().status == "SUCCEEDED"
    assert agent.read_journal().last_refused is None


@pytest.mark.parametrize("code", ["RequestThrottled", "InternalError"])
def test_a_retryable_refusal_keeps_the_report_until_the_service_takes_it(device: Device, code: str):
    backend = _RefusingJobs(device.jobs, code, times=2)
    device.jobs.add_job(THING, "job-1", migrate_doc(device.world))
    agent = device.agent(connector=_connector(device, backend))
    assert (agent.poll().status, agent.read_journal().phase) == ("DEFERRED", Phase.REPORTING)
    assert agent.poll().status == "DEFERRED"
    outcome = agent.poll()
    assert (outcome.status, outcome.refused) == ("SUCCEEDED", None)
    assert device.jobs.execution(THING, "job-1").status == "SUCCEEDED"
    assert agent.read_journal().last_refused is None


# ------------------------------------------------- live files' mode and owner


def _modes(device: Device) -> tuple[int, int]:
    return (
        device.paths.endpoint_file.stat().st_mode & 0o7777,
        device.paths.trust_bundle.stat().st_mode & 0o7777,
    )


def test_a_commit_keeps_the_live_files_mode(device: Device):
    """A TLS client running as another user keeps reading trust.pem after a migrate."""
    device.paths.endpoint_file.chmod(0o644)
    device.paths.trust_bundle.chmod(0o644)
    status, _ = _run(device, migrate_doc(device.world))
    assert status == "SUCCEEDED"
    assert json.loads(device.paths.endpoint_file.read_bytes())["host"] == ATS_HOST
    assert _modes(device) == (0o644, 0o644)


def test_a_roll_back_keeps_the_live_files_mode(device: Device):
    device.paths.endpoint_file.chmod(0o640)
    device.paths.trust_bundle.chmod(0o444)
    status, reason = _run(
        device, migrate_doc(device.world), refuse=frozenset({ATS_HOST}), dead_man_seconds=0.3
    )
    assert (status, reason) == ("FAILED", "dead-man")
    assert json.loads(device.paths.endpoint_file.read_bytes())["host"] == LEGACY_HOST
    assert _modes(device) == (0o640, 0o444)
