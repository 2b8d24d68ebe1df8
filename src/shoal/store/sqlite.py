"""The SQLite store: one file, one connection, one global revision, in-process watch fan-out.

Why SQLite: a single-node control plane needs durable compare-and-swap writes and an ordered
change log, and SQLite gives both in one transaction for a few tens of microseconds. The calls
are synchronous inside the ``async`` methods on purpose: a statement costs microseconds, far
less than a hop to a thread pool would, and running them on the event loop thread means the
revision counter, the commit and the publish to watchers happen without interleaving.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. A committed write has
reached the OS (the WAL file) before ``create``/``update``/``delete`` returns, so it survives
``kill -9`` of this process. It is *not* fsynced on every commit, so a power loss or kernel
crash may lose the last few transactions (the database itself stays consistent). That is the
trade that makes a write cost microseconds instead of milliseconds.

Layout::

    objects(resource, namespace, name, revision, data)   current state, data = JSON text
    events(revision PK, resource, namespace, name, type, data, prev)   the change log
    meta(key PK, value)    'revision' (last written) and 'compacted' (see ``compact``)

``events.prev`` holds the previous state for MODIFIED events so a watch with a predicate can
tell that an object *left* its selection, also when replaying history.

One ``SQLiteStore`` owns its file: watches only see writes made through the same instance.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import sqlite3
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Final

from shoal.errors import (
    AlreadyExistsError,
    ConflictError,
    GoneError,
    NotFoundError,
    UnavailableError,
)
from shoal.store._protocol import EventType, JSONObject, ListResult, Predicate, WatchEvent

__all__ = ["SQLiteStore"]

AUTO_COMPACT_EVERY: Final = 1_000
"""Writes between automatic compactions: often enough to bound the log, rare enough to be free."""

DEFAULT_WATCH_BACKLOG: Final = 10_000
"""Events a watcher may fall behind before it is ended with GoneError (and must relist)."""

_REPLAY_PAGE: Final = 256
"""History rows read per query while replaying, so a long replay never holds all in memory."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS objects (
    resource  TEXT    NOT NULL,
    namespace TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    revision  INTEGER NOT NULL,
    data      TEXT    NOT NULL,
    PRIMARY KEY (resource, namespace, name)
);
CREATE TABLE IF NOT EXISTS events (
    revision  INTEGER PRIMARY KEY,
    resource  TEXT    NOT NULL,
    namespace TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    type      TEXT    NOT NULL,
    data      TEXT    NOT NULL,
    prev      TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0), ('compacted', 0);
"""

_OPEN, _GONE, _CLOSED, _UNAVAILABLE = 0, 1, 2, 3


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction. ``IMMEDIATE`` takes the write lock up front, so a transaction
    never fails half-way on a lock upgrade; SQLite failures become UnavailableError."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise UnavailableError(f"store: {exc}") from exc


def _dumps(obj: JSONObject) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _key(obj: JSONObject) -> tuple[str, str]:
    """(namespace, name) of an object; the API server guarantees ``metadata.name``."""
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _with_revision(obj: JSONObject, revision: int) -> JSONObject:
    """A copy of ``obj`` with resourceVersion set; shallow is enough because it is only
    serialised, never handed out (the caller's dict stays untouched)."""
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(revision)}}


def _not_found(resource: str, name: str) -> NotFoundError:
    return NotFoundError(f'{resource} "{name}" not found', kind=resource, name=name)


def _conflict(resource: str, name: str) -> ConflictError:
    return ConflictError(
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        kind=resource,
        name=name,
    )


def _too_old(since: int, oldest: int) -> GoneError:
    return GoneError(f"too old resource version: {since} ({oldest})")


class _Event:
    """One change as kept in memory: JSON text, parsed lazily once and shared by all watchers
    (a write with nobody watching never pays for parsing)."""

    __slots__ = ("_obj", "_prev_obj", "data", "namespace", "prev", "resource", "revision", "type")

    def __init__(
        self,
        revision: int,
        type_: EventType,
        resource: str,
        namespace: str,
        data: str,
        prev: str | None,
    ) -> None:
        self.revision = revision
        self.type: EventType = type_
        self.resource = resource
        self.namespace = namespace
        self.data = data
        self.prev = prev
        self._obj: JSONObject | None = None
        self._prev_obj: JSONObject | None = None

    def object(self) -> JSONObject:
        if self._obj is None:
            self._obj = json.loads(self.data)
        return self._obj

    def matches(self, predicate: Predicate | None) -> bool:
        """Whether a watch with ``predicate`` must see this event: the object matches now, or
        (MODIFIED) it matched before the change, i.e. it just left the selection."""
        if predicate is None or predicate(self.object()):
            return True
        if self.prev is None:
            return False
        if self._prev_obj is None:
            self._prev_obj = json.loads(self.prev)
        return predicate(self._prev_obj)

    def to_watch_event(self) -> WatchEvent:
        return WatchEvent(self.type, self.resource, self.object(), self.revision)


