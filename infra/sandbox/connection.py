"""How other processes find a running sandbox: the files `sandbox up` writes to its state dir.

`ca-migrate sandbox up --state-dir DIR` writes, once it listens:
- `DIR/env.sh`: the `export` lines it prints (control-plane URLs, region, dummy
  credentials, `CA_MIGRATE_CLOCK`), to `source` in another shell;
- `DIR/sandbox.json`: its description (`sandbox up --output json`), which
  `ca-migrate sandbox fleet --state-dir DIR` reads to find the MQTT listeners,
  the PKI and the admin API;
- `DIR/.gitignore` (`*`): the directory holds private keys; whatever its name
  and wherever it is, git ignores it.

Files are written to a temporary name, fsynced and renamed, so a reader never
sees half a file. `read_description` checks the sandbox answers, so a file left
by a sandbox that stopped is not mistaken for a running one.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any, Final
from urllib.error import URLError
from urllib.request import urlopen

from infra.sandbox.errors import SandboxError

__all__ = [
    "DESCRIPTION_FILE",
    "ENV_FILE",
    "SandboxNotRunningError",
    "env_lines",
    "read_description",
    "region_description",
    "write_connection_files",
]

ENV_FILE: Final = "env.sh"
DESCRIPTION_FILE: Final = "sandbox.json"
GITIGNORE: Final = ".gitignore"


class SandboxNotRunningError(SandboxError):
    """No running sandbox is found through a state directory; the message says what to do."""


def env_lines(env: dict[str, str]) -> list[str]:
    """`export KEY=VALUE` lines, quoted for a POSIX shell."""
    return [f"export {key}={shlex.quote(value)}" for key, value in env.items()]


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def write_connection_files(state_dir: Path, description: dict[str, Any]) -> Path:
    """Write env.sh, sandbox.json and .gitignore into `state_dir`; returns the env file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    ignore = state_dir / GITIGNORE
    if not ignore.exists():
        _write(ignore, "# the sandbox's state, keys included: never committed\n*\n")
    env_file = state_dir / ENV_FILE
    header = (
        "# Written by `ca-migrate sandbox up`: the running sandbox's endpoints for AWS clients\n"
        "# and ca-migrate. Use it with: source " + shlex.quote(str(env_file)) + "\n"
    )
    _write(env_file, header + "\n".join(env_lines(description["env"])) + "\n")
    _write(state_dir / DESCRIPTION_FILE, json.dumps(description, indent=2, sort_keys=True) + "\n")
    return env_file


def read_description(state_dir: Path, *, timeout: float = 5.0) -> dict[str, Any]:
    """The description of the sandbox running on `state_dir`; SandboxNotRunningError if none."""
    path = state_dir / DESCRIPTION_FILE
    start_it = f"start one with `ca-migrate sandbox up --state-dir {shlex.quote(str(state_dir))}`"
    try:
        description: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        admin_url = str(description["admin_url"])
    except FileNotFoundError as exc:
        raise SandboxNotRunningError(
            f"no sandbox has run on {state_dir} ({path} is missing); {start_it}"
        ) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SandboxNotRunningError(
            f"{path} is not a sandbox description ({exc}); {start_it}"
        ) from exc
    try:
        with urlopen(admin_url + "/clock", timeout=timeout) as response:  # noqa: S310 - ours
            response.read()
    except (URLError, OSError) as exc:
        raise SandboxNotRunningError(
            f"the sandbox of {state_dir} does not answer at {admin_url} ({exc}); it has stopped: "
            f"{start_it}"
        ) from exc
    return description


def region_description(description: dict[str, Any], region: str | None) -> dict[str, Any]:
    """The description as one of the sandbox's regions sees it: its `region` and `endpoints`.

    A sandbox serving several regions describes each in `regions`; `None` is the first.
    `SandboxError` names the regions served when `region` is not one of them.
    """
    if region is None or region == description.get("region"):
        return description
    served = description.get("regions") or {}
    found = served.get(region)
    if not isinstance(found, dict):
        names = ", ".join(served) or str(description.get("region"))
        raise SandboxError(
            f"this sandbox serves {names}, not {region}: give one of them to --region, or "
            f"start the sandbox with --region {region}"
        )
    return {**description, "region": region, "endpoints": found.get("endpoints", {})}
