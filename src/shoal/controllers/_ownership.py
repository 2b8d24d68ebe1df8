"""Adoption and release (Kubernetes' ``ControllerRefManager``): a controller claims the
objects its selector matches that nobody controls, and lets go of the ones it controls that no
longer match. Both writes are compare-and-swap patches pinned to the resourceVersion we looked
at, so two controllers can never both adopt one orphan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any, TypeVar

from shoal.api import Resource, Selector
from shoal.client import ResourceClient
from shoal.controllers._pods import controller_ref
from shoal.errors import NotFoundError

T = TypeVar("T", bound=Resource)

log = logging.getLogger("shoal.controllers")


def _refs_patch(obj: Resource, refs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"ownerReferences": refs, "resourceVersion": obj.metadata.resource_version}}


async def adopt(rc: ResourceClient[T], owner: Resource, obj: T) -> T:
    """Add ``owner`` as ``obj``'s controller. ConflictError if ``obj`` changed meanwhile."""
    refs = [r.to_dict() for r in obj.metadata.owner_references]
    refs.append(controller_ref(owner).to_dict())
    return await rc.patch(obj.metadata.name, _refs_patch(obj, refs), obj.metadata.namespace)


async def release(rc: ResourceClient[T], owner: Resource, obj: T) -> None:
    """Remove ``owner``'s reference from ``obj`` (it stops being managed by ``owner``)."""
    refs = [r.to_dict() for r in obj.metadata.owner_references if r.uid != owner.metadata.uid]
    with contextlib.suppress(NotFoundError):
        await rc.patch(obj.metadata.name, _refs_patch(obj, refs), obj.metadata.namespace)


async def claim(
    rc: ResourceClient[T],
    owner: Resource,
    selector: Selector,
    candidates: Iterable[T],
) -> list[T]:
    """The objects ``owner`` controls after adopting matching orphans and releasing owned
    objects that stopped matching. Candidates controlled by someone else are left alone.

    An owner being deleted neither adopts nor releases (Kubernetes does the same: the garbage
    collector is about to take care of its dependents).
    """
    uid = owner.metadata.uid
    deleting = owner.metadata.deletion_timestamp is not None
    claimed: list[T] = []
    for obj in candidates:
        ref = obj.metadata.controller_ref()
        matches = selector.matches(obj.metadata.labels)
        if ref is not None:
            if ref.uid != uid:
                continue
            if matches or deleting:
                claimed.append(obj)
                continue
            log.info(
                "%s %s releases %s %s (labels no longer match)",
                owner.kind,
                owner.key,
                obj.kind,
                obj.metadata.name,
            )
            await release(rc, owner, obj)
            continue
        if not matches or deleting or obj.metadata.deletion_timestamp is not None:
            continue
        try:
            adopted = await adopt(rc, owner, obj)
        except NotFoundError:
            continue
        log.info("%s %s adopted %s %s", owner.kind, owner.key, obj.kind, obj.metadata.name)
        claimed.append(adopted)
    return claimed
