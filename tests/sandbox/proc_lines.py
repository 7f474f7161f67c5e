"""Reading a long-running command's output line by line, as an operator watches it."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable


def lines_until(
    proc: subprocess.Popen[str], predicate: Callable[[str], bool], timeout: float
) -> list[str]:
    """The lines `proc` printed up to the first that `predicate` accepts.

    Fails after `timeout` seconds, or at once when `proc` exits first; the failure shows
    what it printed on both streams, so a command that stopped says why.
    """
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            seen.append(line)
            if predicate(line):
                return seen
            continue
        if proc.poll() is not None:
            errors = proc.stderr.read() if proc.stderr is not None else ""
            raise AssertionError(
                f"exited with {proc.returncode} first; output: {''.join(seen)}\nerrors: {errors}"
            )
        time.sleep(0.1)
    raise AssertionError(f"not seen within {timeout} s; output: {''.join(seen)}")
