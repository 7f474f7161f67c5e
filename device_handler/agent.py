"""The imperative shell around the transaction: files, TLS probe, channel.

`Agent` runs one transaction at a time for one device. It persists a
`Journal` (see `device_handler.transaction`) before every side effect,
makes every file change through a `FileOps`, and on start-up applies the
recovery table to whatever the journal says was in flight. Policy lives in
the transaction module and in the order of the calls below, nothing else.

Files on the device (see docs/device-handler.md):
- live: the endpoint file and the trust bundle, named by the configuration;
- optional, the third live file: AWS IoT Device Client's JSON configuration,
  whose `endpoint` must follow the endpoint file (a Device Client left on the
  old endpoint with a bundle that no longer trusts it can never connect again);
- staged: `<bundle>.staged`, `<endpoint>.staged` (and `<device client
  config>.staged`), beside the live files, so that the commit is a rename on
  one file system;
- `<state_dir>/journal.json`: the transaction journal;
- `<state_dir>/rollback.json`: endpoint + bundle (+ Device Client config, with
  its path) as they were before this transaction's commit (one file, so one
  atomic write holds them all);
- `<state_dir>/previous.json`: the configuration before the last successful
  migrate, which the `restore` operation goes back to (the contract's "backed up
  before the last migrate"); a restore or a prune leaves it as it is, so a
  second restore does not undo the first and a prune does not hide the original.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from device_handler.channel import Connector, JobExecution, JobsChannel
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
    StrPath,
    atomic_write,
    ensure_dir,
    parent_dir,
    read_bytes,
    read_optional,
)
from device_handler.order import Order, Validator
from device_handler.probe import ClientIdentity, ProbeResult, probe
from device_handler.status import details
from device_handler.transaction import (
    Journal,
    Phase,
    Recovery,
    Rejection,
    classify_rejection,
    recovery_for,
)
from device_handler.trust import EndpointConfig, TrustBundle, bundle_sha256
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
_PENDING = frozenset({"QUEUED", "IN_PROGRESS"})

ProbeFn = Callable[..., ProbeResult]


class DeviceFiles(NamedTuple):
    """Every path a device's transaction uses, as strings, each one derived once.

    The transaction opens, renames and fsyncs these dozens of times per job; as
    strings they cost nothing to hand to the OS, where a `Path` is converted (and
    its derived paths built) again and again.
    """

    endpoint_file: str
    trust_bundle: str
    state_dir: str
    device_client_config: str | None
    staged_bundle: str
    staged_endpoint: str
    staged_device_client: str | None
    journal: str
    rollback: str
    previous: str

    @classmethod
    def of(
        cls,
        endpoint_file: str,
        trust_bundle: str,
        state_dir: str,
        device_client_config: str | None,
    ) -> DeviceFiles:
        return cls(
            endpoint_file,
            trust_bundle,
            state_dir,
            device_client_config,
            _staged(trust_bundle),
            _staged(endpoint_file),
            None if device_client_config is None else _staged(device_client_config),
            os.path.join(state_dir, "journal.json"),  # noqa: PTH118 - strings, see above
            os.path.join(state_dir, "rollback.json"),  # noqa: PTH118
            os.path.join(state_dir, "previous.json"),  # noqa: PTH118
        )


class DevicePaths:
    """Where the device keeps its live configuration and the transaction's files.

    Paths are given as `Path`s or as strings (taken as they are: a normalised path,
    as `os.fspath(Path(...))` gives); they are kept as `files`, strings, which is
    what the transaction uses. The `Path` attributes are views for everyone else.
    Immutable, as the agent keeps `files` for its whole life.
    """

    __slots__ = ("files",)
    files: DeviceFiles

    def __init__(
        self,
        endpoint_file: StrPath,
        trust_bundle: StrPath,
        state_dir: StrPath,
        device_client_config: StrPath | None = None,  # Device Client's JSON config, if any
    ) -> None:
        files = DeviceFiles.of(
            os.fspath(endpoint_file),
            os.fspath(trust_bundle),
            os.fspath(state_dir),
            None if device_client_config is None else os.fspath(device_client_config),
        )
        object.__setattr__(self, "files", files)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"DevicePaths is immutable; make a new one to change {name!r}")

    def __reduce__(self) -> tuple[type[DevicePaths], tuple[str, str, str, str | None]]:
        files = self.files  # pickled as its four given paths (fleet workers send views)
        return DevicePaths, (
            files.endpoint_file,
            files.trust_bundle,
            files.state_dir,
            files.device_client_config,
        )

    def with_device_client_config(self, path: StrPath | None) -> DevicePaths:
        files = self.files
        return DevicePaths(files.endpoint_file, files.trust_bundle, files.state_dir, path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DevicePaths) and other.files == self.files

    def __hash__(self) -> int:
        return hash(self.files)

    def __repr__(self) -> str:
        files = self.files
        return (
            f"DevicePaths(endpoint_file={files.endpoint_file!r}, "
            f"trust_bundle={files.trust_bundle!r}, state_dir={files.state_dir!r}, "
            f"device_client_config={files.device_client_config!r})"
        )

    @property
    def endpoint_file(self) -> Path:
        return Path(self.files.endpoint_file)

    @property
    def trust_bundle(self) -> Path:
        return Path(self.files.trust_bundle)

    @property
    def state_dir(self) -> Path:
        return Path(self.files.state_dir)

    @property
    def device_client_config(self) -> Path | None:
        dc = self.files.device_client_config
        return None if dc is None else Path(dc)

    @property
    def staged_device_client(self) -> Path | None:
        staged = self.files.staged_device_client
        return None if staged is None else Path(staged)

    @property
    def staged_bundle(self) -> Path:
        return Path(self.files.staged_bundle)

    @property
    def staged_endpoint(self) -> Path:
        return Path(self.files.staged_endpoint)

    @property
    def journal(self) -> Path:
        return Path(self.files.journal)

    @property
    def rollback(self) -> Path:
        return Path(self.files.rollback)

    @property
    def previous(self) -> Path:
        return Path(self.files.previous)


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


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one job (or one recovery): the status reported, and why."""

    job_id: str | None
    status: str  # SUCCEEDED | FAILED | REJECTED | SKIPPED | DEFERRED | NONE
    reason: str | None = None
    via: str | None = None
    refused: str | None = None  # the service's final refusal of the report (then not delivered)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An endpoint configuration and a trust bundle together, as one file holds them.

    The files' bytes are kept exactly (latin-1 round-trips any byte), so a roll-back
    or a restore gives back the very files the device had, not a re-rendering. On a
    device that runs AWS IoT Device Client, its configuration file (path and bytes)
    is the third member.
    """

    endpoint: EndpointConfig
    bundle: bytes
    endpoint_file: bytes
    device_client_path: str | None = None
    device_client: bytes | None = None

    @classmethod
    def of(cls, endpoint: EndpointConfig, bundle: bytes) -> Snapshot:
        return cls(endpoint=endpoint, bundle=bundle, endpoint_file=endpoint.render())

    def render(self) -> bytes:
        body: dict[str, Any] = {
            "format": "ca-migrate-snapshot/1",
            "endpointFile": self.endpoint_file.decode("latin-1"),
            "bundle": self.bundle.decode("latin-1"),
        }
        if self.device_client_path is not None and self.device_client is not None:
            body["deviceClientConfig"] = {
                "path": self.device_client_path,
                "content": self.device_client.decode("latin-1"),
            }
        return (json.dumps(body, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes, *, source: str) -> Snapshot:
        try:
            body: Any = json.loads(data)
            endpoint_file = body["endpointFile"].encode("latin-1")
            bundle = body["bundle"].encode("latin-1")
            endpoint = EndpointConfig.parse(endpoint_file, source=source)
            device_client = body.get("deviceClientConfig")
            dc_path = None if device_client is None else str(device_client["path"])
            dc_bytes = None if device_client is None else device_client["content"].encode("latin-1")
        except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
            raise JournalError(f"{source} is unreadable ({exc})") from exc
        return cls(
            endpoint=endpoint,
            bundle=bundle,
            endpoint_file=endpoint_file,
            device_client_path=dc_path,
            device_client=dc_bytes,
        )

    def with_device_client_of(self, live: Snapshot) -> Snapshot:
        """This target with the live Device Client config pointed at this target's endpoint."""
        if live.device_client is None or live.device_client_path is None:
            return replace(self, device_client_path=None, device_client=None)
        return replace(
            self,
            device_client_path=live.device_client_path,
            device_client=device_client_with_endpoint(
                live.device_client, self.endpoint.host, source=live.device_client_path
            ),
        )


