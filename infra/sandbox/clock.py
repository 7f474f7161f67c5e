"""The sandbox's scaled clock: N sandbox seconds per real second, and jumps forward.

A rehearsal of a campaign that takes hours in production runs in minutes with
`--time-scale 60`. The clock is monotonic (it follows `time.monotonic`, not
wall-clock jumps) and starts at a given instant, so a restarted sandbox can
resume from the time its persisted state last saw.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

__all__ = ["ScaledClock"]


class ScaledClock:
    """`now()` = start + (real seconds since creation) x scale; timezone-aware UTC."""

    def __init__(self, scale: float = 1.0, *, start: datetime | None = None) -> None:
        if scale <= 0:
            raise ValueError("time scale must be a positive number of sandbox seconds per second")
        if start is not None and start.tzinfo is None:
            raise ValueError("ScaledClock needs a timezone-aware start")
        self.scale = scale
        self._start = (start or datetime.now(UTC)).astimezone(UTC)
        self._origin = time.monotonic()
        self._skipped = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        elapsed = (time.monotonic() - self._origin) * self.scale
        return self._start + timedelta(seconds=elapsed + self._skipped)

    def advance(self, delta: timedelta | float) -> datetime:
        """Jump forward by `delta` (seconds or a timedelta), e.g. to reach a timeout now."""
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        with self._lock:
            self._skipped += seconds
        return self.now()
