"""The garbage collector: deletes objects whose owners are all gone, and old Events.

Deleting a Deployment deletes only the Deployment; its ReplicaSets then point at an owner
that no longer exists, so this controller deletes them, which orphans their pods, which it
deletes next (Kubernetes' "background" cascading deletion). An ownerReference is judged by
the owner's **uid**: an owner deleted and re-created under the same name is a different owner.

Because an informer cache can lag behind a just-created owner, "absent from the cache" is
only a hint: the owner is looked up on the API server before anything is deleted. Objects with
some owners left only lose the references to the missing ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from shoal._util import Clock, parse_time
from shoal.api import OwnerReference, Resource, kind_info
from shoal.client import Client, Informer
from shoal.controllers._base import Controller, SharedInformers, periodic
from shoal.errors import NotFoundError

log = logging.getLogger("shoal.controllers.gc")

DEFAULT_EVENT_TTL = 3600.0


class GarbageCollector(Controller):
    """Keys are ``Kind/namespace/name`` (``Kind/name`` for cluster-scoped kinds)."""

    name = "garbage-collector"

    def __init__(
        self,
        client: Client,
        informers: SharedInformers,
        *,
        workers: int = 2,
        clock: Clock | None = None,
        event_ttl: float = DEFAULT_EVENT_TTL,
        event_prune_interval: float = 300.0,
        resync_period: float = 60.0,
    ) -> None:
        super().__init__(client, workers=workers, clock=clock)
        self.informers = informers
        self.event_ttl = event_ttl
        self.event_prune_interval = event_prune_interval
        self.resync_period = resync_period
        self.watched: dict[str, Informer[Any]] = {
            "Pod": informers.pods,
            "ReplicaSet": informers.replicasets,
            "Deployment": informers.deployments,
            "Service": informers.services,
            "Endpoints": informers.endpoints,
        }
        self._dependents: dict[str, set[str]] = {}
        """Owner uid -> keys of the watched objects that reference it."""
        for informer in self.watched.values():
            informer.add_handler(self._on_event)

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [
            periodic(self.event_prune_interval, self._prune, "event pruning"),
            periodic(
                self.resync_period,
                self._resync,
                "garbage collector resync",
                initial_delay=self.resync_period,
            ),
        ]

    # --- events ------------------------------------------------------------------------------

    def _on_event(self, kind: str, old: Resource | None, new: Resource | None) -> None:
        if old is not None:
            old_key = f"{old.kind}/{old.key}"
            for ref in old.metadata.owner_references:
                dependents = self._dependents.get(ref.uid)
                if dependents is not None:
                    dependents.discard(old_key)
                    if not dependents:
                        del self._dependents[ref.uid]
        if new is not None:
            new_key = f"{new.kind}/{new.key}"
            for ref in new.metadata.owner_references:
                self._dependents.setdefault(ref.uid, set()).add(new_key)
            refs_changed = old is None or (
                old.metadata.owner_references != new.metadata.owner_references
            )
            if new.metadata.owner_references and refs_changed:
                self.enqueue(new_key)
            return
        if old is not None and old.metadata.uid:
            # An owner went away: look at everything that pointed to it.
            for key in list(self._dependents.get(old.metadata.uid, ())):
                self.enqueue(key)

    async def _resync(self) -> None:
        """A periodic full pass: owners deleted while we were not watching are caught too."""
        for informer in self.watched.values():
            for obj in informer.list():
                if obj.metadata.owner_references:
                    self.enqueue(f"{obj.kind}/{obj.key}")

    # --- reconcile ----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        kind, _, obj_key = key.partition("/")
        informer = self.watched.get(kind)
        if informer is None:
            return
        obj: Resource | None = informer.get(obj_key)
        if obj is None or obj.metadata.deletion_timestamp is not None:
            return
        refs = obj.metadata.owner_references
        if not refs:
            return
        missing = [r for r in refs if not await self.owner_exists(r, obj)]
        if not missing:
            return
        rc = self.client.resource(type(obj))
        if len(missing) == len(refs):
            log.info(
                "deleting %s %s: its owner %s %s is gone",
                kind,
                obj_key,
                missing[0].kind,
                missing[0].name,
            )
            with contextlib.suppress(NotFoundError):
                await rc.delete(obj.metadata.name, obj.metadata.namespace, uid=obj.metadata.uid)
            return
        gone = {r.uid for r in missing}
        keep = [r.to_dict() for r in refs if r.uid not in gone]
        patch = {
            "metadata": {
                "ownerReferences": keep,
                "resourceVersion": obj.metadata.resource_version,
            }
        }
        with contextlib.suppress(NotFoundError):
            await rc.patch(obj.metadata.name, patch, obj.metadata.namespace)

    async def owner_exists(self, ref: OwnerReference, dependent: Resource) -> bool:
        """Does the object ``ref`` names exist with ``ref``'s uid? Unknown kinds count as
        existing: what cannot be checked is never deleted."""
        try:
            info = kind_info(ref.kind)
        except KeyError:
            return True
        namespace = dependent.metadata.namespace if info.namespaced else None
        cache_key = f"{namespace}/{ref.name}" if namespace else ref.name
        informer = self.informers.get(ref.kind)
        if informer is not None:
            cached = informer.get(cache_key)
            if cached is not None and cached.metadata.uid == ref.uid:
                return True
        try:
            live = await self.client.resource(info.model).get(ref.name, namespace)
        except NotFoundError:
            return False
        return live.metadata.uid == ref.uid

    # --- events pruning -----------------------------------------------------------------------

    async def _prune(self) -> None:
        await self.prune_events()

    async def prune_events(self) -> int:
        """Delete Events last seen more than ``event_ttl`` ago; returns how many."""
        cutoff = self.clock.now() - self.event_ttl
        stale = []
        for ev in await self.client.events.list():
            stamp = ev.last_timestamp or ev.first_timestamp or ev.metadata.creation_timestamp
            try:
                if stamp and parse_time(stamp) < cutoff:
                    stale.append(ev)
            except ValueError:
                continue
        for i in range(0, len(stale), 20):
            await asyncio.gather(
                *(self._delete_event(ev.metadata.name, ev.namespace) for ev in stale[i : i + 20])
            )
        if stale:
            log.info("pruned %d events older than %.0fs", len(stale), self.event_ttl)
        return len(stale)

    async def _delete_event(self, name: str, namespace: str) -> None:
        with contextlib.suppress(NotFoundError):
            await self.client.events.delete(name, namespace)
