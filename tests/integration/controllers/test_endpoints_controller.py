"""The Endpoints controller against a real API server."""

from __future__ import annotations

import asyncio

from shoal.api import (
    ContainerPort,
    EndpointAddress,
    Endpoints,
    EndpointSubset,
    ObjectMeta,
    Service,
    ServicePort,
    ServiceSpec,
)
from shoal.errors import NotFoundError

from . import Cluster, cluster, eventually, live, replicaset, template


def web_service(target: int | str = "http", name: str = "web") -> Service:
    return Service(
        metadata=ObjectMeta(name=name, namespace="default", labels={"team": "a"}),
        spec=ServiceSpec(
            selector={"app": "web"}, ports=[ServicePort(name="http", port=80, target_port=target)]
        ),
    )


async def web_pods(c: Cluster, n: int) -> list[str]:
    rs = replicaset("web", n)
    rs.spec.template = template(
        labels={"app": "web"}, ports=[ContainerPort(container_port=8080, name="http")]
    )
    await c.client.replicasets.create(rs)

    async def created() -> list[str]:
        pods = live(await c.client.pods.list("default", "app=web"))
        return sorted(p.metadata.name for p in pods) if len(pods) == n else []

    return await eventually(created)


def shape(ep: Endpoints) -> list[tuple[list[str], list[str], list[int]]]:
    return [
        (
            sorted(a.target_ref.name or "" for a in s.addresses if a.target_ref),
            sorted(a.target_ref.name or "" for a in s.not_ready_addresses if a.target_ref),
            [p.port for p in s.ports],
        )
        for s in ep.subsets
    ]


async def endpoints_shape(c: Cluster, want: object, name: str = "web") -> bool:
    try:
        ep = await c.client.endpoints.get(name)
    except NotFoundError:
        return False
    return shape(ep) == want


async def test_endpoints_follow_readiness_and_host_ports() -> None:
    async with cluster() as c:
        a, b = await web_pods(c, 2)
        await c.client.services.create(web_service())
        # Pods without an IP are not endpoints yet; the Endpoints object exists, empty.
        await eventually(lambda: endpoints_shape(c, []))

        # Both pods run on one host; the driver mapped containerPort 8080 to different ports.
        await c.agent.set_status(a, ip="10.1.0.5", host_ports={8080: 31001})
        await c.agent.set_status(b, ip="10.1.0.5", ready=False, host_ports={8080: 31002})
        await eventually(lambda: endpoints_shape(c, [([a], [], [31001]), ([], [b], [31002])]))

        ep = await c.client.endpoints.get("web")
        addr = ep.subsets[0].addresses[0]
        assert addr.ip == "10.1.0.5"
        assert addr.target_ref is not None and addr.target_ref.kind == "Pod"
        assert ep.metadata.labels == {"team": "a"}

        # Readiness flips move addresses between the lists.
        await c.agent.set_status(a, ip="10.1.0.5", ready=False, host_ports={8080: 31001})
        await c.agent.set_status(b, ip="10.1.0.5", ready=True, host_ports={8080: 31002})
        await eventually(lambda: endpoints_shape(c, [([], [a], [31001]), ([b], [], [31002])]))

        # A pod going away leaves the Endpoints.
        await c.client.pods.delete(a)
        pods = await eventually(lambda: _replacement(c, {a, b}))
        assert pods
        await eventually(lambda: endpoints_shape(c, [([b], [], [31002])]))


async def _replacement(c: Cluster, old: set[str]) -> list[str]:
    names = [p.metadata.name for p in live(await c.client.pods.list("default", "app=web"))]
    return [n for n in names if n not in old]


async def test_numeric_target_port_without_host_port() -> None:
    async with cluster() as c:
        (a,) = await web_pods(c, 1)
        await c.client.services.create(web_service(target=9090))
        await c.agent.set_status(a, ip="10.1.0.7")
        await eventually(lambda: endpoints_shape(c, [([a], [], [9090])]))


async def test_endpoints_deleted_with_service_and_rewritten_when_tampered() -> None:
    async with cluster() as c:
        (a,) = await web_pods(c, 1)
        await c.client.services.create(web_service())
        await c.agent.set_status(a, ip="10.1.0.5", host_ports={8080: 31001})
        await eventually(lambda: endpoints_shape(c, [([a], [], [31001])]))

        # Someone overwrites the Endpoints: the controller puts them back.
        ep = await c.client.endpoints.get("web")
        ep.subsets = [EndpointSubset(addresses=[EndpointAddress(ip="1.2.3.4")])]
        await c.client.endpoints.update(ep)
        await eventually(lambda: endpoints_shape(c, [([a], [], [31001])]))

        await c.client.services.delete("web")

        async def gone() -> bool:
            try:
                await c.client.endpoints.get("web")
            except NotFoundError:
                return True
            return False

        await eventually(gone)


async def test_services_without_selector_are_left_alone() -> None:
    async with cluster() as c:
        manual = Endpoints(
            metadata=ObjectMeta(name="external", namespace="default"),
            subsets=[EndpointSubset(addresses=[EndpointAddress(ip="192.0.2.10")])],
        )
        # Written before its Service exists (as a manifest may do): not deleted.
        await c.client.endpoints.create(manual)
        await asyncio.sleep(0.2)
        await c.client.services.create(
            Service(
                metadata=ObjectMeta(name="external", namespace="default"),
                spec=ServiceSpec(ports=[ServicePort(port=80)]),
            )
        )
        await asyncio.sleep(0.3)
        ep = await c.client.endpoints.get("external")
        assert [a.ip for a in ep.subsets[0].addresses] == ["192.0.2.10"]
