"""The ca-migration transaction for devices that run AWS IoT Device Client.

Device Client owns the MQTT connection and reports the job's status itself
from the handler's exit code, so this handler runs the agent's transaction
with a local channel: status updates are collected instead of published,
and "reconnect on the new configuration" is a real mutual-TLS handshake with
the committed endpoint and bundle (the dead-man switch still applies).

Invocation. Device Client runs `<handler> <runAsUser> <args...>` for a
`runHandler` step of the new job document schema (`"version": "1.0"`,
`steps[].action.input.args`); the first argument is the step's `runAsUser`
(it may be empty). Old-schema documents (`operation`, `args`) are run the same
way by current Device Client releases (with an empty user) and with the args
alone by older ones and by hand. So a first argument that is not an option is
taken as the user: logged, never used to switch user (the handler needs write
access to the device's files, so it runs as Device Client's user). The args:
  --config device.toml               the same configuration file as the agent
  --document PATH | --document-json TEXT   the ca-migration/1 document
  [--job-id ID]                      defaults to the document's hash
  [--device-client-config PATH]      Device Client's JSON config: the third file of
                                     the transaction, its `endpoint` staged, committed
                                     and rolled back with the endpoint file and bundle

Output, for any input: nothing on stderr, and the report (one JSON object)
as the last line of stdout. Exit code 0 when the transaction SUCCEEDED, 1
when it FAILED or was REJECTED (a document that is not UTF-8, over the size
limit, not JSON or not valid is REJECTED before anything is written or
connected), 2 when nothing was tried: a configuration error (`reason:
config`) or wrong arguments, a document file missing or unreadable (`reason:
usage`). Device Client reports every non-zero exit as FAILED; the reason is in
the report. Device Client must be restarted after a
successful migrate to connect on the new endpoint (its `root-ca` should be
the trust bundle path, which the transaction replaces in place): with
`device_client_restart` in device.toml the handler schedules that restart,
detached and delayed (`device_handler/device_client/restart.py` says why).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import structlog

from device_handler.agent import Agent
from device_handler.channel import JobExecution, JobsChannel
from device_handler.cli import configure_logging
from device_handler.config import DeviceConfig, load_config
from device_handler.errors import (
    ChannelError,
    ConfigError,
    DeviceHandlerError,
    DocumentRejected,
    ProbeFailed,
)
from device_handler.fsops import StrPath
from device_handler.lock import state_lock
from device_handler.probe import probe
from device_handler.trust import EndpointConfig
from job_documents import MAX_DOCUMENT_CHARS

__all__ = ["LocalChannel", "LocalConnector", "main", "split_run_as_user"]

log = structlog.get_logger(__name__)


class LocalChannel:
    """A channel that keeps the job's status updates for the handler to print."""

    def __init__(self, execution: JobExecution, via: str, reports: list[dict[str, Any]]) -> None:
        self._execution = execution
        self._via = via
        self._reports = reports
        self._version = execution.version_number or 1

    @property
    def via(self) -> str:
        return self._via

    @property
    def supports_shadows(self) -> bool:
        return False

    def next_execution(self) -> JobExecution | None:
        return self._execution

    def describe(self, job_id: str) -> JobExecution | None:
        return self._execution if job_id == self._execution.job_id else None

    def update(
        self,
        job_id: str,
        status: str,
        details: Mapping[str, str],
        *,
        expected_version: int | None,
        execution_number: int | None,
    ) -> int | None:
        del expected_version, execution_number
        self._reports.append({"jobId": job_id, "status": status, "statusDetails": dict(details)})
        self._version += 1
        return self._version

    def wait_for_jobs(self, timeout: float) -> bool:
        del timeout
        return False

    def update_shadow(self, shadow_name: str, reported: Mapping[str, Any]) -> None:
        del shadow_name, reported

    def close(self) -> None:
        return


class LocalConnector:
    """Connects by a real mutual-TLS handshake, then hands out a `LocalChannel`."""

    def __init__(self, config: DeviceConfig, execution: JobExecution) -> None:
        self._config = config
        self._execution = execution
        self.reports: list[dict[str, Any]] = []

    def connect(self, endpoint: EndpointConfig, ca_file: StrPath, timeout: float) -> JobsChannel:
        try:
            probe(
                endpoint,
                ca_file,
                client_id=self._config.thing_name,
                identity=self._config.identity(),
                overrides=self._config.connect_override,
                timeout=timeout,
            )
        except ProbeFailed as exc:
            raise ChannelError(f"cannot reach {endpoint.label()}: {exc}") from exc
        return LocalChannel(self._execution, endpoint.label(), self.reports)