class _Subscription:
    """The store's side of a watch: a bounded backlog of live events and a wake-up future."""

    __slots__ = ("backlog", "buffer", "namespace", "resource", "state", "waiter")

    def __init__(self, resource: str, namespace: str | None, backlog: int) -> None:
        self.resource = resource
        self.namespace = namespace
        self.backlog = backlog
        self.buffer: deque[_Event] = deque()
        self.state = _OPEN
        self.waiter: asyncio.Future[None] | None = None

    def push(self, event: _Event) -> bool:
        """Queue ``event``; False when the watcher is too far behind (it is then ended)."""
        if len(self.buffer) >= self.backlog:
            self.end(_GONE)
            return False
        self.buffer.append(event)
        self._wake()
        return True

    def end(self, state: int) -> None:
        self.state = state
        self.buffer.clear()  # a watch that ends never needs its backlog: free it now
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None


class _Watch(AsyncIterator[WatchEvent]):
    """The iterator ``SQLiteStore.watch`` returns.

    Registered at creation, so nothing written after ``watch()`` is missed even if iteration
    starts later. History (``since > 0``) is replayed page by page first; live events at or
    below the last replayed revision are skipped, which makes the hand-over gapless and free
    of duplicates. Unregistered by ``aclose()``, or when garbage-collected (in CPython that is
    immediately after ``break`` leaves an ``async for``, or an exception/cancellation unwinds
    it). Cancelling a pending ``__anext__`` (e.g. ``asyncio.wait_for`` timing out for a
    heartbeat) does not end the watch: the next ``__anext__`` continues where it left off.
    """

    def __init__(
        self, store: SQLiteStore, sub: _Subscription, since: int, predicate: Predicate | None
    ) -> None:
        self._store = store
        self._sub = sub
        self._predicate = predicate
        self._last = since
        self._replaying = since > 0
        self._pending: deque[_Event] = deque()
        self._unregister = weakref.finalize(self, store._unregister, sub)

    def __aiter__(self) -> _Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        sub = self._sub
        while True:
            if sub.state == _CLOSED:
                self._unregister()
                raise StopAsyncIteration
            if sub.state == _GONE:
                self._unregister()
                raise GoneError(
                    f"watch of {sub.resource} fell more than {sub.backlog} events behind; "
                    "list again, then watch"
                )
            if sub.state == _UNAVAILABLE:
                raise UnavailableError("store is closed")
            if self._pending:
                event = self._pending.popleft()
                if event.matches(self._predicate):
                    return event.to_watch_event()
                continue
            if self._replaying:
                if self._last < self._store._compacted:
                    sub.end(_GONE)
                    self._unregister()
                    raise _too_old(self._last, self._store._compacted)
                page = self._store._history(sub.resource, sub.namespace, self._last)
                if len(page) < _REPLAY_PAGE:
                    self._replaying = False
                if page:
                    self._last = page[-1].revision
                    self._pending.extend(page)
                continue
            if sub.buffer:
                event = sub.buffer.popleft()
                if event.revision <= self._last:
                    continue  # already replayed from history
                self._last = event.revision
                if event.matches(self._predicate):
                    return event.to_watch_event()
                continue
            await sub.wait()

    async def aclose(self) -> None:
        """Stop watching; later ``__anext__`` calls end the iteration."""
        self._sub.end(_CLOSED)
        self._unregister()


