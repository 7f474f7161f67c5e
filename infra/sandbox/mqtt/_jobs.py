"""The AWS IoT Jobs MQTT API on top of `JobsDataPlane`: requests in, responses and events out.

Pure logic over the engine seam: no broker, no sockets. The broker shell
(`_dataplane.py`) feeds it `(topic, payload, via)` and publishes what it
returns, so this module is tested without mosquitto and reused as is.

Invariants:
- Every request gets exactly one answer on `<request topic>/accepted` or
  `/rejected`, echoing its clientToken when the request carried a readable one;
  answers to our own topics (`.../accepted`, `.../rejected`, `notify`,
  `notify-next`) are never answered.
- `executionState` appears in a rejection only with InvalidStateTransition and
  VersionMismatch.
- `notify` goes out when the pending list (which executions, in which state)
  differs from the last one sent for that thing; `notify-next` when its head
  (job id and execution number) differs. The last state sent is forgotten once
  a thing has nothing pending, so memory grows with things that have work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from infra.sandbox.dataplane import DataPlaneError, ExecutionSnapshot, JobsDataPlane, PendingJobs
from infra.sandbox.mqtt import _wire

__all__ = ["JobsTopics", "NotifyTracker", "Outgoing", "parse_jobs_topic"]

log = structlog.get_logger(__name__)

_NOTIFY_MAX = 10
_STATE_CODES = frozenset({"InvalidStateTransition", "VersionMismatch"})
_OUR_TOPICS = frozenset({"accepted", "rejected", "notify", "notify-next"})


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for the broker to publish."""

    topic: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JobsRequest:
    """A request topic, understood: `action` is get | start-next | describe | update."""

    thing_name: str
    action: str
    job_id: str | None = None


def parse_jobs_topic(topic: str) -> JobsRequest | None:
    """What a `$aws/things/<thing>/jobs/...` topic asks; None for our own answer/event topics.

    Raises DataPlaneError InvalidTopic for any other topic under `jobs/`.
    """
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != "$aws" or parts[1] != "things" or parts[3] != "jobs":  # noqa: PLR2004
        raise DataPlaneError("InvalidTopic", f"{topic} is not a jobs topic")
    thing, rest = parts[2], parts[4:]
    if rest[-1] in _OUR_TOPICS:
        return None
    if rest == ["get"]:
        return JobsRequest(thing, "get")
    if rest == ["start-next"]:
        return JobsRequest(thing, "start-next")
    if len(rest) == 2 and rest[0] and rest[1] in {"get", "update"}:  # noqa: PLR2004
        action = "describe" if rest[1] == "get" else "update"
        return JobsRequest(thing, action, rest[0])
    raise DataPlaneError(
        "InvalidTopic",
        f"{topic} is not a Jobs API topic: use get, start-next, <jobId>/get or <jobId>/update",
    )


