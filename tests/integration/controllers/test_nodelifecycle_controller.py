"""The node lifecycle controller against a real API server: silent nodes go Unknown, their
pods are marked not ready, then evicted and replaced by their ReplicaSet."""

from __future__ import annotations

import asyncio
import contextlib
import time

from shoal._util import Clock, FakeClock, format_time
from shoal.api import Condition, Node, NodeStatus, ObjectMeta, Pod, get_condition
from shoal.client import Client
from shoal.errors import ConflictError, NotFoundError

from . import Cluster, cluster, eventually, is_ready, live, replicaset


def node(name: str, heartbeat: float) -> Node:
    stamp = format_time(heartbeat)
    return Node(
        metadata=ObjectMeta(name=name),
        status=NodeStatus(
            conditions=[
                Condition(
                    type="Ready",
                    status="True",
                    reason="KubeletReady",
                    last_heartbeat_time=stamp,
                    last_transition_time=stamp,
                ),
                Condition(
                    type="MemoryPressure",
                    status="False",
                    last_heartbeat_time=stamp,
                    last_transition_time=stamp,
                ),
            ]
        ),
    )


async def heartbeat(client: Client, name: str, clock: Clock, every: float) -> None:
    """What an agent does: post Ready=True with a fresh lastHeartbeatTime."""
    while True:
        with contextlib.suppress(ConflictError):
            n = await client.nodes.get(name)
            stamp = format_time(clock.now())
            for cond in n.status.conditions:
                cond.last_heartbeat_time = stamp
                if cond.type == "Ready" and cond.status != "True":
                    cond.status, cond.last_transition_time = "True", stamp
            await client.nodes.update_status(n)
        await asyncio.sleep(every)


async def advance(clock: FakeClock, seconds: int) -> None:
    """Move the fake clock one second at a time, letting the heartbeats (real-time tasks)
    keep up, as they would if time really passed."""
    for _ in range(seconds):
        clock.advance(1)
        await asyncio.sleep(0.05)


async def ready_condition(c: Cluster, name: str) -> Condition:
    n = await c.client.nodes.get(name)
    cond = get_condition(n.status.conditions, "Ready")
    assert cond is not None
    return cond


async def pods_on_node(c: Cluster, n: int, node_name: str) -> list[Pod]:
    """Wait for ``n`` pods of app=web, bind them to ``node_name`` and make them Ready."""

    async def created() -> list[Pod]:
        pods = live(await c.client.pods.list("default", "app=web"))
        return pods if len(pods) == n else []

    pods = await eventually(created)
    for p in pods:
        await c.client.bind(p.metadata.name, "default", node_name)
        await c.agent.set_status(p.metadata.name, ip="10.0.0.1")
    return pods


async def test_silent_node_goes_unknown_and_its_pods_move() -> None:
    clock = FakeClock(time.time())
    async with cluster(
        clock=clock, node_monitor_grace=10, pod_eviction_timeout=20, node_monitor_period=0.05
    ) as c:
        await c.client.nodes.create(node("dead", clock.now()))
        await c.client.nodes.create(node("alive", clock.now()))
        beat = asyncio.create_task(heartbeat(c.client, "alive", clock, 0.02))
        try:
            await c.client.replicasets.create(replicaset("web", 2))
            pods = await pods_on_node(c, 2, "dead")
            await asyncio.sleep(0.2)
            assert (await ready_condition(c, "dead")).status == "True"  # within grace

            await advance(clock, 11)

            async def unknown() -> Condition | None:
                cond = await ready_condition(c, "dead")
                return cond if cond.status == "Unknown" else None

            cond = await eventually(unknown)
            assert cond is not None
            assert cond.reason == "NodeStatusUnknown"
            assert cond.message == "Kubelet stopped posting node status."
            dead = await c.client.nodes.get("dead")
            assert all(x.status == "Unknown" for x in dead.status.conditions)
            assert (await ready_condition(c, "alive")).status == "True"

            async def pods_not_ready() -> bool:
                got = [await c.client.pods.get(p.metadata.name) for p in pods]
                return not any(is_ready(p) for p in got)

            await eventually(pods_not_ready)
            # Not yet evicted: the eviction timeout has not passed.
            await asyncio.sleep(0.2)
            names = {p.metadata.name for p in await c.client.pods.list("default", "app=web")}
            assert names == {p.metadata.name for p in pods}

            await advance(clock, 21)

            async def replaced() -> bool:
                now = await c.client.pods.list("default", "app=web")
                names = {p.metadata.name for p in now}
                return len(now) == 2 and not names & {p.metadata.name for p in pods}

            await eventually(replaced)
            await c.client.flush_events()
            events = await c.client.events.list("default")
            assert any(
                e.reason == "DeletingAllPods" and e.involved_object.name == "dead" for e in events
            )
            # The node that kept posting heartbeats was never judged.
            assert not any(e.involved_object.name == "alive" for e in events)
            assert (await ready_condition(c, "alive")).status == "True"
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat


async def test_node_that_comes_back_keeps_its_pods() -> None:
    clock = FakeClock(time.time())
    async with cluster(
        clock=clock, node_monitor_grace=10, pod_eviction_timeout=20, node_monitor_period=0.05
    ) as c:
        await c.client.nodes.create(node("flaky", clock.now()))
        await c.client.replicasets.create(replicaset("web", 1))
        (pod,) = await pods_on_node(c, 1, "flaky")
        clock.advance(11)
        await eventually(lambda: _status_is(c, "flaky", "Unknown"))
        # The agent comes back before the eviction timeout.
        beat = asyncio.create_task(heartbeat(c.client, "flaky", clock, 0.02))
        try:
            await eventually(lambda: _status_is(c, "flaky", "True"))
            await advance(clock, 30)
            await asyncio.sleep(0.2)
            assert (await c.client.pods.get(pod.metadata.name)).metadata.uid == pod.metadata.uid
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat


async def _status_is(c: Cluster, name: str, status: str) -> bool:
    return (await ready_condition(c, name)).status == status


async def test_real_clock_short_timeouts_and_pods_on_missing_nodes() -> None:
    async with cluster(node_monitor_grace=1.5, pod_eviction_timeout=1.0) as c:
        await c.client.nodes.create(node("n1", time.time()))
        await c.client.replicasets.create(replicaset("web", 1))
        (pod,) = await pods_on_node(c, 1, "n1")
        # A pod bound to a node that does not exist at all.
        await c.client.replicasets.create(replicaset("ghost", 1))

        async def ghost_pod() -> Pod | None:
            ps = live(await c.client.pods.list("default", "app=ghost"))
            return ps[0] if ps else None

        ghost = await eventually(ghost_pod)
        await c.client.bind(ghost.metadata.name, "default", "no-such-node")

        # The wall-clock path end to end; the timing rules themselves are checked
        # deterministically with the fake clock above.
        await eventually(lambda: _status_is(c, "n1", "Unknown"), timeout=5)

        async def evicted() -> bool:
            try:
                await c.client.pods.get(pod.metadata.name)
            except NotFoundError:
                return True
            return False

        await eventually(evicted, timeout=5)

        async def ghost_gone() -> bool:
            try:
                await c.client.pods.get(ghost.metadata.name)
            except NotFoundError:
                return True
            return False

        await eventually(ghost_gone, timeout=5)
