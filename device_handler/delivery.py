"""How the agent reports: job execution updates, the terminal report, the named shadow.

`ReportDelivery` is the half of `device_handler.agent.Agent` that talks back to the
service: progress updates, the terminal status (delivered exactly once, across power cuts,
through the journal's REPORTING phase), the refusals it gives up on, and the device's trust
state in the named shadow. The agent supplies the files, the journal and the connection
through the abstract methods below.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from device_handler.errors import ChannelError, ChannelRejected, ConfigError, DocumentRejected
from device_handler.job_statuses import PENDING_STATUSES
from device_handler.order import OPERATIONS, Operation
from device_handler.report_state import publish_if_changed, trust_state
from device_handler.status import details
from device_handler.targets import replaces_backup
from device_handler.transaction import Journal, Phase, Rejection, classify_rejection
from device_handler.trust import bundle_sha256

if TYPE_CHECKING:
    from device_handler.channel import JobExecution, JobsChannel
    from device_handler.fsops import FileOps
    from device_handler.paths import DeviceFiles
    from device_handler.snapshot import Snapshot

__all__ = ["Outcome", "ReportDelivery"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one job (or one recovery): the status reported, and why."""

    job_id: str | None
    status: str  # SUCCEEDED | FAILED | REJECTED | SKIPPED | DEFERRED | NONE
    reason: str | None = None
    via: str | None = None
    refused: str | None = None  # the service's final refusal of the report (then not delivered)


