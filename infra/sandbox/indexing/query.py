"""The fleet-indexing query language: the parser lives in `job_documents.fleet_query`.

It is pure and shared: the sandbox evaluates queries with it, and the orchestrator
checks a campaign's `query:` with the same grammar before anything reaches AWS.
"""

from job_documents.fleet_query import And, Match, Node, Not, Or, QueryError, Range, parse

__all__ = ["And", "Match", "Node", "Not", "Or", "QueryError", "Range", "parse"]
