"""The collector's thresholds for a process that holds a large simulated fleet."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Final

__all__ = ["GC_THRESHOLDS", "simulation_gc"]

#: Collector thresholds for a process that holds a large simulated fleet (or its engine):
#: collect the young generation every 50,000 allocations and almost never walk the old one,
#: which holds the long-lived things, executions and device records.
GC_THRESHOLDS: Final = (50_000, 50, 1_000)


@contextlib.contextmanager
def simulation_gc() -> Iterator[None]:
    """`GC_THRESHOLDS` for this process while the block runs; the previous ones after it.

    For programs that run large campaigns on the memory transport (the CLI, the
    benchmarks). With the default thresholds, the engine process of a 100k-device run
    spends about two seconds in a dozen full collections of a heap that is nearly all
    long-lived. Not for the MQTT fleet: its SDK clients hold native connections that a
    collection releases, and with these thresholds 1k devices took 162 s instead of 123.
    The collector is a process-wide setting, so the library never changes it: the
    program that owns the process does, like its logging. Workers set the same thresholds.
    """
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
