"""Certificates as principals of things, and the device policy's connect rule.

The thing-principal calls (AttachThingPrincipal, DetachThingPrincipal,
ListThingPrincipals(V2), ListPrincipalThings) with AWS's shapes and errors,
DeleteThing's refusal while a principal is attached or its detach is still
propagating (AWS answers `InvalidRequestException`; callers detach, then wait), and
`authorize_connection`, the `iot:Connect` rule the MQTT front applies to every
CONNECT: the client certificate is registered and ACTIVE, attached to a thing,
and the client id is that thing's name (`iot:Connection.Thing.ThingName` with
`iot:Connection.Thing.IsAttached`, infra/aws/device-policy.yaml), unless the
sandbox runs with a connect policy that admits any client id (`ConnectPolicy`).

Invariants:
- `_Certificate.things` and `EngineState.thing_principals` mirror each other.
- A certificate attached EXCLUSIVE_THING is attached to that one thing only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from infra.sandbox import decisions as d
from infra.sandbox.engine._identity import (
    ConnectionRefusedByPolicyError,
    ConnectPolicy,
    _Certificate,
)
from infra.sandbox.engine._records import paginate
from infra.sandbox.engine._state import EngineState
from infra.sandbox.errors import invalid_request, not_found

CERT_ARN: Final = re.compile(r"arn:(aws[a-z-]*):iot:([a-z0-9-]+):(\d{12}):cert/([0-9a-f]{64})")
_EXCLUSIVE: Final = "EXCLUSIVE_THING"
_NON_EXCLUSIVE: Final = "NON_EXCLUSIVE_THING"


# ----------------------------------------------------------------- attachments
def _principal(state: EngineState, principal: str) -> _Certificate:
    match = CERT_ARN.fullmatch(principal)
    if match is None:
        raise invalid_request(
            f"The principal {principal} is not a certificate ARN "
            "(arn:aws:iot:<region>:<account>:cert/<certificateId>); the sandbox attaches "
            "only certificates"
        )
    if match.group(2) != state.region or match.group(3) != state.account_id:
        raise not_found(f"The principal {principal} cannot be found in this account and region.")
    record = state.certificates.get(match.group(4))
    if record is None:
        raise not_found(f"The principal {principal} cannot be found.")
    return record


def attach_thing_principal(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    kind = params.get("thingPrincipalType") or _NON_EXCLUSIVE
    with state.lock:
        thing = state.thing(params["thingName"])
        c = _principal(state, params["principal"])
        others = [name for name in c.things if name != thing.name]
        if others and (kind == _EXCLUSIVE or _EXCLUSIVE in c.things.values()):
            raise invalid_request(
                f"The certificate {c.certificate_id} is attached to {', '.join(others)}; an "
                "exclusive attachment allows one thing only: detach it there first"
            )
        if thing.name not in c.things:
            state.thing_principals.setdefault(thing.name, []).append(c.certificate_id)
        c.things[thing.name] = kind
        state.changed()
    return {}


def detach_thing_principal(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        thing = state.thing(params["thingName"])
        c = _principal(state, params["principal"])
        if c.things.pop(thing.name, None) is not None:
            _unindex(state, thing.name, c.certificate_id)
            state.detaching_until[thing.name] = state.now() + d.DETACH_PROPAGATION_SECONDS
            state.changed()
    return {}


def _unindex(state: EngineState, thing_name: str, certificate_id: str) -> None:
    ids = state.thing_principals.get(thing_name, [])
    if certificate_id in ids:
        ids.remove(certificate_id)
    if not ids:
        state.thing_principals.pop(thing_name, None)


def refuse_delete_while_attached(state: EngineState, thing_name: str, now: float) -> None:
    """DeleteThing's check (caller holds the lock): AWS refuses a thing with principals.

    A detach still propagating (`decisions.DETACH_PROPAGATION_SECONDS`) counts as
    attached. The message is the service's own, as AWS SDKs report it.
    """
    if state.thing_principals.get(thing_name) or state.detaching_until.get(thing_name, 0) > now:
        raise invalid_request(
            f"Cannot delete. Thing {thing_name} is still attached to one or more principals"
        )
    state.detaching_until.pop(thing_name, None)


def list_thing_principals(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        thing = state.thing(params["thingName"])
        arns = [state.certificates[i].arn for i in state.thing_principals.get(thing.name, [])]
        page, token = paginate(arns, params)
    return {"principals": page} | ({"nextToken": token} if token else {})


def list_thing_principals_v2(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    wanted = params.get("thingPrincipalType")
    with state.lock:
        thing = state.thing(params["thingName"])
        objects = []
        for certificate_id in state.thing_principals.get(thing.name, []):
            record = state.certificates[certificate_id]
            kind = record.things[thing.name]
            if wanted is None or kind == wanted:
                objects.append({"principal": record.arn, "thingPrincipalType": kind})
        page, token = paginate(objects, params)
    return {"thingPrincipalObjects": page} | ({"nextToken": token} if token else {})


def list_principal_things(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        c = _principal(state, params["principal"])
        page, token = paginate(list(c.things), params)
    return {"things": page} | ({"nextToken": token} if token else {})


# ----------------------------------------------------------------- the connect rule
def authorize_connection(state: EngineState, certificate_der: bytes, client_id: str) -> str:
    """The thing a CONNECT with this client certificate and client id connects as.

    Raises `ConnectionRefusedByPolicyError` when the device policy refuses it.
    """
    certificate_id = hashlib.sha256(certificate_der).hexdigest()
    with state.lock:
        record = state.certificates.get(certificate_id)
        if record is None:
            raise ConnectionRefusedByPolicyError(
                "unregistered", f"certificate {certificate_id} is not registered"
            )
        if record.status != "ACTIVE":
            raise ConnectionRefusedByPolicyError(
                record.status.lower(), f"certificate {certificate_id} is {record.status}"
            )
        if not record.things:
            raise ConnectionRefusedByPolicyError(
                "unattached", f"certificate {certificate_id} is attached to no thing"
            )
        if state.connect_policy is ConnectPolicy.ANY_CLIENT_ID:
            return _only_thing(state, record.things, certificate_id)
        if client_id not in record.things or client_id not in state.things:
            raise ConnectionRefusedByPolicyError(
                "client-id",
                f"client id {client_id!r} is not the name of a thing certificate "
                f"{certificate_id} is attached to",
            )
        return client_id


def _only_thing(state: EngineState, attached: Iterable[str], certificate_id: str) -> str:
    """The one thing an any-client-id connection acts as (its topics are the ones it may use)."""
    things = [name for name in attached if name in state.things]
    if len(things) != 1:
        raise ConnectionRefusedByPolicyError(
            "things",
            f"certificate {certificate_id} is attached to {len(things)} things; the "
            "any-client-id connect policy needs exactly one (detach the others, or connect "
            "with --connect-policy thing-name and the thing name as client id)",
        )
    return things[0]
