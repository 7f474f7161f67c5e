"""Fleet indexing's operations over a snapshot of the registry and the shadows (pure).

`IndexedThing` is what the engine hands over (under its lock); `build_entries`
flattens each into its indexed fields once (the engine keeps the result while
nothing changes); the functions here answer GetIndexingConfiguration, SearchIndex, GetStatistics and
GetBucketsAggregation from it and the stored configuration. Errors are the
ones botocore's model lists for each operation:
- an index other than `AWS_Things`, or `AWS_Things` while thing indexing is
  OFF: ResourceNotFoundException;
- a query that does not parse: InvalidQueryException;
- an aggregation on a field that is not indexed with a type (managed or
  custom field), numeric statistics asked of a field that is not a Number,
  buckets of a Number field: InvalidAggregationException;
- a nextToken from another query: InvalidRequestException.
The index is current at once (the sandbox never answers IndexNotReadyException).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.sandbox.errors import ServiceError, invalid_request, not_found
from infra.sandbox.indexing.config import field_type, managed_fields
from infra.sandbox.indexing.evaluate import flatten, matches, scalar_text
from infra.sandbox.indexing.query import Node, QueryError, parse

__all__ = [
    "Entry",
    "IndexedThing",
    "build_entries",
    "get_buckets_aggregation",
    "get_indexing_configuration",
    "get_statistics",
    "search_index",
]

THINGS_INDEX = "AWS_Things"
MAX_PAGE = 100  # API reference, SearchIndex maxResults: "cannot exceed 100"
DEFAULT_BUCKETS = 10


@dataclass(frozen=True, slots=True)
class IndexedThing:
    """One thing as the index sees it."""

    name: str
    thing_id: str
    version: int
    attributes: Mapping[str, str]
    groups: Sequence[str]
    shadows: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    connected: bool | None = None


def _error(code: str, message: str) -> ServiceError:
    return ServiceError(code, message, 400)


def get_indexing_configuration(config: Mapping[str, Any]) -> dict[str, Any]:
    thing = dict(config["thingIndexingConfiguration"])
    thing["managedFields"] = managed_fields(thing)
    group = dict(config["thingGroupIndexingConfiguration"])
    return {"thingIndexingConfiguration": thing, "thingGroupIndexingConfiguration": group}


def _thing_config(config: Mapping[str, Any], index_name: str | None) -> Mapping[str, Any]:
    name = index_name or THINGS_INDEX
    thing: Mapping[str, Any] = config["thingIndexingConfiguration"]
    if name != THINGS_INDEX or thing["thingIndexingMode"] == "OFF":
        raise not_found(
            f"Index {name} does not exist"
            + (
                "; turn thing indexing on with UpdateIndexingConfiguration"
                if name == THINGS_INDEX
                else f"; the sandbox serves {THINGS_INDEX}"
            )
        )
    return thing


def _indexed_shadows(thing_config: Mapping[str, Any], thing: IndexedThing) -> dict[str, Any]:
    if thing_config["thingIndexingMode"] != "REGISTRY_AND_SHADOW":
        return {}
    if thing_config.get("namedShadowIndexingMode") != "ON":
        return {}
    wanted = set((thing_config.get("filter") or {}).get("namedShadowNames") or [])
    out: dict[str, Any] = {}
    for name, doc in thing.shadows.items():
        if name in wanted:
            view = {k: v for k, v in doc.get("state", {}).items() if k in ("reported", "desired")}
            view["metadata"] = doc.get("metadata", {})
            view["version"] = doc.get("version")
            out[name] = view
    return out


def _fields(thing_config: Mapping[str, Any], thing: IndexedThing) -> dict[str, list[Any]]:
    fields: dict[str, list[Any]] = {
        "thingName": [thing.name],
        "thingId": [thing.thing_id],
        "registry.version": [thing.version],
    }
    if thing.groups:
        fields["thingGroupNames"] = list(thing.groups)
    fields.update(flatten(thing.attributes, "attributes"))
    for name, view in _indexed_shadows(thing_config, thing).items():
        stripped = {k: v for k, v in view.items() if k != "metadata"}
        fields.update(flatten(stripped, f"shadow.name.{name}"))
    if (
        thing_config.get("thingConnectivityIndexingMode") == "STATUS"
        and thing.connected is not None
    ):
        fields["connectivity.connected"] = [thing.connected]
    return fields


Entry = tuple[IndexedThing, dict[str, list[Any]]]


def build_entries(config: Mapping[str, Any], things: Sequence[IndexedThing]) -> list[Entry]:
    """Every thing with its indexed fields, by name: what the queries scan."""
    thing_config = config["thingIndexingConfiguration"]
    if thing_config["thingIndexingMode"] == "OFF":
        return []
    return [(t, _fields(thing_config, t)) for t in sorted(things, key=lambda t: t.name)]


def _query(query_string: str) -> Node:
    try:
        return parse(query_string)
    except QueryError as exc:
        raise _error("InvalidQueryException", f"Syntax error in query: {exc}") from exc


def _hits(
    config: Mapping[str, Any], params: Mapping[str, Any], entries: Sequence[Entry]
) -> tuple[Mapping[str, Any], list[Entry]]:
    thing_config = _thing_config(config, params.get("indexName"))
    node = _query(params["queryString"])
    return thing_config, [entry for entry in entries if matches(node, entry[1])]


def _token(query: str, offset: int) -> str:
    digest = hashlib.sha256(query.encode()).hexdigest()[:16]
    raw = json.dumps({"q": digest, "o": offset}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _offset(query: str, token: str | None) -> int:
    if token is None:
        return 0
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        offset = int(decoded["o"])
        same = decoded["q"] == hashlib.sha256(query.encode()).hexdigest()[:16]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise invalid_request("nextToken is not a token this index gave") from exc
    if not same or offset < 0:
        raise invalid_request("nextToken belongs to another query; start again without it")
    return offset


def _document(thing_config: Mapping[str, Any], thing: IndexedThing) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "thingName": thing.name,
        "thingId": thing.thing_id,
        "thingGroupNames": list(thing.groups),
        "attributes": dict(thing.attributes),
    }
    shadows = _indexed_shadows(thing_config, thing)
    if shadows:
        doc["shadow"] = json.dumps({"name": shadows}, separators=(",", ":"))
    if thing_config.get("thingConnectivityIndexingMode") == "STATUS":
        doc["connectivity"] = {"connected": bool(thing.connected)}
    return doc


def search_index(
    config: Mapping[str, Any], params: Mapping[str, Any], entries: Sequence[Entry]
) -> dict[str, Any]:
    thing_config, hits = _hits(config, params, entries)
    query = params["queryString"]
    start = _offset(query, params.get("nextToken"))
    size = min(int(params.get("maxResults") or MAX_PAGE), MAX_PAGE)
    page = hits[start : start + size]
    out: dict[str, Any] = {"things": [_document(thing_config, t) for t, _ in page]}
    if start + size < len(hits):
        out["nextToken"] = _token(query, start + size)
    return out


def _aggregated(thing_config: Mapping[str, Any], name: str) -> str:
    kind = field_type(thing_config, name)
    if kind is None:
        raise _error(
            "InvalidAggregationException",
            f"{name} is not an indexed field with a type; add it to the thing indexing "
            "configuration's customFields to aggregate on it",
        )
    return kind


def get_statistics(
    config: Mapping[str, Any], params: Mapping[str, Any], entries: Sequence[Entry]
) -> dict[str, Any]:
    thing_config, hits = _hits(config, params, entries)
    name = params.get("aggregationField")
    if name is None:
        return {"statistics": {"count": len(hits)}}
    kind = _aggregated(thing_config, name)
    having = [fields[name] for _, fields in hits if fields.get(name)]
    if kind != "Number":
        return {"statistics": {"count": len(having)}}
    numbers: list[float] = []
    for values in having:
        for value in values:
            try:
                numbers.append(float(value))
            except (TypeError, ValueError):
                continue
    if not numbers:
        return {"statistics": {"count": 0}}
    total = math.fsum(numbers)
    squares = math.fsum(n * n for n in numbers)
    average = total / len(numbers)
    variance = max(0.0, squares / len(numbers) - average * average)
    return {
        "statistics": {
            "count": len(numbers),
            "average": average,
            "sum": total,
            "minimum": min(numbers),
            "maximum": max(numbers),
            "sumOfSquares": squares,
            "variance": variance,
            "stdDeviation": math.sqrt(variance),
        }
    }


def get_buckets_aggregation(
    config: Mapping[str, Any], params: Mapping[str, Any], entries: Sequence[Entry]
) -> dict[str, Any]:
    thing_config, hits = _hits(config, params, entries)
    name = params["aggregationField"]
    if _aggregated(thing_config, name) == "Number":
        raise _error(
            "InvalidAggregationException",
            f"{name} is a Number field; terms buckets are for String and Boolean fields",
        )
    terms = (params.get("bucketsAggregationType") or {}).get("termsAggregation") or {}
    limit = int(terms.get("maxBuckets") or DEFAULT_BUCKETS)
    counts: Counter[str] = Counter()
    for _, fields in hits:
        counts.update({scalar_text(v) for v in fields.get(name, ())})
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return {
        "totalCount": len(hits),
        "buckets": [{"keyValue": key, "count": count} for key, count in ordered],
    }
