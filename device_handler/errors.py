"""The device handler's errors, classified by what the caller should do.

```
DeviceHandlerError
 ├── ConfigError          the device configuration file is wrong: fix it and restart
 ├── JournalError         the journal cannot be read: inspect the state directory
 ├── StateLocked          another agent process holds the device's state directory
 ├── DocumentRejected     a job document failed validation (.code, .message): report REJECTED
 ├── ProbeFailed          a TLS handshake to an endpoint did not succeed (.reason code)
 ├── ChannelError         the jobs channel failed (connect, publish, timeout)
 │    └── ChannelRejected the service refused a request (.code as AWS IoT Jobs names it)
 └── PowerCut             raised only by crash-injection file layers in tests and simulations
```

Lower-level errors (OSError, ssl.SSLError, awscrt exceptions) are translated
once, where they happen, with `raise ... from exc`.
"""

from __future__ import annotations

__all__ = [
    "ChannelError",
    "ChannelRejected",
    "ConfigError",
    "DeviceHandlerError",
    "DocumentRejected",
    "JournalError",
    "PowerCut",
    "ProbeFailed",
    "StateLocked",
]


class DeviceHandlerError(Exception):
    """Root of the device handler's errors."""


class ConfigError(DeviceHandlerError):
    """The device configuration is invalid; the message says which setting and how to fix it."""


class JournalError(DeviceHandlerError):
    """The transaction journal cannot be read or written."""


class StateLocked(DeviceHandlerError):  # noqa: N818 - names the state it reports
    """Another agent process holds the device's state directory; only one may write it."""


class DocumentRejected(DeviceHandlerError):  # noqa: N818 - names the outcome, REJECTED
    """A job document failed validation; nothing was written. `code` is short and machine-read."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProbeFailed(DeviceHandlerError):  # noqa: N818 - names the outcome
    """A TLS handshake to an endpoint failed; `reason` is a short code (tls-verify, timeout...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class ChannelError(DeviceHandlerError):
    """The jobs channel could not carry a request (not connected, timed out, transport error)."""


class ChannelRejected(ChannelError):  # noqa: N818 - names the service's answer
    """The service rejected a request; `code` is the AWS IoT Jobs code (VersionMismatch...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PowerCut(DeviceHandlerError):  # noqa: N818 - it names the event being simulated
    """A simulated loss of power, raised by crash-injection file layers."""
