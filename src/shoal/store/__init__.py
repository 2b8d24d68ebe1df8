"""Persistence for the API server: the Store protocol and its SQLite implementation.

Only the API server imports this package (enforced by import-linter).
"""

from __future__ import annotations

from pathlib import Path

from shoal.store._protocol import JSONObject, ListResult, Store, WatchEvent
from shoal.store.sqlite import SQLiteStore

__all__ = ["JSONObject", "ListResult", "SQLiteStore", "Store", "WatchEvent", "open_store"]


def open_store(path: str | Path, *, history: int = 10_000) -> SQLiteStore:
    """Open (creating if needed) the store at ``path``; ``":memory:"`` gives a throwaway one.

    ``history`` is how many revisions of watch history automatic compaction keeps.
    """
    return SQLiteStore(path, history=history)
