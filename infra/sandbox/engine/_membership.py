"""What a thing joining or leaving a group does to the jobs: one place for static and dynamic.

A thing joins a static group by AddThingToThingGroup and a dynamic group when it
starts to match the group's query; either way the jobs see the same thing:

- joining: every IN_PROGRESS CONTINUOUS job targeting the group (or a group above
  it) enqueues the thing (a REMOVED execution restarts);
- leaving: for every job that no longer covers the thing, a paced rollout drops
  it, and its QUEUED execution (a CONTINUOUS job's IN_PROGRESS one too) becomes
  REMOVED (decisions.py, "cancel / delete / targets").

`refresh` and `settle` evaluate dynamic groups' queries (`_dynamic` holds their
operations): a thing joins or leaves a dynamic group as its indexed fields match.
`start_build` / `finish_build` are a group's backfill: `settle` leaves a BUILDING or
REBUILDING group alone until its deadline evaluates every thing afresh.
Callers hold the lock.
"""

from __future__ import annotations

from collections.abc import Sequence

from infra.sandbox import decisions as d
from infra.sandbox import indexing
from infra.sandbox.engine import _policies, _rollout
from infra.sandbox.engine._records import PENDING, _Group, _Thing
from infra.sandbox.engine._state import EngineState
from infra.sandbox.errors import ServiceError
from infra.sandbox.indexing.evaluate import matches
from infra.sandbox.indexing.query import Node, QueryError, parse


def join(state: EngineState, thing: _Thing, group: _Group, now: float) -> None:
    """Put `thing` in `group` and enqueue it on the continuous jobs that now cover it."""
    thing.groups.append(group.name)
    group.things.add(thing.name)
    state.changed()
    ancestry = state.ancestry([group.name])
    for job in state.jobs.values():
        if (
            job.target_selection == "CONTINUOUS"
            and job.status == "IN_PROGRESS"
            and job.target_groups & ancestry
        ):
            _rollout.enqueue_targets(state, job, [thing.name], now)


def leave(state: EngineState, thing: _Thing, group: _Group, now: float) -> None:
    """Take `thing` out of `group`; the jobs that no longer cover it drop or remove it."""
    thing.groups.remove(group.name)
    group.things.discard(thing.name)
    state.changed()
    for job in state.jobs.values():
        if state.covered(job, thing):
            continue
        if thing.name in job.rollout_queued:
            job.rollout_queued.discard(thing.name)
            job.rollout_pending.remove(thing.name)
            _policies.maybe_complete(state, job, now)
        ex = job.executions.get(thing.name)
        removable = PENDING if job.target_selection == "CONTINUOUS" else {"QUEUED"}
        if ex is not None and ex.status in removable:
            state.set_status(ex, "REMOVED", now, "control-plane")
            _policies.after_outcome(state, ex, now)


# -- dynamic groups --------------------------------------------------------------------------


def parsed(query: str) -> Node:
    """A dynamic group's query, parsed as SearchIndex parses it (InvalidQueryException)."""
    try:
        return parse(query)
    except QueryError as exc:
        raise ServiceError("InvalidQueryException", f"Syntax error in query: {exc}", 400) from exc


def _indexed_shadow_names(state: EngineState) -> tuple[str, ...]:
    """The named shadows the index holds (at most ten): all a query can see of a thing."""
    config = state.indexing["thingIndexingConfiguration"]
    if config.get("namedShadowIndexingMode") != "ON":
        return ()
    return tuple((config.get("filter") or {}).get("namedShadowNames") or ())


def _indexed(state: EngineState, thing: _Thing, shadows: Sequence[str]) -> indexing.IndexedThing:
    # Looked up by name, not by scanning the shadow table: a fleet's shadow reports each
    # settle one thing, and must not cost a pass over every shadow of the fleet.
    documents = state.shadows.documents
    return indexing.IndexedThing(
        name=thing.name,
        thing_id=thing.thing_id,
        version=thing.version,
        attributes=dict(thing.attributes),
        groups=tuple(thing.groups),
        shadows={n: documents[thing.name, n] for n in shadows if (thing.name, n) in documents},
    )


def refresh(
    state: EngineState, groups: Sequence[_Group], things: Sequence[_Thing], now: float
) -> None:
    """Re-evaluate `things` against `groups`' queries; join and leave as they now match."""
    queries = [(g, parsed(g.query)) for g in groups if g.query is not None]
    if not queries:
        return
    shadows = _indexed_shadow_names(state)
    entries = indexing.build_entries(state.indexing, [_indexed(state, t, shadows) for t in things])
    for indexed, fields in entries:
        thing = state.things[indexed.name]
        for group, node in queries:
            member = thing.name in group.things
            wanted = matches(node, fields)
            if wanted and not member and len(thing.groups) < d.MAX_GROUPS_PER_THING:
                join(state, thing, group, now)
            elif member and not wanted:
                leave(state, thing, group, now)
    indexed_names = {indexed.name for indexed, _ in entries}
    for thing in things:  # not indexed at all (indexing off): in no dynamic group
        if thing.name not in indexed_names:
            for group, _ in queries:
                if thing.name in group.things:
                    leave(state, thing, group, now)


def start_build(state: EngineState, group: _Group, status: str, now: float) -> None:
    """Begin a dynamic group's backfill (BUILDING or REBUILDING); lock held."""
    group.build_status = status
    group.built_at = now + d.DYNAMIC_GROUP_BUILD_SECONDS
    state.push_deadline(group.built_at, "group-built", group, 0)


def finish_build(state: EngineState, group: _Group, when: float) -> None:
    """The backfill's deadline: evaluate every thing against the query, then ACTIVE."""
    if state.groups.get(group.name) is not group or group.built_at != when:
        return  # deleted, or rebuilt again since: a later deadline finishes it
    group.build_status = "ACTIVE"
    group.built_at = None
    state.changed()
    refresh(state, [group], list(state.things.values()), when)


def settle(state: EngineState, now: float) -> None:
    """Bring dynamic group membership up to date with the things marked changed (lock held)."""
    stale = state.index_stale
    if stale is not None and not stale:
        return
    state.index_stale = set()
    groups = [g for g in state.groups.values() if g.dynamic and g.build_status == "ACTIVE"]
    if not groups:
        return
    if stale is None:
        things: list[_Thing] = list(state.things.values())
    else:
        things = [state.things[name] for name in sorted(stale) if name in state.things]
    refresh(state, groups, things, now)
