"""The store seam: one revision counter, compare-and-swap writes, watch from a revision.

Objects are plain JSON dicts in Kubernetes shape. The store owns exactly one field of them,
``metadata.resourceVersion``: the decimal string of the revision that last wrote the object.
Every write (create, update, delete) takes the next revision of one counter shared by all
resources, so "everything that happened after revision N" is well defined across kinds.

Keys are ``(resource, namespace, name)``; ``resource`` is the plural name ("pods",
"deployments"), ``namespace`` is ``""`` for cluster-scoped kinds (nodes, namespaces).

Only the API server talks to a store (enforced by import-linter).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

JSONObject = dict[str, Any]
EventType = Literal["ADDED", "MODIFIED", "DELETED"]
Predicate = Callable[[JSONObject], bool]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change. ``object`` is the object after the change (for DELETED: its last state,
    carrying the deletion's revision as resourceVersion)."""

    type: EventType
    resource: str
    object: JSONObject
    revision: int


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[JSONObject]
    revision: int
    """The store's revision at the time of the list: watch from here to miss nothing."""


class Store(Protocol):
    """What every backend (SQLite, etcd) provides."""

    async def get(self, resource: str, namespace: str, name: str) -> JSONObject:
        """The object. Raises NotFoundError."""
        ...

    async def list(
        self,
        resource: str,
        namespace: str | None = None,
        predicate: Predicate | None = None,
    ) -> ListResult:
        """All objects of a resource (in one namespace, or all when None), sorted by
        (namespace, name), filtered by ``predicate`` (label/field selectors)."""
        ...

    async def create(self, resource: str, obj: JSONObject) -> JSONObject:
        """Store a new object; returns it with resourceVersion set.
        Raises AlreadyExistsError."""
        ...

    async def update(
        self, resource: str, obj: JSONObject, *, expected_revision: int | None = None
    ) -> JSONObject:
        """Replace an existing object. With ``expected_revision`` the write happens only if the
        stored object's revision equals it (else ConflictError). Raises NotFoundError."""
        ...

    async def delete(
        self,
        resource: str,
        namespace: str,
        name: str,
        *,
        expected_revision: int | None = None,
    ) -> JSONObject:
        """Remove an object; returns its last state with the deletion's revision as
        resourceVersion. Raises NotFoundError, ConflictError."""
        ...

    def watch(
        self,
        resource: str,
        namespace: str | None = None,
        since: int = 0,
        predicate: Predicate | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Every change with revision > ``since``, in revision order, then live changes until
        the iterator is closed. Raises GoneError (when iterated) if ``since`` is older than the
        kept history. ``since=0`` means "from now"."""
        ...

    async def revision(self) -> int:
        """The current revision (the last one written; 0 for an empty store)."""
        ...

    async def compact(self, keep: int) -> int:
        """Drop watch history older than the newest ``keep`` revisions. Returns the compacted
        revision: watches from below it get GoneError."""
        ...

    async def compacted_revision(self) -> int:
        """The oldest revision a watch may start from (0 when nothing was compacted)."""
        ...

    async def close(self) -> None: ...
