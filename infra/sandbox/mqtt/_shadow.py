"""A minimal named-shadow service: `$aws/things/<thing>/shadow/name/<name>/update|get|delete`.

Enough of the AWS IoT Device Shadow MQTT API for devices to report state (the
device handler reports its trust state to shadow `ca-migration`) and for the
sandbox's admin API and tests to read it back.

Semantics (a subset of the service's, stated here once):
- update: `state.reported` / `state.desired` are merged key by key, recursively;
  a null value deletes its key, a null section deletes the section. An optional
  `version` must equal the current one (else 409 "Version conflict"). The
  version starts at 1 and rises by one per accepted update. Accepted answers
  echo the requested state with per-leaf metadata timestamps; `update/documents`
  carries previous and current documents. `update/delta` is not published.
- get: the current document, or 404 when the shadow does not exist.
- delete: removes the shadow; 404 when it does not exist.
- Rejections: {code (HTTP-style integer), message, timestamp, clientToken?}.
- State lives in a `ShadowTable`: the engine's when the data plane has an engine
  that keeps one (then it is persisted and indexed with the engine), else its own.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from infra.sandbox.errors import SandboxError
from infra.sandbox.mqtt._jobs import Outgoing
from infra.sandbox.shadows import ShadowTable

__all__ = ["ShadowStore", "parse_shadow_topic"]

_OPERATIONS = frozenset({"update", "get", "delete"})
_SECTIONS = ("reported", "desired")
_CLIENT_TOKEN_MAX = 64


class ShadowRejectedError(SandboxError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_shadow_topic(topic: str) -> tuple[str, str, str] | None:
    """(thing, shadow name, operation) of a named-shadow request topic, else None."""
    parts = topic.split("/")
    if (
        len(parts) == 7  # noqa: PLR2004
        and parts[:2] == ["$aws", "things"]
        and parts[3:5] == ["shadow", "name"]
        and parts[6] in _OPERATIONS
    ):
        return parts[2], parts[5], parts[6]
    return None


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _stamp(value: Any, timestamp: int) -> Any:
    if isinstance(value, dict):
        return {k: _stamp(v, timestamp) for k, v in value.items() if v is not None}
    return {"timestamp": timestamp}


class ShadowStore:
    """Named shadows of every thing, and the request handling around them."""

    def __init__(self, now: Callable[[], int], table: ShadowTable | None = None) -> None:
        self._now = now
        self._table = table if table is not None else ShadowTable()
        self._lock = self._table.lock
        self._shadows = self._table.documents

    def get(self, thing_name: str, shadow_name: str) -> dict[str, Any] | None:
        """A copy of the shadow document {state, metadata, version, timestamp}, or None."""
        return self._table.get(thing_name, shadow_name)

    def handle(self, topic: str, payload: bytes) -> list[Outgoing]:
        """The answer(s) to one named-shadow request; [] for topics that are not requests."""
        parsed = parse_shadow_topic(topic)
        if parsed is None:
            return []
        thing, name, operation = parsed
        token: str | None = None
        try:
            body = self._body(payload)
            raw_token = body.get("clientToken")
            if isinstance(raw_token, str) and len(raw_token) <= _CLIENT_TOKEN_MAX:
                token = raw_token
            if operation == "update":
                return self._update(topic, thing, name, body, token)
            if operation == "get":
                answer = self._read(thing, name)
                return [Outgoing(f"{topic}/accepted", self._finish(answer, token))]
            return [Outgoing(f"{topic}/accepted", self._finish(self._delete(thing, name), token))]
        except ShadowRejectedError as err:
            rejection: dict[str, Any] = {"code": err.code, "message": err.message}
            return [Outgoing(f"{topic}/rejected", self._finish(rejection, token))]

    def _finish(self, answer: dict[str, Any], token: str | None) -> dict[str, Any]:
        answer.setdefault("timestamp", self._now())
        if token is not None:
            answer["clientToken"] = token
        return answer

    @staticmethod
    def _body(payload: bytes) -> dict[str, Any]:
        if not payload.strip():
            return {}
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ShadowRejectedError(400, "Payload contains invalid json") from exc
        if not isinstance(body, dict):
            raise ShadowRejectedError(400, "Payload must be a JSON object")
        return body

    def _read(self, thing: str, name: str) -> dict[str, Any]:
        doc = self.get(thing, name)
        if doc is None:
            raise ShadowRejectedError(404, f"No shadow exists with name: '{name}'")
        return doc

    def _delete(self, thing: str, name: str) -> dict[str, Any]:
        with self._lock:
            doc = self._shadows.pop((thing, name), None)
            if doc is not None:
                self._table.changed(thing)
        if doc is None:
            raise ShadowRejectedError(404, f"No shadow exists with name: '{name}'")
        return {"version": doc["version"]}

    def _update(
        self, topic: str, thing: str, name: str, body: dict[str, Any], token: str | None
    ) -> list[Outgoing]:
        state = body.get("state")
        if not isinstance(state, dict):
            raise ShadowRejectedError(400, "Missing required node: state")
        unknown = sorted(set(state) - set(_SECTIONS))
        if unknown:
            raise ShadowRejectedError(400, f"State contains an invalid node: '{unknown[0]}'")
        for section in _SECTIONS:
            if state.get(section) is not None and not isinstance(state[section], dict):
                raise ShadowRejectedError(400, f"State node {section} must be an object")
        version = body.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise ShadowRejectedError(400, "Invalid version: must be an integer")
        now = self._now()
        with self._lock:
            key = (thing, name)
            previous = self._shadows.get(key)
            if version is not None and version != (previous or {}).get("version", 0):
                raise ShadowRejectedError(409, "Version conflict")
            current = copy.deepcopy(previous) or {"state": {}, "metadata": {}, "version": 0}
            for section in _SECTIONS:
                if section not in state:
                    continue
                if state[section] is None:
                    current["state"].pop(section, None)
                    current["metadata"].pop(section, None)
                    continue
                merged = current["state"].setdefault(section, {})
                _merge(merged, state[section])
                meta = current["metadata"].setdefault(section, {})
                _merge(meta, _stamp(state[section], now))
            current["version"] += 1
            current["timestamp"] = now
            self._shadows[key] = current
            self._table.changed(thing)
        accepted = {
            "state": copy.deepcopy(state),
            "metadata": {
                s: _stamp(state[s], now) for s in _SECTIONS if isinstance(state.get(s), dict)
            },
            "version": current["version"],
            "timestamp": now,
        }
        documents: dict[str, Any] = {
            "previous": _doc_view(previous),
            "current": _doc_view(current),
            "timestamp": now,
        }
        if token is not None:
            accepted["clientToken"] = token
            documents["clientToken"] = token
        return [
            Outgoing(f"{topic}/accepted", accepted),
            Outgoing(f"{topic}/documents", documents),
        ]


def _doc_view(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    return {
        "state": copy.deepcopy(doc["state"]),
        "metadata": copy.deepcopy(doc["metadata"]),
        "version": doc["version"],
    }
