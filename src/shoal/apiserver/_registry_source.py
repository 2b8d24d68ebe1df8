"""The registry's object source, in process: the API server's own Registry.

The Consul API, DNS and check runner run inside the API server process, so a registration
is one admitted, validated store write with no HTTP hop in between, and the registry's
watches are the store's in-process fan-out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from shoal.api import KindInfo, kind_by_plural
from shoal.apiserver._registry import Registry
from shoal.discovery import ObjectSource, SourceEvent
from shoal.store import JSONObject


def _info(resource: str) -> KindInfo:
    info = kind_by_plural(resource)
    if info is None:  # a programming error, not user input
        raise KeyError(f"unknown resource {resource!r}")
    return info


class RegistrySource(ObjectSource):
    """:class:`~shoal.discovery.ObjectSource` over a :class:`Registry`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def list(self, resource: str) -> tuple[list[JSONObject], int]:
        result = await self.registry.list(_info(resource), None)
        return result.items, result.revision

    async def watch(self, resource: str, since: int) -> AsyncIterator[SourceEvent]:
        stream = self.registry.watch(_info(resource), None, since)
        try:
            async for event in stream:
                yield SourceEvent(event.type, event.object, event.revision)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def get(self, resource: str, name: str) -> JSONObject:
        return await self.registry.get(_info(resource), None, name)

    async def create(self, resource: str, obj: JSONObject) -> JSONObject:
        return await self.registry.create(_info(resource), None, obj)

    async def update(self, resource: str, obj: JSONObject) -> JSONObject:
        return await self.registry.update(_info(resource), None, obj["metadata"]["name"], obj)

    async def delete(
        self, resource: str, name: str, *, expected_revision: int | None = None
    ) -> JSONObject:
        return await self.registry.delete(
            _info(resource), None, name, precondition_rv=expected_revision
        )
