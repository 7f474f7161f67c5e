"""The named shadows of every thing: one table the engine owns, persists and indexes.

The MQTT shadow service (`infra.sandbox.mqtt._shadow`) reads and writes it;
persistence saves it with the engine's state; fleet indexing reads it. It
shares the engine's lock, so an export or an index query sees whole updates.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["ShadowTable"]


class ShadowTable:
    """Shadow documents {state, metadata, version, timestamp} by (thing name, shadow name)."""

    def __init__(
        self,
        *,
        lock: threading.RLock | None = None,
        on_change: Callable[[str | None], None] | None = None,
    ) -> None:
        self.lock = lock if lock is not None else threading.RLock()
        self.documents: dict[tuple[str, str], dict[str, Any]] = {}
        self._on_change = on_change

    def changed(self, thing_name: str | None = None) -> None:
        """Call after changing `documents` (under `lock`), naming the thing when one changed."""
        if self._on_change is not None:
            self._on_change(thing_name)

    def get(self, thing_name: str, shadow_name: str) -> dict[str, Any] | None:
        with self.lock:
            doc = self.documents.get((thing_name, shadow_name))
            return copy.deepcopy(doc) if doc is not None else None

    def of_thing(self, thing_name: str, names: Iterable[str] | None = None) -> dict[str, Any]:
        """The thing's shadows by name (all, or only `names`); callers hold `lock`."""
        wanted = None if names is None else set(names)
        return {
            name: doc
            for (thing, name), doc in self.documents.items()
            if thing == thing_name and (wanted is None or name in wanted)
        }

    def export(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"thing": thing, "name": name, "document": copy.deepcopy(doc)}
                for (thing, name), doc in sorted(self.documents.items())
            ]

    def load(self, saved: Iterable[Mapping[str, Any]]) -> None:
        with self.lock:
            # In place: the shadow service holds this very dict.
            self.documents.clear()
            self.documents.update(
                {(str(s["thing"]), str(s["name"])): dict(s["document"]) for s in saved}
            )
