"""AWS IoT Device Client's JSON configuration: its `endpoint` follows the endpoint file."""

from __future__ import annotations

import json
from typing import Any

from device_handler.errors import ConfigError

__all__ = ["device_client_with_endpoint"]


def device_client_with_endpoint(content: bytes, host: str, *, source: str) -> bytes:
    """Device Client's JSON configuration with its `endpoint` set to `host`.

    Unchanged bytes when it already names `host`; otherwise the JSON object is
    rewritten (4-space indent, as Device Client's own files are) with every other
    setting kept. Anything but a JSON object is a `ConfigError`: the transaction
    then fails `live-config` before any write.
    """
    try:
        body: Any = json.loads(content)
    except ValueError as exc:
        raise ConfigError(f"the Device Client configuration {source} is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ConfigError(f"the Device Client configuration {source} is not a JSON object")
    if body.get("endpoint") == host:
        return content
    body["endpoint"] = host
    return (json.dumps(body, indent=4) + "\n").encode()
