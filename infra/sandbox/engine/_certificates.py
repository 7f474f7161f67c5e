"""Certificates: registration, issuing, status, deletion, listing, and their persistence.

The control plane's certificate calls (CreateKeysAndCertificate,
RegisterCertificate, RegisterCertificateWithoutCA, DescribeCertificate,
ListCertificates, UpdateCertificate, DeleteCertificate) with AWS's shapes and
errors, and what the MQTT front reads of them (status, PEM, trust anchors).
Attaching certificates to things and the connect rule are `_principals`.

Invariants:
- A certificate's id is the SHA-256 of its DER encoding; its ARN is
  `arn:<partition>:iot:<region>:<account>:cert/<id>`.
- A REVOKED certificate never changes status again; an ACTIVE one, or one
  attached to a thing, is never deleted.
- Listeners hear every certificate id whose registration, status or existence
  changed, after the lock is released (the MQTT front closes the connections
  of a certificate that left ACTIVE).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from infra.sandbox import decisions as d
from infra.sandbox.engine._identity import (
    SETTABLE_STATUSES,
    IssuedKeys,
    _Certificate,
)
from infra.sandbox.engine._state import EngineState
from infra.sandbox.errors import ServiceError, already_exists, invalid_request, not_found
from job_documents.x509_issuer import issue_ca, issue_leaf, new_key, subject_name


def _validation(message: str) -> ServiceError:
    return ServiceError("CertificateValidationException", message, 400)


def _state_error(message: str) -> ServiceError:
    return ServiceError("CertificateStateException", message, 406)


def _certificate_id(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def certificate_id_of(pem: str) -> str:
    """The certificate id AWS gives a PEM certificate: the SHA-256 of its DER encoding."""
    return _certificate_id(_load(pem, "certificate"))


def _load(pem: str, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, UnicodeEncodeError) as exc:
        raise _validation(
            f"The {what} is not a PEM-encoded X.509 certificate; give the text of the "
            "certificate file (-----BEGIN CERTIFICATE----- ...)"
        ) from exc


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _announce(state: EngineState, certificate_id: str) -> None:
    """Tell the certificate listeners (outside the lock) that `certificate_id` changed."""
    with state.lock:
        listeners = list(state.certificate_listeners)
    for listener in listeners:
        listener(certificate_id)


def add_listener(state: EngineState, listener: Callable[[str], None]) -> None:
    with state.lock:
        state.certificate_listeners.append(listener)


def remove_listener(state: EngineState, listener: Callable[[str], None]) -> None:
    with state.lock:
        if listener in state.certificate_listeners:
            state.certificate_listeners.remove(listener)


def _registration_status(params: Mapping[str, Any], *, default: str = "INACTIVE") -> str:
    status = params.get("status")
    if status is None:
        flag = params.get("setAsActive")
        return default if flag is None else ("ACTIVE" if flag else "INACTIVE")
    if status not in SETTABLE_STATUSES:
        raise invalid_request(
            f"A certificate cannot be registered with status {status}; "
            f"use one of {', '.join(SETTABLE_STATUSES)}"
        )
    return str(status)


def _add(
    state: EngineState,
    cert: x509.Certificate,
    *,
    status: str,
    mode: str,
    ca_certificate_id: str | None,
) -> _Certificate:
    certificate_id = _certificate_id(cert)
    with state.lock:
        if certificate_id in state.certificates:
            raise already_exists(
                f"The certificate is already registered (certificateId {certificate_id})"
            )
        record = _Certificate(
            certificate_id,
            state.arn("cert", certificate_id),
            _pem(cert),
            status=status,
            mode=mode,
            ca_certificate_id=ca_certificate_id,
            created_at=state.now(),
            not_before=cert.not_valid_before_utc.timestamp(),
            not_after=cert.not_valid_after_utc.timestamp(),
            generation_id=str(uuid.uuid4()),
        )
        state.certificates[certificate_id] = record
        state.changed()
    _announce(state, certificate_id)
    return record


def _created(record: _Certificate) -> dict[str, Any]:
    return {"certificateArn": record.arn, "certificateId": record.certificate_id}


# ----------------------------------------------------------------- registration
def trust_ca_certificate(state: EngineState, pem: str) -> str:
    """Make a CA certificate one devices may be registered under (sandbox set-up, not an API)."""
    cert = _load(pem, "CA certificate")
    ca_id = _certificate_id(cert)
    with state.lock:
        state.ca_certificates[ca_id] = _pem(cert)
    return ca_id


def _ephemeral_issuer(state: EngineState) -> Callable[[], IssuedKeys]:
    """A CA made in memory, for a sandbox without a PKI (no MQTT data plane)."""
    now = datetime.now(UTC)
    ca_key = new_key("ec-p256")
    ca = issue_ca(
        subject_name("Sandbox stand-in for the AWS IoT certificate authority"),
        ca_key,
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=3650),
    )
    trust_ca_certificate(state, _pem(ca))

    def issue() -> IssuedKeys:
        key = new_key("rsa-2048")
        start = datetime.now(UTC)
        cert = issue_leaf(
            subject_name(d.ISSUED_CERTIFICATE_COMMON_NAME),
            key,
            issuer=ca,
            issuer_key=ca_key,
            not_before=start - timedelta(minutes=5),
            not_after=start + timedelta(days=d.ISSUED_CERTIFICATE_DAYS),
            usages=("client",),
        )
        return _issued(cert, key)

    return issue


def _issued(cert: x509.Certificate, key: Any) -> IssuedKeys:
    return IssuedKeys(
        certificate_pem=_pem(cert),
        public_key_pem=key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
        private_key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode(),
    )


def create_keys_and_certificate(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        if state.certificate_issuer is None:
            state.certificate_issuer = _ephemeral_issuer(state)
        issuer = state.certificate_issuer
    issued = issuer()
    cert = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    ca_id = _issuer_ca_id(state, cert)
    status = "ACTIVE" if params.get("setAsActive") else "INACTIVE"
    record = _add(state, cert, status=status, mode="DEFAULT", ca_certificate_id=ca_id)
    return _created(record) | {
        "certificatePem": record.pem,
        "keyPair": {"PublicKey": issued.public_key_pem, "PrivateKey": issued.private_key_pem},
    }


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _issuer_ca_id(state: EngineState, cert: x509.Certificate) -> str | None:
    """The id of the registered CA certificate that signed `cert`, if any."""
    with state.lock:
        cas = dict(state.ca_certificates)
    for ca_id, pem in cas.items():
        if _signed_by(cert, x509.load_pem_x509_certificate(pem.encode())):
            return ca_id
    return None


def register_certificate(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    status = _registration_status(params)
    cert = _load(params["certificatePem"], "certificatePem")
    given = params.get("caCertificatePem")
    if given is not None:
        ca = _load(given, "caCertificatePem")
        ca_id = _certificate_id(ca)
        with state.lock:
            registered = ca_id in state.ca_certificates
        if not registered:
            raise _validation(
                f"The CA certificate {ca_id} is not registered in this account; use "
                "RegisterCertificateWithoutCA, or a certificate issued by a registered CA"
            )
        if not _signed_by(cert, ca):
            raise _validation("The certificate is not signed by the given caCertificatePem")
    else:
        found = _issuer_ca_id(state, cert)
        if found is None:
            raise _validation(
                "The certificate's issuer is not a registered CA certificate; use "
                "RegisterCertificateWithoutCA to register it without a CA"
            )
        ca_id = found
    record = _add(state, cert, status=status, mode="DEFAULT", ca_certificate_id=ca_id)
    return _created(record)


def register_certificate_without_ca(
    state: EngineState, params: Mapping[str, Any]
) -> dict[str, Any]:
    status = _registration_status(params)
    cert = _load(params["certificatePem"], "certificatePem")
    record = _add(state, cert, status=status, mode="SNI_ONLY", ca_certificate_id=None)
    return _created(record)


# ---------------------------------------------------------------- description
def _certificate(state: EngineState, certificate_id: str) -> _Certificate:
    record = state.certificates.get(certificate_id.lower().removeprefix("0x"))
    if record is None:
        raise not_found(f"The certificate {certificate_id} cannot be found.")
    return record


def describe_certificate(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        c = _certificate(state, params["certificateId"])
        description: dict[str, Any] = {
            "certificateArn": c.arn,
            "certificateId": c.certificate_id,
            "status": c.status,
            "certificatePem": c.pem,
            "ownedBy": state.account_id,
            "creationDate": c.created_at,
            "lastModifiedDate": c.last_modified_at,
            "customerVersion": c.customer_version,
            "generationId": c.generation_id,
            "validity": {"notBefore": c.not_before, "notAfter": c.not_after},
            "certificateMode": c.mode,
        }
        if c.ca_certificate_id is not None:
            description["caCertificateId"] = c.ca_certificate_id
        return {"certificateDescription": description}


def list_certificates(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    size = int(params.get("pageSize") or d.CERTIFICATES_PAGE_SIZE)
    start = _marker_offset(params.get("marker"))
    with state.lock:
        ordered = sorted(
            state.certificates.values(),
            key=lambda c: (c.created_at, c.certificate_id),
            reverse=not params.get("ascendingOrder", False),
        )
        page = ordered[start : start + size]
        out: dict[str, Any] = {
            "certificates": [
                {
                    "certificateArn": c.arn,
                    "certificateId": c.certificate_id,
                    "status": c.status,
                    "certificateMode": c.mode,
                    "creationDate": c.created_at,
                }
                for c in page
            ]
        }
        if start + size < len(ordered):
            out["nextMarker"] = base64.b64encode(f"offset-{start + size}".encode()).decode()
        return out


def _marker_offset(marker: str | None) -> int:
    if not marker:
        return 0
    try:
        text = base64.b64decode(marker, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        text = ""
    if not text.startswith("offset-") or not text[len("offset-") :].isdigit():
        raise invalid_request("marker is not one ListCertificates returned; start without it")
    return int(text[len("offset-") :])


# --------------------------------------------------------------- status, delete
def update_certificate(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    new_status = params["newStatus"]
    if new_status not in SETTABLE_STATUSES:
        raise invalid_request(
            f"newStatus {new_status} cannot be set: it is used internally by AWS IoT or "
            f"deprecated; use one of {', '.join(SETTABLE_STATUSES)}"
        )
    with state.lock:
        c = _certificate(state, params["certificateId"])
        if c.status == new_status:
            return {}
        if c.status == "REVOKED":
            raise _state_error(
                f"The certificate {c.certificate_id} is REVOKED; a revoked certificate's "
                "status cannot be changed (register a new certificate instead)"
            )
        c.status = new_status
        c.last_modified_at = state.now()
        c.customer_version += 1
        state.changed()
    _announce(state, c.certificate_id)
    return {}


def delete_certificate(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        c = _certificate(state, params["certificateId"])
        if c.status == "ACTIVE":
            raise _state_error(
                f"The certificate {c.certificate_id} is ACTIVE; deactivate it first "
                "(UpdateCertificate --new-status INACTIVE)"
            )
        if c.things:
            raise ServiceError(
                "DeleteConflictException",
                f"The certificate {c.certificate_id} is attached to "
                f"{', '.join(sorted(c.things))}; detach it first (DetachThingPrincipal)",
                409,
            )
        del state.certificates[c.certificate_id]
        state.changed()
    _announce(state, c.certificate_id)
    return {}


def certificate_status(state: EngineState, certificate_id: str) -> str | None:
    """The certificate's status, or None once it is deleted (or was never registered)."""
    with state.lock:
        record = state.certificates.get(certificate_id)
        return None if record is None else record.status


