"""How long simulated devices take: when each notices a job, how long its transaction runs.

Why: a real fleet's devices do not act the instant a job reaches them. Each one
notices its notification some time later (asleep, on a slow link, between two
polls) and its transaction then takes a while (download, staging, a TLS probe, a
reconnect) before its outcome reaches the service. A simulation without that
spread lets every notified device act, and report, before the orchestrator can
observe the first failures: exposure before a halt, bake times and wave
durations would all come out wrong.

Invariants:
- All spans are in simulated seconds, uniform draws between `(low, high)`;
  `(0, 0)` means at once (tests that need instant devices).
- A device's arrival and transaction duration come from the fleet's seed and
  the device's name only (`FleetTiming.device_timing`): the same on every run,
  whatever the number of worker processes and whatever other devices did.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields

__all__ = ["FleetTiming", "Span"]

Span = tuple[float, float]


@dataclass(frozen=True, slots=True)
class FleetTiming:
    """Device delays of a simulated fleet, in simulated seconds (uniform draws).

    - `arrival`: from a job's notification to the moment the device acts on it
      (every profile; a rebooting device's recovery does not wait for it).
    - `transaction`: from the start of a device's transaction to its terminal
      report (the memory fleet holds the report back until then; the device is
      IN_PROGRESS meanwhile, as a real one would be).
    - `late`, `slow`, `reboot`: the waiting profiles' own delays (first connect;
      extra wait before each job; power back after a cut).

    `resolution`: the memory fleet's timers fire on this grid of simulated time (a
    delay ends at the next multiple of it), so that devices waking within one step
    act together, in one batch, instead of each moving the clock on its own. It is
    kept well below the orchestrator's reconcile interval (30 s) and the delays
    themselves. 0 means exact times. The MQTT fleet's devices wait in real time
    and use `late`, `slow` and `reboot` only.

    The defaults (arrival 1-120 s, transaction 5-60 s) are those of connected
    devices that poll or wake for jobs within two minutes and run a migration of a
    few small files, one TLS probe and one reconnect.
    """

    late: Span = (300.0, 1200.0)
    slow: Span = (120.0, 480.0)
    reboot: Span = (30.0, 180.0)
    arrival: Span = (1.0, 120.0)
    transaction: Span = (5.0, 60.0)
    resolution: float = 10.0

    def __post_init__(self) -> None:
        if not self.resolution >= 0 or math.isinf(self.resolution):  # also refuses NaN
            raise ValueError(f"FleetTiming.resolution must be >= 0 seconds, not {self.resolution}")
        for field in fields(self):
            if field.name == "resolution":
                continue
            low, high = getattr(self, field.name)
            if not (0 <= low <= high < math.inf):  # also refuses NaN
                raise ValueError(
                    f"FleetTiming.{field.name} must be (low, high) seconds with "
                    f"0 <= low <= high, not ({low}, {high})"
                )

    @classmethod
    def immediate(cls) -> FleetTiming:
        """Devices that act at once and whose transactions take no simulated time."""
        return cls(arrival=(0.0, 0.0), transaction=(0.0, 0.0))

    def device_timing(self, seed: int, thing: str) -> Span:
        """`thing`'s (arrival, transaction) seconds: from the seed and its name only."""
        rng = random.Random(f"{seed}:{thing}:timing")  # noqa: S311 - a simulation's repeatable draw
        return rng.uniform(*self.arrival), rng.uniform(*self.transaction)

    def on_grid(self, when: float, origin: float) -> float:
        """`when` moved up to the next step of the timer grid that starts at `origin`.

        Both in simulated epoch seconds; the origin is the fleet's start, so that a
        run's timeline does not depend on the wall-clock second it started at.
        """
        step = self.resolution
        return origin + math.ceil((when - origin) / step) * step if step > 0 else when
