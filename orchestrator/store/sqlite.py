"""The default state store: one SQLite file.

Every write is one `BEGIN IMMEDIATE` transaction with `synchronous=FULL` in WAL
mode, so a commit either lands whole (state and events) or not at all, even if
the process is killed mid-write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.errors import StateError
from orchestrator.store import BaseStateStore

__all__ = ["SqliteStateStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS campaigns (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    campaign TEXT NOT NULL,
    version INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (campaign, version, idx)
);
CREATE TABLE IF NOT EXISTS leases (
    campaign TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""


class SqliteStateStore(BaseStateStore):
    """Campaigns, their event logs and leases in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(
                f"cannot open the state store {path}: {exc}; check the path and its permissions "
                "(--state)"
            ) from exc

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"state store {self.path} failed: {exc}") from exc

    def _insert(self, name: str, record: str, events: list[tuple[int, int, str]]) -> bool:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM campaigns WHERE name = ?", (name,)).fetchone():
                return False
            db.execute("INSERT INTO campaigns VALUES (?, 1, ?)", (name, record))
            db.executemany(
                "INSERT INTO events VALUES (?, ?, ?, ?)", [(name, *row) for row in events]
            )
            return True

    def _get(self, name: str) -> tuple[str, int] | None:
        row = self._db.execute(
            "SELECT record, version FROM campaigns WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def _replace(
        self, name: str, record: str, expected: int, events: list[tuple[int, int, str]]
    ) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE campaigns SET record = ?, version = version + 1 "
                "WHERE name = ? AND version = ?",
                (record, name, expected),
            )
            if cur.rowcount != 1:
                return False
            db.executemany(
                "INSERT INTO events VALUES (?, ?, ?, ?)", [(name, *row) for row in events]
            )
            return True

    def _read_events(self, name: str) -> list[tuple[int, int, str]]:
        rows = self._db.execute(
            "SELECT version, idx, record FROM events WHERE campaign = ? ORDER BY version, idx",
            (name,),
        ).fetchall()
        return [(int(v), int(i), str(r)) for v, i, r in rows]

    def _claim(
        self, name: str, owner: str, until: float, now: float, take_over: str | None
    ) -> bool:
        with self._tx() as db:
            row = db.execute(
                "SELECT owner, expires_at FROM leases WHERE campaign = ?", (name,)
            ).fetchone()
            if row is not None and row[0] not in (owner, take_over) and float(row[1]) > now:
                return False
            db.execute(
                "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT(campaign) "
                "DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at",
                (name, owner, until),
            )
            return True

    def _unclaim(self, name: str, owner: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM leases WHERE campaign = ? AND owner = ?", (name, owner))

    def _holder(self, name: str) -> str | None:
        row = self._db.execute("SELECT owner FROM leases WHERE campaign = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _names(self) -> list[str]:
        return [str(r[0]) for r in self._db.execute("SELECT name FROM campaigns").fetchall()]
