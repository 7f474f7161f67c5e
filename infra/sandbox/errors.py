"""The sandbox's exceptions.

```
SandboxError                  root of everything the sandbox raises on purpose
├── ServiceError              a request AWS would reject; front ends render it as an
│                             AWS error (`code` is the botocore exception name)
└── SandboxStartError         the sandbox cannot start (port taken, MQTT part missing)
```

`infra.sandbox.dataplane.DataPlaneError` is the device-facing counterpart of
`ServiceError` (MQTT rejection codes); the `iot-jobs-data` front end maps it to
that service's exception names.
"""

from __future__ import annotations

__all__ = ["SandboxError", "SandboxStartError", "ServiceError"]


class SandboxError(Exception):
    """Root of the sandbox's exceptions."""


class ServiceError(SandboxError):
    """A request the emulated service rejects, with the AWS error code and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def invalid_request(message: str) -> ServiceError:
    """An `InvalidRequestException` (400)."""
    return ServiceError("InvalidRequestException", message, 400)


def not_found(message: str) -> ServiceError:
    """A `ResourceNotFoundException` (404)."""
    return ServiceError("ResourceNotFoundException", message, 404)


def already_exists(message: str) -> ServiceError:
    """A `ResourceAlreadyExistsException` (409)."""
    return ServiceError("ResourceAlreadyExistsException", message, 409)


class SandboxStartError(SandboxError):
    """The sandbox could not start; the message says what to install or change."""