def split_run_as_user(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(runAsUser, the handler's own args) from the arguments Device Client passes.

    A user name never starts with "-", and every argument of the handler's own is an
    option, so a leading non-option (the empty string included) is Device Client's user.
    """
    args = list(argv)
    if args and not args[0].startswith("-"):
        return args[0], args[1:]
    return None, args


class _UsageError(Exception):
    """The handler's arguments are wrong (argparse would print to stderr and exit)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message}; {' '.join(self.format_usage().split())}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ca-migrate-handler", add_help=False)
    parser.add_argument("--config", type=Path, required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--document", type=Path)
    source.add_argument("--document-json")
    parser.add_argument("--job-id")
    parser.add_argument("--device-client-config", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one transaction; whatever the input, nothing on stderr and the report last on stdout.

    Device Client fails a job on any line of stderr (allowStdErr defaults to 0), so
    stderr is stdout for the whole call: a warning or a stray message lands before the
    report, which stays the last line.
    """
    with contextlib.redirect_stderr(sys.stdout):
        try:
            code, report = _run(sys.argv[1:] if argv is None else argv)
        except Exception as exc:  # noqa: BLE001 - for any input: a report, never a trace
            code, report = 1, {"status": "FAILED", "reason": "handler", "message": _what(exc)}
        _say(report)
    return code


def _run(argv: list[str]) -> tuple[int, dict[str, Any]]:
    run_as_user, argv = split_run_as_user(argv)
    try:
        args = _parser().parse_args(argv)
    except _UsageError as exc:
        return 2, {"status": "FAILED", "reason": "usage", "message": str(exc)}
    # Log events go to stdout, before the report, which stays the last line.
    configure_logging(verbose=False, stream=sys.stdout)
    if run_as_user is not None:
        log.info("device_client_invocation", run_as_user=run_as_user)
    try:
        config = load_config(args.config)
        from device_handler.validation import make_validator

        raw = _document_bytes(args)
        job_id = args.job_id or _job_id(raw)
        with state_lock(config.state_dir):
            validator = make_validator(config.validation_settings())
            # Checked before anything else, the live endpoint's handshake included:
            # a document that is not even text is refused here as the agent would.
            try:
                text = _text(raw)
                validator(text)
            except DocumentRejected as exc:
                log.warning("job_rejected", job_id=job_id, reason=exc.code)
                return 1, _rejected(job_id, exc)
            execution = JobExecution(
                job_id=job_id, status="QUEUED", document=text, version_number=1
            )
            connector = LocalConnector(config, execution)
            settings = config.agent_settings()
            if args.device_client_config is not None:
                paths = settings.paths.with_device_client_config(
                    args.device_client_config.resolve()
                )
                settings = replace(settings, paths=paths)
            agent = Agent(settings, validator, connector)
            agent.recover()
            outcome = agent.handle(execution)
    except _UsageError as exc:
        return 2, {"status": "FAILED", "reason": "usage", "message": str(exc)}
    except ConfigError as exc:
        return 2, {"status": "FAILED", "reason": "config", "message": str(exc)}
    except (DeviceHandlerError, OSError) as exc:
        return 1, {"status": "FAILED", "reason": "handler", "message": str(exc)}
    final = connector.reports[-1] if connector.reports else {"status": outcome.status}
    if outcome.status != "SUCCEEDED":
        return 1, final
    if config.device_client_restart is not None:
        from device_handler.device_client.restart import schedule_restart

        restart = schedule_restart(
            config.device_client_restart, config.device_client_restart_delay_seconds
        )
        final = {**final, "deviceClientRestart": restart}
    return 0, final


#: The most a document file may hold: AWS's job document limit is 32,768 characters,
#: of at most 4 UTF-8 bytes each. Larger files are refused without being read whole.
MAX_DOCUMENT_BYTES = 4 * MAX_DOCUMENT_CHARS


def _document_bytes(args: argparse.Namespace) -> bytes:
    """The document as given, bounded; an unreadable file is a usage error."""
    if args.document_json is not None:
        # Arguments that are not UTF-8 reach Python as surrogate escapes; get the bytes back.
        data: bytes = os.fsencode(args.document_json)
        return data[: MAX_DOCUMENT_BYTES + 1]
    path: Path = args.document
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise _UsageError(f"--document {path} is not a regular file")
        with path.open("rb") as file:
            return file.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise _UsageError(f"--document {path} cannot be read: {exc.strerror or exc}") from exc


def _text(raw: bytes) -> str:
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise DocumentRejected(
            "too-large",
            f"the document is over {MAX_DOCUMENT_BYTES} bytes; AWS IoT job documents hold "
            f"at most {MAX_DOCUMENT_CHARS} characters",
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentRejected(
            "invalid", f"the document is not UTF-8 text (byte {exc.start} is not valid)"
        ) from exc


def _rejected(job_id: str, exc: DocumentRejected) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "status": "REJECTED",
        "statusDetails": {"step": "validate", "reason": exc.code, "message": exc.message},
    }


def _what(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text[:500]}" if text else type(exc).__name__


def _say(report: Mapping[str, Any]) -> None:
    """The handler's one line of output: the report Device Client shows as stdout."""
    sys.stdout.write(json.dumps(report, sort_keys=True) + "\n")


def _job_id(raw: bytes) -> str:
    import hashlib

    return "doc-" + hashlib.sha256(raw).hexdigest()[:16]


if __name__ == "__main__":
    sys.exit(main())
