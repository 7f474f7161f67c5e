"""The messages between a `ShardedFleet` and its workers: one type each, one decode place.

Pickled over one socket pair per worker. NamedTuples: they pickle about as small
and fast as bare tuples (a batch holds up to `IN_FLIGHT` requests), and each side
dispatches with `match` on the class, never on a position.

- parent -> worker (`ToWorker`): `Start`, `Run`, `Query`, `Close`, or `Answers`
  to the worker's last `Batch`;
- worker -> parent (`ToParent`): `Batch` of `Describe` / `Update` requests while
  running (each answered by an `Ok` or an `Err`), `Done` at the end of a run,
  `Result` to a `Query` or a `Close`, `Ready` once built, `Failed` with a traceback.

An `Ok` carries the job document only when the worker does not hold it yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, TypeAlias, TypeGuard

__all__ = [
    "Answers",
    "Batch",
    "Close",
    "Describe",
    "Done",
    "Err",
    "Failed",
    "Ok",
    "Query",
    "Ready",
    "Reply",
    "Request",
    "Result",
    "Run",
    "Snapshot",
    "Start",
    "ToParent",
    "ToWorker",
    "is_to_parent",
    "is_to_worker",
]


# ---------------------------------------------------------------- parent -> worker
class Start(NamedTuple):
    """Start the worker's share of the fleet at simulated epoch time `now`."""

    now: float


class Run(NamedTuple):
    """Let the devices with news, and those whose timer is due at `now`, act."""

    now: float
    news: list[str]


class Query(NamedTuple):
    """Call the worker's `MemoryFleet.<method>(*args)`; answered by a `Result`."""

    method: str
    args: tuple[Any, ...]


class Close(NamedTuple):
    """Stop; remove the devices' files when `remove_files`. Answered by a usage `Result`."""

    remove_files: bool


class Snapshot(NamedTuple):
    """The fields of an execution a device reads (`device_handler.memory.ExecutionView`)."""

    job_id: str
    status: str
    status_details: Mapping[str, str]
    version_number: int
    execution_number: int
    job_document: str | None  # None: the worker holds it already


class Ok(NamedTuple):
    snapshot: Snapshot


class Err(NamedTuple):
    """The engine refused the call; `code` is its Jobs error code (None: not a refusal)."""

    code: str | None
    message: str


Reply: TypeAlias = Ok | Err


class Answers(NamedTuple):
    """The answers to a `Batch`, in its order."""

    replies: list[Reply]


ToWorker: TypeAlias = Start | Run | Query | Close | Answers


# ---------------------------------------------------------------- worker -> parent
class Describe(NamedTuple):
    thing: str
    job_id: str
    execution_number: int | None


class Update(NamedTuple):
    thing: str
    job_id: str
    fields: dict[str, Any]


Request: TypeAlias = Describe | Update


class Batch(NamedTuple):
    """The engine calls of the devices parked in one round."""

    requests: list[Request]


class Done(NamedTuple):
    """A `Start` or `Run` finished: activations run, the next device timer, outcome counts."""

    activations: int
    next_wakeup: float | None
    outcomes: dict[str, int]


class Result(NamedTuple):
    value: Any


class Ready(NamedTuple):
    """The worker built its share of the fleet."""


class Failed(NamedTuple):
    """The worker cannot go on; `trace` says why."""

    trace: str


ToParent: TypeAlias = Batch | Done | Result | Ready | Failed

_TO_WORKER: tuple[type, ...] = (Start, Run, Query, Close, Answers)
_TO_PARENT: tuple[type, ...] = (Batch, Done, Result, Ready, Failed)


def is_to_worker(message: object) -> TypeGuard[ToWorker]:
    """Whether `message` is one the parent sends (the worker's one decode check)."""
    return isinstance(message, _TO_WORKER)


def is_to_parent(message: object) -> TypeGuard[ToParent]:
    """Whether `message` is one a worker sends (the parent's one decode check)."""
    return isinstance(message, _TO_PARENT)
