"""An in-memory `JobsChannel`: the agent's real code path without a broker.

Fleet simulations run the full transaction for many devices through this
channel; tests use it to drive the agent deterministically. It talks to any
`JobsBackend`: the calls of the sandbox's Jobs data plane, declared here as a
Protocol because the device side never imports the sandbox (the simulator
adapts the sandbox engine to it).

Invariants:
- Per-device cost is one small object; nothing is copied but the strings the
  backend returns.
- Errors the backend raises with a string `code` attribute (the Jobs
  rejection code) become `ChannelRejected`; a `ResourceNotFound` on `$next`
  means nothing is pending.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from device_handler.channel import JobExecution, JobsChannel
from device_handler.errors import ChannelError, ChannelRejected
from device_handler.fsops import StrPath
from device_handler.trust import EndpointConfig

__all__ = ["ExecutionView", "JobsBackend", "MemoryChannel", "MemoryConnector"]


class ExecutionView(Protocol):
    """The fields of an execution snapshot the device reads."""

    @property
    def job_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def status_details(self) -> Mapping[str, str]: ...
    @property
    def version_number(self) -> int: ...
    @property
    def execution_number(self) -> int: ...
    @property
    def job_document(self) -> str: ...


View_co = TypeVar("View_co", bound=ExecutionView, covariant=True)


class JobsBackend(Protocol[View_co]):
    """The Jobs data-plane calls a device makes: the one declaration of them.

    Generic in what an execution comes back as: the device reads `ExecutionView`'s
    fields; the sandbox's `JobsDataPlane` extends this with its richer snapshot and
    the calls only its front ends make.
    """

    def describe_execution(
        self, thing_name: str, job_id: str, *, execution_number: int | None
    ) -> View_co:
        """`{jobId}/get` / DescribeJobExecution; `job_id` may be "$next"; ResourceNotFound."""
        ...

    def update_execution(
        self,
        thing_name: str,
        job_id: str,
        *,
        status: str,
        status_details: Mapping[str, str] | None,
        expected_version: int | None,
        execution_number: int | None,
        step_timeout_minutes: int | None,
        via: str,
    ) -> View_co:
        """`{jobId}/update` / UpdateJobExecution; returns the execution after the change."""
        ...


def _view(snapshot: ExecutionView) -> JobExecution:
    return JobExecution(
        job_id=snapshot.job_id,
        status=snapshot.status,
        document=snapshot.job_document,
        execution_number=snapshot.execution_number,
        version_number=snapshot.version_number,
        status_details=snapshot.status_details,
    )


def _translate(exc: Exception) -> ChannelError:
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return ChannelRejected(code, str(getattr(exc, "message", exc)))
    return ChannelError(f"jobs backend failed: {type(exc).__name__}: {exc}")


class MemoryChannel:
    """A `JobsChannel` for one thing over a `JobsBackend`, labelled with `via`."""

    __slots__ = ("_backend", "_closed", "_shadows", "_thing", "_via", "_wake")

    def __init__(
        self,
        backend: JobsBackend[ExecutionView],
        thing_name: str,
        *,
        via: str,
        shadows: dict[str, dict[str, Any]] | None = None,
        wake: threading.Event | None = None,
    ) -> None:
        self._backend = backend
        self._thing = thing_name
        self._via = via
        self._shadows = shadows
        self._wake = wake
        self._closed = False

    @property
    def via(self) -> str:
        return self._via

    @property
    def supports_shadows(self) -> bool:
        return self._shadows is not None

    def _check_open(self) -> None:
        if self._closed:
            raise ChannelError(f"the {self._via} channel is closed")

    def next_execution(self) -> JobExecution | None:
        return self.describe("$next")

    def describe(self, job_id: str) -> JobExecution | None:
        self._check_open()
        try:
            snapshot = self._backend.describe_execution(self._thing, job_id, execution_number=None)
        except Exception as exc:
            error = _translate(exc)
            if isinstance(error, ChannelRejected) and error.code == "ResourceNotFound":
                return None
            raise error from exc
        return _view(snapshot)

    def update(
        self,
        job_id: str,
        status: str,
        details: Mapping[str, str],
        *,
        expected_version: int | None,
        execution_number: int | None,
    ) -> int | None:
        self._check_open()
        try:
            snapshot = self._backend.update_execution(
                self._thing,
                job_id,
                status=status,
                status_details=dict(details),
                expected_version=expected_version,
                execution_number=execution_number,
                step_timeout_minutes=None,
                via=self._via,
            )
        except Exception as exc:
            raise _translate(exc) from exc
        return snapshot.version_number

    def wait_for_jobs(self, timeout: float) -> bool:
        self._check_open()
        if self._wake is None:
            return False
        woke = self._wake.wait(timeout)
        self._wake.clear()
        return woke

    def update_shadow(self, shadow_name: str, reported: Mapping[str, Any]) -> None:
        self._check_open()
        if self._shadows is not None:
            self._shadows[shadow_name] = {"state": {"reported": dict(reported)}}

    def reported_state(self, shadow_name: str) -> Mapping[str, Any] | None:
        """The named shadow's reported state (None: no such shadow)."""
        self._check_open()
        if self._shadows is None or shadow_name not in self._shadows:
            return None
        reported: Mapping[str, Any] = (
            self._shadows[shadow_name].get("state", {}).get("reported", {})
        )
        return dict(reported)

    def close(self) -> None:
        self._closed = True


class MemoryConnector:
    """Opens `MemoryChannel`s; `vias` names each endpoint host's connection.

    `check(endpoint, ca_file)` runs before a channel is handed out; tests pass
    a real TLS probe against local servers so that "the agent can connect"
    still means a real handshake with the files on disk. It raises to refuse.
    """

    def __init__(
        self,
        backend: JobsBackend[ExecutionView],
        thing_name: str,
        *,
        vias: Mapping[str, str] | None = None,
        check: Callable[[EndpointConfig, StrPath], None] | None = None,
        shadows: dict[str, dict[str, Any]] | None = None,
        wake: threading.Event | None = None,
    ) -> None:
        self._backend = backend
        self._thing = thing_name
        self._vias = dict(vias or {})
        self._check = check
        self._shadows = shadows
        self._wake = wake
        self.connections: list[str] = []

    def connect(self, endpoint: EndpointConfig, ca_file: StrPath, timeout: float) -> JobsChannel:
        del timeout  # nothing to wait for in memory; `check` applies its own
        if self._check is not None:
            try:
                self._check(endpoint, ca_file)
            except Exception as exc:
                raise ChannelError(f"cannot connect to {endpoint.label()}: {exc}") from exc
        via = self._vias.get(endpoint.host, endpoint.host)
        self.connections.append(via)
        return MemoryChannel(
            self._backend, self._thing, via=via, shadows=self._shadows, wake=self._wake
        )
