"""Fleet indexing over the engine's registry and named shadows.

Builds the index entries (each thing with its flattened fields) under the lock
and hands them to the pure `infra.sandbox.indexing` functions; stores the
indexing configuration. The entries are kept while the engine's `revision`
and the configuration stay the same (every change of a thing, a group or a
shadow raises the revision), so a census's ten queries flatten the fleet once.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from infra.sandbox import indexing
from infra.sandbox.engine import _membership
from infra.sandbox.engine._state import EngineState
from infra.sandbox.errors import invalid_request

_Query = Callable[[Mapping[str, Any], Mapping[str, Any], Sequence[indexing.Entry]], dict[str, Any]]

# state -> (revision, configuration as JSON, entries)
_CACHE: weakref.WeakKeyDictionary[EngineState, tuple[int, str, list[indexing.Entry]]] = (
    weakref.WeakKeyDictionary()
)


def _entries(state: EngineState) -> list[indexing.Entry]:
    """The index entries as of now (callers hold the lock)."""
    key = json.dumps(state.indexing, sort_keys=True)
    cached = _CACHE.get(state)
    if cached is not None and cached[0] == state.revision and cached[1] == key:
        return cached[2]
    by_thing: dict[str, dict[str, Any]] = {}
    for (thing, name), doc in state.shadows.documents.items():
        by_thing.setdefault(thing, {})[name] = doc
    things = [
        indexing.IndexedThing(
            name=t.name,
            thing_id=t.thing_id,
            version=t.version,
            attributes=dict(t.attributes),
            groups=tuple(t.groups),
            shadows=by_thing.get(t.name, {}),
        )
        for t in state.things.values()
    ]
    entries = indexing.build_entries(state.indexing, things)
    _CACHE[state] = (state.revision, key, entries)
    return entries


def _run(state: EngineState, query: _Query, params: Mapping[str, Any]) -> dict[str, Any]:
    # Under the lock throughout: the entries share the shadow documents.
    with state.lock:
        return query(state.indexing, params, _entries(state))


def get_indexing_configuration(state: EngineState, _params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        return indexing.get_indexing_configuration(state.indexing)


def update_indexing_configuration(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        config = indexing.updated(state.indexing, params)
        dynamic = sorted(g.name for g in state.groups.values() if g.dynamic)
        if dynamic and config["thingIndexingConfiguration"]["thingIndexingMode"] == "OFF":
            raise invalid_request(
                "Thing indexing cannot be turned off while dynamic thing groups exist ("
                + ", ".join(dynamic[:5])
                + (", ..." if len(dynamic) > 5 else "")  # noqa: PLR2004 - a short list
                + "); delete them first"
            )
        state.indexing = config
        state.indexed_data_changed(None)  # what is indexed changed for every thing
        _membership.settle(state, state.now())
    return {}


def search_index(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    return _run(state, indexing.search_index, params)


def get_statistics(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    return _run(state, indexing.get_statistics, params)


def get_buckets_aggregation(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    return _run(state, indexing.get_buckets_aggregation, params)
