"""A live fleet for a running sandbox: `ca-migrate sandbox fleet --state-dir DIR`.

The devices are the MQTT fleet's (`MqttFleet`: one thread per device running the
real `device_handler` agent with the AWS IoT Device SDK v2 over mutual TLS and
the real TLS probe), pointed at a sandbox that another process runs. The
sandbox is found through the files `sandbox up` wrote to its state directory
(`infra/sandbox/connection.py`); the things are the ones provisioned in it
(listed through boto3, as any AWS client would), and their certificates come
from its admin API.

Each device keeps its files in `DIR/fleet/<thing>/`, beside a `device.toml` that
says exactly what the thread runs: `ca-migrate-device run --config` accepts it
and would run the same device. Devices start on the legacy endpoint and trust;
a device whose files survive from an earlier run keeps them (a device migrated
yesterday is on ATS today).

Invariants:
- Profiles are deterministic for a seed: `--fail-rate` picks devices per group
  (largest remainder, as fleet descriptions do) whose ATS endpoint is a closed
  port, so their real probe fails and they roll back and report FAILED;
  `--offline` picks devices that never connect.
- Nothing is written before the selection and the options are checked.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.error import URLError
from urllib.request import Request, urlopen

from device_handler.fsops import RealFileOps
from infra.sandbox.clock import ScaledClock
from infra.sandbox.errors import SandboxError
from infra.sandbox.fleet._base import UNREADABLE
from infra.sandbox.fleet.mqtt import CLOSED_PORT, MqttFleet
from infra.sandbox.fleet.profiles import FleetSpec, GroupSpec, Profile, assign_profiles
from infra.sandbox.pki import SandboxPki

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient

__all__ = [
    "CONFIG_FILE",
    "FleetSelectionError",
    "LiveFleet",
    "Summary",
    "device_config_text",
    "fetch_credentials",
    "parse_offline",
    "pick_profiles",
    "select_things",
]

CONFIG_FILE: Final = "device.toml"
UNGROUPED: Final = "(no group)"
DEAD_MAN_SECONDS: Final = 60.0
CONNECT_TIMEOUT_SECONDS: Final = 30.0
IDLE_WAIT_SECONDS: Final = 30.0  # polls between notifications; jobs arrive by notify-next


class FleetSelectionError(SandboxError):
    """The options select no usable device; the message says what to change."""


def parse_offline(text: str | None) -> float | int:
    """`--offline`: a share (0.1, 10%) or a count (5) of devices that never connect."""
    if text is None or not text.strip():
        return 0
    raw = text.strip()
    try:
        if raw.endswith("%"):
            share = float(raw[:-1]) / 100
        elif raw.isdigit():
            return int(raw)
        else:
            share = float(raw)
    except ValueError as exc:
        raise FleetSelectionError(
            f"--offline {text!r}: give a share (0.1 or 10%) or a count of devices (5)"
        ) from exc
    if not 0.0 <= share <= 1.0:
        raise FleetSelectionError(f"--offline {text!r}: a share is from 0 to 1 (0% to 100%)")
    return share


def select_things(
    iot: IoTClient, groups: Sequence[str], things: Sequence[str]
) -> dict[str, list[str]]:
    """Thing names per group for the options; every thing of the sandbox when none is given.

    A thing named by `--thing` that is in no selected group is listed under
    `UNGROUPED`; a thing in two selected groups counts in the first.
    """
    out: dict[str, list[str]] = {}
    seen: set[str] = set()
    if not groups and not things:
        names = [
            t["thingName"]
            for page in iot.get_paginator("list_things").paginate()
            for t in page.get("things", [])
        ]
        if not names:
            raise FleetSelectionError(
                "the sandbox has no things: provision some first "
                "(`ca-migrate sandbox provision --things 10 --group canary`)"
            )
        return {UNGROUPED: sorted(names)}
    for group in groups:
        members = sorted(
            name
            for page in iot.get_paginator("list_things_in_thing_group").paginate(
                thingGroupName=group
            )
            for name in page.get("things", [])
        )
        fresh = [m for m in members if m not in seen]
        seen.update(fresh)
        if fresh:
            out[group] = fresh
    extra = []
    for name in things:
        if name in seen:
            continue
        iot.describe_thing(thingName=name)  # ResourceNotFoundException names a thing that is not
        seen.add(name)
        extra.append(name)
    if extra:
        out[UNGROUPED] = extra
    if not out:
        raise FleetSelectionError(
            "no things selected: provision some first (`ca-migrate sandbox provision "
            "--things 10`), or check --group and --thing"
        )
    return out


def pick_profiles(
    members: Mapping[str, Sequence[str]], *, fail_rate: float, offline: float, seed: int
) -> dict[str, Profile]:
    """Each device's profile: `fail_rate` of each group fail, `offline` never connect."""
    if not 0.0 <= fail_rate <= 1.0:
        raise FleetSelectionError(f"--fail-rate {fail_rate}: a share from 0 to 1")
    total = sum(len(m) for m in members.values())
    share = offline if isinstance(offline, float) else 0.0
    if share + fail_rate > 1.0:
        raise FleetSelectionError(
            f"--fail-rate {fail_rate} and --offline {offline} together exceed the fleet"
        )
    spec = FleetSpec(
        groups=tuple(
            GroupSpec(
                name=name,
                size=len(names),
                profiles={Profile.PROBE_FAILS: fail_rate, Profile.OFFLINE: share},
            )
            for name, names in members.items()
        ),
        seed=seed,
    )
    profiles = assign_profiles(spec, members)
    if isinstance(offline, int) and offline:
        ok = sorted(name for name, p in profiles.items() if p is Profile.OK)
        if offline > len(ok):
            raise FleetSelectionError(
                f"--offline {offline}: only {len(ok)} of the {total} devices are left to go "
                "offline; lower --offline or --fail-rate"
            )
        for name in random.Random(f"{seed}:offline").sample(ok, offline):  # noqa: S311
            profiles[name] = Profile.OFFLINE
    return profiles


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def device_config_text(
    *,
    thing: str,
    region: str,
    credentials: Mapping[str, str],
    catalog: Path,
    overrides: Mapping[str, str],
    note: str | None = None,
    signing_public_key: Path | None = None,
) -> str:
    """The device.toml of one live device (paths of its own files relative to the file).

    `signing_public_key`: the document-signing key the device pins (it then takes only
    documents that key signed).
    """
    lines = [
        f"# {thing}: run by `ca-migrate sandbox fleet`; `ca-migrate-device run --config` accepts",
        "# this file as it is (stop the fleet first: one agent per device). docs/device-handler.md",
        f"thing_name = {_toml_string(thing)}",
        f"region = {_toml_string(region)}",
        f"client_cert = {_toml_string(credentials['cert_pem'])}",
        f"client_key = {_toml_string(credentials['key_pem'])}",
        'endpoint_file = "endpoint.json"',
        'trust_bundle = "bundle.pem"',
        'state_dir = "state"',
        "# the sandbox's stand-in Amazon Trust Services roots; a real device leaves this out",
        f"catalog = {_toml_string(str(catalog))}",
        *(
            []
            if signing_public_key is None
            else [f"signing_public_key = {_toml_string(str(signing_public_key.resolve()))}"]
        ),
        f"dead_man_seconds = {DEAD_MAN_SECONDS:g}",
        f"connect_timeout_seconds = {CONNECT_TIMEOUT_SECONDS:g}",
        f"poll_seconds = {IDLE_WAIT_SECONDS:g}",
        'protocol = "mqtt5"',
        "",
        "[connect_override]  # the AWS host names the documents use -> the sandbox's listeners",
    ]
    if note:
        lines.insert(2, f"# {note}")
    lines.extend(f"{_toml_string(k)} = {_toml_string(v)}" for k, v in overrides.items())
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Summary:
    """What the fleet's one-line status shows."""

    devices: int
    connected: int
    offline: int
    legacy: int
    ats: int
    busy: int  # devices checking for work or running a job, not job executions
    succeeded: int
    failed: int
    unreadable: int = 0  # devices whose endpoint file is not an endpoint configuration

    def line(self) -> str:
        odd = f", {self.unreadable} unreadable endpoint file(s)" if self.unreadable else ""
        return (
            f"devices {self.devices}: {self.connected} connected, {self.offline} offline | "
            f"legacy {self.legacy}, ATS {self.ats}{odd} | "
            f"{self.busy} checking for or running a job | "
            f"jobs: {self.succeeded} succeeded, {self.failed} failed"
        )


