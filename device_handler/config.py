"""The device configuration file (`device.toml`), read once at start-up.

```toml
thing_name = "thing-0001"
region = "us-east-1"
client_cert = "certs/thing.pem"          # paths are relative to this file
client_key = "certs/thing.key"
endpoint_file = "endpoint.json"          # {"host": ..., "port": 8883, "alpn": []}
trust_bundle = "trust.pem"               # the CA file the TLS stack loads
state_dir = "state"                      # journal, rollback and previous snapshots
# device_client_config = "/etc/.aws-iot-device-client/aws-iot-device-client.conf"
#                                        # Device Client's config: its `endpoint` is a
#                                        # third file of every transaction
# device_client_restart = ["systemd-run", "--on-active=30", "systemctl", "restart",
#                          "aws-iot-device-client"]
#                                        # the Device Client handler runs it, detached,
#                                        # after a job SUCCEEDED (docs/device-handler.md)
# device_client_restart_delay_seconds = 0   # wait this long first (default 30)
# catalog = "sandbox/catalog.json"       # default: the packaged Amazon Trust Services catalog
# allowed_fingerprints = ["8ecde6..."]   # default: every root of the catalog
# signing_public_key = "ops-2026.pub"    # Ed25519 or P-256; when set, only signed documents
dead_man_seconds = 60
connect_timeout_seconds = 10
poll_seconds = 30
protocol = "mqtt5"                       # or "mqtt311"
max_attempts = 3
validity_margin_days = 365               # refuse a root that expires sooner (as `document
                                         # build` and `document validate` do by default)

[connect_override]                       # host:port -> address:port (name checks stay on)
"a1sandbox2demo.iot.us-east-1.amazonaws.com:8883" = "127.0.0.1:41883"
"a1sandbox2demo-ats.iot.us-east-1.amazonaws.com:8883" = "127.0.0.1:41884"
```
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_handler.agent import AgentSettings, DevicePaths
from device_handler.errors import ConfigError
from device_handler.probe import ClientIdentity
from device_handler.validation import (
    DEFAULT_VALIDITY_MARGIN_DAYS,
    ValidationSettings,
    load_verify_key,
)

__all__ = ["DeviceConfig", "load_config"]

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_MAX_RESTART_ARGS = 32
_OVERRIDE = re.compile(r"[^:\s]+:\d{1,5}")
#: A device.toml is a few hundred bytes; anything this large is some other file.
_MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    thing_name: str
    region: str
    client_cert: Path
    client_key: Path
    endpoint_file: Path
    trust_bundle: Path
    state_dir: Path
    device_client_config: Path | None = None
    catalog: Path | None = None
    allowed_fingerprints: frozenset[str] | None = None
    signing_public_key: Path | None = None
    connect_override: dict[str, str] = field(default_factory=dict)
    dead_man_seconds: float = 60.0
    connect_timeout_seconds: float = 10.0
    poll_seconds: float = 30.0
    protocol: str = "mqtt5"
    max_attempts: int = 3
    validity_margin_days: int = DEFAULT_VALIDITY_MARGIN_DAYS
    device_client_restart: tuple[str, ...] | None = None
    device_client_restart_delay_seconds: float = 30.0
    source: Path | None = None

    def identity(self) -> ClientIdentity:
        return ClientIdentity(cert=self.client_cert, key=self.client_key)

    def agent_settings(self) -> AgentSettings:
        return AgentSettings(
            thing_name=self.thing_name,
            paths=DevicePaths(
                endpoint_file=self.endpoint_file,
                trust_bundle=self.trust_bundle,
                state_dir=self.state_dir,
                device_client_config=self.device_client_config,
            ),
            identity=self.identity(),
            overrides=self.connect_override,
            dead_man_seconds=self.dead_man_seconds,
            connect_timeout=self.connect_timeout_seconds,
            max_attempts=self.max_attempts,
        )

    def validation_settings(self) -> ValidationSettings:
        return ValidationSettings(
            region=self.region,
            catalog=self.catalog,
            allowed_fingerprints=self.allowed_fingerprints,
            verify_key=self.signing_public_key,
            validity_margin_days=self.validity_margin_days,
        )


def _read_toml(path: Path) -> dict[str, Any]:
    """The TOML table in `path`: at most `_MAX_CONFIG_BYTES` of UTF-8, else a `ConfigError`."""
    try:
        with path.open("rb") as stream:
            data = stream.read(_MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the device configuration {path}: {exc}") from exc
    if len(data) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is over {_MAX_CONFIG_BYTES} bytes: not a device.toml")
    try:
        table: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return table


def load_config(path: Path) -> DeviceConfig:
    """Read and check `path`; every problem is a `ConfigError` naming the setting."""
    raw = _read_toml(path)
    base = path.resolve().parent
    where = str(path)

    def text(key: str, *, required: bool = True) -> str | None:
        value = raw.get(key)
        if value is None:
            if required:
                raise ConfigError(f"{where}: `{key}` is required")
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: `{key}` must be a non-empty string")
        return value

    def optional_file(key: str) -> Path | None:
        value = text(key, required=False)
        return None if value is None else (base / value)

    def file(key: str) -> Path:
        return base / (text(key) or "")

    def number(key: str, default: float, *, low: float, high: float) -> float:
        value = raw.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise ConfigError(f"{where}: `{key}` must be a number from {low:g} to {high:g}")
        return float(value)

    def whole(key: str, default: int, high: int) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            raise ConfigError(f"{where}: `{key}` must be a whole number from 0 to {high}")
        return value

    known = {f for f in DeviceConfig.__dataclass_fields__ if f != "source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown settings {unknown}; known: {sorted(known)}")
    fingerprints = raw.get("allowed_fingerprints")
    allowed: frozenset[str] | None = None
    if fingerprints is not None:
        if not isinstance(fingerprints, list) or not all(
            isinstance(f, str) and _FINGERPRINT.fullmatch(f.lower().replace(":", ""))
            for f in fingerprints
        ):
            raise ConfigError(
                f"{where}: `allowed_fingerprints` must be a list of SHA-256 fingerprints "
                "(64 hex digits, of the certificate's DER)"
            )
        allowed = frozenset(f.lower().replace(":", "") for f in fingerprints)
    overrides = raw.get("connect_override", {})
    if not isinstance(overrides, dict) or not all(
        isinstance(k, str)
        and isinstance(v, str)
        and _OVERRIDE.fullmatch(k)
        and _OVERRIDE.fullmatch(v)
        for k, v in overrides.items()
    ):
        raise ConfigError(
            f'{where}: [connect_override] entries must read "host:port" = "address:port"'
        )
    signing_key = optional_file("signing_public_key")
    if signing_key is not None:
        load_verify_key(signing_key)
    restart = raw.get("device_client_restart")
    if restart is not None and (
        not isinstance(restart, list)
        or not 1 <= len(restart) <= _MAX_RESTART_ARGS
        or not all(isinstance(a, str) and a and "\x00" not in a for a in restart)
    ):
        raise ConfigError(
            f"{where}: `device_client_restart` must be a command as a list of 1 to "
            f'{_MAX_RESTART_ARGS} non-empty strings, e.g. ["systemctl", "restart", '
            '"aws-iot-device-client"]'
        )
    protocol = text("protocol", required=False) or "mqtt5"
    if protocol not in {"mqtt5", "mqtt311"}:
        raise ConfigError(f'{where}: `protocol` must be "mqtt5" or "mqtt311"')
    return DeviceConfig(
        thing_name=text("thing_name") or "",
        region=text("region") or "",
        client_cert=file("client_cert"),
        client_key=file("client_key"),
        endpoint_file=file("endpoint_file"),
        trust_bundle=file("trust_bundle"),
        state_dir=file("state_dir"),
        device_client_config=optional_file("device_client_config"),
        catalog=optional_file("catalog"),
        allowed_fingerprints=allowed,
        signing_public_key=signing_key,
        connect_override=dict(overrides),
        dead_man_seconds=number("dead_man_seconds", 60, low=1, high=3600),
        connect_timeout_seconds=number("connect_timeout_seconds", 10, low=1, high=300),
        poll_seconds=number("poll_seconds", 30, low=0.1, high=3600),
        protocol=protocol,
        max_attempts=int(number("max_attempts", 3, low=1, high=20)),
        validity_margin_days=whole("validity_margin_days", DEFAULT_VALIDITY_MARGIN_DAYS, 3650),
        device_client_restart=None if restart is None else tuple(restart),
        device_client_restart_delay_seconds=number(
            "device_client_restart_delay_seconds", 30, low=0, high=3600
        ),
        source=path,
    )
