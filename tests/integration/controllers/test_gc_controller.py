"""The garbage collector against a real API server."""

from __future__ import annotations

import asyncio
import time

from shoal._util import format_time
from shoal.api import (
    Container,
    Event,
    ObjectMeta,
    ObjectReference,
    OwnerReference,
    Pod,
    PodSpec,
    Service,
)
from shoal.controllers import GarbageCollector
from shoal.errors import NotFoundError

from . import Cluster, cluster, deployment, eventually, live


def owned_pod(name: str, *refs: OwnerReference) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, namespace="default", owner_references=list(refs)),
        spec=PodSpec(containers=[Container(name="c", image="busybox")]),
    )


def ref_to(obj: Service | None, *, uid: str | None = None, name: str = "svc") -> OwnerReference:
    return OwnerReference(
        api_version="v1",
        kind="Service",
        name=obj.metadata.name if obj else name,
        uid=uid or (obj.metadata.uid if obj and obj.metadata.uid else ""),
    )


async def exists(c: Cluster, name: str) -> bool:
    try:
        await c.client.pods.get(name)
    except NotFoundError:
        return False
    return True


async def test_deleting_a_deployment_cascades_to_replicasets_and_pods() -> None:
    async with cluster() as c:
        await c.client.deployments.create(deployment("web", 3))

        async def three() -> bool:
            return len(live(await c.client.pods.list("default", "app=web"))) == 3

        await eventually(three)
        await c.client.deployments.delete("web")

        async def all_gone() -> bool:
            rss = await c.client.replicasets.list("default")
            pods = await c.client.pods.list("default", "app=web")
            return not rss and not pods

        await eventually(all_gone)


async def test_orphans_are_deleted_and_owned_objects_kept() -> None:
    async with cluster() as c:
        svc = await c.client.services.create(Service(metadata=ObjectMeta(name="svc")))
        await c.client.pods.create(owned_pod("kept", ref_to(svc)))
        await c.client.pods.create(owned_pod("dangling", ref_to(None, uid="no-such-uid")))
        # Same name as an existing owner but another uid: that owner is gone.
        await c.client.pods.create(owned_pod("stale-uid", ref_to(svc, uid="old-uid")))
        await c.client.pods.create(
            owned_pod("half", ref_to(svc), ref_to(None, uid="gone-uid", name="other"))
        )

        async def collected() -> bool:
            return not await exists(c, "dangling") and not await exists(c, "stale-uid")

        await eventually(collected)

        async def half_trimmed() -> bool:
            pod = await c.client.pods.get("half")
            return [r.uid for r in pod.metadata.owner_references] == [svc.metadata.uid]

        await eventually(half_trimmed)
        await asyncio.sleep(0.2)
        assert await exists(c, "kept")

        # Deleting the owner now collects its dependents.
        await c.client.services.delete("svc")

        async def dependents_gone() -> bool:
            return not await exists(c, "kept") and not await exists(c, "half")

        await eventually(dependents_gone)


async def test_owner_created_just_before_its_dependent_is_respected() -> None:
    async with cluster() as c:
        # Create owner and dependent back to back, faster than the caches follow.
        for i in range(10):
            svc = await c.client.services.create(Service(metadata=ObjectMeta(name=f"s{i}")))
            await c.client.pods.create(owned_pod(f"p{i}", ref_to(svc)))
        await asyncio.sleep(0.5)
        assert len(await c.client.pods.list("default")) == 10


async def test_old_events_are_pruned() -> None:
    async with cluster(event_ttl=3600) as c:
        gc = c.manager.controllers["garbagecollector"]
        assert isinstance(gc, GarbageCollector)
        stale = format_time(time.time() - 7200)
        fresh = format_time(time.time())
        for name, stamp in (("old", stale), ("new", fresh)):
            await c.client.events.create(
                Event(
                    metadata=ObjectMeta(name=name, namespace="default"),
                    involved_object=ObjectReference(kind="Pod", name="x", namespace="default"),
                    reason="Test",
                    first_timestamp=stamp,
                    last_timestamp=stamp,
                )
            )
        assert await gc.prune_events() == 1
        names = [e.metadata.name for e in await c.client.events.list("default")]
        assert "old" not in names and "new" in names
