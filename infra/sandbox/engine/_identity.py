"""Device identity records: registered certificates, what issues new ones, why a connection fails.

A certificate is a principal: registered (RegisterCertificate,
RegisterCertificateWithoutCA) or created (CreateKeysAndCertificate), identified
by the SHA-256 of its DER encoding, and attached to things
(AttachThingPrincipal). Only the `_certificates` and `_principals` mechanisms
change these records, under the engine's lock.

Invariants:
- `_Certificate.things` and `EngineState.thing_principals` mirror each other
  (a thing's certificate ids in attach order; a certificate's thing names).
- `certificate_id` is `sha256(der).hexdigest()`; the same certificate is
  never registered twice.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Final, NamedTuple

from infra.sandbox.errors import SandboxError

#: What a device presents may be registered with one of these (UpdateCertificate too).
SETTABLE_STATUSES: Final = ("ACTIVE", "INACTIVE", "REVOKED")


class IssuedKeys(NamedTuple):
    """A new key pair and the certificate issued for it (PEM texts)."""

    certificate_pem: str
    public_key_pem: str
    private_key_pem: str


#: Issues a new key pair and certificate (CreateKeysAndCertificate).
CertificateIssuer = Callable[[], IssuedKeys]


class ConnectPolicy(StrEnum):
    """Which AWS IoT policy the sandbox enforces at CONNECT (`sandbox up --connect-policy`).

    Both need a registered ACTIVE certificate attached to a thing.
    """

    #: The project's device policy (infra/aws/device-policy.yaml): `iot:Connect` on
    #: `client/${iot:Connection.Thing.ThingName}` with `iot:Connection.Thing.IsAttached`:
    #: the client id must be the name of a thing the certificate is attached to.
    THING_NAME = "thing-name"
    #: The AWS IoT Device SDK v2 samples' policy: `iot:Connect` on `client/*` (any client
    #: id, an empty one included: the server assigns one), the Jobs and Shadow topics of
    #: the one thing the certificate is attached to.
    ANY_CLIENT_ID = "any-client-id"


class ConnectionRefusedByPolicyError(SandboxError):
    """A device connection the sandbox's device policy refuses; `reason` is a short tag."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _Certificate:
    __slots__ = (
        "arn",
        "ca_certificate_id",
        "certificate_id",
        "created_at",
        "customer_version",
        "generation_id",
        "last_modified_at",
        "mode",
        "not_after",
        "not_before",
        "pem",
        "status",
        "things",
    )

    def __init__(
        self,
        certificate_id: str,
        arn: str,
        pem: str,
        *,
        status: str,
        mode: str,
        ca_certificate_id: str | None,
        created_at: float,
        not_before: float,
        not_after: float,
        generation_id: str,
    ) -> None:
        self.certificate_id = certificate_id
        self.arn = arn
        self.pem = pem
        self.status = status
        self.mode = mode
        self.ca_certificate_id = ca_certificate_id
        self.created_at = created_at
        self.last_modified_at = created_at
        self.not_before = not_before
        self.not_after = not_after
        self.customer_version = 1
        self.generation_id = generation_id
        # thing name -> thingPrincipalType (EXCLUSIVE_THING | NON_EXCLUSIVE_THING), in attach order
        self.things: dict[str, str] = {}
