"""Wire shapes of the AWS IoT Jobs MQTT API: snapshots rendered, requests read.

Pure functions, no I/O; executions are rendered by `infra.sandbox.render`.
Shapes follow the AWS IoT Jobs MQTT API as the
AWS IoT Device SDK v2 parses it: camelCase keys, every time an integer number
of epoch seconds, `jobDocument` a JSON object, fields that do not apply left
out (never null).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from device_handler.job_statuses import DEVICE_STATUSES
from infra.sandbox import render
from infra.sandbox.dataplane import DataPlaneError, ExecutionSnapshot

__all__ = [
    "DEVICE_STATUSES",
    "execution",
    "execution_state",
    "parse_request",
    "summary",
]

"""The statuses a device may set through `{jobId}/update`."""

_CLIENT_TOKEN_MAX = 64


def execution(snapshot: ExecutionSnapshot, *, include_document: bool = True) -> dict[str, Any]:
    """The `execution` object of start-next, `{jobId}/get` and notify-next."""
    return render.mqtt_execution(snapshot, include_document=include_document)


def summary(snapshot: ExecutionSnapshot) -> dict[str, Any]:
    """A JobExecutionSummary, as in `get` and `notify`."""
    return render.summary(snapshot)


def execution_state(snapshot: ExecutionSnapshot) -> dict[str, Any]:
    """A JobExecutionState: update's `executionState` and some rejections'."""
    return render.execution_state(snapshot, empty_details=False)


def parse_request(payload: bytes) -> dict[str, Any]:
    """The JSON object of a request; an empty payload counts as `{}`.

    Raises DataPlaneError InvalidJson (not JSON) or InvalidRequest (not an object,
    or a clientToken that is not a string of at most 64 characters).
    """
    if not payload.strip():
        return {}
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataPlaneError("InvalidJson", f"The request is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise DataPlaneError("InvalidRequest", "The request must be a JSON object")
    token = body.get("clientToken")
    if token is not None and (not isinstance(token, str) or len(token) > _CLIENT_TOKEN_MAX):
        body.pop("clientToken")
        raise DataPlaneError(
            "InvalidRequest", "clientToken must be a string of at most 64 characters"
        )
    return body


def client_token(payload: bytes) -> str | None:
    """Best effort: the clientToken of a request that may be malformed, to echo it."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(body, dict):
        token = body.get("clientToken")
        if isinstance(token, str) and len(token) <= _CLIENT_TOKEN_MAX:
            return token
    return None


def optional_int(body: Mapping[str, Any], key: str) -> int | None:
    """An optional integer field; InvalidRequest when present and not an integer."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataPlaneError("InvalidRequest", f"{key} must be an integer")
    return value


def optional_bool(body: Mapping[str, Any], key: str, *, default: bool) -> bool:
    """An optional boolean field; InvalidRequest when present and not a boolean."""
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise DataPlaneError("InvalidRequest", f"{key} must be true or false")
    return value


def optional_details(body: Mapping[str, Any]) -> dict[str, str] | None:
    """statusDetails: an object of string values, or absent (unchanged)."""
    value = body.get("statusDetails")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise DataPlaneError("InvalidRequest", "statusDetails must be an object of string values")
    return value
