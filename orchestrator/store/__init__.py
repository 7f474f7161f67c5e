"""Campaign state stores: one `StateStore` protocol, a template-method base, small backends.

`BaseStateStore` holds the logic (serialising `CampaignState`, version checks,
event numbering, error translation); a backend implements six primitives:
`_insert`, `_get`, `_replace`, `_read_events`, `_claim`, `_unclaim` (and `_names`).
`SqliteStateStore` (the default, one file) lives here; the DynamoDB backend, which
talks boto3, lives in `orchestrator.aws.dynamodb`.

Invariants:
- A commit writes the new state and its events atomically, and only if the
  stored version is the one the state was read at (optimistic concurrency).
  Every transition is committed before the next AWS call.
- Events are append-only and numbered `(version, index)`: a commit that is
  retried cannot duplicate them, and their order is the order of decisions.
- A lease (owner, expiry) lets one reconcile at a time work on a campaign;
  an expired lease can be taken over, so a killed process blocks nobody for long.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from orchestrator.errors import (
    CampaignExistsError,
    CampaignNotFoundError,
    LeaseHeldError,
    VersionConflictError,
)
from orchestrator.model import CampaignState, Event, state_from_dict, state_to_dict

__all__ = ["BaseStateStore", "StateStore", "StoredCampaign", "StoredEvent"]


@dataclass(frozen=True, slots=True)
class StoredCampaign:
    """A campaign as stored: the campaign file it was started from, and its state."""

    spec_text: str
    spec_dir: str | None
    state: CampaignState


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event log entry, numbered by the commit (state version) that wrote it."""

    version: int
    index: int
    at: datetime
    kind: str
    reason: str
    wave: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


