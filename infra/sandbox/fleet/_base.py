"""What every simulated fleet shares: device records, their files, validators, results.

Invariants:
- A device's files live in `<root>/<thing>/` (endpoint.json, bundle.pem,
  state/) and are created with the factory configuration (legacy endpoint,
  legacy root) when the device first boots; before that it is on the legacy
  endpoint by definition.
- Per-device memory is one small slotted `_Device`.
- `close()` removes the root only when the fleet created it.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from device_handler.agent import DevicePaths
from device_handler.errors import ConfigError, DocumentRejected
from device_handler.fsops import RealFileOps, ensure_dir, parent_dir, read_bytes
from device_handler.order import Order, Validator
from device_handler.trust import EndpointConfig
from device_handler.validation import ValidationSettings, make_validator
from infra.sandbox.fleet.profiles import Profile
from infra.sandbox.fleet.simtls import certificate_fingerprint
from infra.sandbox.fleet.timing import FleetTiming
from infra.sandbox.pki import SandboxPki
from job_documents.clock import Clock

__all__ = [
    "UNREADABLE",
    "DeviceView",
    "FleetBase",
    "FleetTiming",
    "Hung",
    "default_fleet_root",
    "device_paths",
    "hanging_probe",
    "shared_validator",
]


log = structlog.get_logger(__name__)


class Hung(BaseException):
    """A `hang` device's probe never returned: the device goes silent (never caught by the agent).

    A BaseException, so that no handler of the transaction mistakes it for a failure it
    could report: the device simply stops, as a wedged TLS stack would stop it.
    """


def hanging_probe(*_: Any, **__: Any) -> Any:
    """The probe of a `hang` device."""
    raise Hung


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What the fleet knows about one device, for summaries and tests."""

    thing_name: str
    profile: Profile
    paths: DevicePaths
    first_job_at: float | None
    power_cuts: int


class _Device:
    __slots__ = (
        "arrival",
        "booted",
        "cuts",
        "draws",
        "duration",
        "finish_at",
        "first_job_at",
        "name",
        "noticed",
        "profile",
        "ready_at",
        "rebooting",
        "timer_at",
    )

    def __init__(self, name: str, profile: Profile) -> None:
        self.name = name
        self.profile = profile
        self.ready_at = 0.0  # simulated epoch seconds before which the device does nothing
        self.timer_at = -1.0  # the wake-up already scheduled, to avoid duplicates
        self.noticed = False  # it saw its news and waits until ready_at to act on it
        self.arrival = -1.0  # its notice and transaction seconds, drawn when first needed
        self.duration = -1.0
        self.finish_at = 0.0  # its transaction in flight reports no earlier than this
        self.first_job_at: float | None = None
        self.cuts = 0
        self.rebooting = False  # lost power: the next start runs the boot-time recovery
        self.booted = False  # its files are known to exist
        self.draws = 0  # random draws made for this device so far


def shared_validator(validator: Validator) -> Validator:
    """`validator`, run once per distinct document text and remembered.

    Every device of a simulated fleet that shares a validation policy reaches
    the same verdict on the same document; checking each text once keeps the
    real validator in the path without paying for it 100k times.
    """
    seen: dict[str, Order | DocumentRejected] = {}
    lock = threading.Lock()

    def validate(raw: Any) -> Order:
        if not isinstance(raw, str):
            return validator(raw)
        with lock:
            known = seen.get(raw)
        if known is None:
            try:
                known = validator(raw)
            except DocumentRejected as exc:
                known = exc
            with lock:
                seen[raw] = known
        if isinstance(known, DocumentRejected):
            raise DocumentRejected(known.code, known.message)
        return known

    return validate


ENDPOINT_FILE: Final = "endpoint.json"
#: What `endpoint_counts` names a device whose endpoint file is not an endpoint configuration.
UNREADABLE: Final = "unreadable"