class JobsTopics:
    """Answers Jobs API requests through a `JobsDataPlane`."""

    def __init__(self, engine: JobsDataPlane, now: Callable[[], int]) -> None:
        self._engine = engine
        self._now = now

    def handle(self, topic: str, payload: bytes, *, via: str) -> list[Outgoing]:
        """The answer(s) to one message published on a `$aws/things/+/jobs/#` topic."""
        token = _wire.client_token(payload)
        try:
            request = parse_jobs_topic(topic)
            if request is None:
                return []
            body = _wire.parse_request(payload)
            answer = self._answer(request, body, via=via)
        except DataPlaneError as err:
            return [Outgoing(f"{topic}/rejected", self._rejection(err, token))]
        except Exception:
            log.exception("jobs_request_failed", topic=topic, via=via)
            internal = DataPlaneError("InternalError", "The sandbox failed to process the request")
            return [Outgoing(f"{topic}/rejected", self._rejection(internal, token))]
        answer["timestamp"] = self._now()
        if token is not None:
            answer["clientToken"] = token
        return [Outgoing(f"{topic}/accepted", answer)]

    def _answer(self, request: JobsRequest, body: dict[str, Any], *, via: str) -> dict[str, Any]:
        thing = request.thing_name
        if request.action == "get":
            pending = self._engine.get_pending(thing)
            return {
                "inProgressJobs": [_wire.summary(s) for s in pending.in_progress],
                "queuedJobs": [_wire.summary(s) for s in pending.queued],
            }
        if request.action == "start-next":
            started = self._engine.start_next(
                thing,
                status_details=_wire.optional_details(body),
                step_timeout_minutes=_wire.optional_int(body, "stepTimeoutInMinutes"),
                via=via,
            )
            return {} if started is None else {"execution": _wire.execution(started)}
        job_id = request.job_id or ""
        if request.action == "describe":
            include = _wire.optional_bool(body, "includeJobDocument", default=True)
            snapshot = self._engine.describe_execution(
                thing, job_id, execution_number=_wire.optional_int(body, "executionNumber")
            )
            return {"execution": _wire.execution(snapshot, include_document=include)}
        return self._update(thing, job_id, body, via=via)

    def _update(self, thing: str, job_id: str, body: dict[str, Any], *, via: str) -> dict[str, Any]:
        if job_id == "$next":
            raise DataPlaneError("InvalidRequest", "$next cannot be updated: name the job id")
        status = body.get("status")
        if status not in _wire.DEVICE_STATUSES:
            raise DataPlaneError(
                "InvalidRequest",
                f"status must be one of {', '.join(sorted(_wire.DEVICE_STATUSES))}, got {status!r}",
            )
        include_state = _wire.optional_bool(body, "includeJobExecutionState", default=False)
        include_document = _wire.optional_bool(body, "includeJobDocument", default=False)
        snapshot = self._engine.update_execution(
            thing,
            job_id,
            status=str(status),
            status_details=_wire.optional_details(body),
            expected_version=_wire.optional_int(body, "expectedVersion"),
            execution_number=_wire.optional_int(body, "executionNumber"),
            step_timeout_minutes=_wire.optional_int(body, "stepTimeoutInMinutes"),
            via=via,
        )
        answer: dict[str, Any] = {}
        if include_state:
            answer["executionState"] = _wire.execution_state(snapshot)
        if include_document:
            answer["jobDocument"] = _wire.execution(snapshot)["jobDocument"]
        return answer

    def _rejection(self, err: DataPlaneError, token: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"code": err.code, "message": err.message, "timestamp": self._now()}
        if token is not None:
            out["clientToken"] = token
        if err.code in _STATE_CODES and err.execution_state is not None:
            out["executionState"] = _wire.execution_state(err.execution_state)
        return out


def _list_key(pending: PendingJobs) -> tuple[tuple[str, str, int], ...]:
    return tuple(
        (s.status, s.job_id, s.execution_number) for s in (*pending.in_progress, *pending.queued)
    )


def _head_key(head: ExecutionSnapshot | None) -> tuple[str, int] | None:
    return None if head is None else (head.job_id, head.execution_number)


class NotifyTracker:
    """Decides which `notify` / `notify-next` events a change in a thing's pending jobs makes."""

    def __init__(self, now: Callable[[], int]) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._sent: dict[str, tuple[tuple[tuple[str, str, int], ...], tuple[str, int] | None]] = {}

    def changes(self, thing_name: str, pending: PendingJobs) -> list[Outgoing]:
        """The events to publish for `thing_name`, given its pending jobs now."""
        list_key, head = _list_key(pending), pending.next
        head_key = _head_key(head)
        with self._lock:
            last_list, last_head = self._sent.get(thing_name, ((), None))
            if list_key or head_key is not None:
                self._sent[thing_name] = (list_key, head_key)
            else:
                self._sent.pop(thing_name, None)
        out: list[Outgoing] = []
        base = f"$aws/things/{thing_name}/jobs"
        now = self._now()
        if list_key != last_list:
            jobs: dict[str, list[dict[str, Any]]] = {}
            shown = (*pending.in_progress, *pending.queued)[:_NOTIFY_MAX]
            for status in ("IN_PROGRESS", "QUEUED"):
                listed = [_wire.summary(s) for s in shown if s.status == status]
                if listed:
                    jobs[status] = listed
            out.append(Outgoing(f"{base}/notify", {"timestamp": now, "jobs": jobs}))
        if head_key != last_head:
            event: dict[str, Any] = {"timestamp": now}
            if head is not None:
                event["execution"] = _wire.execution(head)
            out.append(Outgoing(f"{base}/notify-next", event))
        return out
