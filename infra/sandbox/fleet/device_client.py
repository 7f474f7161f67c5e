"""Simulated devices that run AWS IoT Device Client: the job document runs the real handler.

A Device Client device takes its next job the way Device Client's jobs feature
does (awslabs/aws-iot-device-client, `source/jobs/JobsFeature.cpp`,
`JobDocument.cpp`, `JobEngine.cpp`):

- the document is read as Device Client's schema: `"version"` present means the
  new schema (`steps[].action` with `name`, `type`, `input{handler, args, path}`,
  `runAsUser`, `allowStdErr`, `ignoreStepFailure`, optional `finalStep`); absent,
  the old one (`operation`, `args`, `path`, `allowStdErr`). A document without
  steps, or a step without name, type or handler, or of an unknown type, is
  REJECTED before anything runs;
- otherwise the execution goes IN_PROGRESS and each step runs
  `<path>/<handler> <runAsUser> <args...>` (no `path`: the handler is looked up
  on the device's PATH; `"default"`: Device Client's handler directory); a step fails on a
  non-zero exit code or on more stderr lines than `allowStdErr` (default 0);
  a failed step stops the job unless `ignoreStepFailure` is `"true"`; the job
  is SUCCEEDED or FAILED with statusDetails `reason` (and `stderr`).

The handler is the real `ca-migrate-handler.sh`, in a process of its own, on the
device's real files. Each device's files live below `<fleet root>/<thing>/fs`,
which stands for the device's `/` (a chroot, simulated by joining): absolute
paths in a step (`path`, arguments that start with `/`) are resolved inside it,
and a handler is only ever a file inside it (a job document never runs a host
command; one that is not there fails the step).
Its layout is the shipped sample's (`LAYOUT`), so a campaign's `device_client`
settings name those paths. The handler's probe is a real mutual-TLS handshake and
MQTT CONNECT with the sandbox's brokers, as the thing.

Device Client keeps its MQTT connection, on the endpoint its configuration named
when it started, until it is restarted: it reports the job there (`via` legacy
after a migrate). `restart()` is that restart.

What Device Client leaves unsaid and the simulation decides is in
`infra/sandbox/decisions.py` (Device Client devices).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

import device_handler
from device_handler.errors import ChannelError
from device_handler.memory import ExecutionView, JobsBackend, MemoryChannel
from infra.sandbox import decisions as d
from infra.sandbox.pki import SandboxPki

__all__ = [
    "HANDLER_SCRIPT",
    "LAYOUT",
    "DeviceClientDevice",
    "DeviceClientJob",
    "HandlerStep",
    "InvalidJobDocumentError",
    "parse_job_document",
    "step_failed",
]

log = structlog.get_logger(__name__)

#: The real handler script, run by every simulated Device Client device.
HANDLER_SCRIPT: Final = (
    Path(device_handler.__file__).resolve().parent / "device_client" / "ca-migrate-handler.sh"
)

#: Where a simulated Device Client device keeps the handler and its files (the sample's paths).
LAYOUT: Final = {
    "handler_path": "/opt/ca-migrate/handlers/ca-migrate-handler.sh",
    "device_toml": "/etc/ca-migrate/device.toml",
    "config_path": "/etc/.aws-iot-device-client/aws-iot-device-client.conf",
}
_HANDLER_DIR: Final = "/root/.aws-iot-device-client/jobs"  # Device Client's default, as root
_DEVICE_PATH: Final = ("/usr/local/bin", "/usr/bin", "/bin")  # the device's PATH, inside it
_MAX_DETAIL: Final = 1024  # statusDetails values: at most 1,024 characters


class InvalidJobDocumentError(ValueError):
    """Device Client would refuse this document (it reports the execution REJECTED)."""


@dataclass(frozen=True, slots=True)
class HandlerStep:
    """One runHandler action of a Device Client job document."""

    name: str
    handler: str
    args: tuple[str, ...] = ()
    path: str | None = None
    run_as_user: str = ""
    allow_stderr: int = 0
    ignore_failure: bool = False


@dataclass(frozen=True, slots=True)
class DeviceClientJob:
    """A Device Client job document, read as Device Client reads it."""

    steps: tuple[HandlerStep, ...]
    final_step: HandlerStep | None = None


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v if isinstance(v, str) else json.dumps(v) for v in value)


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _whole(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _action(obj: Any) -> HandlerStep:
    if not isinstance(obj, dict):
        raise InvalidJobDocumentError("a step's action is not a JSON object")
    name, kind = _text(obj, "name"), _text(obj, "type")
    if not name:
        raise InvalidJobDocumentError("required field Action Name is missing")
    if kind == "runCommand":
        raise InvalidJobDocumentError(d.DEVICE_CLIENT_RUN_COMMAND)
    if kind != "runHandler":
        raise InvalidJobDocumentError(f"action type {kind or '(missing)'} is not runHandler")
    raw_input = obj.get("input")
    given: Mapping[str, Any] = raw_input if isinstance(raw_input, dict) else {}
    handler = _text(given, "handler")
    if not handler:
        raise InvalidJobDocumentError("required field ActionInput Handler is missing")
    return HandlerStep(
        name=name,
        handler=handler,
        args=_strings(given.get("args")),
        path=given.get("path") if isinstance(given.get("path"), str) else None,
        run_as_user=_text(obj, "runAsUser"),
        allow_stderr=_whole(obj, "allowStdErr"),
        ignore_failure=_text(obj, "ignoreStepFailure") == "true",
    )


def parse_job_document(text: str) -> DeviceClientJob:
    """The job as Device Client reads `text`; `InvalidJobDocumentError` where it rejects it."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InvalidJobDocumentError(f"the job document is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidJobDocumentError("the job document is not a JSON object")
    if not isinstance(doc.get("version"), str):
        # The old schema: one runHandler step named after its operation.
        operation = _text(doc, "operation")
        if not operation:
            raise InvalidJobDocumentError("required field Steps is missing")
        return DeviceClientJob(
            steps=(
                HandlerStep(
                    name=operation,
                    handler=operation,
                    args=_strings(doc.get("args")),
                    path=doc.get("path") if isinstance(doc.get("path"), str) else None,
                    allow_stderr=_whole(doc, "allowStdErr"),
                ),
            )
        )
    raw_steps = doc.get("steps")
    steps = tuple(
        _action(s.get("action"))
        for s in (raw_steps if isinstance(raw_steps, list) else [])
        if isinstance(s, dict) and "action" in s
    )
    if not steps:
        raise InvalidJobDocumentError("required field Steps is missing")
    final = doc.get("finalStep")
    final_step = _action(final["action"]) if isinstance(final, dict) and "action" in final else None
    return DeviceClientJob(steps=steps, final_step=final_step)


