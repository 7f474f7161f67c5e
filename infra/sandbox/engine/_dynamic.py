"""Dynamic thing groups: groups whose members are the things a fleet-indexing query matches.

CreateDynamicThingGroup / UpdateDynamicThingGroup / DeleteDynamicThingGroup, and
`settle`, which brings membership up to date with the index. AWS's rules
(developer guide, "Dynamic thing groups"; docs/sandbox.md has the rows):

- fleet indexing must be on (thing indexing not OFF); the query is parsed with the
  same grammar as SearchIndex (InvalidQueryException); the index is `AWS_Things`;
- a dynamic group is never part of a hierarchy (no parent, no children);
- things are never added or removed explicitly (AddThingToThingGroup /
  RemoveThingFromThingGroup refuse a dynamic group);
- at most `MAX_DYNAMIC_GROUPS` per account (LimitExceededException);
- a dynamic group counts toward the ten groups a thing may be in.

Membership follows the index: a thing whose registry entry, groups or named shadows
change is re-evaluated (`EngineState.indexed_data_changed` marks it), at the end of
the registry operation that changed it or, for shadows, by the next operation's
prologue or the scheduler thread. Joining and leaving act on jobs exactly as a
static group does (`_membership`): a thing that stops matching a CONTINUOUS job's
dynamic group has its pending execution REMOVED.

Invariants:
- after `settle`, a dynamic group's `things` are exactly the indexed things its
  query matches (but for things already in `MAX_GROUPS_PER_THING` groups);
- a new group is BUILDING (no members) and a group whose query changed REBUILDING (its
  old members) for `decisions.DYNAMIC_GROUP_BUILD_SECONDS`, then evaluated afresh and
  ACTIVE (`_membership.finish_build`, by the deadline pass), as AWS backfills it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from infra.sandbox import decisions as d
from infra.sandbox.engine import _membership
from infra.sandbox.engine._records import _Group, paginate
from infra.sandbox.engine._state import EngineState
from infra.sandbox.engine._timers import op
from infra.sandbox.errors import ServiceError, already_exists, invalid_request, not_found

THINGS_INDEX = "AWS_Things"
QUERY_VERSION = "2017-09-30"


def _check_index(state: EngineState, index_name: str | None) -> str:
    name = index_name or THINGS_INDEX
    if name != THINGS_INDEX:
        raise not_found(f"Index {name} does not exist; dynamic thing groups use {THINGS_INDEX}")
    if state.indexing["thingIndexingConfiguration"]["thingIndexingMode"] == "OFF":
        raise invalid_request(
            "Dynamic thing groups need fleet indexing: turn thing indexing on with "
            "UpdateIndexingConfiguration first"
        )
    return name


def _query_version(params: Mapping[str, Any]) -> str:
    version = params.get("queryVersion") or QUERY_VERSION
    if version != QUERY_VERSION:
        raise invalid_request(f"queryVersion {version} is not supported; use {QUERY_VERSION}")
    return str(version)


def _dynamic_group(state: EngineState, name: str) -> _Group:
    group = state.group(name)
    if not group.dynamic:
        raise invalid_request(
            f"Thing group {name} is a static thing group; use the static thing group operations"
        )
    return group


def create_dynamic_thing_group(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    name = params["thingGroupName"]
    query = params["queryString"]
    with op(state) as now:
        index_name = _check_index(state, params.get("indexName"))
        version = _query_version(params)
        _membership.parsed(query)
        existing = state.groups.get(name)
        if existing is not None:
            # Like CreateThingGroup, asking again for the very same group is answered
            # with it; anything else under that name is taken.
            if existing.query != query:
                raise already_exists(
                    f"Thing group {name} already exists"
                    + (" with another query" if existing.dynamic else " as a static group")
                )
            group = existing
        else:
            if sum(1 for g in state.groups.values() if g.dynamic) >= d.MAX_DYNAMIC_GROUPS:
                raise ServiceError(
                    "LimitExceededException",
                    f"An account can have at most {d.MAX_DYNAMIC_GROUPS} dynamic thing groups; "
                    "delete one first",
                    410,
                )
            group = _Group(name, state.arn("thinggroup", name), None, now, str(uuid.uuid4()))
            group.description = (params.get("thingGroupProperties") or {}).get(
                "thingGroupDescription"
            )
            group.query = query
            group.index_name = index_name
            group.query_version = version
            state.groups[name] = group
            state.changed()
            _membership.start_build(state, group, "BUILDING", now)
        return {
            "thingGroupName": name,
            "thingGroupArn": group.arn,
            "thingGroupId": group.group_id,
            "indexName": group.index_name,
            "queryString": group.query,
            "queryVersion": group.query_version,
        }


def update_dynamic_thing_group(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with op(state) as now:
        group = _dynamic_group(state, params["thingGroupName"])
        expected = params.get("expectedVersion")
        if expected is not None and expected != group.version:
            raise ServiceError(
                "VersionConflictException",
                f"expectedVersion {expected} does not match the group's version {group.version}",
                409,
            )
        index_name = _check_index(state, params.get("indexName") or group.index_name)
        query = str(params.get("queryString") or group.query)
        _membership.parsed(query)
        group.query_version = _query_version(
            {"queryVersion": params.get("queryVersion") or group.query_version}
        )
        group.index_name = index_name
        description = (params.get("thingGroupProperties") or {}).get("thingGroupDescription")
        if description is not None:
            group.description = description
        changed_query = query != group.query
        group.query = query
        group.version += 1
        state.changed()
        if changed_query:
            _membership.start_build(state, group, "REBUILDING", now)
        return {"version": group.version}


def delete_dynamic_thing_group(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with op(state) as now:
        group = state.groups.get(params["thingGroupName"])
        if group is None:
            return {}  # AWS: deleting a group that does not exist succeeds
        if not group.dynamic:
            raise invalid_request(
                f"Thing group {group.name} is a static thing group; use DeleteThingGroup"
            )
        expected = params.get("expectedVersion")
        if expected is not None and expected != group.version:
            raise ServiceError(
                "VersionConflictException",
                f"expectedVersion {expected} does not match the group's version {group.version}",
                409,
            )
        for thing_name in sorted(group.things):
            _membership.leave(state, state.things[thing_name], group, now)
        del state.groups[group.name]
        state.changed()
    return {}


def list_thing_groups(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        parent = params.get("parentGroup")
        prefix = params.get("namePrefixFilter") or ""
        if parent is not None:
            state.group(parent)
            names = (
                state.descendants(parent)[1:]
                if params.get("recursive", True)
                else sorted(state.groups[parent].children)
            )
        else:
            names = list(state.groups)
        chosen = sorted(n for n in names if n.startswith(prefix))
        page, token = paginate(chosen, params)
        out: dict[str, Any] = {
            "thingGroups": [{"groupName": n, "groupArn": state.groups[n].arn} for n in page]
        }
        if token:
            out["nextToken"] = token
        return out


def describe_fields(group: _Group) -> dict[str, Any]:
    """DescribeThingGroup's members that only a dynamic group has."""
    if not group.dynamic:
        return {}
    return {
        "indexName": group.index_name,
        "queryString": group.query,
        "queryVersion": group.query_version,
        "status": group.build_status,
    }
