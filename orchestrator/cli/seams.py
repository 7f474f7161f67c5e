"""The CLI's seam for embedding: what wraps the state store and the Jobs API it builds.

Every campaign command builds its state store (SQLite or DynamoDB, from `--state`)
and its AWS IoT Jobs adapter itself, then passes each through the wrappers set here
(by default, none). A program that embeds the CLI (`orchestrator.cli.main`) and
wants to observe or alter those writes (count them, trace them, inject faults in a
test) calls `wrap_adapters` once before it runs the CLI. The shipped `ca-migrate`
sets none, and nothing in the environment can set one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.jobs import JobsApi
from orchestrator.store import StateStore

__all__ = ["JobsApiWrapper", "StoreWrapper", "wrap_adapters", "wrap_jobs_api", "wrap_store"]

StoreWrapper = Callable[[StateStore], StateStore]
JobsApiWrapper = Callable[[JobsApi], JobsApi]


def _store_as_is(store: StateStore) -> StateStore:
    return store


def _jobs_api_as_is(api: JobsApi) -> JobsApi:
    return api


@dataclass(frozen=True, slots=True)
class _Wrappers:
    store: StoreWrapper = _store_as_is
    jobs_api: JobsApiWrapper = _jobs_api_as_is


_wrappers = _Wrappers()


def wrap_adapters(
    *, store: StoreWrapper | None = None, jobs_api: JobsApiWrapper | None = None
) -> None:
    """Wrap every store and Jobs API the CLI builds from now on (None: leave as built)."""
    global _wrappers  # noqa: PLW0603 - one process-wide setting, made once by the embedder
    _wrappers = _Wrappers(
        store if store is not None else _store_as_is,
        jobs_api if jobs_api is not None else _jobs_api_as_is,
    )


def wrap_store(store: StateStore) -> StateStore:
    """`store` as the embedder asked for it (the store itself unless `wrap_adapters` said)."""
    return _wrappers.store(store)


def wrap_jobs_api(api: JobsApi) -> JobsApi:
    """`api` as the embedder asked for it (the adapter itself unless `wrap_adapters` said)."""
    return _wrappers.jobs_api(api)
