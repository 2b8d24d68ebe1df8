"""Routing between nodes on a real data plane: four node network namespaces in a ring
n1-n2-n3-n4-n1 (veth links with /30 addresses, each node a bridge holding its "pod
subnet" 10.77.N.1/24), routes computed by the routing core from the published links and
installed with sync_routes; traffic between opposite corners crosses an intermediate node.
Then a link on the path is cut and traffic must flow round the other side within 2 s."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from shoal.errors import NetworkError
from shoal.network._linkwatch import RouteKeeper
from shoal.network._routes import (
    ROUTE_PROTO,
    RouteChange,
    enable_forwarding,
    installed_routes,
    link_up,
    live_links,
    remove_all_routes,
    sync_routes,
)
from shoal.network._routing import Link, Route, build_graph, plan_routes, shortest_paths
from tests.integration.network.conftest import veth_link
from tests.rootreq import require_root

NODES = ("n1", "n2", "n3", "n4")
RING = (("n1", "n2"), ("n2", "n3"), ("n3", "n4"), ("n1", "n4"))


def link_address(a: str, b: str) -> str:
    """``a``'s address on the link between ``a`` and ``b``: 192.168.{lo}{hi}.1 for the
    lower-numbered end, .2 for the other."""
    lo, hi = sorted((a, b))
    return f"192.168.{lo[1]}{hi[1]}.{1 if a == lo else 2}"


def pod_address(node: str) -> str:
    return f"10.77.{node[1]}.1"


@dataclass
class Ring:
    prefix: str
    netns: dict[str, str]
    links: dict[str, list[Link]] = field(default_factory=dict)
    """Every node's configured links (all of them, up or not)."""

    def ifname(self, a: str, b: str) -> str:
        """``a``'s end of its link to ``b`` (e.g. t1a2b3-12 in n1), at most 15 characters."""
        return f"{self.prefix}-{a[1]}{b[1]}"

    def subnets(self) -> dict[str, list[str]]:
        return {node: [f"10.77.{node[1]}.0/24"] for node in NODES}

    def plan(self, node: str, published: dict[str, list[Link]]) -> list[Route]:
        return plan_routes(shortest_paths(build_graph(published), node), self.subnets())

    def ping(self, src: str, dst: str) -> bool:
        """One ping from ``src``'s pod address to ``dst``'s, 1 s timeout."""
        argv = ["ip", "netns", "exec", self.netns[src], "/bin/busybox", "ping", "-c1", "-W1",
                "-I", pod_address(src), pod_address(dst)]  # fmt: skip
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    def route_get(self, node: str, address: str) -> dict[str, object]:
        out = ip("-n", self.netns[node], "-j", "route", "get", address)
        entry = json.loads(out)[0]
        assert isinstance(entry, dict)
        return entry

    def foreign_routes(self, node: str) -> list[dict[str, object]]:
        """The node's routes that are not shoal's, as ``ip -j route show`` lists them."""
        routes = json.loads(ip("-n", self.netns[node], "-j", "route", "show"))
        return [r for r in routes if r.get("protocol") != str(ROUTE_PROTO)]


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def ring(make_netns: Callable[[str], str], prefix: str) -> Ring:
    require_root("ip", "sysctl")
    r = Ring(prefix, {node: make_netns(node) for node in NODES})
    for a, b in RING:
        veth_link(r.netns[a], r.ifname(a, b), link_address(a, b) + "/30",
                  r.netns[b], r.ifname(b, a), link_address(b, a) + "/30")  # fmt: skip
        r.links.setdefault(a, []).append(Link(b, link_address(b, a)))
        r.links.setdefault(b, []).append(Link(a, link_address(a, b)))
    for node in NODES:
        ns, bridge = r.netns[node], f"{prefix}-pod"
        ip("-n", ns, "link", "add", bridge, "type", "bridge")
        ip("-n", ns, "addr", "add", pod_address(node) + "/24", "dev", bridge)
        ip("-n", ns, "link", "set", bridge, "up")
    return r


