"""The registry: things, thing groups and membership (and DescribeEndpoint).

Membership drives jobs: a thing joining a targeted group (or a group below
one) is enqueued on every in-progress CONTINUOUS job (a REMOVED execution
restarts); a thing leaving the last targeted group is no longer scheduled to
run any job: its QUEUED execution (a continuous job's IN_PROGRESS one too) is
REMOVED, and a paced rollout drops it.

Dynamic groups (`_dynamic`) take no explicit members: adding a thing to one, or
removing it, is refused. A change to what the index sees of a thing (attributes,
static groups) re-evaluates it against every dynamic group's query before the
operation returns (`_membership.settle`).

Invariants:
- `thing.groups` and `group.things` mirror each other.
- A thing is in at most one group of each hierarchy (groups under one root).
- A deleted thing's pending executions become REMOVED; the jobs keep them.
- A thing with principals attached is never deleted (AWS refuses it: detach first).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from infra.sandbox import decisions as d
from infra.sandbox.engine import _dynamic, _membership, _policies, _principals
from infra.sandbox.engine._records import PENDING, _Group, _Thing, name_from_arn, paginate
from infra.sandbox.engine._state import EngineState
from infra.sandbox.engine._timers import op
from infra.sandbox.errors import ServiceError, already_exists, invalid_request


def describe_endpoint(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    endpoint_type = params.get("endpointType") or "iot:Data"
    region = state.region
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    hosts = {
        "iot:Data": f"{d.ENDPOINT_PREFIX}.iot.{region}.{suffix}",
        "iot:Data-ATS": f"{d.ENDPOINT_PREFIX}-ats.iot.{region}.{suffix}",
        "iot:CredentialProvider": f"{d.ENDPOINT_PREFIX}.credentials.iot.{region}.{suffix}",
        "iot:Jobs": f"{d.ENDPOINT_PREFIX}.jobs.iot.{region}.{suffix}",
    }
    if endpoint_type not in hosts:
        raise invalid_request(
            f"Endpoint type {endpoint_type} is not valid; use one of {', '.join(hosts)}"
        )
    return {"endpointAddress": hosts[endpoint_type]}


def create_thing(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    name = params["thingName"]
    attributes = dict((params.get("attributePayload") or {}).get("attributes") or {})
    with state.lock:
        existing = state.things.get(name)
        if existing is not None:
            if existing.attributes != attributes:
                raise already_exists(
                    f"Thing {name} already exists in account with different attributes"
                )
            thing = existing
        else:
            thing = _Thing(name, state.arn("thing", name), attributes, str(uuid.uuid4()))
            state.things[name] = thing
            state.indexed_data_changed(name)
            _membership.settle(state, state.now())
        return {"thingName": name, "thingArn": thing.arn, "thingId": thing.thing_id}


def create_things(state: EngineState, names: Sequence[str]) -> None:
    """Bulk CreateThing for simulations and the benchmark (same effect, one lock)."""
    with state.lock:
        for name in names:
            if name not in state.things:
                state.things[name] = _Thing(name, state.arn("thing", name), {}, str(uuid.uuid4()))
                state.indexed_data_changed(name)
        state.changed()
        _membership.settle(state, state.now())


def describe_thing(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        thing = state.thing(params["thingName"])
        return {
            "defaultClientId": thing.name,
            "thingName": thing.name,
            "thingId": thing.thing_id,
            "thingArn": thing.arn,
            "attributes": dict(thing.attributes),
            "version": thing.version,
        }


def update_thing(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    """UpdateThing: attributes (merged or replaced; an empty value removes one), version + 1."""
    with op(state) as now:
        thing = state.thing(params["thingName"])
        expected = params.get("expectedVersion")
        if expected is not None and expected != thing.version:
            raise ServiceError(
                "VersionConflictException",
                f"expectedVersion {expected} does not match the thing's version {thing.version}",
                409,
            )
        payload = params.get("attributePayload") or {}
        given = dict(payload.get("attributes") or {})
        attributes = dict(thing.attributes) if payload.get("merge") else {}
        attributes.update(given)
        # AWS: with merge, an attribute given an empty value is removed.
        thing.attributes = {k: v for k, v in attributes.items() if v != ""}
        thing.version += 1
        state.indexed_data_changed(thing.name)
        _membership.settle(state, now)
    return {}


def list_things(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        things: Iterable[_Thing] = sorted(state.things.values(), key=lambda t: t.name)
        attr = params.get("attributeName")
        if attr is not None:
            value = params.get("attributeValue")
            prefix = bool(params.get("usePrefixAttributeValue"))
            things = [
                t
                for t in things
                if attr in t.attributes
                and (
                    value is None
                    or (
                        t.attributes[attr].startswith(value)
                        if prefix
                        else t.attributes[attr] == value
                    )
                )
            ]
        page, token = paginate(list(things), params)
        out: dict[str, Any] = {
            "things": [
                {
                    "thingName": t.name,
                    "thingArn": t.arn,
                    "attributes": dict(t.attributes),
                    "version": t.version,
                }
                for t in page
            ]
        }
        if token:
            out["nextToken"] = token
        return out


def delete_thing(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    """DeleteThing: a thing that does not exist is success; one with principals is refused."""
    name = params["thingName"]
    with op(state) as now:
        thing = state.things.get(name)
        if thing is None:
            return {}
        expected = params.get("expectedVersion")
        if expected is not None and expected != thing.version:
            raise ServiceError(
                "VersionConflictException",
                f"expectedVersion {expected} does not match the thing's version {thing.version}",
                409,
            )
        _principals.refuse_delete_while_attached(state, name, now)
        for group in list(thing.groups):
            state.groups[group].things.discard(name)
        # The jobs keep the executions (REMOVED if they were pending), so
        # numberOfRemovedThings counts deleted things, as AWS documents.
        for ex in list(thing.executions.values()):
            if ex.status in PENDING:
                state.set_status(ex, "REMOVED", now, "control-plane")
                _policies.after_outcome(state, ex, now)
        del state.things[name]
        state.changed()
    return {}


def create_thing_group(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    name = params["thingGroupName"]
    parent = params.get("parentGroupName")
    description = (params.get("thingGroupProperties") or {}).get("thingGroupDescription")
    with state.lock:
        existing = state.groups.get(name)
        if existing is not None:
            if existing.dynamic:
                raise already_exists(f"Thing group {name} already exists as a dynamic thing group")
            if existing.parent != parent:
                raise already_exists(f"Thing group {name} already exists with a different parent")
            group = existing
        else:
            if parent is not None:
                parent_group = state.group(parent)
                if parent_group.dynamic:
                    raise invalid_request(
                        f"Thing group {parent} is a dynamic thing group; dynamic thing groups "
                        "cannot be part of a hierarchy"
                    )
                depth = len(state.ancestry([parent_group.name]))
                if depth >= d.MAX_GROUP_DEPTH:
                    raise invalid_request(
                        f"Thing group hierarchy too deep: at most {d.MAX_GROUP_DEPTH} levels"
                    )
            group = _Group(
                name, state.arn("thinggroup", name), parent, state.now(), str(uuid.uuid4())
            )
            group.description = description
            state.groups[name] = group
            if parent is not None:
                state.groups[parent].children.add(name)
            state.changed()
        return {
            "thingGroupName": name,
            "thingGroupArn": group.arn,
            "thingGroupId": group.group_id,
        }


def describe_thing_group(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        group = state.group(params["thingGroupName"])
        chain: list[_Group] = []
        current = group.parent
        while current is not None:
            chain.append(state.groups[current])
            current = state.groups[current].parent
        metadata: dict[str, Any] = {"creationDate": group.created_at}
        if group.parent is not None:
            metadata["parentGroupName"] = group.parent
            metadata["rootToParentThingGroups"] = [
                {"groupName": g.name, "groupArn": g.arn} for g in reversed(chain)
            ]
        properties: dict[str, Any] = {}
        if group.description is not None:
            properties["thingGroupDescription"] = group.description
        return {
            "thingGroupName": group.name,
            "thingGroupId": group.group_id,
            "thingGroupArn": group.arn,
            "version": group.version,
            "thingGroupProperties": properties,
            "thingGroupMetadata": metadata,
            **_dynamic.describe_fields(group),
        }


def _root(state: EngineState, group: str) -> str:
    """The top of the hierarchy `group` belongs to."""
    current = group
    while (parent := state.groups[current].parent) is not None:
        current = parent
    return current


def _resolve_membership(state: EngineState, params: Mapping[str, Any]) -> tuple[_Thing, _Group]:
    group_name = params.get("thingGroupName") or name_from_arn(
        params.get("thingGroupArn"), "thinggroup"
    )
    thing_name = params.get("thingName") or name_from_arn(params.get("thingArn"), "thing")
    if not group_name:
        raise invalid_request("Give thingGroupName or thingGroupArn")
    if not thing_name:
        raise invalid_request("Give thingName or thingArn")
    return state.thing(thing_name), state.group(group_name)


def _static(group: _Group, verb: str) -> _Group:
    if group.dynamic:
        raise invalid_request(
            f"Cannot {verb} thing group {group.name}: it is a dynamic thing group, whose "
            "members are the things its query matches; change the things or the query"
        )
    return group


def add_thing_to_thing_group(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with op(state) as now:
        thing, group = _resolve_membership(state, params)
        _static(group, "add things to")
        if group.name not in thing.groups:
            root = _root(state, group.name)
            for other in thing.groups:
                if _root(state, other) == root:
                    raise invalid_request(
                        f"Thing {thing.name} is already in thing group {other}, in the same "
                        f"hierarchy as {group.name} (under {root}); a thing can belong to only "
                        f"one group of a hierarchy: remove it from {other} first"
                    )
            if len(thing.groups) >= d.MAX_GROUPS_PER_THING:
                dynamic = [g for g in thing.groups if state.groups[g].dynamic]
                if not (params.get("overrideDynamicGroups") and dynamic):
                    raise invalid_request(
                        f"Thing {thing.name} is already in {d.MAX_GROUPS_PER_THING} thing "
                        "groups, the most a thing can belong to; remove it from one first"
                        + (" (or pass overrideDynamicGroups)" if dynamic else "")
                    )
                # AWS: "adding a thing to a static group removes the thing from the last
                # dynamic group".
                _membership.leave(state, thing, state.groups[dynamic[-1]], now)
            _membership.join(state, thing, group, now)
            state.indexed_data_changed(thing.name)  # thingGroupNames is indexed
            _membership.settle(state, now)
    return {}


def remove_thing_from_thing_group(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with op(state) as now:
        thing, group = _resolve_membership(state, params)
        _static(group, "remove things from")
        if group.name in thing.groups:
            _membership.leave(state, thing, group, now)
            state.indexed_data_changed(thing.name)
            _membership.settle(state, now)
    return {}


def list_things_in_thing_group(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        group = state.group(params["thingGroupName"])
        names = state.group_things(group.name, recursive=bool(params.get("recursive")))
        page, token = paginate(names, params)
        out: dict[str, Any] = {"things": page}
        if token:
            out["nextToken"] = token
        return out
