"""Keep the sandbox's state in a directory, so a restarted sandbox still has its jobs.

The whole engine state is written as one JSON file (`state.json`), atomically
(temporary file, fsync, rename, fsync of the directory), by a writer thread that
wakes when the engine changes and writes at most every `interval` seconds (less
often when a write itself is slow, so a large state does not keep the engine
busy); the last write happens at shutdown. A crash (kill -9) can lose the
changes since the last write, never corrupt the file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from infra.sandbox.engine import JobsEngine
from infra.sandbox.errors import SandboxStartError

__all__ = ["EngineStateFile"]

log = structlog.get_logger(__name__)

STATE_FILE = "state.json"


class EngineStateFile:
    """Loads the engine from a directory and keeps the directory up to date."""

    def __init__(self, directory: Path, engine: JobsEngine, *, interval: float = 0.2) -> None:
        self.directory = directory
        self.engine = engine
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written_revision = -1

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def saved_time(self) -> float | None:
        """The sandbox time recorded in the state file, if there is one."""
        state = self._read()
        return None if state is None else float(state.get("saved_at", 0.0))

    def _read(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SandboxStartError(
                f"cannot read the sandbox state {self.path}: {exc}; move it away to start empty"
            ) from exc
        if not isinstance(state, dict):
            raise SandboxStartError(
                f"{self.path} is not a sandbox state file; move it away to start empty"
            )
        return state

    def load(self) -> bool:
        """Fill the engine from the directory; False when there was nothing to load."""
        state = self._read()
        if state is None:
            return False
        if state.get("region") != self.engine.region:
            raise SandboxStartError(
                f"{self.path} holds region {state.get('region')}; start with --region "
                f"{state.get('region')} or another --state-dir"
            )
        try:
            self.engine.import_state(state["engine"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SandboxStartError(
                f"{self.path} is damaged or from another version ({exc}); move it away"
            ) from exc
        self._written_revision = self.engine.revision
        log.info("sandbox_state_loaded", path=str(self.path))
        return True

    def save(self) -> None:
        """Write the current state now (atomically)."""
        revision = self.engine.revision
        state = {
            "region": self.engine.region,
            "saved_at": self.engine.clock.now().timestamp(),
            "engine": self.engine.export_state(),
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".json.tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        self._written_revision = revision

    def start(self) -> None:
        """Start the writer thread."""
        self.engine.changes_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-state", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        event = self.engine.changes_event
        assert event is not None  # noqa: S101 - set by start()
        while not self._stop.is_set():
            event.wait()
            event.clear()
            if self._stop.is_set():
                break
            took = 0.0
            if self.engine.revision != self._written_revision:
                started = time.monotonic()
                try:
                    self.save()
                except OSError:
                    log.exception("sandbox_state_write_failed", path=str(self.path))
                took = time.monotonic() - started
            # Coalesce bursts of changes: at most one write per interval, and with a
            # large state (slow writes) spend at most a fifth of the time writing.
            self._stop.wait(max(self.interval, 4 * took))

    def stop(self) -> None:
        """Stop the writer and write the final state."""
        self._stop.set()
        if self.engine.changes_event is not None:
            self.engine.changes_event.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.save()
