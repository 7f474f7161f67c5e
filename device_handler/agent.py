"""The imperative shell around the transaction: files, TLS probe, channel.

`Agent` runs one transaction at a time for one device. It persists a
`Journal` (see `device_handler.transaction`) before every side effect,
makes every file change through a `FileOps`, and on start-up applies the
recovery table to whatever the journal says was in flight. Policy lives in
the transaction module, in the targets (`device_handler.targets`) and in the
order of the calls below, nothing else.

The files it keeps are listed in `device_handler.paths`; the snapshot format
of `rollback.json` and `previous.json` is `device_handler.snapshot`'s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from device_handler.channel import Connector, JobExecution, JobsChannel
from device_handler.delivery import Outcome, ReportDelivery
from device_handler.device_client.config import device_client_with_endpoint
from device_handler.errors import (
    ChannelError,
    ChannelRejected,
    ConfigError,
    DocumentRejected,
    JournalError,
    ProbeFailed,
)
from device_handler.fsops import (
    FileOps,
    RealFileOps,
    atomic_write,
    ensure_dir,
    parent_dir,
    read_bytes,
    read_optional,
)
from device_handler.job_statuses import PENDING_STATUSES
from device_handler.order import Order, Validator
from device_handler.paths import DeviceFiles, DevicePaths, staged_path
from device_handler.probe import ClientIdentity, ProbeResult, probe
from device_handler.snapshot import Snapshot
from device_handler.status import details
from device_handler.targets import TargetFailed, target_for
from device_handler.transaction import (
    Journal,
    Phase,
    Recovery,
    Rejection,
    classify_rejection,
    recovery_for,
)
from device_handler.trust import EndpointConfig, bundle_sha256
from job_documents.clock import Clock, SystemClock

__all__ = [
    "Agent",
    "AgentSettings",
    "DeviceFiles",
    "DevicePaths",
    "Outcome",
    "Snapshot",
    "device_client_with_endpoint",
]

log = structlog.get_logger(__name__)

SHADOW_NAME = "ca-migration"

ProbeFn = Callable[..., ProbeResult]


@dataclass(frozen=True, slots=True)
class AgentSettings:
    thing_name: str
    paths: DevicePaths
    identity: ClientIdentity | None = None
    overrides: Mapping[str, str] = field(default_factory=dict)
    dead_man_seconds: float = 60.0
    connect_timeout: float = 10.0
    max_attempts: int = 3
    max_recoveries: int = 3
    shadow_name: str = SHADOW_NAME
    root_names: Mapping[str, str] = field(default_factory=dict)  # SHA-256 -> catalog name


class Agent(ReportDelivery):
    """One device's agent: handles jobs one at a time and recovers after power cuts."""

    def __init__(
        self,
        settings: AgentSettings,
        validator: Validator,
        connector: Connector,
        *,
        fs: FileOps | None = None,
        clock: Clock | None = None,
        probe_fn: ProbeFn = probe,
    ) -> None:
        self.settings = settings
        self.paths = settings.paths
        self._files = settings.paths.files
        self._validate = validator
        self._connector = connector
        self._fs: FileOps = fs if fs is not None else RealFileOps()
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._probe = probe_fn
        self.channel: JobsChannel | None = None
        self._log = log.bind(thing=settings.thing_name)
        self._state_dir_made = False
        self._connected_on: Snapshot | None = None  # the live configuration `connect` read

    @property
    def shadow_name(self) -> str:
        return self.settings.shadow_name

    @property
    def root_names(self) -> Mapping[str, str]:
        return self.settings.root_names

    # ---------------------------------------------------------------- files

    def read_journal(self) -> Journal:
        data = read_optional(self._files.journal)
        return Journal() if data is None else Journal.from_bytes(data)

    def _persist(self, journal: Journal) -> Journal:
        if not self._state_dir_made:
            # Once per agent: the directory is never removed while the agent runs.
            ensure_dir(self._files.state_dir)
            self._state_dir_made = True
        atomic_write(self._fs, self._files.journal, journal.to_bytes())
        self._log.debug("journal", phase=str(journal.phase), job_id=journal.job_id)
        return journal

    def live(self) -> Snapshot:
        try:
            endpoint_file = read_bytes(self._files.endpoint_file)
            bundle = read_bytes(self._files.trust_bundle)
        except OSError as exc:
            raise ConfigError(f"the live configuration cannot be read: {exc}") from exc
        endpoint = EndpointConfig.parse(endpoint_file, source=self._files.endpoint_file)
        dc_path = self._files.device_client_config
        if dc_path is None:
            return Snapshot(endpoint=endpoint, bundle=bundle, endpoint_file=endpoint_file)
        # Read, not checked: a broken Device Client config must not stop the agent from
        # connecting; a transaction that would rewrite it fails `live-config` instead.
        try:
            device_client = read_optional(dc_path)
        except OSError as exc:
            raise ConfigError(f"the Device Client configuration cannot be read: {exc}") from exc
        return Snapshot(
            endpoint=endpoint,
            bundle=bundle,
            endpoint_file=endpoint_file,
            device_client_path=dc_path,
            device_client=device_client,
        )

    def _discard_staging(self, device_client: str | None = None) -> None:
        for path in (
            self._files.staged_bundle,
            self._files.staged_endpoint,
            self._files.staged_device_client,
            None if device_client is None else staged_path(device_client),
        ):
            if path is not None and os.path.exists(path):  # noqa: PTH110 - hot path, no wrapper
                self._fs.remove(path)

    def _restore_rollback(self) -> None:
        data = read_optional(self._files.rollback)
        if data is None:
            raise JournalError(
                f"{self._files.rollback} is missing while the journal says a roll-back is due; "
                "check the live endpoint and bundle by hand before restarting the agent"
            )
        snapshot = Snapshot.parse(data, source=self._files.rollback)
        atomic_write(self._fs, self._files.trust_bundle, snapshot.bundle)
        atomic_write(self._fs, self._files.endpoint_file, snapshot.endpoint_file)
        dc_path = None
        if snapshot.device_client_path is not None and snapshot.device_client is not None:
            # The path recorded at commit, not today's setting: what was replaced is restored.
            dc_path = snapshot.device_client_path
            atomic_write(self._fs, dc_path, snapshot.device_client)
        self._discard_staging(dc_path)

    # -------------------------------------------------------------- channel

    def connect(self, timeout: float | None = None) -> JobsChannel:
        """Connect on the live configuration (once; reused until the configuration changes)."""
        if self.channel is None:
            live = self.live()
            limit = self.settings.connect_timeout if timeout is None else timeout
            self.channel = self._connector.connect(live.endpoint, self._files.trust_bundle, limit)
            self._connected_on = live
            self._log.info("connected", endpoint=live.endpoint.label(), via=self.channel.via)
        return self.channel

    def disconnect(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    # ------------------------------------------------------------ recovery

    def recover(self, *, boot: bool = True) -> Outcome:
        """Apply the recovery table to the journal found on start-up.

        `boot=False` resumes an unfinished transaction while running (a report that
        could not be sent yet): it does not count towards the boot loop guard.
        """
        journal = self.read_journal()
        if journal.phase is Phase.IDLE:
            self._discard_staging()
            return Outcome(journal.last_job_id, "NONE")
        if boot:
            journal = self._persist(journal.evolve(recoveries=journal.recoveries + 1))
        action = recovery_for(journal, max_recoveries=self.settings.max_recoveries)
        self._log.warning(
            "recovering", phase=str(journal.phase), action=str(action), job_id=journal.job_id
        )
        if action is Recovery.DISCARD:
            self._discard_staging()
            if os.path.exists(self._files.rollback):  # noqa: PTH110 - a str
                self._fs.remove(self._files.rollback)
            self._persist(journal.discarded())
            return Outcome(journal.job_id, "DEFERRED", "interrupted")
        if action is Recovery.ROLL_BACK:
            return self._roll_back(
                journal,
                journal.reason or "interrupted",
                journal.message or f"power lost or agent stopped during {journal.phase}",
            )
        if action is Recovery.RESUME_RECONNECT:
            self.disconnect()
            return self._reconnect_new(journal)
        if action is Recovery.ABANDON:
            self._cleanup_after_report(journal)
            self._persist(journal.finished("ABANDONED", self._now()))
            return Outcome(journal.job_id, "ABANDONED", "loop-guard")
        return self._send_report(journal)

    # --------------------------------------------------------- transaction

    def poll(self) -> Outcome:
        """Handle the next pending job, if any."""
        journal = self.read_journal()
        if journal.phase is not Phase.IDLE:
            return self.recover(boot=False)
        execution = self.connect().next_execution()
        if execution is None:
            return Outcome(None, "NONE")
        return self._handle(execution, journal)

    def handle(self, execution: JobExecution) -> Outcome:
        """Run the whole transaction for one job execution."""
        return self._handle(execution, None)

    def _handle(self, execution: JobExecution, journal: Journal | None) -> Outcome:
        """`handle`, given the journal when the caller has just read it (nothing wrote since)."""
        channel = self.connect()
        job_log = self._log.bind(job_id=execution.job_id)
        if execution.status not in PENDING_STATUSES:
            return Outcome(execution.job_id, "SKIPPED", f"execution is {execution.status}")
        if journal is None:
            journal = self.read_journal()
        held = self._held_back(execution, journal)
        if held is not None:
            return held
        try:
            order = self._validate(execution.document)
        except DocumentRejected as exc:
            job_log.warning("job_rejected", reason=exc.code)
            return self._reject(channel, execution, exc)
        journal = self._accept(execution, journal, order)
        job_log = job_log.bind(operation=order.operation, campaign=order.campaign, wave=order.wave)
        if journal.attempts > self.settings.max_attempts:
            job_log.error("loop_guard", attempts=journal.attempts)
            tried = journal.attempts - 1
            return self._fail(journal, "loop-guard", f"gave up after {tried} attempts")
        started = self._start_staging(execution, journal, job_log)
        if isinstance(started, Outcome):
            return started
        journal = started
        try:
            live, target = self._target(order)
        except TargetFailed as exc:
            return self._fail(journal, exc.reason, exc.message)
        except ConfigError as exc:
            return self._fail(journal, "live-config", str(exc))
        if target is None:
            return self._nothing_to_do(journal, order, live)
        staged_dc = self._stage(target)
        # `staged` is recorded in memory only (a failed probe reports it as its step): its
        # recovery is `accepted`'s, discard, so persisting it would buy a power cut nothing.
        journal = journal.evolve(phase=Phase.STAGED)
        try:
            result = self._probe_staged(target, order)
        except ProbeFailed as exc:
            job_log.warning("probe_failed", reason=exc.reason)
            self._discard_staging()
            return self._fail(journal, exc.reason, exc.message)
        journal = self._commit(journal, live, staged_dc, result)
        job_log.info("committed", endpoint=target.endpoint.label())
        try:
            journal = self._progress(journal, "reconnecting")
        except ChannelError as exc:
            job_log.info("progress_not_sent", error=str(exc))
        self.disconnect()
        return self._reconnect_new(journal)

    # ----------------------------------------------------------- the phases

    def _held_back(self, execution: JobExecution, journal: Journal) -> Outcome | None:
        """Why this execution must not start now (None: it may)."""
        if journal.phase is not Phase.IDLE:
            raise JournalError("a transaction is still in flight: run recovery first")
        last = (journal.last_job_id, journal.execution_number)
        if (
            journal.last_refused is not None
            and journal.job_id == journal.last_job_id
            and last == (execution.job_id, execution.execution_number)
        ):
            # Its report was refused for good, yet the service still offers it: running it
            # again would only be refused again. Wait (it ends by timeout or cancel) instead.
            return Outcome(
                execution.job_id, "DEFERRED", "report-refused", refused=journal.last_refused
            )
        return None

    def _accept(self, execution: JobExecution, journal: Journal, order: Order) -> Journal:
        """Persist the validated order as the transaction in flight (`accepted`)."""
        attempts = journal.next_attempt(execution.job_id, execution.execution_number)
        return self._persist(
            journal.evolve(
                phase=Phase.ACCEPTED,
                job_id=execution.job_id,
                execution_number=execution.execution_number,
                version=execution.version_number,
                operation=order.operation,
                document_sha256=order.sha256,
                attempts=attempts,
                recoveries=0,
                started_at=self._now(),
                probe_ms=None,
                reason=None,
                message=None,
                report_status=None,
                report_details={},
            )
        )

    def _start_staging(
        self, execution: JobExecution, journal: Journal, job_log: Any
    ) -> Journal | Outcome:
        """Tell the service the job is in progress; an outcome when it will not have it."""
        try:
            return self._progress(journal, "staging")
        except ChannelRejected as exc:
            self._persist(journal.discarded())
            if classify_rejection(exc.code) is Rejection.RETRY:
                job_log.info("job_deferred", code=exc.code)
                return Outcome(execution.job_id, "DEFERRED", exc.code)
            job_log.warning("job_gone", code=exc.code)
            return Outcome(execution.job_id, "SKIPPED", exc.code)
        except ChannelError:
            self._persist(journal.discarded())
            self.disconnect()
            return Outcome(execution.job_id, "DEFERRED", "channel")

    def _nothing_to_do(self, journal: Journal, order: Order, live: Snapshot) -> Outcome:
        return self._finish(
            journal,
            "SUCCEEDED",
            details(
                {
                    "step": "nothing-to-do",
                    "operation": order.operation,
                    "endpoint": live.endpoint.label(),
                    "bundleSha256": bundle_sha256(live.bundle),
                }
            ),
        )

    def _stage(self, target: Snapshot) -> str | None:
        """Write the target's files beside the live ones, durably; the staged DC path if any."""
        files = self._files
        staged_dc = files.staged_device_client if target.device_client is not None else None
        self._fs.write_durable(files.staged_bundle, target.bundle)
        self._fs.write_durable(files.staged_endpoint, target.endpoint_file)
        if staged_dc is not None and target.device_client is not None:
            self._fs.write_durable(staged_dc, target.device_client)
        self._fsync_dirs(files.staged_bundle, files.staged_endpoint, *_present(staged_dc))
        return staged_dc

    def _probe_staged(self, target: Snapshot, order: Order) -> ProbeResult:
        """The probe of the target endpoint (TLS, then MQTT), trusting only the staged bundle."""
        return self._probe(
            target.endpoint,
            self._files.staged_bundle,
            client_id=self.settings.thing_name,
            identity=self.settings.identity,
            overrides=self.settings.overrides,
            timeout=order.probe_timeout,
            attempts=order.probe_attempts,
        )

    def _commit(
        self,
        journal: Journal,
        live: Snapshot,
        staged_dc: str | None,
        result: ProbeResult,
    ) -> Journal:
        """Save the roll-back, then rename the staged files over the live ones."""
        files = self._files
        # `live` was read just before staging; only staged files were written since.
        atomic_write(self._fs, files.rollback, live.render())
        journal = self._persist(journal.evolve(phase=Phase.COMMITTING, probe_ms=result.elapsed_ms))
        self._fs.rename(files.staged_bundle, files.trust_bundle)
        self._fs.rename(files.staged_endpoint, files.endpoint_file)
        if staged_dc is not None and files.device_client_config is not None:
            self._fs.rename(staged_dc, files.device_client_config)
        self._fsync_dirs(
            files.trust_bundle,
            files.endpoint_file,
            *_present(files.device_client_config if staged_dc is not None else None),
        )
        return self._persist(journal.evolve(phase=Phase.COMMITTED))

    # ------------------------------------------------------------- helpers

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _fsync_dirs(self, *files: str) -> None:
        """Make the directories holding `files` durable, each one once."""
        done: list[str] = []
        for path in files:
            directory = parent_dir(path)
            if directory not in done:
                self._fs.fsync_dir(directory)
                done.append(directory)

    def _target(self, order: Order) -> tuple[Snapshot, Snapshot | None]:
        """The live configuration, and the one the order asks for (None: it changes nothing)."""
        live = self.live()
        target = target_for(
            order,
            live,
            device_client_config=self._files.device_client_config,
            read_previous=lambda: read_optional(self._files.previous),
        )
        return live, target

    def _reconnect_new(self, journal: Journal) -> Outcome:
        """Dead-man switch: the new configuration must connect within the window."""
        deadline = time.monotonic() + self.settings.dead_man_seconds
        started = time.monotonic()
        error = "no attempt"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self.channel = None
                self.connect(min(self.settings.connect_timeout, max(1.0, remaining)))
                break
            except (ChannelError, ConfigError) as exc:
                error = str(exc)
                self._log.info("reconnect_failed", error=error)
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if self.channel is None:
            self._log.error("dead_man_switch", job_id=journal.job_id, error=error)
            return self._roll_back(
                journal,
                "dead-man",
                f"no connection on the new configuration within "
                f"{self.settings.dead_man_seconds:g} s: {error}",
            )
        reconnect_ms = int((time.monotonic() - started) * 1000)
        # The configuration the new connection was made on: nothing was written since.
        return self._report_success(journal, reconnect_ms=reconnect_ms, live=self._connected_on)

    def _roll_back(self, journal: Journal, reason: str, message: str) -> Outcome:
        journal = self._persist(
            journal.evolve(phase=Phase.ROLLING_BACK, reason=reason, message=message)
        )
        self.disconnect()
        self._restore_rollback()
        self._log.warning("rolled_back", job_id=journal.job_id, reason=reason)
        return self._fail(journal, reason, message)


def _present(path: str | None) -> tuple[str, ...]:
    return () if path is None else (path,)