class LiveFleet(MqttFleet):
    """The MQTT fleet, for the things of a sandbox that runs in another process."""

    def __init__(
        self,
        description: Mapping[str, Any],
        profiles: Mapping[str, Profile],
        *,
        credentials: Mapping[str, Mapping[str, str]],
        root: Path,
        seed: int,
        verify_key: Path | None = None,
    ) -> None:
        ca_dir = description.get("ca_dir")
        if not ca_dir or not description.get("endpoints"):
            raise FleetSelectionError(
                "this sandbox runs without MQTT (--no-mqtt): devices need `sandbox up` with its "
                "MQTT listeners"
            )
        pki = SandboxPki(
            Path(ca_dir),
            region=str(description["region"]),
            endpoint_prefix=str(description["endpoint_prefix"]),
        )
        scale = float(description["time_scale"])
        super().__init__(
            pki,
            profiles,
            ports={kind: int(e["port"]) for kind, e in description["endpoints"].items()},
            alpn_ports={
                kind: int(e["alpn_port"])
                for kind, e in description["endpoints"].items()
                if e.get("alpn_port")
            },
            credentials=credentials,
            clock=ScaledClock(scale, start=_sandbox_now(str(description["admin_url"]))),
            time_scale=scale,
            root=root,
            seed=seed,
            dead_man_seconds=DEAD_MAN_SECONDS,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            idle_wait_seconds=IDLE_WAIT_SECONDS,
            verify_key=verify_key,
        )
        self.region = str(description["region"])
        self._verify_key = verify_key

    def write_configs(self) -> None:
        """Each device's device.toml, beside its files (fsynced, renamed into place)."""
        fs = RealFileOps()
        for name in self.things():
            profile = self.profile(name)
            failing = profile is Profile.PROBE_FAILS
            text = device_config_text(
                thing=name,
                region=self.region,
                credentials=self._credentials[name],
                catalog=self.pki.ats_catalog.resolve(),
                overrides=self._firewalled if failing else self._overrides,
                note=(
                    f"--fail-rate: the ATS endpoint is a closed port (127.0.0.1:{CLOSED_PORT}) "
                    "for this device, so its probe fails and it rolls back"
                    if failing
                    else "--offline: the fleet never starts this device"
                    if profile is Profile.OFFLINE
                    else None
                ),
                signing_public_key=self._verify_key,
            )
            directory = self.root / name
            directory.mkdir(parents=True, exist_ok=True)
            fs.write(str(directory / CONFIG_FILE), text.encode())

    def summary(self) -> Summary:
        with self._lock:
            connected = self._booted
            busy = len(self._busy)
            outcomes = dict(self.outcomes)
        endpoints = self.endpoint_counts()
        offline = sum(1 for name in self.things() if self.profile(name) is Profile.OFFLINE)
        ats = endpoints.get("ats", 0)
        unreadable = endpoints.get(UNREADABLE, 0)
        return Summary(
            devices=len(self._devices),
            connected=connected,
            offline=offline,
            legacy=len(self._devices) - ats - unreadable,
            ats=ats,
            unreadable=unreadable,
            busy=busy,
            succeeded=outcomes.get("SUCCEEDED", 0),
            failed=outcomes.get("FAILED", 0) + outcomes.get("REJECTED", 0),
        )


