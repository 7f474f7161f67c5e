"""How the agent talks to AWS IoT Jobs: one small interface, several transports.

`JobsChannel` is one live connection to one endpoint; `Connector` opens one
given an endpoint configuration and a CA bundle. The MQTT implementation
(`device_handler.mqtt`) uses the AWS IoT Device SDK v2 over mutual TLS; the
in-memory one (`device_handler.memory`) drives the same agent code against any
object with the Jobs data-plane calls, for tests and fleet simulations.

Invariants:
- A channel never decides anything: it carries requests and translates its
  transport's errors into `ChannelError` / `ChannelRejected` once.
- `via` names the connection ("legacy", "ats", or the endpoint host) in logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from device_handler.fsops import StrPath
from device_handler.trust import EndpointConfig

__all__ = ["Connector", "JobExecution", "JobsChannel"]


@dataclass(frozen=True, slots=True)
class JobExecution:
    """One job execution as the device sees it."""

    job_id: str
    status: str
    document: str | Mapping[str, Any]
    execution_number: int | None = None
    version_number: int | None = None
    status_details: Mapping[str, str] = field(default_factory=dict)


class JobsChannel(Protocol):
    """One connection over which the device receives jobs and reports on them."""

    @property
    def via(self) -> str:
        """A short name for this connection, for logs."""
        ...

    @property
    def supports_shadows(self) -> bool:
        """Whether `update_shadow` reaches a device shadow service."""
        ...

    def next_execution(self) -> JobExecution | None:
        """The `$next` pending execution with its document, or None when nothing is pending."""
        ...

    def describe(self, job_id: str) -> JobExecution | None:
        """The execution of `job_id` for this thing, or None when the service does not know it."""
        ...

    def update(
        self,
        job_id: str,
        status: str,
        details: Mapping[str, str],
        *,
        expected_version: int | None,
        execution_number: int | None,
    ) -> int | None:
        """Set the execution's status; returns the new version number when the service says it.

        Raises `ChannelRejected` (VersionMismatch, InvalidStateTransition,
        TerminalStateReached...) or `ChannelError`.
        """
        ...

    def wait_for_jobs(self, timeout: float) -> bool:
        """Block until the service notifies a change of pending jobs, or `timeout` seconds."""
        ...

    def update_shadow(self, shadow_name: str, reported: Mapping[str, Any]) -> None:
        """Publish `reported` state to the thing's named shadow (no-op without shadows)."""
        ...

    def close(self) -> None:
        """Disconnect; idempotent."""
        ...


class Connector(Protocol):
    """Opens a `JobsChannel` to an endpoint, trusting exactly the given CA bundle."""

    def connect(self, endpoint: EndpointConfig, ca_file: StrPath, timeout: float) -> JobsChannel:
        """Connect within `timeout` seconds or raise `ChannelError`."""
        ...
