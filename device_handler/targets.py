"""What configuration an order asks for, given the live one: pure, no I/O.

A target is the `Snapshot` the transaction stages, probes and commits; `None`
means the order changes nothing on this device (already done). A target that
cannot be built is a `TargetFailed`, which the agent reports as the job's
failure reason before any write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from device_handler.errors import ConfigError, JournalError
from device_handler.order import Order
from device_handler.snapshot import Snapshot
from device_handler.trust import TrustBundle

__all__ = ["TargetFailed", "same_roots", "target_for"]


class TargetFailed(Exception):  # noqa: N818 - a job's failure, reported, never escapes the agent
    """The order cannot be carried out on this device; `reason` is the report's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def target_for(
    order: Order,
    live: Snapshot,
    *,
    device_client_config: str | None,
    read_previous: Callable[[], bytes | None],
) -> Snapshot | None:
    """The configuration `order` asks for (None: it changes nothing)."""
    if device_client_config is not None and live.device_client is None:
        raise ConfigError(
            f"the Device Client configuration {device_client_config} is missing; "
            "restore it (or drop the setting) before migrating this device"
        )
    if order.operation == "migrate":
        assert order.endpoint is not None  # noqa: S101 - the schema requires it for migrate
        base = TrustBundle.parse(live.bundle) if order.keep_existing else TrustBundle()
        bundle = base.extended(list(order.roots))
        if order.endpoint == live.endpoint and same_roots(bundle, live.bundle):
            # Already done (a re-run, another wave's copy): committing it again would
            # make previous.json this very configuration and lose the real backup.
            return None
        return Snapshot.of(order.endpoint, bundle.render()).with_device_client_of(live)
    if order.operation == "restore":
        data = read_previous()
        if data is None:
            raise TargetFailed(
                "nothing-to-restore",
                "this device has no previous configuration to restore "
                "(it has not completed a migrate)",
            )
        try:
            backup = Snapshot.parse(data, source="previous.json")
        except JournalError as exc:
            raise TargetFailed("backup-unreadable", str(exc)) from exc
        try:
            backup_roots = TrustBundle.parse(backup.bundle, source="previous.json")
        except ConfigError as exc:
            raise TargetFailed("backup-unreadable", str(exc)) from exc
        if backup.endpoint == live.endpoint and same_roots(backup_roots, live.bundle):
            return None  # already restored
        return backup.with_device_client_of(live)
    current = TrustBundle.parse(live.bundle)
    pruned = current.without(order.remove)
    if pruned == current:
        return None
    if not pruned.roots:
        raise TargetFailed("prune-empty", "pruning these roots would leave the trust bundle empty")
    return replace(live, bundle=pruned.render())


def same_roots(bundle: TrustBundle, live_bundle: bytes) -> bool:
    """True when the live bundle file holds exactly `bundle`'s roots (never when unreadable)."""
    try:
        live = TrustBundle.parse(live_bundle)
    except ConfigError:
        return False
    return set(live.fingerprints()) == set(bundle.fingerprints())
