"""Informers: list + watch into a local cache, with handlers, relist on 410 and reconnect
with back-off. The read side of every controller loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from shoal._util import Backoff
from shoal.api import Resource
from shoal.client._client import ResourceClient
from shoal.errors import APIStatusError, GoneError, ServerUnreachableError

T = TypeVar("T", bound=Resource)
Handler = Callable[[str, T | None, T | None], None]

log = logging.getLogger("shoal.informer")


class Informer(Generic[T]):
    """Keeps ``cache`` equal to the server's objects of one kind (optionally filtered).

    Handlers get ``(event_type, old, new)`` after the cache changed: ADDED (old None),
    MODIFIED, DELETED (new None). They run in the event loop and must not block.
    """

    def __init__(
        self,
        rc: ResourceClient[T],
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> None:
        self.rc = rc
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.cache: dict[str, T] = {}
        self.revision = 0
        self._handlers: list[Handler[T]] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add_handler(self, handler: Handler[T]) -> None:
        self._handlers.append(handler)

    def list(self) -> list[T]:
        return list(self.cache.values())

    def get(self, key: str) -> T | None:
        return self.cache.get(key)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"informer-{self.rc.info.plural}")

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._synced.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _emit(self, kind: str, old: T | None, new: T | None) -> None:
        for h in self._handlers:
            try:
                h(kind, old, new)
            except Exception:
                log.exception("informer handler failed")

    async def _relist(self) -> None:
        items, rev = await self.rc.list_with_revision(
            self.namespace, self.label_selector, self.field_selector
        )
        fresh = {o.key: o for o in items}
        old = self.cache
        self.cache = fresh
        self.revision = rev
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                self._emit("ADDED", None, obj)
            elif prev.metadata.resource_version != obj.metadata.resource_version:
                self._emit("MODIFIED", prev, obj)
        for key, prev in old.items():
            if key not in fresh:
                self._emit("DELETED", prev, None)
        self._synced.set()

    async def _run(self) -> None:
        backoff = Backoff(0.2, 5.0, jitter=0.2)
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                async for kind, obj in self.rc.watch(
                    self.namespace,
                    self.revision,
                    self.label_selector,
                    self.field_selector,
                    timeout_seconds=300,
                ):
                    backoff.reset()
                    self._apply(kind, obj)
            except GoneError:
                need_list = True
                continue
            except (ServerUnreachableError, APIStatusError) as exc:
                log.debug("informer %s: %s; retrying", self.rc.info.plural, exc)
                need_list = True
                await asyncio.sleep(backoff.next())
                continue
            except Exception:
                # A malformed object or line must not freeze the cache for good: relist.
                log.exception("informer %s: unexpected error; relisting", self.rc.info.plural)
                need_list = True
                await asyncio.sleep(backoff.next())
                continue

    def _apply(self, kind: str, obj: T) -> None:
        rv = int(obj.metadata.resource_version or 0)
        if rv > self.revision:
            self.revision = rv
        key = obj.key
        old = self.cache.get(key)
        if kind == "DELETED":
            if old is not None:
                del self.cache[key]
                self._emit("DELETED", old, None)
            return
        self.cache[key] = obj
        self._emit("ADDED" if old is None else "MODIFIED", old, obj)
