"""`ca-migrate sandbox fleet`: find the sandbox, pick the devices, run them until a signal.

Steps, in order, and nothing is written before the first three pass:
1. the sandbox of `--state-dir` answers (its sandbox.json, then its admin API);
2. the selected things exist and are not none (boto3 against its control plane);
3. the options fit the selection (fail rate, offline share or count);
4. credentials from its admin API, each device's device.toml, then the agents.

Output: on a terminal (stdout), one line rewritten every second; otherwise a
line with the sandbox time whenever the summary changes. Exit codes: 0 after
SIGINT/SIGTERM, 2 for bad options or an unknown thing/group, 1 when the sandbox
cannot be reached.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from infra.sandbox.connection import SandboxNotRunningError, read_description, region_description
from infra.sandbox.errors import SandboxError

if TYPE_CHECKING:
    from infra.sandbox.fleet.live import LiveFleet
    from infra.sandbox.fleet.profiles import Profile

__all__ = ["run_fleet"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_INVALID: Final = 2
REFRESH_SECONDS: Final = 1.0
BOOT_SPACING_SECONDS: Final = 0.02


def _say(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - a command's output to its user


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)  # noqa: T201 - same


def _key_usable(path: Path | None) -> bool:
    """Whether the key the devices are to pin is a public key they can load (else say why)."""
    if path is None:
        return True
    from job_documents import SigningKeyError, load_verify_key

    try:
        load_verify_key(path)
    except SigningKeyError as exc:
        _error(f"--signing-public-key: {exc}")
        return False
    return True


def run_fleet(
    *,
    state_dir: Path,
    groups: list[str],
    things: list[str],
    fail_rate: float,
    offline: str | None,
    seed: int,
    verbose: bool,
    region: str | None = None,
    signing_public_key: Path | None = None,
) -> int:
    """Run the fleet until SIGINT or SIGTERM; the command's exit code.

    `region`: the things of that region of a sandbox serving several (default: the first).
    `signing_public_key`: the document-signing key every device pins; checked first.
    """
    from infra.sandbox.fleet.live import FleetSelectionError, LiveFleet, fetch_credentials

    interactive = sys.stdout.isatty()
    if not verbose:
        # Device events would scroll the live line away; warnings and errors stay.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if not _key_usable(signing_public_key):
        return EXIT_INVALID
    try:
        description = read_description(state_dir)
    except SandboxNotRunningError as exc:
        _error(str(exc))
        return EXIT_FAILURE
    # The first region's devices keep DIR/fleet; another region's, DIR/fleet-<region> (thing
    # names are per region: device-00001 may be a thing of each).
    fleet_dir = state_dir / (
        "fleet" if region in (None, description.get("region")) else f"fleet-{region}"
    )
    try:
        description = region_description(description, region)
    except SandboxError as exc:
        _error(str(exc))
        return EXIT_INVALID
    selected = _profiles(description, groups, things, fail_rate, offline, seed)
    if isinstance(selected, int):
        return selected
    profiles = selected
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    fleet: LiveFleet | None = None
    try:
        credentials = fetch_credentials(str(description["admin_url"]), profiles, region)
        fleet = LiveFleet(
            description,
            profiles,
            credentials=credentials,
            root=fleet_dir,
            seed=seed,
            verify_key=signing_public_key,
        )
        fleet.boot_spacing_seconds = BOOT_SPACING_SECONDS
        fleet.write_configs()
        first = next(iter(profiles))
        _say(
            f"{len(profiles)} devices of the sandbox at {description['control_plane_url']}; "
            f"their files and device.toml: {fleet_dir}/<thing>/ "
            f"(e.g. {fleet_dir / first / 'device.toml'}). Ctrl-C stops them."
        )
        if not stop.is_set():
            fleet.start()
        _show(fleet, stop, interactive=interactive)
    except FleetSelectionError as exc:
        _error(str(exc))
        return EXIT_INVALID
    except (SandboxError, OSError) as exc:
        _error(str(exc))
        return EXIT_FAILURE
    finally:
        if fleet is not None:
            if interactive:
                _say("\nstopping the devices...")
            fleet.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _say(f"stopped: {fleet.summary().line()}" if fleet is not None else "stopped")
    return EXIT_OK


def _profiles(
    description: dict[str, Any],
    groups: list[str],
    things: list[str],
    fail_rate: float,
    offline: str | None,
    seed: int,
) -> dict[str, Profile] | int:
    """Each selected device's profile, or the exit code after saying why there are none."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from infra.sandbox.fleet.live import (
        FleetSelectionError,
        parse_offline,
        pick_profiles,
        select_things,
    )
    from infra.sandbox.runtime import DUMMY_CREDENTIALS

    iot = boto3.session.Session(
        aws_access_key_id=DUMMY_CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=DUMMY_CREDENTIALS["aws_secret_access_key"],
        region_name=str(description["region"]),
    ).client("iot", endpoint_url=str(description["control_plane_url"]))
    try:
        share_or_count = parse_offline(offline)
        members = select_things(iot, groups, things)
        return pick_profiles(members, fail_rate=fail_rate, offline=share_or_count, seed=seed)
    except FleetSelectionError as exc:
        _error(str(exc))
        return EXIT_INVALID
    except ClientError as exc:
        _error(f"the sandbox refused: {exc.response.get('Error', {}).get('Message', exc)}")
        return EXIT_INVALID
    except BotoCoreError as exc:
        _error(f"cannot reach the sandbox at {description['control_plane_url']}: {exc}")
        return EXIT_FAILURE


def _show(fleet: LiveFleet, stop: threading.Event, *, interactive: bool) -> None:
    last = ""
    while True:
        line = fleet.summary().line()
        if interactive:
            sys.stdout.write("\r\x1b[2K" + line)
            sys.stdout.flush()
        elif line != last:
            stamp = fleet.clock.now().isoformat(timespec="seconds")
            _say(f"{stamp} (sandbox time) {line}")
        last = line
        if stop.wait(REFRESH_SECONDS):
            return
