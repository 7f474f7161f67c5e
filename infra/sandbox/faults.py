"""Fault injection for the sandbox's HTTP APIs: throttling, added latency, an outage, quotas.

Settings change at run time (through the admin API) and apply to every
following call. The outage is measured on the sandbox clock, so it scales
with `--time-scale` and ends when a manual clock is advanced past it.

With quotas enforced, each operation listed in `decisions.API_TPS` has a
token bucket (capacity and refill = its documented transactions per second,
in real time): a call finding it empty is answered ThrottlingException, as
AWS answers a caller over its rate.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.sandbox import decisions as d
from infra.sandbox.errors import ServiceError, invalid_request
from job_documents.clock import Clock

__all__ = ["FaultInjector", "FaultSettings"]


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """What the injector does to each call."""

    throttle_rate: float = 0.0  # share of calls answered ThrottlingException (429)
    latency_seconds: float = 0.0  # real seconds added before each answer
    unavailable_until: float | None = None  # sandbox epoch time; 503 until then
    enforce_quotas: bool = False  # per-operation TPS quotas (decisions.API_TPS)

    def to_wire(self, now: float) -> dict[str, Any]:
        remaining = 0.0
        if self.unavailable_until is not None:
            remaining = max(0.0, self.unavailable_until - now)
        return {
            "throttleRate": self.throttle_rate,
            "latencySeconds": self.latency_seconds,
            "unavailableSeconds": remaining,
            "enforceQuotas": self.enforce_quotas,
        }


class FaultInjector:
    """Decides, call by call, whether to throttle, delay or refuse. Thread-safe."""

    def __init__(
        self,
        clock: Clock,
        *,
        throttle_rate: float = 0.0,
        enforce_quotas: bool = False,
        seed: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._random = random.Random(seed)  # noqa: S311 - fault injection, not cryptography
        self._monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}  # operation -> (tokens, at)
        self._settings = FaultSettings()
        self.update(throttle_rate=throttle_rate, enforce_quotas=enforce_quotas)

    @property
    def settings(self) -> FaultSettings:
        with self._lock:
            return self._settings

    def update(
        self,
        *,
        throttle_rate: float | None = None,
        latency_seconds: float | None = None,
        unavailable_seconds: float | None = None,
        enforce_quotas: bool | None = None,
    ) -> FaultSettings:
        """Change some settings; those not given stay as they are."""
        if throttle_rate is not None and not 0.0 <= throttle_rate <= 1.0:
            raise invalid_request("throttleRate is a share of calls: give a number from 0 to 1")
        if latency_seconds is not None and not 0.0 <= latency_seconds <= 60.0:  # noqa: PLR2004
            raise invalid_request("latencySeconds must be 0-60")
        if unavailable_seconds is not None and unavailable_seconds < 0:
            raise invalid_request("unavailableSeconds must be zero (back now) or more")
        with self._lock:
            current = self._settings
            until = current.unavailable_until
            if unavailable_seconds is not None:
                now = self._clock.now().timestamp()
                until = now + unavailable_seconds if unavailable_seconds > 0 else None
            self._settings = FaultSettings(
                throttle_rate=current.throttle_rate if throttle_rate is None else throttle_rate,
                latency_seconds=(
                    current.latency_seconds if latency_seconds is None else latency_seconds
                ),
                unavailable_until=until,
                enforce_quotas=(
                    current.enforce_quotas if enforce_quotas is None else enforce_quotas
                ),
            )
            if not self._settings.enforce_quotas:
                self._buckets.clear()
            return self._settings

    def _take_token(self, operation: str) -> bool:
        """Whether `operation` is within its quota now (consumes one token); lock held."""
        rate = d.API_TPS.get(operation)
        if rate is None:
            return True
        now = self._monotonic()
        tokens, at = self._buckets.get(operation, (rate, now))
        tokens = min(rate, tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[operation] = (tokens, now)
            return False
        self._buckets[operation] = (tokens - 1.0, now)
        return True

    def before_call(self, operation: str | None = None) -> None:
        """Sleep the added latency, then raise the injected error for this call, if any."""
        with self._lock:
            settings = self._settings
            roll = self._random.random()
            within_quota = (
                not settings.enforce_quotas or operation is None or self._take_token(operation)
            )
        if settings.latency_seconds > 0:
            time.sleep(settings.latency_seconds)
        if (
            settings.unavailable_until is not None
            and self._clock.now().timestamp() < settings.unavailable_until
        ):
            raise ServiceError(
                "ServiceUnavailableException",
                "The service is temporarily unavailable (sandbox fault injection); retry later",
                503,
            )
        if settings.throttle_rate > 0 and roll < settings.throttle_rate:
            raise ServiceError("ThrottlingException", "Rate exceeded", 429)
        if not within_quota:
            quota = d.API_TPS.get(operation or "", 0.0)
            raise ServiceError(
                "ThrottlingException",
                f"Rate exceeded for {operation}: its quota is {quota:g} requests per second",
                429,
            )
