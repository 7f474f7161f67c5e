"""AWS IoT fleet indexing through boto3: counts, buckets, names and thing documents.

Every call is `self._iot.<operation>(...)` (the IAM policy test reads them).
ResourceNotFoundException / IndexNotReadyException (no index, or not built
yet) and InvalidAggregationException (a field not indexed with a type) become
`IndexingUnavailableError`, which the CLI turns into exit 2 with the command
that turns indexing on. Every call is counted (`calls`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from orchestrator.aws._errors import MAX_PAGES, pages, translated
from orchestrator.errors import IndexingUnavailableError

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient

__all__ = ["INDEX", "FleetIndexAdapter"]

INDEX = "AWS_Things"
PAGE = 100  # SearchIndex maxResults' maximum (API reference: "cannot exceed 100")
MAX_BUCKETS = 10_000  # GetBucketsAggregation maxBuckets' maximum in the service model
_UNAVAILABLE = {"ResourceNotFoundException", "IndexNotReadyException"}


def _unavailable(code: str, message: str) -> Exception | None:
    if code in _UNAVAILABLE:
        return IndexingUnavailableError(
            f"fleet indexing is not available ({code}: {message})", code=code
        )
    if code == "InvalidAggregationException":
        return IndexingUnavailableError(
            f"fleet indexing cannot aggregate a field the census needs ({message})", code=code
        )
    return None


def _translate(operation: str) -> AbstractContextManager[None]:
    return translated(operation, refine=_unavailable)


class FleetIndexAdapter:
    """The census's and the verification's questions to the `AWS_Things` index."""

    def __init__(self, iot: IoTClient) -> None:
        self._iot = iot
        self.calls = 0

    def _count(self) -> None:
        self.calls += 1

    def count(self, query: str) -> int:
        """How many things match (GetStatistics)."""
        self.calls += 1
        with _translate("GetStatistics"):
            answer = self._iot.get_statistics(indexName=INDEX, queryString=query)
        return int(answer.get("statistics", {}).get("count", 0))

    def buckets(self, query: str, field: str, max_buckets: int = MAX_BUCKETS) -> dict[str, int]:
        """Things per value of `field` among those matching (GetBucketsAggregation, terms)."""
        self.calls += 1
        with _translate("GetBucketsAggregation"):
            answer = self._iot.get_buckets_aggregation(
                indexName=INDEX,
                queryString=query,
                aggregationField=field,
                bucketsAggregationType={"termsAggregation": {"maxBuckets": max_buckets}},
            )
        return {str(b.get("keyValue")): int(b.get("count", 0)) for b in answer.get("buckets", [])}

    def names(self, query: str, limit: int | None) -> list[str]:
        """Names of matching things, sorted as the index returns them; all when limit is None."""
        out: list[str] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            if limit is not None and len(out) >= limit:
                break
            page_size = PAGE if limit is None else max(1, min(PAGE, limit - len(out)))
            self._count()
            with _translate("SearchIndex"):
                answer = self._iot.search_index(
                    indexName=INDEX,
                    queryString=query,
                    maxResults=page_size,
                    **({"nextToken": token} if token else {}),
                )
            out.extend(str(t["thingName"]) for t in answer.get("things", []) if "thingName" in t)
            token = answer.get("nextToken")
            if not token:
                break
        return out if limit is None else out[:limit]

    def documents(self, query: str) -> list[dict[str, Any]]:
        """Every matching thing's document (name, groups, indexed shadows), 100 a page."""
        out: list[dict[str, Any]] = []
        for page in pages(
            self._iot.search_index,
            lambda: _translate("SearchIndex"),
            counted=self._count,
            indexName=INDEX,
            queryString=query,
            maxResults=PAGE,
        ):
            out.extend(dict(thing) for thing in page.get("things", []))
        return out