def step_failed(exit_code: int, stderr_lines: int, allow_stderr: int) -> bool:
    """Whether Device Client counts a step as failed: a non-zero exit, or too much stderr."""
    return exit_code != 0 or stderr_lines > allow_stderr


def _printable(text: str) -> str:
    """The last characters of `text` that a statusDetails value may hold (no control ones)."""
    clean = "".join(c if c.isprintable() else " " for c in text).strip()
    return clean[-_MAX_DETAIL:]


@dataclass(frozen=True, slots=True)
class _Ran:
    failed: bool
    reason: str
    stderr: str


class DeviceClientDevice:
    """One simulated Device Client device: its files, its connection, its job engine.

    `root` is the device's directory below the fleet's root; the endpoint file,
    trust bundle and state directory there are the ones the agent devices keep,
    so the fleet's endpoint counts read Device Client devices the same way.
    """

    def __init__(
        self,
        thing: str,
        root: Path,
        pki: SandboxPki,
        *,
        overrides: Mapping[str, str],
        timeout: float = 120.0,
        verify_key: Path | None = None,
    ) -> None:
        self.thing = thing
        self.root = root
        self.fs = root / "fs"
        self._pki = pki
        self._overrides = dict(overrides)
        self._timeout = timeout
        # the document-signing public key the device pins (device.toml `signing_public_key`)
        self._verify_key = verify_key
        self._vias = {pki.hosts["legacy"]: "legacy", pki.hosts["ats"]: "ats"}
        self.connected_host: str | None = None  # what Device Client connected to at start

    def inside(self, device_path: str) -> Path:
        """Where the device's absolute path `device_path` is in this simulation."""
        return self.fs / device_path.lstrip("/")

    # ------------------------------------------------------------------ files
    def install(self) -> None:
        """Install the handler, device.toml and Device Client's configuration (idempotent).

        Expects the endpoint file and bundle of the device's factory configuration in
        `root` (the fleet's first boot writes them).
        """
        toml = self.inside(LAYOUT["device_toml"])
        if toml.exists():
            return
        credentials = self._pki.issue_thing_credentials(self.thing)
        handler = self.inside(LAYOUT["handler_path"])
        handler.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(HANDLER_SCRIPT, handler)
        handler.chmod(0o700)
        config = self.inside(LAYOUT["config_path"])
        config.parent.mkdir(parents=True, exist_ok=True)
        up = os.path.relpath(self.root, toml.parent)
        config.write_text(
            json.dumps(
                {
                    "endpoint": self._pki.hosts["legacy"],
                    "cert": str(credentials.cert_pem),
                    "key": str(credentials.key_pem),
                    "root-ca": str(self.root / "bundle.pem"),
                    "thing-name": self.thing,
                    "jobs": {"enabled": True, "handler-directory": _HANDLER_DIR},
                },
                indent=4,
            )
            + "\n"
        )
        overrides = "".join(f'"{k}" = "{v}"\n' for k, v in sorted(self._overrides.items()))
        pinned = (
            ""
            if self._verify_key is None
            else f'signing_public_key = "{self._verify_key.resolve()}"\n'
        )
        toml.parent.mkdir(parents=True, exist_ok=True)
        toml.write_text(
            f'thing_name = "{self.thing}"\n'
            f'region = "{self._pki.region}"\n'
            f'client_cert = "{credentials.cert_pem}"\n'
            f'client_key = "{credentials.key_pem}"\n'
            f'endpoint_file = "{up}/endpoint.json"\n'
            f'trust_bundle = "{up}/bundle.pem"\n'
            f'state_dir = "{up}/state"\n'
            f'catalog = "{self._pki.ats_catalog}"\n'
            f"{pinned}"
            "dead_man_seconds = 30\n"
            "connect_timeout_seconds = 5\n"
            "max_attempts = 2\n"
            f"\n[connect_override]\n{overrides}"
        )

    def configured_host(self) -> str:
        """The endpoint in Device Client's configuration (what a restart connects to)."""
        try:
            config = json.loads(self.inside(LAYOUT["config_path"]).read_text())
        except (OSError, ValueError):
            return self._pki.hosts["legacy"]
        host = config.get("endpoint") if isinstance(config, dict) else None
        return host if isinstance(host, str) else self._pki.hosts["legacy"]

    def restart(self) -> None:
        """Device Client restarts: it connects on the endpoint its configuration names now."""
        self.connected_host = self.configured_host()

    # ------------------------------------------------------------------ jobs
    def run_next(self, backend: JobsBackend[ExecutionView]) -> str:
        """Take the next pending job, run it as Device Client does; its final status or NONE."""
        self.install()
        if self.connected_host is None:
            self.restart()
        host = self.connected_host or self._pki.hosts["legacy"]
        channel = MemoryChannel(backend, self.thing, via=self._vias.get(host, host))
        execution = channel.next_execution()
        if execution is None:
            return "NONE"
        version = execution.version_number
        try:
            document = execution.document
            text = document if isinstance(document, str) else json.dumps(document)
            job = parse_job_document(text)
        except InvalidJobDocumentError as exc:
            log.warning("device_client_rejected", thing=self.thing, job_id=execution.job_id)
            channel.update(
                execution.job_id,
                "REJECTED",
                {"reason": _printable(f"Unable to execute job, invalid job document: {exc}")},
                expected_version=version,
                execution_number=execution.execution_number,
            )
            return "REJECTED"
        if execution.status != "IN_PROGRESS":
            version = channel.update(
                execution.job_id,
                "IN_PROGRESS",
                {},
                expected_version=version,
                execution_number=execution.execution_number,
            )
        ran = self._run_job(job)
        details = {"reason": ran.reason}
        if ran.stderr:
            details["stderr"] = ran.stderr
        status = "FAILED" if ran.failed else "SUCCEEDED"
        try:
            channel.update(
                execution.job_id,
                status,
                details,
                expected_version=version,
                execution_number=execution.execution_number,
            )
        except ChannelError as exc:  # canceled or timed out meanwhile: nothing to report
            log.info("device_client_update_refused", thing=self.thing, error=str(exc))
        return status

    def _run_job(self, job: DeviceClientJob) -> _Ran:
        last = _Ran(failed=False, reason="job executed successfully", stderr="")
        for step in job.steps:
            ran = self._run_step(step)
            if ran.failed and not step.ignore_failure:
                return ran
            last = ran if not step.ignore_failure else last
        if job.final_step is not None:
            ran = self._run_step(job.final_step)
            if ran.failed and not job.final_step.ignore_failure:
                return ran
        return last

    def _command(self, step: HandlerStep) -> Path | None:
        """The handler's file inside the device, or None when it is not there.

        Never a file outside the device's `/`: a document's `path` or `handler` that
        climbs out (`..`) finds nothing, and with no `path` the device's own PATH
        directories are searched, not the host's.
        """
        if step.path == "default":
            candidates = [self.inside(_HANDLER_DIR) / step.handler]
        elif step.path:
            candidates = [self.inside(step.path) / step.handler]
        else:
            candidates = [self.inside(d) / step.handler for d in _DEVICE_PATH]
        top = self.fs.resolve()
        for candidate in candidates:
            found = candidate.resolve()
            if found.is_relative_to(top) and found.is_file():
                return found
        return None

    def _run_step(self, step: HandlerStep) -> _Ran:
        command = self._command(step)
        if command is None:
            return _Ran(
                failed=True,
                reason=_printable(f"step {step.name}: handler {step.handler} not found"),
                stderr="",
            )
        args = [str(self.inside(a)) if a.startswith("/") else a for a in step.args]
        argv = [str(command), step.run_as_user, *args]
        env = {**os.environ, "PYTHON": sys.executable}
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                timeout=self._timeout,
                check=False,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return _Ran(
                failed=True, reason=_printable(f"cannot run {step.handler}: {exc}"), stderr=""
            )
        stderr = done.stderr.decode("utf-8", "replace")
        lines = len(stderr.splitlines())
        failed = step_failed(done.returncode, lines, step.allow_stderr)
        reason = f"step {step.name} exited {done.returncode}" + (
            f" with {lines} lines on stderr (allowStdErr {step.allow_stderr})" if lines else ""
        )
        log.info(
            "device_client_step",
            thing=self.thing,
            step=step.name,
            exit_code=done.returncode,
            stderr_lines=lines,
            failed=failed,
        )
        return _Ran(failed=failed, reason=_printable(reason), stderr=_printable(stderr))
