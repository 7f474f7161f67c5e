"""Which clock the orchestrator's commands run on: the wall clock, or a sandbox's.

Against AWS the orchestrator reads the system clock. A sandbox started with
`--time-scale 60` runs an hour of its own time in a real minute, and its jobs,
time-outs and rollout rates follow that time; for bakes, deadlines and windows
to follow it too, the orchestrator must read the same clock. `ca-migrate sandbox
up` prints (and writes to `<state-dir>/env.sh`)::

    export CA_MIGRATE_CLOCK=sandbox:http://127.0.0.1:PORT/_sandbox

and every orchestrator command run with that variable asks the sandbox's admin
API for its time (`GET /_sandbox/clock`: `{"now": epoch, "timeScale": N}`) once,
then extrapolates locally (sandbox time moves `timeScale` seconds per real
second) and asks again every `RESYNC_SECONDS` of real time, so a clock the
sandbox jumped forward is followed. Separate processes (`start`, `run`,
`approve`) therefore agree on the time without sharing anything but the URL.

Refusals (a `UsageError`, exit 2, saying what to do):
- a value that is neither `system` nor `sandbox:http://...`;
- a sandbox clock while the control plane is AWS (no `--endpoint-url`) or
  another host than the sandbox's: bakes would otherwise be judged on one
  clock and jobs run on another;
- a sandbox that does not answer.

Invariant: `now()` never goes backwards within a process.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import urlopen

from job_documents.clock import Clock, SystemClock
from orchestrator.errors import UsageError

__all__ = [
    "CLOCK_ENV",
    "SandboxClock",
    "clock_from_env",
    "clock_label",
    "clock_note",
    "parse_clock_setting",
]

CLOCK_ENV: Final = "CA_MIGRATE_CLOCK"
RESYNC_SECONDS: Final = 5.0
TIMEOUT_SECONDS: Final = 5.0
_PREFIX: Final = "sandbox:"


class SandboxClock:
    """A sandbox's scaled time, read from its admin API and extrapolated between reads."""

    label = "sandbox time"  # what the CLI writes beside the times it prints

    def __init__(self, admin_url: str, *, resync_seconds: float = RESYNC_SECONDS) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.resync_seconds = resync_seconds
        self.time_scale = 1.0
        self._lock = threading.Lock()
        self._anchor = 0.0  # sandbox epoch seconds at `_anchor_real`
        self._anchor_real = 0.0  # time.monotonic() of the last read
        self._last = 0.0
        self._sync()

    def _sync(self) -> None:
        url = self.admin_url + "/clock"
        before = time.monotonic()
        try:
            with urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - http:// checked
                body = json.loads(response.read())
            now = float(body["now"])
            scale = float(body["timeScale"])
        except (URLError, OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f"{CLOCK_ENV} names the sandbox clock at {self.admin_url}, which does not answer "
                f"({exc}); start the sandbox (`ca-migrate sandbox up --state-dir DIR`) and source "
                f"the env file it writes, or `unset {CLOCK_ENV}` to use the system clock"
            ) from exc
        if scale <= 0:
            raise UsageError(f"the sandbox at {self.admin_url} reports a time scale of {scale}")
        after = time.monotonic()
        self._anchor = now
        self._anchor_real = (before + after) / 2
        self.time_scale = scale

    def now(self) -> datetime:
        with self._lock:
            if time.monotonic() - self._anchor_real > self.resync_seconds:
                self._sync()
            current = self._anchor + (time.monotonic() - self._anchor_real) * self.time_scale
            self._last = max(self._last, current)
            return datetime.fromtimestamp(self._last, UTC)

    def real_seconds(self, simulated: timedelta) -> float:
        """How long `simulated` sandbox time takes in real seconds."""
        return simulated.total_seconds() / self.time_scale


def parse_clock_setting(value: str | None) -> str | None:
    """The sandbox admin URL `value` names, or None for the system clock; UsageError if bad."""
    text = (value or "").strip()
    if text in ("", "system"):
        return None
    if not text.startswith(_PREFIX):
        raise UsageError(
            f"{CLOCK_ENV}={text!r} is not a clock: use `system`, or "
            f"`sandbox:http://HOST:PORT/_sandbox` as `ca-migrate sandbox up` prints it"
        )
    url = text.removeprefix(_PREFIX)
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(
            f"{CLOCK_ENV}={text!r}: the sandbox's admin URL must be http://HOST:PORT/_sandbox"
        )
    return url


def _same_service(admin_url: str, endpoint_url: str) -> bool:
    a, b = urlsplit(admin_url), urlsplit(endpoint_url)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def clock_from_env(endpoint_url: str | None, environ: dict[str, str] | None = None) -> Clock:
    """The clock for a command whose control plane is `endpoint_url` (None: AWS itself)."""
    env = os.environ if environ is None else environ
    admin_url = parse_clock_setting(env.get(CLOCK_ENV))
    if admin_url is None:
        return SystemClock()
    if endpoint_url is None:
        raise UsageError(
            f"{CLOCK_ENV} names a sandbox's clock ({admin_url}) but the control plane is AWS "
            f"(no --endpoint-url or AWS_ENDPOINT_URL_IOT): campaigns against AWS run on the "
            f"system clock; `unset {CLOCK_ENV}`, or set the sandbox's AWS_ENDPOINT_URL_IOT"
        )
    if not _same_service(admin_url, endpoint_url):
        raise UsageError(
            f"{CLOCK_ENV} names the clock of the sandbox at {admin_url} but the control plane "
            f"is {endpoint_url}; source the env file of the sandbox you use, or "
            f"`unset {CLOCK_ENV}`"
        )
    return SandboxClock(admin_url)


def clock_label(clock: Clock) -> str:
    """What to write after the times a command prints: '' or ' (sandbox time)'."""
    return f" ({SandboxClock.label})" if isinstance(clock, SandboxClock) else ""


def clock_note(clock: Clock) -> str:
    """A last line for printed status: which clock its times are on ('' for the system's)."""
    if isinstance(clock, SandboxClock):
        return f"\n(times are sandbox time, x{clock.time_scale:g} real time)"
    return ""
