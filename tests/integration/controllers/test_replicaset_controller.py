"""The ReplicaSet controller against a real API server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shoal.api import Container as C
from shoal.api import ObjectMeta, OwnerReference, Pod, PodSpec, ReplicaSet, Service
from shoal.client import Client

from . import cluster, eventually, live, replicaset


async def owned_pods(client: Client, rs: ReplicaSet) -> list[Pod]:
    pods = await client.pods.list("default")
    return [
        p
        for p in live(pods)
        if (ref := p.metadata.controller_ref()) is not None and ref.uid == rs.metadata.uid
    ]


async def test_creates_replicas_and_replaces_a_deleted_pod() -> None:
    async with cluster() as c:
        rs = await c.client.replicasets.create(replicaset("web", 3))

        async def three() -> list[Pod]:
            pods = await owned_pods(c.client, rs)
            return pods if len(pods) == 3 else []

        pods = await eventually(three)
        for p in pods:
            assert p.metadata.name.startswith("web-")
            assert p.metadata.labels == {"app": "web"}
            ref = p.metadata.controller_ref()
            assert ref is not None and (ref.kind, ref.name) == ("ReplicaSet", "web")
        for p in pods:
            await c.agent.set_status(p.metadata.name)

        async def status_ok() -> bool:
            got = await c.client.replicasets.get("web")
            s = got.status
            return (s.replicas, s.ready_replicas, s.available_replicas, s.fully_labeled_replicas,
                    s.observed_generation) == (3, 3, 3, 3, 1)  # fmt: skip

        await eventually(status_ok)

        victim = pods[0].metadata.name
        await c.client.pods.delete(victim)

        async def replaced() -> bool:
            names = {p.metadata.name for p in await owned_pods(c.client, rs)}
            return len(names) == 3 and victim not in names

        await eventually(replaced)


async def test_scale_down_removes_not_ready_pods_first() -> None:
    async with cluster() as c:
        rs = await c.client.replicasets.create(replicaset("web", 4))
        pods = await eventually(lambda: _count(c.client, rs, 4))
        assert isinstance(pods, list)
        ready_names = {p.metadata.name for p in pods[:3]}
        for name in ready_names:
            await c.agent.set_status(name)
        await c.client.replicasets.patch("web", {"spec": {"replicas": 3}})

        async def kept_ready() -> bool:
            names = {p.metadata.name for p in await owned_pods(c.client, rs)}
            return names == ready_names

        await eventually(kept_ready)

        await c.client.replicasets.patch("web", {"spec": {"replicas": 0}})
        await eventually(lambda: _count(c.client, rs, 0))
        await eventually(_status_replicas(c.client, "web", 0))


async def _count(client: Client, rs: ReplicaSet, n: int) -> list[Pod] | bool:
    """The owned live pods when there are exactly ``n`` (True for n == 0), else False."""
    pods = await owned_pods(client, rs)
    if len(pods) != n:
        return False
    return pods or True


def _status_replicas(client: Client, name: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        rs = await client.replicasets.get(name)
        return rs.status.replicas == n

    return check


async def test_adopts_orphans_and_releases_pods_that_stop_matching() -> None:
    async with cluster() as c:
        orphan = await c.client.pods.create(
            Pod(
                metadata=ObjectMeta(name="stray", namespace="default", labels={"app": "web"}),
                spec=PodSpec(containers=[C(name="web", image="web:1")]),
            )
        )
        owner = await c.client.services.create(
            Service(metadata=ObjectMeta(name="x", namespace="default"))
        )
        other_owned = await c.client.pods.create(
            Pod(
                metadata=ObjectMeta(
                    name="someone-elses",
                    namespace="default",
                    labels={"app": "web"},
                    owner_references=[
                        OwnerReference(
                            api_version="v1",
                            kind="Service",
                            name="x",
                            uid=owner.metadata.uid or "",
                            controller=True,
                        )
                    ],
                ),
                spec=PodSpec(containers=[C(name="web", image="web:1")]),
            )
        )
        rs = await c.client.replicasets.create(replicaset("web", 2))
        pods = await eventually(lambda: _count(c.client, rs, 2))
        assert isinstance(pods, list)
        names = {p.metadata.name for p in pods}
        assert "stray" in names  # adopted, so only one pod was created
        assert "someone-elses" not in names
        adopted = await c.client.pods.get("stray")
        ref = adopted.metadata.controller_ref()
        assert ref is not None and ref.uid == rs.metadata.uid
        # A pod controlled by something else is never touched.
        untouched = await c.client.pods.get("someone-elses")
        assert untouched.metadata.owner_references == other_owned.metadata.owner_references
        assert orphan.metadata.uid == adopted.metadata.uid

        # Relabel the adopted pod: it is released and replaced.
        await c.client.pods.patch("stray", {"metadata": {"labels": {"app": "debug"}}})

        async def released() -> bool:
            p = await c.client.pods.get("stray")
            return p.metadata.owner_references == []

        await eventually(released)
        pods = await eventually(lambda: _count(c.client, rs, 2))
        assert isinstance(pods, list)
        assert "stray" not in {p.metadata.name for p in pods}


async def test_failed_pods_do_not_count() -> None:
    async with cluster() as c:
        rs = await c.client.replicasets.create(replicaset("job", 1))
        pods = await eventually(lambda: _count(c.client, rs, 1))
        assert isinstance(pods, list)
        first = pods[0].metadata.name
        await c.agent.set_status(first, ready=False, phase="Failed")

        async def replacement() -> bool:
            active = [
                p for p in await owned_pods(c.client, rs) if p.status.phase not in ("Failed",)
            ]
            return len(active) == 1 and active[0].metadata.name != first

        await eventually(replacement)


async def test_many_replicas_created_exactly_once() -> None:
    async with cluster() as c:
        rs = await c.client.replicasets.create(replicaset("big", 40))
        await eventually(lambda: _count(c.client, rs, 40), timeout=20)
        await eventually(_status_replicas(c.client, "big", 40))
        # Expectations keep a lagging cache from creating extras.
        await asyncio.sleep(0.3)
        assert len(await owned_pods(c.client, rs)) == 40
        await c.client.flush_events()
        events = [
            e
            for e in await c.client.events.list("default")
            if e.reason == "SuccessfulCreate" and e.involved_object.name == "big"
        ]
        assert len(events) == 40


async def test_status_is_written_only_when_it_changes() -> None:
    async with cluster() as c:
        rs = await c.client.replicasets.create(replicaset("calm", 2))
        await eventually(lambda: _count(c.client, rs, 2))
        await eventually(_status_replicas(c.client, "calm", 2))
        before = (await c.client.replicasets.get("calm")).metadata.resource_version
        # Poke the controller with an unrelated change to the ReplicaSet.
        await c.client.replicasets.patch("calm", {"metadata": {"annotations": {"x": "1"}}})
        await asyncio.sleep(0.3)
        after = await c.client.replicasets.get("calm")
        assert int(after.metadata.resource_version or 0) == int(before or 0) + 1


async def test_available_only_after_min_ready_seconds() -> None:
    async with cluster() as c:
        spec = replicaset("slow", 1)
        spec.spec.min_ready_seconds = 2
        rs = await c.client.replicasets.create(spec)
        pods = await eventually(lambda: _count(c.client, rs, 1))
        assert isinstance(pods, list)
        await c.agent.set_status(pods[0].metadata.name)

        async def ready_not_available() -> bool:
            s = (await c.client.replicasets.get("slow")).status
            return (s.ready_replicas, s.available_replicas) == (1, 0)

        await eventually(ready_not_available)

        # Nothing else happens to the pod: the controller must look again by itself.
        async def available() -> bool:
            s = (await c.client.replicasets.get("slow")).status
            return s.available_replicas == 1

        await eventually(available, timeout=5)
