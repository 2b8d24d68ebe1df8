"""The IPAM controller against a real API server: per-node subnets, unique pod addresses,
reuse after deletion, release of a gone node's subnets, and only for bridge nodes."""

from __future__ import annotations

import asyncio
import ipaddress

from shoal.api import (
    ADDRESSES_ANNOTATION,
    NETWORK_LABEL,
    Container,
    Network,
    NetworkSpec,
    Node,
    ObjectMeta,
    Pod,
    PodSpec,
    parse_addresses,
)

from . import Cluster, cluster, eventually


async def add_node(c: Cluster, name: str, network: str = "bridge") -> None:
    await c.client.nodes.create(
        Node(metadata=ObjectMeta(name=name, labels={NETWORK_LABEL: network}))
    )


async def add_pod(c: Cluster, name: str, node: str, networks: list[str] | None = None) -> None:
    spec = PodSpec(
        containers=[Container(name="c", image="x")], node_name=node, networks=networks or []
    )
    await c.client.pods.create(Pod(metadata=ObjectMeta(name=name, namespace="default"), spec=spec))


async def addresses(c: Cluster, name: str, count: int = 1) -> dict[str, str]:
    async def got() -> dict[str, str]:
        pod = await c.client.pods.get(name, "default")
        found = parse_addresses(pod.metadata.annotations.get(ADDRESSES_ANNOTATION))
        return found if len(found) >= count else {}

    return await eventually(got)


async def test_pods_get_unique_addresses_in_their_nodes_subnets() -> None:
    async with cluster() as c:
        await c.client.networks.create(
            Network(metadata=ObjectMeta(name="back"), spec=NetworkSpec(subnet="10.70.0.0/16"))
        )
        await add_node(c, "n1")
        await add_node(c, "n2")
        await asyncio.gather(*(add_pod(c, f"p{i}", "n1" if i % 2 else "n2") for i in range(12)))
        await add_pod(c, "both", "n1", ["default", "back"])
        got = {f"p{i}": (await addresses(c, f"p{i}"))["default"] for i in range(12)}
        assert len(set(got.values())) == 12
        net = await c.client.networks.get("default")
        subnets = {ns.node_name: ns.subnet for ns in net.status.node_subnets}
        assert sorted(subnets.values()) == ["10.244.0.0/24", "10.244.1.0/24"]
        for i in range(12):
            node = "n1" if i % 2 else "n2"
            ip = ipaddress.ip_interface(got[f"p{i}"])
            assert ip.network == ipaddress.ip_network(subnets[node])
            assert str(ip.ip) != subnets[node].replace(".0/24", ".1")  # the gateway
        both = await addresses(c, "both", 2)
        assert set(both) == {"default", "back"} and both["back"].startswith("10.70.")
        # A deleted pod's address is the next one handed out on its node.
        freed = got["p1"]
        await c.client.pods.delete("p1", "default", grace_period_seconds=0)
        await eventually(lambda: _gone(c, "p1"))
        await add_pod(c, "late", "n1")
        assert (await addresses(c, "late"))["default"] == freed
        # A node that is gone gives its subnets back.
        await c.client.nodes.delete("n2")

        async def released() -> bool:
            net = await c.client.networks.get("default")
            return [ns.node_name for ns in net.status.node_subnets] == ["n1"]

        await eventually(released)


async def _gone(c: Cluster, name: str) -> bool:
    pods = await c.client.pods.list("default")
    return all(p.metadata.name != name for p in pods)


async def test_only_bridge_nodes_and_known_networks() -> None:
    async with cluster() as c:
        await add_node(c, "hosty", network="host")
        await add_node(c, "n1")
        await add_pod(c, "on-host", "hosty")
        await add_pod(c, "waiting", "n1", ["later"])
        await asyncio.sleep(0.5)
        for name in ("on-host", "waiting"):
            pod = await c.client.pods.get(name, "default")
            assert ADDRESSES_ANNOTATION not in pod.metadata.annotations
        # The network appearing unblocks the waiting pod.
        await c.client.networks.create(Network(metadata=ObjectMeta(name="later")))
        got = await addresses(c, "waiting")
        assert got["later"].startswith("172.16.")