class _Fail(Exception):  # noqa: N818 - internal control flow, never escapes the agent
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Agent:
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
            None if device_client is None else _staged(device_client),
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
        if execution.status not in _PENDING:
            return Outcome(execution.job_id, "SKIPPED", f"execution is {execution.status}")
        if journal is None:
            journal = self.read_journal()
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
        try:
            order = self._validate(execution.document)
        except DocumentRejected as exc:
            job_log.warning("job_rejected", reason=exc.code)
            return self._reject(channel, execution, exc)
        attempts = journal.next_attempt(execution.job_id, execution.execution_number)
        journal = self._persist(
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
        job_log = job_log.bind(operation=order.operation, campaign=order.campaign, wave=order.wave)
        if attempts > self.settings.max_attempts:
            job_log.error("loop_guard", attempts=attempts)
            return self._fail(journal, "loop-guard", f"gave up after {attempts - 1} attempts")
        try:
            journal = self._progress(journal, "staging")
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
        try:
            live, target = self._target(order)
        except _Fail as exc:
            return self._fail(journal, exc.reason, exc.message)
        except ConfigError as exc:
            return self._fail(journal, "live-config", str(exc))
        if target is None:
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
        files = self._files
        staged_dc = files.staged_device_client if target.device_client is not None else None
        self._fs.write_durable(files.staged_bundle, target.bundle)
        self._fs.write_durable(files.staged_endpoint, target.endpoint_file)
        if staged_dc is not None and target.device_client is not None:
            self._fs.write_durable(staged_dc, target.device_client)
        self._fsync_dirs(files.staged_bundle, files.staged_endpoint, *_present(staged_dc))
        # `staged` is recorded in memory only (a failed probe reports it as its step): its
        # recovery is `accepted`'s, discard, so persisting it would buy a power cut nothing.
        journal = journal.evolve(phase=Phase.STAGED)
        try:
            result = self._probe(
                target.endpoint,
                files.staged_bundle,
                client_id=self.settings.thing_name,
                identity=self.settings.identity,
                overrides=self.settings.overrides,
                timeout=order.probe_timeout,
                attempts=order.probe_attempts,
            )
        except ProbeFailed as exc:
            job_log.warning("probe_failed", reason=exc.reason)
            self._discard_staging()
            return self._fail(journal, exc.reason, exc.message)
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
        journal = self._persist(journal.evolve(phase=Phase.COMMITTED))
        job_log.info("committed", endpoint=target.endpoint.label())
        try:
            journal = self._progress(journal, "reconnecting")
        except ChannelError as exc:
            job_log.info("progress_not_sent", error=str(exc))
        self.disconnect()
        return self._reconnect_new(journal)

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
        return live, self._target_from(order, live)

    def _target_from(self, order: Order, live: Snapshot) -> Snapshot | None:
        if self._files.device_client_config is not None and live.device_client is None:
            raise ConfigError(
                f"the Device Client configuration {self._files.device_client_config} is missing; "
                "restore it (or drop the setting) before migrating this device"
            )
        if order.operation == "migrate":
            assert order.endpoint is not None  # noqa: S101 - the schema requires it for migrate
            base = TrustBundle.parse(live.bundle) if order.keep_existing else TrustBundle()
            bundle = base.extended(list(order.roots))
            if order.endpoint == live.endpoint and _same_roots(bundle, live.bundle):
                # Already done (a re-run, another wave's copy): committing it again would
                # make previous.json this very configuration and lose the real backup.
                return None
            return Snapshot.of(order.endpoint, bundle.render()).with_device_client_of(live)
        if order.operation == "restore":
            data = read_optional(self._files.previous)
            if data is None:
                raise _Fail(
                    "nothing-to-restore",
                    "this device has no previous configuration to restore "
                    "(it has not completed a migrate)",
                )
            try:
                backup = Snapshot.parse(data, source="previous.json")
            except JournalError as exc:
                raise _Fail("backup-unreadable", str(exc)) from exc
            try:
                backup_roots = TrustBundle.parse(backup.bundle, source="previous.json")
            except ConfigError as exc:
                raise _Fail("backup-unreadable", str(exc)) from exc
            if backup.endpoint == live.endpoint and _same_roots(backup_roots, live.bundle):
                return None  # already restored
            return backup.with_device_client_of(live)
        current = TrustBundle.parse(live.bundle)
        pruned = current.without(order.remove)
        if pruned == current:
            return None
        if not pruned.roots:
            raise _Fail("prune-empty", "pruning these roots would leave the trust bundle empty")
        return replace(live, bundle=pruned.render())

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

    def _roll_back(self, journal: Journal, reason: str, message: str) -> Outcome:
        journal = self._persist(
            journal.evolve(phase=Phase.ROLLING_BACK, reason=reason, message=message)
        )
        self.disconnect()
        self._restore_rollback()
        self._log.warning("rolled_back", job_id=journal.job_id, reason=reason)
        return self._fail(journal, reason, message)

    def _cleanup_after_report(self, journal: Journal) -> None:
        files = self._files
        if not os.path.exists(files.rollback):  # noqa: PTH110 - hot path, no wrapper
            return
        if journal.report_status == "SUCCEEDED" and journal.operation == "migrate":
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
            if current is None or current.status not in _PENDING:
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
        live = self.live()
        bundle = TrustBundle.parse(live.bundle)
        return {
            "endpoint": live.endpoint.host,
            "port": live.endpoint.port,
            "bundleSha256": bundle_sha256(live.bundle),
            "roots": list(bundle.fingerprints()),
            "phase": str(journal.phase),
            "lastJob": {
                "jobId": journal.last_job_id,
                "status": journal.last_status,
                "at": journal.last_at,
            }
            if journal.last_job_id
            else None,
        }

    def publish_trust_state(self) -> None:
        """Report the trust state to the named shadow, best effort (e.g. at start-up)."""
        try:
            self.connect()
        except (ChannelError, ConfigError) as exc:
            self._log.info("shadow_not_updated", error=str(exc))
            return
        self._report_shadow(self.read_journal())

    def report_state(self, channel: JobsChannel, journal: Journal | None = None) -> None:
        channel.update_shadow(self.settings.shadow_name, self.trust_state(journal))


def _same_roots(bundle: TrustBundle, live_bundle: bytes) -> bool:
    """True when the live bundle file holds exactly `bundle`'s roots (never when unreadable)."""
    try:
        live = TrustBundle.parse(live_bundle)
    except ConfigError:
        return False
    return set(live.fingerprints()) == set(bundle.fingerprints())


def _staged(path: str) -> str:
    return path + ".staged"


def _present(path: str | None) -> tuple[str, ...]:
    return () if path is None else (path,)


def device_client_with_endpoint(content: bytes, host: str, *, source: str) -> bytes:
    """Device Client's JSON configuration with its `endpoint` set to `host`.

    Unchanged bytes when it already names `host`; otherwise the JSON object is
    rewritten (4-space indent, as Device Client's own files are) with every other
    setting kept. Anything but a JSON object is a `ConfigError`: the transaction
    then fails `live-config` before any write.
    """
    try:
        body: Any = json.loads(content)
    except ValueError as exc:
        raise ConfigError(f"the Device Client configuration {source} is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ConfigError(f"the Device Client configuration {source} is not a JSON object")
    if body.get("endpoint") == host:
        return content
    body["endpoint"] = host
    return (json.dumps(body, indent=4) + "\n").encode()
