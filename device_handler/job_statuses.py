"""AWS IoT Jobs execution statuses: which ones end an execution, which ones a device may set.

Per the Jobs developer guide ("Jobs concepts: job execution states"): an
execution in SUCCEEDED, FAILED, REJECTED, TIMED_OUT, REMOVED or CANCELED is
finished; a device may report IN_PROGRESS, SUCCEEDED, FAILED or REJECTED
(UpdateJobExecution), the service sets the rest. Everything that simulates or
checks executions (the in-memory Jobs, the sandbox's MQTT front end) reads these.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEVICE_STATUSES", "PENDING_STATUSES", "TERMINAL_STATUSES"]

TERMINAL_STATUSES: Final = frozenset(
    {"SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "REMOVED", "CANCELED"}
)
DEVICE_STATUSES: Final = frozenset({"IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"})
PENDING_STATUSES: Final = frozenset({"QUEUED", "IN_PROGRESS"})  # a device may still act on it
