"""What configuration an order asks for, given the live one: pure, no I/O.

One function per operation (`migrate_target`, `restore_target`, `prune_target`),
chosen by one exhaustive `match` in `target_for`; what an operation means for
the device's backup is `replaces_backup`'s match. Adding an operation to
`job_documents.Operation` makes mypy fail here until both have a case.

A target is the `Snapshot` the transaction stages, probes and commits; `None`
means the order changes nothing on this device (already done). A target that
cannot be built is a `TargetFailed`, which the agent reports as the job's
failure reason before any write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import assert_never

from device_handler.errors import ConfigError, JournalError
from device_handler.order import Order
from device_handler.snapshot import Snapshot
from device_handler.trust import TrustBundle
from job_documents import Operation

__all__ = [
    "TargetFailed",
    "migrate_target",
    "prune_target",
    "replaces_backup",
    "restore_target",
    "same_roots",
    "target_for",
]


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
    """The configuration `order` asks for (None: it changes nothing).

    The one place the device dispatches on the operation: a new `Operation` is a new
    target function and a new case here (mypy's exhaustiveness check fails until it is).
    `read_previous` gives `previous.json`'s bytes (None: absent); only restore reads it.
    """
    if device_client_config is not None and live.device_client is None:
        raise ConfigError(
            f"the Device Client configuration {device_client_config} is missing; "
            "restore it (or drop the setting) before migrating this device"
        )
    operation = order.operation
    match operation:
        case Operation.MIGRATE:
            return migrate_target(order, live)
        case Operation.RESTORE:
            return restore_target(live, read_previous())
        case Operation.PRUNE:
            return prune_target(order, live)
        case _:
            assert_never(operation)


def replaces_backup(operation: Operation) -> bool:
    """Whether a successful `operation` makes what it replaced the device's backup.

    Only migrate does: `previous.json` is the configuration before the last migrate, so a
    restore or a prune leaves it (a second restore must not undo the first).
    """
    match operation:
        case Operation.MIGRATE:
            return True
        case Operation.RESTORE | Operation.PRUNE:
            return False
        case _:
            assert_never(operation)


def migrate_target(order: Order, live: Snapshot) -> Snapshot | None:
    """The order's endpoint with its roots added to (or, without keep_existing, replacing) trust."""
    if order.endpoint is None:
        raise TargetFailed("invalid-order", "a migrate order names no endpoint")
    base = TrustBundle.parse(live.bundle) if order.keep_existing else TrustBundle()
    bundle = base.extended(list(order.roots))
    if order.endpoint == live.endpoint and same_roots(bundle, live.bundle):
        # Already done (a re-run, another wave's copy): committing it again would
        # make previous.json this very configuration and lose the real backup.
        return None
    return Snapshot.of(order.endpoint, bundle.render()).with_device_client_of(live)


def restore_target(live: Snapshot, previous: bytes | None) -> Snapshot | None:
    """The configuration backed up before the last migrate (`previous`: previous.json's bytes)."""
    if previous is None:
        raise TargetFailed(
            "nothing-to-restore",
            "this device has no previous configuration to restore (it has not completed a migrate)",
        )
    try:
        backup = Snapshot.parse(previous, source="previous.json")
    except JournalError as exc:
        raise TargetFailed("backup-unreadable", str(exc)) from exc
    try:
        backup_roots = TrustBundle.parse(backup.bundle, source="previous.json")
    except ConfigError as exc:
        raise TargetFailed("backup-unreadable", str(exc)) from exc
    if backup.endpoint == live.endpoint and same_roots(backup_roots, live.bundle):
        return None  # already restored
    return backup.with_device_client_of(live)


def prune_target(order: Order, live: Snapshot) -> Snapshot | None:
    """The live configuration with the order's roots dropped from trust (never all of them)."""
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