async def sync_all(r: Ring, published: dict[str, list[Link]]) -> dict[str, RouteChange]:
    changes = await asyncio.gather(
        *(sync_routes(r.netns[node], r.plan(node, published)) for node in NODES)
    )
    return dict(zip(NODES, changes, strict=True))


async def test_ring_routes_through_a_neighbour_and_fails_over(ring: Ring) -> None:
    r = ring
    for node in NODES:
        await enable_forwarding(r.netns[node])
    # Someone else's route, which shoal must never touch.
    ip("-n", r.netns["n1"], "route", "add", "10.99.0.0/24", "via", "192.168.12.2", "proto", "static")  # fmt: skip
    foreign_before = r.foreign_routes("n1")
    assert not r.ping("n1", "n3")  # nothing routes the pod subnets yet

    published = {node: list(links) for node, links in r.links.items()}
    changes = await sync_all(r, published)
    assert all(c == RouteChange(added=3) for c in changes.values()), changes
    assert await installed_routes(r.netns["n1"]) == {
        "10.77.2.0/24": "192.168.12.2",
        "10.77.3.0/24": "192.168.12.2",  # n3 is 2 hops either way: first hop n2 < n4
        "10.77.4.0/24": "192.168.14.2",
    }
    assert r.ping("n1", "n3")
    via = r.route_get("n1", pod_address("n3"))
    assert (via["gateway"], via["dev"]) == ("192.168.12.2", r.ifname("n1", "n2"))
    # Idempotent: a second sync changes nothing.
    assert not any((await sync_all(r, published)).values())

    # Cut n2-n3 on the path, from n3's side; n2 sees its end lose carrier.
    ip("-n", r.netns["n3"], "link", "set", r.ifname("n3", "n2"), "down")
    t0 = time.perf_counter()
    lives = await asyncio.gather(*(live_links(r.netns[n], r.links[n]) for n in NODES))
    published = dict(zip(NODES, lives, strict=True))
    assert [lk.peer for lk in published["n2"]] == ["n1"]
    assert [lk.peer for lk in published["n3"]] == ["n4"]
    assert published["n1"] == r.links["n1"] and published["n4"] == r.links["n4"]
    changes = await sync_all(r, published)
    assert changes["n1"] == RouteChange(changed=1)  # only 10.77.3.0/24 moves, to n4
    assert r.ping("n1", "n3")
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"fail-over took {elapsed:.2f} s"
    via = r.route_get("n1", pod_address("n3"))
    assert (via["gateway"], via["dev"]) == ("192.168.14.2", r.ifname("n1", "n4"))
    assert r.ping("n2", "n3")  # n2 now goes the long way: n1, n4
    assert r.route_get("n2", pod_address("n3"))["gateway"] == "192.168.12.1"

    for node in NODES:
        await remove_all_routes(r.netns[node])
        assert await installed_routes(r.netns[node]) == {}
    assert r.foreign_routes("n1") == foreign_before
    assert not r.ping("n1", "n3")


async def test_sync_never_takes_over_someone_elses_route(ring: Ring) -> None:
    r, ns = ring, ring.netns["n1"]
    ip("-n", ns, "route", "add", "10.77.3.0/24", "via", "192.168.14.2", "proto", "static")
    wanted = r.plan("n1", r.links)
    assert Route("10.77.3.0/24", "192.168.12.2") in wanted
    with pytest.raises(NetworkError, match=r"10\.77\.3\.0/24"):
        await sync_routes(ns, wanted)
    # The other routes went in anyway; the foreign one is untouched.
    assert await installed_routes(ns) == {
        "10.77.2.0/24": "192.168.12.2",
        "10.77.4.0/24": "192.168.14.2",
    }
    held = [x for x in r.foreign_routes("n1") if x.get("dst") == "10.77.3.0/24"]
    assert [(x["gateway"], x["protocol"]) for x in held] == [("192.168.14.2", "static")]
    await remove_all_routes(ns)
    assert [x["dst"] for x in r.foreign_routes("n1")].count("10.77.3.0/24") == 1
    # Stale routes of shoal's own are removed, a host route compares equal to its /32.
    await sync_routes(ns, [Route("10.66.0.7/32", "192.168.12.2")])
    assert await installed_routes(ns) == {"10.66.0.7/32": "192.168.12.2"}
    assert await sync_routes(ns, []) == RouteChange(removed=1)
    assert await installed_routes(ns) == {}