def _sandbox_now(admin_url: str) -> datetime:
    try:
        with urlopen(Request(admin_url + "/clock"), timeout=5) as response:  # noqa: S310
            now = float(json.loads(response.read())["now"])
    except (URLError, OSError, ValueError, KeyError) as exc:
        raise SandboxError(f"the sandbox's clock at {admin_url} does not answer: {exc}") from exc
    return datetime.fromtimestamp(now, UTC)


def fetch_credentials(
    admin_url: str, things: Iterable[str], region: str | None = None
) -> dict[str, dict[str, str]]:
    """Certificate and key files of `things` (of `region`) from the sandbox's PKI (idempotent)."""
    names = list(things)
    out: dict[str, dict[str, str]] = {}
    for start in range(0, len(names), 500):
        ask: dict[str, Any] = {"things": names[start : start + 500]}
        if region is not None:
            ask["region"] = region
        body = json.dumps(ask).encode()
        request = Request(  # noqa: S310 - the sandbox's own http:// URL
            admin_url + "/credentials",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urlopen(request, timeout=120) as response:  # noqa: S310 - same
                out.update(json.loads(response.read())["credentials"])
        except (URLError, OSError, ValueError, KeyError) as exc:
            raise SandboxError(f"the sandbox gave no device credentials: {exc}") from exc
    return out