def device_paths(root: str | Path, thing: str) -> DevicePaths:
    """Where simulated device `thing` keeps its files below the fleet's `root`.

    Joined as strings: a device's paths are made at each of its activations, and
    pathlib's joins cost more than the rest of the set-up.
    """
    base = os.path.join(root, thing)  # noqa: PTH118 - see above
    return DevicePaths(
        endpoint_file=os.path.join(base, ENDPOINT_FILE),  # noqa: PTH118
        trust_bundle=os.path.join(base, "bundle.pem"),  # noqa: PTH118
        state_dir=os.path.join(base, "state"),  # noqa: PTH118
    )


def _remove_at(parent: int, name: str) -> None:
    """Remove `name` in directory `parent` (a descriptor) and everything below it.

    What `shutil.rmtree` does for the fleet's own small trees, at two thirds of its
    cost: a device's files are removed relative to open directories, with no stat of
    each entry and no path built for it. Symbolic links are removed, never followed;
    a missing entry is left alone, any other error is raised.
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(name, dir_fd=parent)  # a file where a directory was
        return
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        os.unlink(name, dir_fd=parent)  # a symbolic link: removed, not followed
        return
    try:
        with os.scandir(fd) as entries:
            found = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for entry, is_dir in found:
            if is_dir:
                _remove_at(fd, entry)
            else:
                os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def default_fleet_root() -> Path:
    """A fresh directory for device files, on tmpfs when the machine has one."""
    shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp below it, not a fixed name
    base = str(shm) if shm.is_dir() else None
    return Path(tempfile.mkdtemp(prefix="ca-migrate-fleet-", dir=base))


class FleetBase:
    """Devices, their files and validators; the results every fleet reports."""

    def __init__(
        self,
        pki: SandboxPki,
        profiles: Mapping[str, Profile],
        *,
        clock: Clock,
        root: Path | None,
        seed: int,
        timing: FleetTiming | None,
        share_validation: bool,
        verify_key: Path | None = None,
    ) -> None:
        self.pki = pki
        self.clock = clock
        self.timing = timing or FleetTiming()
        self._owns_root = root is None
        self.root = root if root is not None else default_fleet_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_text = os.fspath(self.root)
        self._seed = seed
        self._devices = {name: _Device(name, p) for name, p in profiles.items()}
        self.legacy = EndpointConfig(host=pki.hosts["legacy"])
        self._legacy_bundle = pki.legacy_root_pem.read_bytes()
        self._legacy_render = self.legacy.render()
        self._factory = RealFileOps()  # the files a device left the factory with
        self._vias = {pki.hosts["legacy"]: "legacy", pki.hosts["ats"]: "ats"}
        # `verify_key`: the devices pin a document-signing key and take only what it signed.
        normal = make_validator(
            ValidationSettings(
                region=pki.region, catalog=pki.ats_catalog, verify_key=verify_key, clock=clock
            )
        )
        # Firmware that pins the roots it accepts: only the one it shipped with.
        pinned = make_validator(
            ValidationSettings(
                region=pki.region,
                catalog=pki.ats_catalog,
                allowed_fingerprints=frozenset({certificate_fingerprint(self._legacy_bundle)}),
                verify_key=verify_key,
                clock=clock,
            )
        )
        self._validators: dict[bool, Validator] = {
            False: shared_validator(normal) if share_validation else normal,
            True: shared_validator(pinned) if share_validation else pinned,
        }

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _random(self, device: _Device) -> random.Random:
        """The generator of `device`'s next draw: from the seed, its name and its draw count.

        Per device, not per fleet: a device's delays and crash point do not depend on
        which other devices acted before it, nor on how a fleet is split over processes.
        """
        device.draws += 1
        return random.Random(f"{self._seed}:{device.name}:{device.draws}")  # noqa: S311

    def _timing(self, device: _Device) -> tuple[float, float]:
        """`device`'s (arrival, transaction) seconds, from the seed and its name only."""
        if device.arrival < 0:
            device.arrival, device.duration = self.timing.device_timing(self._seed, device.name)
        return device.arrival, device.duration

    def validator(self, profile: Profile) -> Validator:
        return self._validators[profile is Profile.REJECT]

    def close(self) -> None:
        """Remove the device files if this fleet created their directory."""
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
            self._owns_root = False

    # ------------------------------------------------------------------ files
    def paths(self, thing: str) -> DevicePaths:
        return device_paths(self._root_text, thing)

    def remove_device_files(self) -> None:
        """Remove the files of this fleet's devices (not the root: other fleets may share it)."""
        try:
            root = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return
        left: list[str] = []
        error: OSError | None = None
        try:
            for thing in self._devices:
                try:
                    _remove_at(root, thing)
                except OSError as exc:  # best effort, as rmtree(ignore_errors) was; said once
                    left.append(thing)
                    error = exc
        finally:
            os.close(root)
        if left:
            log.warning(
                "device_files_left",
                devices=len(left),
                first=left[0],
                root=str(self.root),
                error=str(error),
            )

    def _boot(self, device: _Device) -> DevicePaths:
        """The device's files; created with the factory configuration on first boot."""
        paths = self.paths(device.name)
        if device.booted:
            return paths
        device.booted = True
        files = paths.files
        made = ensure_dir(parent_dir(files.state_dir))
        if not made and os.path.exists(files.endpoint_file):  # noqa: PTH110 - no wrapper
            return paths  # files of an earlier run in a shared root: kept when complete
        ensure_dir(files.state_dir)
        self._factory.write(files.trust_bundle, self._legacy_bundle)
        # Whole or absent, never empty: the fleet's summary reads this file while the other
        # devices boot, and an empty endpoint file is one no device would ever have.
        factory = os.fspath(files.endpoint_file) + ".factory"
        self._factory.write(factory, self._legacy_render)
        os.replace(factory, files.endpoint_file)  # noqa: PTH105 - paths may be strings
        return paths

    # ------------------------------------------------------------------ results
    def things(self) -> Iterable[str]:
        return self._devices.keys()

    def profile(self, thing: str) -> Profile:
        return self._devices[thing].profile

    def view(self, thing: str) -> DeviceView:
        device = self._devices[thing]
        return DeviceView(
            thing_name=thing,
            profile=device.profile,
            paths=self.paths(thing),
            first_job_at=device.first_job_at,
            power_cuts=device.cuts,
        )

    def endpoint_of(self, thing: str) -> str:
        """The host in the device's live endpoint file (factory default before first boot)."""
        return self._host_in(self._endpoint_file(thing), {})

    def _endpoint_file(self, thing: str) -> str:
        return os.path.join(self._root_text, thing, ENDPOINT_FILE)  # noqa: PTH118 - a str

    def _host_in(self, path: str, seen: dict[bytes, str]) -> str:
        """The host in endpoint file `path`; `seen` remembers the files already parsed.

        A file that is not an endpoint configuration (edited by hand, say) counts as
        UNREADABLE: the fleet's status line reports it instead of stopping the fleet.
        """
        try:
            data = read_bytes(path)
        except FileNotFoundError:
            return self.legacy.host
        host = seen.get(data)
        if host is None:
            try:
                host = EndpointConfig.parse(data, source=path).host
            except ConfigError:
                host = UNREADABLE
            seen[data] = host
        return host

    def endpoint_counts(self) -> dict[str, int]:
        """Devices per live endpoint: "legacy", "ats", or the host when it is neither.

        Every device's file is read; a fleet's files hold a handful of distinct
        contents, so each distinct one is parsed once.
        """
        counts: Counter[str] = Counter()
        seen: dict[bytes, str] = {}
        for thing in self._devices:
            host = self._host_in(self._endpoint_file(thing), seen)
            counts[self._vias.get(host, host)] += 1
        return dict(counts)

    def exposed(self, before: float | None = None) -> int:
        """Devices that received a job (at or before `before`, simulated epoch seconds)."""
        return sum(
            1
            for d in self._devices.values()
            if d.first_job_at is not None and (before is None or d.first_job_at <= before)
        )

    def profile_counts(self) -> dict[str, int]:
        return dict(Counter(d.profile.value for d in self._devices.values()))
