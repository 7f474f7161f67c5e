"""Fleet indexing over the engine's registry and named shadows.

Takes an `IndexedThing` snapshot under the lock and hands it to the pure
`infra.sandbox.indexing` functions; stores the indexing configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from infra.sandbox import indexing
from infra.sandbox.engine._state import EngineState

_Query = Callable[
    [Mapping[str, Any], Mapping[str, Any], list[indexing.IndexedThing]], dict[str, Any]
]


def _snapshot(state: EngineState) -> tuple[dict[str, Any], list[indexing.IndexedThing]]:
    with state.lock:
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
        return state.indexing, things


def _run(state: EngineState, query: _Query, params: Mapping[str, Any]) -> dict[str, Any]:
    # Under the lock throughout: the snapshot shares the shadow documents.
    with state.lock:
        config, things = _snapshot(state)
        return query(config, params, things)


def get_indexing_configuration(state: EngineState, _params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        return indexing.get_indexing_configuration(state.indexing)


def update_indexing_configuration(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        state.indexing = indexing.updated(state.indexing, params)
        state.changed()
    return {}


def search_index(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    return _run(state, indexing.search_index, params)


def get_statistics(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    return _run(state, indexing.get_statistics, params)


def get_buckets_aggregation(state: EngineState, params: Mapping[str, Any]) -> dict[str, Any]:
    return _run(state, indexing.get_buckets_aggregation, params)