class StateStore(Protocol):
    """Where campaigns live between reconciles (SQLite file, DynamoDB table)."""

    def create(self, stored: StoredCampaign, events: Sequence[Event]) -> CampaignState:
        """Store a new campaign; `CampaignExistsError` if the name is taken."""
        ...

    def load(self, name: str) -> StoredCampaign:
        """The campaign by name; `CampaignNotFoundError` if there is none."""
        ...

    def commit(self, state: CampaignState, events: Sequence[Event]) -> CampaignState:
        """Write `state` and `events` if nobody wrote since `state.version`; the new state."""
        ...

    def events(self, name: str) -> list[StoredEvent]:
        """The campaign's event log, oldest first."""
        ...

    def acquire_lease(
        self,
        name: str,
        owner: str,
        ttl: timedelta,
        now: datetime,
        *,
        take_over: str | None = None,
    ) -> None:
        """Hold the campaign's lease until now + ttl; `LeaseHeldError` if someone else does.

        `take_over` names a holder known to be dead: its lease is taken even if unexpired.
        """
        ...

    def lease_holder(self, name: str) -> str | None:
        """Who holds the campaign's lease (expired or not), if anyone."""
        ...

    def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up (no-op when `owner` does not hold it)."""
        ...

    def names(self) -> list[str]:
        """Every campaign in the store."""
        ...


def _event_record(event: Event, now: datetime) -> dict[str, Any]:
    at = event.at or now
    return {
        "at": at.isoformat(),
        "kind": event.kind,
        "reason": event.reason,
        "wave": event.wave,
        "data": json.loads(json.dumps(dict(event.data), default=str)),
    }


class BaseStateStore(ABC):
    """The store logic; subclasses implement the primitives below."""

    # -- primitives ------------------------------------------------------------------------

    @abstractmethod
    def _insert(self, name: str, record: str, events: list[tuple[int, int, str]]) -> bool:
        """Store a new record at version 1 with its events; False if the name exists."""

    @abstractmethod
    def _get(self, name: str) -> tuple[str, int] | None:
        """(record, version), or None."""

    @abstractmethod
    def _replace(
        self, name: str, record: str, expected: int, events: list[tuple[int, int, str]]
    ) -> bool:
        """Write record at expected + 1 with its events if the stored version is `expected`."""

    @abstractmethod
    def _read_events(self, name: str) -> list[tuple[int, int, str]]:
        """(version, index, event record) rows, oldest first."""

    @abstractmethod
    def _claim(
        self, name: str, owner: str, until: float, now: float, take_over: str | None
    ) -> bool:
        """Take the lease if free, expired (expiry <= now), ours, or held by `take_over`."""

    @abstractmethod
    def _holder(self, name: str) -> str | None:
        """The lease's owner, if there is a lease row."""

    @abstractmethod
    def _unclaim(self, name: str, owner: str) -> None:
        """Drop the lease if `owner` holds it."""

    @abstractmethod
    def _names(self) -> list[str]:
        """Every stored campaign name."""

    # -- the logic -------------------------------------------------------------------------

    @staticmethod
    def _encode(stored: StoredCampaign) -> str:
        return json.dumps(
            {
                "spec_text": stored.spec_text,
                "spec_dir": stored.spec_dir,
                "state": state_to_dict(stored.state),
            },
            sort_keys=True,
        )

    @staticmethod
    def _rows(version: int, events: Sequence[Event], now: datetime) -> list[tuple[int, int, str]]:
        return [
            (version, index, json.dumps(_event_record(event, now), sort_keys=True))
            for index, event in enumerate(events)
        ]

    def create(self, stored: StoredCampaign, events: Sequence[Event]) -> CampaignState:
        name = stored.state.name
        rows = self._rows(1, events, stored.state.updated_at)
        if not self._insert(name, self._encode(stored), rows):
            raise CampaignExistsError(
                f"campaign {name} already exists in this state store; use `ca-migrate run {name}` "
                "to continue it, or give the new campaign another name"
            )
        return self.load(name).state

    def load(self, name: str) -> StoredCampaign:
        found = self._get(name)
        if found is None:
            raise CampaignNotFoundError(
                f"no campaign named {name} in this state store; start one with "
                "`ca-migrate start FILE`, or point --state at the right store"
            )
        record, version = found
        raw = json.loads(record)
        return StoredCampaign(
            spec_text=raw["spec_text"],
            spec_dir=raw.get("spec_dir"),
            state=state_from_dict(raw["state"], version),
        )

    def commit(self, state: CampaignState, events: Sequence[Event]) -> CampaignState:
        current = self.load(state.name)
        stored = StoredCampaign(current.spec_text, current.spec_dir, state)
        rows = self._rows(state.version + 1, events, state.updated_at)
        if not self._replace(state.name, self._encode(stored), state.version, rows):
            raise VersionConflictError(
                f"campaign {state.name} changed while this command ran (another reconcile?); "
                "run the command again"
            )
        return self.load(state.name).state

    def events(self, name: str) -> list[StoredEvent]:
        self.load(name)
        out = []
        for version, index, record in self._read_events(name):
            raw = json.loads(record)
            out.append(
                StoredEvent(
                    version=version,
                    index=index,
                    at=datetime.fromisoformat(raw["at"]),
                    kind=raw["kind"],
                    reason=raw["reason"],
                    wave=raw.get("wave"),
                    data=raw.get("data") or {},
                )
            )
        return out

    def acquire_lease(
        self,
        name: str,
        owner: str,
        ttl: timedelta,
        now: datetime,
        *,
        take_over: str | None = None,
    ) -> None:
        until = (now + ttl).timestamp()
        if not self._claim(name, owner, until, now.timestamp(), take_over):
            raise LeaseHeldError(
                f"another reconcile is working on campaign {name}; try again in a moment "
                f"(a crashed one's lease expires after {int(ttl.total_seconds())} s)"
            )

    def release_lease(self, name: str, owner: str) -> None:
        self._unclaim(name, owner)

    def lease_holder(self, name: str) -> str | None:
        return self._holder(name)

    def names(self) -> list[str]:
        return sorted(self._names())
