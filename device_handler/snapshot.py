"""The configuration snapshot format: what `rollback.json` and `previous.json` hold."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from device_handler.device_client.config import device_client_with_endpoint
from device_handler.errors import ConfigError, JournalError
from device_handler.trust import EndpointConfig

__all__ = ["Snapshot"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An endpoint configuration and a trust bundle together, as one file holds them.

    The files' bytes are kept exactly (latin-1 round-trips any byte), so a roll-back
    or a restore gives back the very files the device had, not a re-rendering. On a
    device that runs AWS IoT Device Client, its configuration file (path and bytes)
    is the third member.
    """

    endpoint: EndpointConfig
    bundle: bytes
    endpoint_file: bytes
    device_client_path: str | None = None
    device_client: bytes | None = None

    @classmethod
    def of(cls, endpoint: EndpointConfig, bundle: bytes) -> Snapshot:
        return cls(endpoint=endpoint, bundle=bundle, endpoint_file=endpoint.render())

    def render(self) -> bytes:
        body: dict[str, Any] = {
            "format": "ca-migrate-snapshot/1",
            "endpointFile": self.endpoint_file.decode("latin-1"),
            "bundle": self.bundle.decode("latin-1"),
        }
        if self.device_client_path is not None and self.device_client is not None:
            body["deviceClientConfig"] = {
                "path": self.device_client_path,
                "content": self.device_client.decode("latin-1"),
            }
        return (json.dumps(body, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes, *, source: str) -> Snapshot:
        try:
            body: Any = json.loads(data)
            endpoint_file = body["endpointFile"].encode("latin-1")
            bundle = body["bundle"].encode("latin-1")
            endpoint = EndpointConfig.parse(endpoint_file, source=source)
            device_client = body.get("deviceClientConfig")
            dc_path = None if device_client is None else str(device_client["path"])
            dc_bytes = None if device_client is None else device_client["content"].encode("latin-1")
        except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
            raise JournalError(f"{source} is unreadable ({exc})") from exc
        return cls(
            endpoint=endpoint,
            bundle=bundle,
            endpoint_file=endpoint_file,
            device_client_path=dc_path,
            device_client=dc_bytes,
        )

    def with_device_client_of(self, live: Snapshot) -> Snapshot:
        """This target with the live Device Client config pointed at this target's endpoint."""
        if live.device_client is None or live.device_client_path is None:
            return replace(self, device_client_path=None, device_client=None)
        return replace(
            self,
            device_client_path=live.device_client_path,
            device_client=device_client_with_endpoint(
                live.device_client, self.endpoint.host, source=live.device_client_path
            ),
        )
