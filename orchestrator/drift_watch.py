"""The unattended runner's drift check: `ca-migrate verify` on every tick, announced once.

For a campaign with PASSED waves (running or completed), the runner asks the
same questions as `ca-migrate verify --passed-only` (`orchestrator.drift_survey`).
When drifted devices are found that the campaign's last `drift-found` event did
not already name, it records a new `drift-found` event (its data: how many, the
first names, and a digest of the whole sorted list) and returns it for the
announcer, so a notification goes out when drift appears or changes, not on
every tick. The event is committed like any step's (conditional on the state's
version): a campaign changed meanwhile is checked again on the next tick.

Invariants:
- Never raises for one campaign's check: fleet indexing off or still building is
  logged once per tick at info (campaigns do not need indexing), any other error
  at warning; the runner's own outcome for the campaign stands.
- The event data never carries more than `NAMES_IN_EVENT` thing names.
"""

from __future__ import annotations

import hashlib

import structlog

from job_documents import Clock
from orchestrator.drift_survey import Readers, survey_drift
from orchestrator.errors import IndexingUnavailableError, OrchestratorError
from orchestrator.model import CampaignState, Event, EventKind, WavePhase
from orchestrator.spec import parse_spec
from orchestrator.store import StateStore

__all__ = ["NAMES_IN_EVENT", "DriftWatch", "drift_digest"]

log = structlog.get_logger(__name__)

NAMES_IN_EVENT = 20
NAMES_IN_REASON = 5


def drift_digest(things: list[str]) -> str:
    """A short digest of a sorted list of thing names (what a `drift-found` event stands for)."""
    return hashlib.sha256("\n".join(sorted(things)).encode()).hexdigest()[:16]


def _last_digest(store: StateStore, name: str) -> str | None:
    found = [e for e in store.events(name) if e.kind == EventKind.DRIFT_FOUND.value]
    return str(found[-1].data.get("digest")) if found else None


class DriftWatch:
    """Checks campaigns for drift and records a `drift-found` event when it is new."""

    def __init__(
        self,
        store: StateStore,
        readers: Readers,
        clock: Clock,
    ) -> None:
        self._store = store
        self._readers = readers
        self._clock = clock
        self._unavailable_logged = False

    def check(self, name: str, state: CampaignState) -> Event | None:
        """The new `drift-found` event of this campaign, committed; None when nothing new."""
        if not any(w.phase is WavePhase.PASSED for w in state.waves):
            return None
        bound = log.bind(campaign=name)
        try:
            stored = self._store.load(name)
            spec = parse_spec(stored.spec_text, f"campaign {name}")
            result = survey_drift(spec, stored.state, self._readers, passed_only=True)
            things = sorted(d.thing for d in result.drift)
            if not things:
                return None
            digest = drift_digest(things)
            if digest == _last_digest(self._store, name):
                return None
            waves = sorted({d.wave for d in result.drift})
            shown = ", ".join(things[:NAMES_IN_REASON])
            more = " ..." if len(things) > NAMES_IN_REASON else ""
            event = Event(
                kind=EventKind.DRIFT_FOUND,
                reason=(
                    f"{len(things)} device(s) of wave(s) {', '.join(waves)} report another "
                    f"endpoint than their SUCCEEDED job set: {shown}{more}; "
                    f"run ca-migrate verify {name}"
                ),
                data={
                    "count": len(things),
                    "things": things[:NAMES_IN_EVENT],
                    "digest": digest,
                    "waves": waves,
                },
                at=self._clock.now(),
            )
            self._store.commit(stored.state, [event])
        except IndexingUnavailableError as exc:
            if not self._unavailable_logged:
                bound.info("runner-drift-unavailable", reason=str(exc))
                self._unavailable_logged = True
            return None
        except OrchestratorError as exc:
            bound.warning(
                "runner-drift-check-failed", error=str(exc), error_type=type(exc).__name__
            )
            return None
        bound.warning("runner-drift-found", count=len(things), waves=waves)
        return event
