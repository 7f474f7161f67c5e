"""One agent per device: an exclusive lock on the state directory.

The journal has a single writer by design. Two processes on one device (the
`run` daemon and a `recover` typed by hand, or the daemon and the Device
Client handler) could interleave a roll-back with a commit and leave the
bundle of one configuration beside the endpoint of the other. Every command
that may write takes this lock first; a second one is refused at once.

The lock is `flock` on `<state_dir>/agent.lock`: the kernel drops it when the
process dies, so a power cut or a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from device_handler.errors import StateLocked

__all__ = ["state_lock"]


@contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Hold the device's agent lock for the block; raise `StateLocked` if another holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StateLocked(
                f"another ca-migrate-device or handler process is using {state_dir}: "
                "stop it (or let it finish) before running this command"
            ) from exc
        yield
    finally:
        os.close(fd)
