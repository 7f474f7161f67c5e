"""Tell the run's display when the control plane throttles and botocore backs off.

botocore retries a throttled call itself and sleeps between attempts (adaptive
mode: seconds at a time); the run stands still meanwhile. A `needs-retry` hook
sees each throttled answer before that sleep and tells it, with the count of
retries so far. It returns None, so botocore's own retry decision stands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["telling_backoffs"]


@contextmanager
def telling_backoffs(tell: Callable[[str], None], *clients: Any) -> Iterator[dict[str, int]]:
    """Call `tell(line)` at each throttled answer botocore retries; yields {"retries": n}."""
    counts = {"retries": 0}

    hooks = [(client, _hook(client, tell, counts)) for client in clients]
    for client, hook in hooks:
        client.meta.events.register("needs-retry.iot", hook)
    try:
        yield counts
    finally:
        for client, hook in hooks:
            client.meta.events.unregister("needs-retry.iot", hook)


def _hook(client: Any, tell: Callable[[str], None], counts: dict[str, int]) -> Callable[..., None]:
    """The `needs-retry` hook for one client: it retries until `total_max_attempts`."""
    limit = int((client.meta.config.retries or {}).get("total_max_attempts", 1))

    def on_needs_retry(response: Any = None, attempts: int = 0, **_: Any) -> None:
        if not response:
            return
        code = response[1].get("Error", {}).get("Code", "")
        if "Throttl" not in code and "TooManyRequests" not in code:
            return
        if attempts >= limit:
            return  # the last attempt: botocore gives up, the caller sees the error
        counts["retries"] += 1
        tell(
            f"control plane throttled ({code}): botocore backs off and retries "
            f"({counts['retries']} retries so far)"
        )

    return on_needs_retry
