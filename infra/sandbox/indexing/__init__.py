"""Fleet indexing for the sandbox: query parser, evaluator, aggregations, configuration.

Pure functions over an `IndexedThing` snapshot the engine takes under its lock;
`JobsEngine` exposes the operations (SearchIndex, GetStatistics,
GetBucketsAggregation, Get/UpdateIndexingConfiguration) to the HTTP front end.
"""

from infra.sandbox.indexing.config import DEFAULT_CONFIGURATION, updated
from infra.sandbox.indexing.service import (
    Entry,
    IndexedThing,
    build_entries,
    get_buckets_aggregation,
    get_indexing_configuration,
    get_statistics,
    search_index,
)

__all__ = [
    "DEFAULT_CONFIGURATION",
    "Entry",
    "IndexedThing",
    "build_entries",
    "get_buckets_aggregation",
    "get_indexing_configuration",
    "get_statistics",
    "search_index",
    "updated",
]
