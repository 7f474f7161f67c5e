"""What a valid job document asks of the device, in the handler's own terms.

The transaction core depends on this small value, not on the job document
library, so the validator is one replaceable function (`Validator`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from device_handler.trust import BundleRoot, EndpointConfig
from job_documents import Operation

__all__ = ["OPERATIONS", "Operation", "Order", "Validator"]

#: Every operation the contract defines; the device carries each one out (see `targets`).
OPERATIONS = frozenset(Operation)


@dataclass(frozen=True, slots=True)
class Order:
    """What a valid job document asks of this device, in the handler's own terms."""

    operation: Operation
    campaign: str
    wave: str
    region: str
    sha256: str
    endpoint: EndpointConfig | None = None
    roots: tuple[BundleRoot, ...] = ()
    remove: frozenset[str] = frozenset()
    keep_existing: bool = True
    probe_timeout: float = 10.0
    probe_attempts: int = 3


Validator = Callable[[str | bytes | Mapping[str, Any]], Order]