class ReportDelivery(abc.ABC):
    """Progress, terminal reports and shadow updates, on the agent's connection."""

    channel: JobsChannel | None
    _log: Any  # a bound structlog logger
    _files: DeviceFiles
    _fs: FileOps

    @property
    @abc.abstractmethod
    def shadow_name(self) -> str:
        """The named shadow the trust state goes to."""

    @property
    @abc.abstractmethod
    def root_names(self) -> Mapping[str, str]:
        """SHA-256 of each root -> its catalog name."""

    @abc.abstractmethod
    def connect(self, timeout: float | None = None) -> JobsChannel:
        """The live connection, opened when there is none."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Drop the connection."""

    @abc.abstractmethod
    def read_journal(self) -> Journal:
        """The journal on disk."""

    @abc.abstractmethod
    def _persist(self, journal: Journal) -> Journal:
        """Write the journal durably; return it."""

    @abc.abstractmethod
    def live(self) -> Snapshot:
        """The configuration the device runs on now."""

    @abc.abstractmethod
    def _now(self) -> float:
        """Seconds since the epoch, from the agent's clock."""

    def _progress(self, journal: Journal, step: str) -> Journal:
        channel = self.connect()
        version = channel.update(
            journal.job_id or "",
            "IN_PROGRESS",
            details(
                {
                    "step": step,
                    "operation": journal.operation,
                    "documentSha256": journal.document_sha256,
                }
            ),
            expected_version=journal.version,
            execution_number=journal.execution_number,
        )
        # Not persisted on its own: the next phase's record carries it, and a version lost
        # to a power cut is recovered from the service (see `_update_terminal`).
        return journal.evolve(version=version)

    def _reject(
        self, channel: JobsChannel, execution: JobExecution, exc: DocumentRejected
    ) -> Outcome:
        try:
            channel.update(
                execution.job_id,
                "REJECTED",
                details({"step": "validate", "reason": exc.code, "message": exc.message}),
                expected_version=execution.version_number,
                execution_number=execution.execution_number,
            )
        except ChannelRejected as err:
            return Outcome(execution.job_id, "SKIPPED", err.code)
        except ChannelError:
            self.disconnect()
            return Outcome(execution.job_id, "DEFERRED", "channel")
        return Outcome(execution.job_id, "REJECTED", exc.code, channel.via)

    def _fail(self, journal: Journal, reason: str, message: str) -> Outcome:
        return self._finish(
            journal.evolve(reason=reason, message=message),
            "FAILED",
            details(
                {
                    "step": str(journal.phase),
                    "operation": journal.operation,
                    "reason": reason,
                    "message": message,
                    "documentSha256": journal.document_sha256,
                }
            ),
        )

    def _finish(self, journal: Journal, status: str, report: dict[str, str]) -> Outcome:
        journal = self._persist(
            journal.evolve(phase=Phase.REPORTING, report_status=status, report_details=report)
        )
        return self._send_report(journal)

    def _report_success(
        self, journal: Journal, *, reconnect_ms: int | None, live: Snapshot | None = None
    ) -> Outcome:
        live = live if live is not None else self.live()
        total = None
        if journal.started_at is not None:
            total = max(0, int((self._now() - journal.started_at) * 1000))
        report = details(
            {
                "step": "done",
                "operation": journal.operation,
                "endpoint": live.endpoint.label(),
                "bundleSha256": bundle_sha256(live.bundle),
                "documentSha256": journal.document_sha256,
                "probeMs": journal.probe_ms,
                "reconnectMs": reconnect_ms,
                "totalMs": total,
            }
        )
        return self._finish(journal, "SUCCEEDED", report)

    def _cleanup_after_report(self, journal: Journal) -> None:
        files = self._files
        if not os.path.exists(files.rollback):  # noqa: PTH110 - hot path, no wrapper
            return
        if journal.report_status == "SUCCEEDED" and _replaces_backup(journal.operation):
            self._fs.rename(files.rollback, files.previous)
        else:
            self._fs.remove(files.rollback)
        self._fs.fsync_dir(files.state_dir)

    def _send_report(self, journal: Journal) -> Outcome:
        """Send the pending terminal status on the live connection, then go idle."""
        status = journal.report_status or "FAILED"
        job_id = journal.job_id or ""
        refused: str | None = None
        try:
            channel = self.connect()
            try:
                self._update_terminal(channel, journal, status)
            except ChannelRejected as exc:
                if classify_rejection(exc.code) is Rejection.RETRY:
                    self._log.info("report_refused_retry", job_id=job_id, code=exc.code)
                    return Outcome(job_id, "DEFERRED", exc.code)
                # The service will never take this report (force-canceled, removed, timed
                # out, or a request it refuses): the device's outcome is recorded locally
                # and the device goes back to taking jobs.
                refused = exc.code
                self._log.warning(
                    "report_refused_final", job_id=job_id, status=status, code=exc.code
                )
        except (ChannelError, ConfigError) as exc:
            self._log.warning("report_deferred", job_id=job_id, status=status, error=str(exc))
            self.disconnect()
            return Outcome(job_id, "DEFERRED", "channel")
        self._cleanup_after_report(journal)
        self._report_shadow(self._persist(journal.finished(status, self._now(), refused=refused)))
        self._log.info("job_finished", job_id=job_id, status=status, reason=journal.reason)
        return Outcome(job_id, status, journal.reason, channel.via, refused)

    def _update_terminal(self, channel: JobsChannel, journal: Journal, status: str) -> None:
        job_id = journal.job_id or ""
        try:
            channel.update(
                job_id,
                status,
                journal.report_details,
                expected_version=journal.version,
                execution_number=journal.execution_number,
            )
        except ChannelRejected as exc:
            if exc.code != "VersionMismatch":
                raise
            # Our last update may have landed before a power cut hid its new version.
            current = channel.describe(job_id)
            if current is None or current.status not in PENDING_STATUSES:
                # Already terminal (our report landed before a power cut, or the service
                # ended it): there is nothing left to deliver.
                self._log.info(
                    "report_not_needed", job_id=job_id, status=getattr(current, "status", None)
                )
                return
            channel.update(
                job_id,
                status,
                journal.report_details,
                expected_version=current.version_number,
                execution_number=journal.execution_number,
            )

    def _report_shadow(self, journal: Journal) -> None:
        channel = self.channel
        if channel is None or not channel.supports_shadows:
            return
        try:
            self.report_state(channel, journal)
        except (ChannelError, ConfigError) as exc:
            self._log.info("shadow_not_updated", error=str(exc))

    def trust_state(self, journal: Journal | None = None) -> dict[str, Any]:
        """What the device trusts and where it connects, as reported to the shadow."""
        journal = journal if journal is not None else self.read_journal()
        return trust_state(self.live(), journal, self.root_names)

    def publish_trust_state(self) -> None:
        """Report the trust state to the named shadow, best effort (e.g. at start-up)."""
        try:
            self.connect()
        except (ChannelError, ConfigError) as exc:
            self._log.info("shadow_not_updated", error=str(exc))
            return
        self._report_shadow(self.read_journal())

    def report_state(self, channel: JobsChannel, journal: Journal | None = None) -> None:
        """Write the trust state to the named shadow when it differs from what it reports."""
        publish_if_changed(channel, self.shadow_name, self.trust_state(journal))


def _replaces_backup(operation: str | None) -> bool:
    """`replaces_backup` for the operation a journal recorded (None or unknown: no)."""
    return operation in OPERATIONS and replaces_backup(Operation(operation))
