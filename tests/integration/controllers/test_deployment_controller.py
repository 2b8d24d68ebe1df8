"""The Deployment controller (with the ReplicaSet controller under it) against a real API
server; the test plays the node agent and marks pods Ready."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from shoal.api import Deployment, Pod, ReplicaSet, get_condition
from shoal.client import Informer
from shoal.controllers import DESIRED_REPLICAS, POD_TEMPLATE_HASH, REVISION, template_hash

from . import Cluster, cluster, deployment, eventually, is_ready, live


def image_patch(image: str) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}}


async def replicasets(c: Cluster, app: str = "web") -> list[ReplicaSet]:
    return await c.client.replicasets.list("default", f"app={app}")


async def settle(c: Cluster, name: str = "web", timeout: float = 15.0) -> Deployment:
    """Play the agent (every pod becomes Ready) until the Deployment reports completion."""

    async def complete() -> Deployment | None:
        await c.agent.ready_all(f"app={name}")
        d = await c.client.deployments.get(name)
        s = d.status
        cond = get_condition(s.conditions, "Progressing")
        want = d.spec.replicas
        done = (
            s.observed_generation == d.metadata.generation
            and s.updated_replicas == s.replicas == s.available_replicas == want
            and cond is not None
            and cond.reason == "NewReplicaSetAvailable"
        )
        return d if done else None

    return await eventually(complete, timeout=timeout)


class PodWatch:
    """Checks an invariant on every pod event the server sends (every revision)."""

    def __init__(self, c: Cluster) -> None:
        self.informer: Informer[Pod] = Informer(c.client.pods, namespace="default")
        self.min_ready = math.inf
        self.events = 0
        self.violations: list[str] = []
        self.informer.add_handler(self._on_event)

    def live_pods(self) -> list[Pod]:
        return live(self.informer.list())

    def _on_event(self, _kind: str, _old: Pod | None, _new: Pod | None) -> None:
        if not self.informer.synced:
            return
        self.events += 1
        ready = sum(1 for p in self.live_pods() if is_ready(p))
        self.min_ready = min(self.min_ready, ready)
        self.check()

    def check(self) -> None:
        """Override to record violations."""

    async def __aenter__(self) -> PodWatch:
        await self.informer.start()
        await self.informer.wait_synced(5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.informer.stop()


async def test_creates_replicaset_and_pods() -> None:
    async with cluster() as c:
        d = await c.client.deployments.create(deployment("web", 3))
        h = template_hash(d.spec.template)
        rs = await eventually(lambda: _only_rs(c))
        assert rs.metadata.name == f"web-{h}"
        assert rs.metadata.labels[POD_TEMPLATE_HASH] == h
        assert rs.spec.selector.match_labels == {"app": "web", POD_TEMPLATE_HASH: h}
        assert rs.spec.template.metadata.labels == {"app": "web", POD_TEMPLATE_HASH: h}
        assert rs.metadata.annotations[REVISION] == "1"
        ref = rs.metadata.controller_ref()
        assert ref is not None and ref.uid == d.metadata.uid

        d = await settle(c)
        assert d.metadata.annotations[REVISION] == "1"
        pods = live(await c.client.pods.list("default", "app=web"))
        assert len(pods) == 3
        assert all(p.metadata.labels[POD_TEMPLATE_HASH] == h for p in pods)
        s = d.status
        assert (s.replicas, s.ready_replicas, s.available_replicas, s.unavailable_replicas) == (
            3,
            3,
            3,
            0,
        )
        available = get_condition(s.conditions, "Available")
        assert available is not None and available.status == "True"
        assert available.reason == "MinimumReplicasAvailable"
        progressing = get_condition(s.conditions, "Progressing")
        assert progressing is not None
        assert progressing.message == f'ReplicaSet "web-{h}" has successfully progressed.'


async def _only_rs(c: Cluster) -> ReplicaSet | None:
    rss = await replicasets(c)
    return rss[0] if len(rss) == 1 else None


async def test_rolling_update_never_drops_below_min_available() -> None:
    async with cluster() as c:
        await c.client.deployments.create(
            deployment("web", 4, max_surge="25%", max_unavailable="25%")  # surge 1, unavail 1
        )
        await settle(c)
        (old_rs,) = await replicasets(c)
        old_hash = old_rs.metadata.labels[POD_TEMPLATE_HASH]

        async with PodWatch(c) as watch:
            await c.client.deployments.patch("web", image_patch("web:2"))

            async def step() -> bool:
                # The agent brings up one new pod at a time.
                pods = watch.live_pods()
                fresh = [
                    p
                    for p in pods
                    if p.metadata.labels.get(POD_TEMPLATE_HASH) != old_hash and not is_ready(p)
                ]
                if fresh:
                    await c.agent.set_status(fresh[0].metadata.name)
                rss = {rs.metadata.name: rs for rs in await replicasets(c)}
                new_pods = [p for p in pods if p.metadata.labels.get(POD_TEMPLATE_HASH) != old_hash]
                return (
                    rss[old_rs.metadata.name].spec.replicas == 0
                    and len(pods) == 4
                    and len(new_pods) == 4
                    and all(is_ready(p) for p in new_pods)
                )

            await eventually(step, timeout=20, interval=0.02)
        assert watch.events > 10
        assert watch.min_ready >= 3, f"ready pods dropped to {watch.min_ready}"
        assert watch.min_ready == 3, "maxUnavailable=1 was never used"

        d = await settle(c)
        assert d.metadata.annotations[REVISION] == "2"
        rss = {rs.metadata.name: rs for rs in await replicasets(c)}
        assert len(rss) == 2
        new_rs = next(rs for name, rs in rss.items() if name != old_rs.metadata.name)
        assert new_rs.metadata.annotations[REVISION] == "2"
        assert new_rs.spec.replicas == 4
        assert rss[old_rs.metadata.name].spec.replicas == 0


async def test_rolling_update_with_zero_unavailable_keeps_all_ready() -> None:
    async with cluster() as c:
        await c.client.deployments.create(deployment("web", 3, max_surge=1, max_unavailable=0))
        await settle(c)
        async with PodWatch(c) as watch:
            await c.client.deployments.patch("web", image_patch("web:2"))
            await asyncio.sleep(0.05)
            await settle(c)
        assert watch.events > 5
        assert watch.min_ready == 3


async def test_new_pods_that_never_become_ready_stall_the_rollout() -> None:
    async with cluster() as c:
        await c.client.deployments.create(deployment("web", 4, max_surge=1, max_unavailable=1))
        await settle(c)
        (old_rs,) = await replicasets(c)
        await c.client.deployments.patch("web", image_patch("web:broken"))
        # No agent: the new pods stay unready. Only maxUnavailable old pods may go.
        await eventually(lambda: _rs_count(c, 2))
        await asyncio.sleep(0.5)
        old = await c.client.replicasets.get(old_rs.metadata.name)
        assert old.spec.replicas == 3
        ready = [p for p in live(await c.client.pods.list("default", "app=web")) if is_ready(p)]
        assert len(ready) == 3
        d = await c.client.deployments.get("web")
        available = get_condition(d.status.conditions, "Available")
        assert available is not None and available.status == "True"
        progressing = get_condition(d.status.conditions, "Progressing")
        assert progressing is not None and progressing.reason in (
            "NewReplicaSetCreated",
            "ReplicaSetUpdated",
        )


async def _rs_count(c: Cluster, n: int) -> bool:
    return len(await replicasets(c)) == n


async def test_recreate_removes_all_old_pods_before_creating_new_ones() -> None:
    async with cluster() as c:
        await c.client.deployments.create(deployment("web", 3, strategy="Recreate"))
        await settle(c)
        (old_rs,) = await replicasets(c)
        old_hash = old_rs.metadata.labels[POD_TEMPLATE_HASH]

        class Order(PodWatch):
            def check(self) -> None:
                pods = self.informer.list()  # terminating pods included
                old = [p for p in pods if p.metadata.labels.get(POD_TEMPLATE_HASH) == old_hash]
                new = [p for p in pods if p.metadata.labels.get(POD_TEMPLATE_HASH) != old_hash]
                if old and new:
                    self.violations.append(f"{len(old)} old pods beside {len(new)} new")

        async with Order(c) as watch:
            await c.client.deployments.patch("web", image_patch("web:2"))
            d = await settle(c)
        assert watch.events > 5
        assert watch.violations == []
        assert d.metadata.annotations[REVISION] == "2"
        old = await c.client.replicasets.get(old_rs.metadata.name)
        assert old.spec.replicas == 0


async def test_rollback_reuses_the_old_replicaset() -> None:
    async with cluster() as c:
        await c.client.deployments.create(deployment("web", 2, max_surge=1, max_unavailable=0))
        await settle(c)
        (first,) = await replicasets(c)
        await c.client.deployments.patch("web", image_patch("web:2"))
        await settle(c)
        # `rollout undo`: the CLI writes the old ReplicaSet's template back (with its hash
        # label, as Kubernetes' rollback leaves it before stripping).
        old_template = first.spec.template.to_dict()
        await c.client.deployments.patch("web", {"spec": {"template": old_template}})
        d = await settle(c)
        rss = {rs.metadata.name: rs for rs in await replicasets(c)}
        assert len(rss) == 2, "no third ReplicaSet for a template that came back"
        again = rss[first.metadata.name]
        assert again.spec.replicas == 2
        assert again.metadata.annotations[REVISION] == "3"
        assert d.metadata.annotations[REVISION] == "3"
        others = [rs for name, rs in rss.items() if name != first.metadata.name]
        assert others[0].spec.replicas == 0
        assert others[0].metadata.annotations[REVISION] == "2"


async def test_scaling_goes_to_the_active_replicaset() -> None:
    async with cluster() as c:
        await c.client.deployments.create(deployment("web", 2))
        await settle(c)
        await c.client.scale("Deployment", "web", 5)
        d = await settle(c)
        (rs,) = await replicasets(c)
        assert rs.spec.replicas == 5
        assert rs.metadata.annotations[DESIRED_REPLICAS] == "5"
        assert d.status.available_replicas == 5
        await c.client.scale("Deployment", "web", 1)
        await settle(c)
        assert len(live(await c.client.pods.list("default", "app=web"))) == 1


async def test_paused_deployment_does_not_roll_out() -> None:
    async with cluster() as c:
        await c.client.deployments.create(deployment("web", 2))
        await settle(c)
        await c.client.deployments.patch("web", {"spec": {"paused": True}})
        await c.client.deployments.patch("web", image_patch("web:2"))

        async def paused_shown() -> bool:
            d = await c.client.deployments.get("web")
            cond = get_condition(d.status.conditions, "Progressing")
            return cond is not None and cond.reason == "DeploymentPaused"

        await eventually(paused_shown)
        await asyncio.sleep(0.3)
        assert len(await replicasets(c)) == 1
        # Scaling still applies while paused.
        await c.client.scale("Deployment", "web", 3)
        await eventually(lambda: _rs_replicas(c, 3))
        await c.client.deployments.patch("web", {"spec": {"paused": False}})
        await eventually(lambda: _rs_count(c, 2))
        d = await settle(c)
        assert d.metadata.annotations[REVISION] == "2"


async def _rs_replicas(c: Cluster, n: int) -> bool:
    rss = await replicasets(c)
    return len(rss) == 1 and rss[0].spec.replicas == n


async def test_old_replicasets_beyond_history_limit_are_deleted() -> None:
    async with cluster() as c:
        await c.client.deployments.create(
            deployment("web", 1, max_surge=1, max_unavailable=0, history=1)
        )
        await settle(c)
        for image in ("web:2", "web:3", "web:4"):
            await c.client.deployments.patch("web", image_patch(image))
            await settle(c)
        await eventually(lambda: _rs_count(c, 2))
        revisions = sorted(int(rs.metadata.annotations[REVISION]) for rs in await replicasets(c))
        assert revisions == [3, 4]