async def test_link_up_follows_carrier_and_admin_state(ring: Ring) -> None:
    r = ring
    n1, n2 = r.netns["n1"], r.netns["n2"]
    to_n2 = link_address("n2", "n1")
    assert await link_up(n1, to_n2)
    ip("-n", n2, "link", "set", r.ifname("n2", "n1"), "down")  # far end: n1 loses carrier
    assert not await link_up(n1, to_n2)
    assert [lk.peer for lk in await live_links(n1, r.links["n1"])] == ["n4"]
    ip("-n", n2, "link", "set", r.ifname("n2", "n1"), "up")
    assert await link_up(n1, to_n2)
    ip("-n", n1, "link", "set", r.ifname("n1", "n2"), "down")  # near end: no route at all
    assert not await link_up(n1, to_n2)
    # An address reached through a gateway is no direct link, even over a live device.
    await sync_routes(n1, [Route("10.77.4.0/24", link_address("n4", "n1"))])
    assert not await link_up(n1, pod_address("n4"))
    assert not await link_up(n1, "10.200.0.1")  # no route at all


async def test_route_keepers_converge_and_fail_over(ring: Ring) -> None:
    """One RouteKeeper per node, wired as an agent would: its live links are 'published'
    into the shared view and every keeper is poked, as a Node informer would."""
    r = ring
    published = {node: list(links) for node, links in r.links.items()}
    keepers: dict[str, RouteKeeper] = {}

    def publish(node: str) -> Callable[[list[Link]], None]:
        def on_live(live: list[Link]) -> None:
            published[node] = live
            for keeper in keepers.values():
                keeper.poke()

        return on_live

    for node in NODES:
        await enable_forwarding(r.netns[node])
        keepers[node] = RouteKeeper(
            r.netns[node], node, lambda: (published, (), r.subnets()),
            own_links=r.links[node], on_live_links=publish(node), interval=0.5,
        )  # fmt: skip

    async def converged(first_hop_address: str) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 3.0:
            routes = await installed_routes(r.netns["n1"])
            if routes.get("10.77.3.0/24") == first_hop_address and await asyncio.to_thread(
                r.ping, "n1", "n3"
            ):
                return time.perf_counter() - t0
            await asyncio.sleep(0.02)
        raise AssertionError(f"n1 never routed 10.77.3.0/24 via {first_hop_address}")

    tasks = [asyncio.create_task(k.run()) for k in keepers.values()]
    try:
        await converged("192.168.12.2")
        ip("-n", r.netns["n3"], "link", "set", r.ifname("n3", "n2"), "down")
        elapsed = await converged("192.168.14.2")
        assert elapsed < 2.0, f"fail-over took {elapsed:.2f} s"
        assert [lk.peer for lk in published["n2"]] == ["n1"]
        assert await asyncio.to_thread(r.ping, "n2", "n3")
        syncs = sum(k.syncs for k in keepers.values())
        await asyncio.sleep(0.6)  # idle: interval syncs only, and they change nothing
        assert sum(k.syncs for k in keepers.values()) - syncs <= 2 * len(NODES)
        assert not any(k.last_change for k in keepers.values())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for node in NODES:
        await remove_all_routes(r.netns[node])
