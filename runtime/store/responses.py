"""Stored Responses (`store: true`): the response, its input items and the conversation so far.

Rows live in the shared SQLite database. Each belongs to the key that made it (a digest of the key,
so the key itself is never stored here) and expires after the configured time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from runtime.config import Paths
from runtime.store.registry import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL,
    conversation TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires);
"""


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]  # what the client sent, as items with ids
    conversation: list[dict[str, Any]]  # chat messages up to and including this response's output


class ResponseStore:
    def __init__(self, paths: Paths, ttl: float) -> None:
        self.ttl = ttl
        self._conn = connect(paths.database)
        self._conn.executescript(_SCHEMA)

    def save(self, owner: str, stored: StoredResponse) -> None:
        now = time.time()
        self._conn.execute("DELETE FROM responses WHERE expires <= ?", (now,))
        self._conn.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
            (stored.response["id"], owner, now, now + self.ttl, json.dumps(stored.response),
             json.dumps(stored.input_items), json.dumps(stored.conversation)),
        )

    def get(self, owner: str, response_id: str) -> StoredResponse | None:
        row = self._conn.execute(
            "SELECT response, input_items, conversation FROM responses WHERE id = ? AND owner = ? AND expires > ?",
            (response_id, owner, time.time()),
        ).fetchone()
        return None if row is None else StoredResponse(*(json.loads(column) for column in row))

    def delete(self, owner: str, response_id: str) -> bool:
        cursor = self._conn.execute("DELETE FROM responses WHERE id = ? AND owner = ?", (response_id, owner))
        return cursor.rowcount > 0

    def close(self) -> None:
        self._conn.close()
