"""The seam between the registry and the objects it is made of.

The registry state, the Consul API and the check runner read and write API objects
(ServiceRegistration, HealthCheck, KVPair; Service, Endpoints, Node) through this protocol.
The API server implements it over its own object registry, in process, so registrations are
admitted and validated like every other write and cost no extra HTTP hop; a test or another
process could implement it over the HTTP client. Only the API server touches the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

JSONObject = dict[str, Any]


def revision(obj: JSONObject) -> int:
    """The store revision that last wrote ``obj`` (its resourceVersion; 0 if it has none)."""
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """One change of one object. ``revision`` is the global revision of the change."""

    type: Literal["ADDED", "MODIFIED", "DELETED"]
    object: JSONObject
    revision: int


class ObjectSource(Protocol):
    """Objects by plural resource name; registry kinds are cluster-scoped (namespace "")."""

    async def list(self, resource: str) -> tuple[list[JSONObject], int]:
        """Every object of ``resource`` in all namespaces, and the revision to watch from."""
        ...

    def watch(self, resource: str, since: int) -> AsyncIterator[SourceEvent]:
        """Changes after ``since``; raises GoneError (when iterated) if that is too old."""
        ...

    async def get(self, resource: str, name: str) -> JSONObject:
        """A cluster-scoped object. Raises NotFoundError."""
        ...

    async def create(self, resource: str, obj: JSONObject) -> JSONObject:
        """Admit and store a new cluster-scoped object. Raises AlreadyExistsError,
        InvalidError."""
        ...

    async def update(self, resource: str, obj: JSONObject) -> JSONObject:
        """Replace an object (spec and status). With ``metadata.resourceVersion`` set, only
        if it is still the stored one (else ConflictError). Raises NotFoundError."""
        ...

    async def delete(
        self, resource: str, name: str, *, expected_revision: int | None = None
    ) -> JSONObject:
        """Remove an object. Raises NotFoundError, ConflictError."""
        ...
