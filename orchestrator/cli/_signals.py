"""SIGINT and SIGTERM stop a long command cleanly: its `with` blocks unwind, then it exits 128+N.

Python's default SIGTERM ends the process at once: no `finally` runs, so a demo's
sandbox directory stays behind. Under `stops_on_signals` both signals raise
`Interrupted` in the main thread, after one line on stderr; further signals are
ignored while the clean-up runs (SIGKILL still ends it; the brokers and the run
directory have watchers of their own for that case).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import typer

__all__ = ["Interrupted", "stops_on_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The command was told to stop by `signum`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def stops_on_signals(message: str) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into a clean stop: print `interrupted: {message}`, exit 130/143."""

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        print(f"interrupted: {message}", file=sys.stderr, flush=True)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, _on_signal) for sig in _SIGNALS}
    try:
        yield
    except Interrupted as exc:
        raise typer.Exit(128 + exc.signum) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