def certificate_pem(state: EngineState, certificate_id: str) -> str | None:
    """The registered certificate's PEM, or None."""
    with state.lock:
        record = state.certificates.get(certificate_id)
        return None if record is None else record.pem


def trust_anchor_pems(state: EngineState) -> list[str]:
    """Every registered CA and device certificate: what a TLS front verifies clients against."""
    with state.lock:
        return [*state.ca_certificates.values(), *(c.pem for c in state.certificates.values())]


# ------------------------------------------------------------------ persistence
def export_certificates(state: EngineState) -> list[dict[str, Any]]:
    """The certificates and their attachments as JSON-ready data (caller holds the lock)."""
    return [
        {
            "certificate_id": c.certificate_id,
            "pem": c.pem,
            "status": c.status,
            "mode": c.mode,
            "ca_certificate_id": c.ca_certificate_id,
            "created_at": c.created_at,
            "last_modified_at": c.last_modified_at,
            "not_before": c.not_before,
            "not_after": c.not_after,
            "customer_version": c.customer_version,
            "generation_id": c.generation_id,
            "things": [[name, kind] for name, kind in c.things.items()],
        }
        for c in state.certificates.values()
    ]


def import_certificates(state: EngineState, saved: list[Mapping[str, Any]]) -> None:
    """Replace the certificates with `export_certificates` data (caller holds the lock)."""
    state.certificates.clear()
    state.thing_principals.clear()
    state.detaching_until.clear()
    for s in saved:
        record = _Certificate(
            s["certificate_id"],
            state.arn("cert", s["certificate_id"]),
            s["pem"],
            status=s["status"],
            mode=s["mode"],
            ca_certificate_id=s["ca_certificate_id"],
            created_at=s["created_at"],
            not_before=s["not_before"],
            not_after=s["not_after"],
            generation_id=s["generation_id"],
        )
        record.last_modified_at = s["last_modified_at"]
        record.customer_version = s["customer_version"]
        for name, kind in s["things"]:
            record.things[name] = kind
            state.thing_principals.setdefault(name, []).append(record.certificate_id)
        state.certificates[record.certificate_id] = record
