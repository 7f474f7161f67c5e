"""The sandbox's exceptions.

```
SandboxError                  root of everything the sandbox raises on purpose
├── ServiceError              a request AWS would reject; front ends render it as an
│                             AWS error (`code` is the botocore exception name)
├── DataPlaneError            (dataplane) the device-facing counterpart of ServiceError:
│                             an MQTT rejection code; the `iot-jobs-data` front end
│                             maps it to that service's exception names
├── SandboxStartError         the sandbox cannot start (port taken, MQTT part missing)
├── ConnectionRefusedByPolicyError  (engine._identity) a device CONNECT the device
│                             policy refuses (certificate not ACTIVE, not attached,
│                             client id not the thing's name); the MQTT front closes it
├── PkiError                  (pki) the PKI directory cannot be used as it is
├── BrokerError               (mqtt._broker) mosquitto cannot be started or reached
├── MqttError                 (mqtt._dataplane) the MQTT data plane cannot start
├── PortUnavailableError      a fixed MQTT port (mqtt._ports) is invalid, taken or
│                             privileged: `sandbox up` exits 2
├── TrustStoreError           (truststore) the system trust store cannot be changed as asked
├── ShadowRejectedError       (mqtt._shadow) a named-shadow request the service rejects
├── SdkDeviceError            (mqtt.sdkdevice) an SDK device cannot connect or finish a job
├── FleetSpecError            (fleet.profiles) the fleet file is invalid
└── FleetWorkerError          (fleet.sharded) a fleet worker process failed
```

Every one of them carries a message that says what to do, so a front end (the
`ca-migrate sandbox` and `demo` commands) prints it and exits 1 (2 for bad input)
by catching `SandboxError`, never showing a traceback.
"""

from __future__ import annotations

__all__ = ["PortUnavailableError", "SandboxError", "SandboxStartError", "ServiceError"]


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


class PortUnavailableError(SandboxError):
    """A fixed MQTT port is invalid, taken or not permitted (the message says what to do)."""