class SQLiteStore:
    """The Store protocol on one SQLite file (or ``":memory:"``).

    ``history`` is how many revisions of watch history automatic compaction keeps (every
    ``AUTO_COMPACT_EVERY`` writes); ``watch_backlog`` is how far a watcher may fall behind
    before it is ended with GoneError instead of growing memory without bound.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        history: int = 10_000,
        watch_backlog: int = DEFAULT_WATCH_BACKLOG,
    ) -> None:
        if history < 0 or watch_backlog < 1:
            raise ValueError("history must be >= 0 and watch_backlog >= 1")
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._history_keep = history
        self._backlog = watch_backlog
        self._writes_since_compact = 0
        self._subs: dict[str, set[_Subscription]] = {}
        try:
            # Autocommit mode: transactions are spelled out (BEGIN IMMEDIATE ... COMMIT).
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise UnavailableError(f"cannot open store {self.path}: {exc}") from exc
        self._conn: sqlite3.Connection | None = conn
        self._revision: int = meta["revision"]
        self._compacted: int = meta["compacted"]

    # -- reads -----------------------------------------------------------------------------

    async def get(self, resource: str, namespace: str, name: str) -> JSONObject:
        row = self._query_one(
            "SELECT data FROM objects WHERE resource=? AND namespace=? AND name=?",
            (resource, namespace, name),
        )
        if row is None:
            raise _not_found(resource, name)
        result: JSONObject = json.loads(row[0])
        return result

    async def list(
        self,
        resource: str,
        namespace: str | None = None,
        predicate: Predicate | None = None,
    ) -> ListResult:
        conn = self._db()
        try:
            if namespace is None:
                rows = conn.execute(
                    "SELECT data FROM objects WHERE resource=? ORDER BY namespace, name",
                    (resource,),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT data FROM objects WHERE resource=? AND namespace=? ORDER BY name",
                    (resource, namespace),
                ).fetchall()
        except sqlite3.Error as exc:
            raise UnavailableError(f"store: {exc}") from exc
        items = [json.loads(data) for (data,) in rows]
        if predicate is not None:
            items = [item for item in items if predicate(item)]
        return ListResult(items=items, revision=self._revision)

    async def revision(self) -> int:
        self._db()
        return self._revision

    # -- writes ----------------------------------------------------------------------------

    async def create(self, resource: str, obj: JSONObject) -> JSONObject:
        namespace, name = _key(obj)
        conn = self._db()
        with _transaction(conn):
            revision = self._next_revision(conn)
            data = _dumps(_with_revision(obj, revision))
            try:
                conn.execute(
                    "INSERT INTO objects (resource, namespace, name, revision, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (resource, namespace, name, revision, data),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExistsError(
                    f'{resource} "{name}" already exists', kind=resource, name=name
                ) from None
            self._log(conn, revision, "ADDED", resource, namespace, name, data, None)
        self._committed(revision, "ADDED", resource, namespace, data, None)
        result: JSONObject = json.loads(data)
        return result

    async def update(
        self, resource: str, obj: JSONObject, *, expected_revision: int | None = None
    ) -> JSONObject:
        namespace, name = _key(obj)
        conn = self._db()
        with _transaction(conn):
            prev = self._current(conn, resource, namespace, name, expected_revision)
            revision = self._next_revision(conn)
            data = _dumps(_with_revision(obj, revision))
            conn.execute(
                "UPDATE objects SET revision=?, data=? WHERE resource=? AND namespace=? AND name=?",
                (revision, data, resource, namespace, name),
            )
            self._log(conn, revision, "MODIFIED", resource, namespace, name, data, prev)
        self._committed(revision, "MODIFIED", resource, namespace, data, prev)
        result: JSONObject = json.loads(data)
        return result

    async def delete(
        self,
        resource: str,
        namespace: str,
        name: str,
        *,
        expected_revision: int | None = None,
    ) -> JSONObject:
        conn = self._db()
        with _transaction(conn):
            prev = self._current(conn, resource, namespace, name, expected_revision)
            revision = self._next_revision(conn)
            last: JSONObject = json.loads(prev)
            last.setdefault("metadata", {})["resourceVersion"] = str(revision)
            data = _dumps(last)
            conn.execute(
                "DELETE FROM objects WHERE resource=? AND namespace=? AND name=?",
                (resource, namespace, name),
            )
            self._log(conn, revision, "DELETED", resource, namespace, name, data, None)
        self._committed(revision, "DELETED", resource, namespace, data, None)
        return last

    # -- watch -----------------------------------------------------------------------------

    def watch(
        self,
        resource: str,
        namespace: str | None = None,
        since: int = 0,
        predicate: Predicate | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Changes with revision > ``since`` (``0`` = from now), then live ones.

        Predicate semantics: an event is delivered when ``predicate`` matches the event's
        object, or, for MODIFIED, when it matched the object's previous state -- the object
        just left the selection and the watcher sees it as a MODIFIED whose object no longer
        matches (drop it from your cache). A DELETED event carries the last state, so the
        deletion of a matching object is always delivered. Event objects are shared between
        watchers: treat them as read-only.
        """
        if since < 0:
            raise ValueError(f"since must be >= 0, got {since}")
        sub = _Subscription(resource, namespace, self._backlog)
        if self._conn is None:
            sub.state = _UNAVAILABLE
        else:
            self._subs.setdefault(resource, set()).add(sub)
        return _Watch(self, sub, since, predicate)

    def watcher_count(self) -> int:
        """Live watches (for metrics and tests)."""
        return sum(len(subs) for subs in self._subs.values())

    # -- maintenance -----------------------------------------------------------------------

    async def compact(self, keep: int) -> int:
        """Drop the events at or below ``revision - keep``. The compacted revision is the
        newest revision dropped: a watch from it or later still sees every later change;
        a watch from below it gets GoneError. Never moves backwards."""
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        self._db()
        self._compact_to(self._revision - keep)
        return self._compacted

    async def compacted_revision(self) -> int:
        """Watches from below this revision get GoneError."""
        self._db()
        return self._compacted

    async def close(self) -> None:
        """End every watch (their iterators finish cleanly) and close the database."""
        for subs in self._subs.values():
            for sub in subs:
                sub.end(_CLOSED)
        self._subs.clear()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    # -- internals -------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise UnavailableError("store is closed")
        return self._conn

    def _query_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        try:
            row: tuple[Any, ...] | None = self._db().execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise UnavailableError(f"store: {exc}") from exc
        return row

    def _next_revision(self, conn: sqlite3.Connection) -> int:
        """Take the next revision inside the open transaction. Read from the table, not the
        in-memory copy, so a revision is never reused even if the file was written by
        another instance."""
        (current,) = conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()
        revision = int(current) + 1
        conn.execute("UPDATE meta SET value=? WHERE key='revision'", (revision,))
        return revision

    @staticmethod
    def _current(
        conn: sqlite3.Connection,
        resource: str,
        namespace: str,
        name: str,
        expected_revision: int | None,
    ) -> str:
        """The stored JSON of an object, after the existence and compare-and-swap checks."""
        row = conn.execute(
            "SELECT revision, data FROM objects WHERE resource=? AND namespace=? AND name=?",
            (resource, namespace, name),
        ).fetchone()
        if row is None:
            raise _not_found(resource, name)
        if expected_revision is not None and row[0] != expected_revision:
            raise _conflict(resource, name)
        data: str = row[1]
        return data

    @staticmethod
    def _log(
        conn: sqlite3.Connection,
        revision: int,
        type_: EventType,
        resource: str,
        namespace: str,
        name: str,
        data: str,
        prev: str | None,
    ) -> None:
        conn.execute(
            "INSERT INTO events (revision, resource, namespace, name, type, data, prev) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (revision, resource, namespace, name, type_, data, prev),
        )

    def _committed(
        self,
        revision: int,
        type_: EventType,
        resource: str,
        namespace: str,
        data: str,
        prev: str | None,
    ) -> None:
        """After a commit: advance the revision, publish to watchers, compact now and then.
        Publishing after the commit means a watcher never sees a change that is not durable."""
        self._revision = revision
        subs = self._subs.get(resource)
        if subs:
            event = _Event(revision, type_, resource, namespace, data, prev)
            overflowed = [
                sub
                for sub in subs
                if (sub.namespace is None or sub.namespace == namespace) and not sub.push(event)
            ]
            for sub in overflowed:
                subs.discard(sub)
        self._writes_since_compact += 1
        if self._writes_since_compact >= AUTO_COMPACT_EVERY:
            self._writes_since_compact = 0
            # Best effort: the write itself succeeded; a failure is retried next round.
            with suppress(UnavailableError):
                self._compact_to(self._revision - self._history_keep)

    def _compact_to(self, cut: int) -> None:
        """Delete the events at or below ``cut`` and record it as the compacted revision."""
        if cut <= self._compacted:
            return
        conn = self._db()
        with _transaction(conn):
            conn.execute("DELETE FROM events WHERE revision <= ?", (cut,))
            conn.execute("UPDATE meta SET value=? WHERE key='compacted'", (cut,))
        self._compacted = cut

    def _history(self, resource: str, namespace: str | None, after: int) -> builtins.list[_Event]:
        """Up to ``_REPLAY_PAGE`` stored events of ``resource`` with revision > ``after``."""
        sql = "SELECT revision, type, namespace, data, prev FROM events WHERE revision > ? "
        params: tuple[Any, ...]
        if namespace is None:
            sql += "AND resource=? ORDER BY revision LIMIT ?"
            params = (after, resource, _REPLAY_PAGE)
        else:
            sql += "AND resource=? AND namespace=? ORDER BY revision LIMIT ?"
            params = (after, resource, namespace, _REPLAY_PAGE)
        try:
            rows: Iterable[tuple[Any, ...]] = self._db().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise UnavailableError(f"store: {exc}") from exc
        return [_Event(rev, typ, resource, ns, data, prev) for rev, typ, ns, data, prev in rows]

    def _unregister(self, sub: _Subscription) -> None:
        subs = self._subs.get(sub.resource)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.resource]
