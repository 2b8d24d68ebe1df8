"""The link-state routing core: graph building (two-way check, down nodes, parallel links,
bad links), Dijkstra with its deterministic tie-break, and route planning — checked on small
hand-made topologies and, as a property, against a brute-force Floyd-Warshall."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.network._routes import (
    ROUTE_PROTO,
    RouteChange,
    _carrier_up,
    _direct_device,
    diff_routes,
)
from shoal.network._routing import (
    Link,
    NextHop,
    Route,
    build_graph,
    plan_routes,
    shortest_paths,
)


def addr(a: str, b: str) -> str:
    """The address ``b`` has on its link with ``a`` (node names are n<digit>)."""
    lo, hi = sorted((int(a[1:]), int(b[1:])))
    return f"192.168.{lo}{hi}.{1 if int(b[1:]) == lo else 2}"


def undirected(*edges: tuple[str, str, int]) -> dict[str, list[Link]]:
    """Both ends publish every link, with the same cost."""
    out: dict[str, list[Link]] = {}
    for a, b, cost in edges:
        out.setdefault(a, []).append(Link(b, addr(a, b), cost))
        out.setdefault(b, []).append(Link(a, addr(b, a), cost))
    return out


def hops(
    links: Mapping[str, Sequence[Link]], source: str, down: Sequence[str] = ()
) -> dict[str, tuple[str, int]]:
    """{destination: (first hop, cost)} from ``source``."""
    result = shortest_paths(build_graph(links, down), source)
    return {node: (hop.first_hop, hop.cost) for node, hop in result.items()}


def test_line_goes_through_the_middle() -> None:
    links = undirected(("n1", "n2", 1), ("n2", "n3", 1), ("n3", "n4", 1))
    result = shortest_paths(build_graph(links), "n1")
    assert result == {
        "n2": NextHop("n2", "192.168.12.2", "n2", 1),
        "n3": NextHop("n3", "192.168.12.2", "n2", 2),
        "n4": NextHop("n4", "192.168.12.2", "n2", 3),
    }
    assert hops(links, "n3") == {"n2": ("n2", 1), "n1": ("n2", 2), "n4": ("n4", 1)}


def test_ring_splits_both_ways_and_ties_pick_the_smallest_first_hop() -> None:
    links = undirected(("n1", "n2", 1), ("n2", "n3", 1), ("n3", "n4", 1), ("n4", "n1", 1))
    # n3 is 2 away both ways: n2 < n4 wins; n4 is adjacent.
    assert hops(links, "n1") == {"n2": ("n2", 1), "n3": ("n2", 2), "n4": ("n4", 1)}
    assert hops(links, "n3") == {"n2": ("n2", 1), "n1": ("n2", 2), "n4": ("n4", 1)}
    assert hops(links, "n2") == {"n1": ("n1", 1), "n3": ("n3", 1), "n4": ("n1", 2)}


def test_ties_do_not_depend_on_publication_order() -> None:
    links = undirected(("n1", "n2", 1), ("n2", "n3", 1), ("n3", "n4", 1), ("n4", "n1", 1))
    reordered = {node: list(reversed(ls)) for node, ls in reversed(list(links.items()))}
    for source in links:
        first = shortest_paths(build_graph(links), source)
        assert shortest_paths(build_graph(reordered), source) == first
        assert shortest_paths(build_graph(links), source) == first


def test_ring_with_a_cut_goes_the_other_way() -> None:
    links = undirected(("n1", "n2", 1), ("n3", "n4", 1), ("n4", "n1", 1))
    assert hops(links, "n1") == {"n2": ("n2", 1), "n3": ("n4", 2), "n4": ("n4", 1)}


def test_diamond_with_unequal_costs_takes_the_cheaper_side() -> None:
    # n1 -> n2 -> n4 costs 1 + 5, n1 -> n3 -> n4 costs 2 + 2: via n3 despite n2 < n3.
    links = undirected(("n1", "n2", 1), ("n1", "n3", 2), ("n2", "n4", 5), ("n3", "n4", 2))
    assert hops(links, "n1") == {"n2": ("n2", 1), "n3": ("n3", 2), "n4": ("n3", 4)}
    # n4 reaches n2 via n3 and n1 (2 + 2 + 1 = 5) or directly (5): tie, n2 < n3.
    assert hops(links, "n4")["n2"] == ("n2", 5)


def test_a_cheaper_detour_beats_a_direct_link() -> None:
    links = undirected(("n1", "n2", 10), ("n1", "n3", 1), ("n3", "n2", 1))
    result = shortest_paths(build_graph(links), "n1")
    assert result["n2"] == NextHop("n2", "192.168.13.2", "n3", 2)


def test_costs_are_directional() -> None:
    links = {
        "n1": [Link("n2", "192.168.12.2", 1), Link("n3", "192.168.13.3", 5)],
        "n2": [Link("n1", "192.168.12.1", 9), Link("n3", "192.168.23.3", 1)],
        "n3": [Link("n1", "192.168.13.1", 1), Link("n2", "192.168.23.2", 1)],
    }
    assert hops(links, "n1")["n3"] == ("n2", 2)
    assert hops(links, "n2")["n1"] == ("n3", 2)


def test_one_way_link_is_ignored() -> None:
    links = undirected(("n1", "n2", 1), ("n2", "n3", 1))
    links["n1"].append(Link("n3", "192.168.13.3", 1))  # n3 does not publish it back
    graph = build_graph(links)
    assert "n3" not in graph.links_of("n1")
    assert hops(links, "n1") == {"n2": ("n2", 1), "n3": ("n2", 2)}
    assert hops(links, "n3")["n1"] == ("n2", 2)


def test_link_to_a_node_that_publishes_nothing_is_ignored() -> None:
    links = {"n1": [Link("n2", "192.168.12.2")]}
    assert build_graph(links).links_of("n1") == {}
    assert shortest_paths(build_graph(links), "n1") == {}


def test_down_node_is_removed_with_its_links() -> None:
    links = undirected(("n1", "n2", 1), ("n2", "n3", 1), ("n3", "n4", 1), ("n4", "n1", 1))
    assert hops(links, "n1", down=["n2"]) == {"n4": ("n4", 1), "n3": ("n4", 2)}
    graph = build_graph(links, down=["n2"])
    assert graph.nodes == frozenset({"n1", "n3", "n4"})
    assert "n2" not in graph.links_of("n1")
    assert hops(links, "n2", down=["n2"]) == {}


def test_unreachable_nodes_are_absent() -> None:
    links = undirected(("n1", "n2", 1), ("n3", "n4", 1))
    links["n5"] = []
    assert hops(links, "n1") == {"n2": ("n2", 1)}
    assert hops(links, "n5") == {}
    assert hops(links, "n9") == {}  # not in the graph at all


def test_parallel_links_keep_the_cheapest() -> None:
    links = {
        "n1": [Link("n2", "10.0.0.2", 3), Link("n2", "10.0.1.2", 1), Link("n2", "10.0.2.2", 2)],
        "n2": [Link("n1", "10.0.0.1", 3), Link("n1", "10.0.1.1", 1), Link("n1", "10.0.2.1", 2)],
    }
    assert shortest_paths(build_graph(links), "n1") == {"n2": NextHop("n2", "10.0.1.2", "n2", 1)}


def test_parallel_links_of_equal_cost_pick_the_lowest_address_whatever_the_order() -> None:
    one = {"n1": [Link("n2", "10.0.9.2"), Link("n2", "10.0.1.2")], "n2": [Link("n1", "10.0.1.1")]}
    two = {"n1": [Link("n2", "10.0.1.2"), Link("n2", "10.0.9.2")], "n2": [Link("n1", "10.0.1.1")]}
    assert shortest_paths(build_graph(one), "n1")["n2"].via == "10.0.1.2"
    assert shortest_paths(build_graph(two), "n1")["n2"].via == "10.0.1.2"


def test_bad_links_are_ignored() -> None:
    links = undirected(("n1", "n2", 1), ("n2", "n3", 1))
    links["n1"] += [Link("n1", "192.168.11.1", 1), Link("n3", "192.168.13.3", 0)]
    links["n3"] += [Link("n1", "192.168.13.1", -4)]
    graph = build_graph(links)
    assert set(graph.links_of("n1")) == {"n2"}
    assert set(graph.links_of("n3")) == {"n2"}
    assert hops(links, "n1") == {"n2": ("n2", 1), "n3": ("n2", 2)}


def test_own_link_with_unusable_address_is_not_a_first_hop() -> None:
    links = undirected(("n1", "n2", 1), ("n1", "n3", 5), ("n2", "n3", 1))
    links["n1"][0] = Link("n2", "not-an-address", 1)
    result = shortest_paths(build_graph(links), "n1")
    assert result["n3"] == NextHop("n3", "192.168.13.2", "n3", 5)
    assert result["n2"] == NextHop("n2", "192.168.13.2", "n3", 6)


def test_plan_routes_normalises_sorts_and_skips() -> None:
    next_hops = {
        "n2": NextHop("n2", "192.168.12.2", "n2", 1),
        "n3": NextHop("n3", "192.168.12.2", "n2", 2),
        "n4": NextHop("n4", "192.168.14.4", "n4", 1),
    }
    subnets = {
        "n1": ["10.77.1.0/24"],  # the source: no next hop, no route
        "n2": ["10.77.2.1/24", "10.88.2.0/24", "fd00:2::/64", "nonsense"],
        "n3": ["10.77.10.0/24", "10.77.3.0/24"],
        "n4": ["10.77.4.0/24"],
        "n9": ["10.77.9.0/24"],  # unreachable
    }
    assert plan_routes(next_hops, subnets) == [
        Route("10.77.2.0/24", "192.168.12.2"),
        Route("10.77.3.0/24", "192.168.12.2"),
        Route("10.77.4.0/24", "192.168.14.4"),
        Route("10.77.10.0/24", "192.168.12.2"),
        Route("10.88.2.0/24", "192.168.12.2"),
    ]


def test_plan_routes_gives_a_contested_subnet_to_the_nearer_node() -> None:
    next_hops = {
        "n2": NextHop("n2", "192.168.12.2", "n2", 3),
        "n3": NextHop("n3", "192.168.13.3", "n3", 1),
        "n4": NextHop("n4", "192.168.14.4", "n4", 1),
    }
    subnets = {"n2": ["10.77.5.0/24"], "n3": ["10.77.5.0/24"], "n4": ["10.77.6.0/24"]}
    assert plan_routes(next_hops, subnets) == [
        Route("10.77.5.0/24", "192.168.13.3"),
        Route("10.77.6.0/24", "192.168.14.4"),
    ]
    subnets["n4"] = ["10.77.5.0/24"]  # equal cost: the smaller node name
    assert plan_routes(next_hops, subnets) == [Route("10.77.5.0/24", "192.168.13.3")]


def test_plan_routes_ipv6_via_ipv6() -> None:
    next_hops = {"n2": NextHop("n2", "fd00:12:0:0::2", "n2", 1)}
    assert plan_routes(next_hops, {"n2": ["fd00:2::1/64", "10.77.2.0/24"]}) == [
        Route("fd00:2::/64", "fd00:12::2")
    ]


# --- property: agree with brute force on random small graphs ----------------------------

INF = float("inf")


@st.composite
def published_links(draw: st.DrawFn) -> tuple[dict[str, list[Link]], list[str]]:
    """Up to 7 nodes; each ordered pair may publish 0-2 links (so one-way and parallel links
    happen), costs 1-6 with some invalid ones, and some nodes down."""
    n = draw(st.integers(2, 7))
    names = [f"n{i}" for i in range(n)]
    links: dict[str, list[Link]] = {name: [] for name in names}
    for a, b in itertools.permutations(names, 2):
        for k in range(draw(st.integers(0, 2))):
            cost = draw(st.integers(0, 6))
            links[a].append(Link(b, f"10.{names.index(a)}.{names.index(b)}.{k + 1}", cost))
    down = draw(st.lists(st.sampled_from(names), max_size=2))
    return links, down


def brute_force(
    links: dict[str, list[Link]], down: list[str]
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], Link]]:
    """Floyd-Warshall over the graph the rules describe, written independently: the
    cheapest valid link per ordered pair, kept only when the reverse pair has a valid one."""
    up = [n for n in links if n not in down]

    def cheapest(a: str, b: str) -> Link | None:
        valid = [lk for lk in links[a] if lk.peer == b and lk.cost >= 1]
        return min(valid, key=lambda lk: (lk.cost, lk.address)) if valid else None

    edge: dict[tuple[str, str], Link] = {}
    for a, b in itertools.permutations(up, 2):
        there, back = cheapest(a, b), cheapest(b, a)
        if there is not None and back is not None:
            edge[a, b] = there
    dist = {(a, b): (0 if a == b else edge[a, b].cost if (a, b) in edge else INF) for a in up for b in up}  # fmt: skip
    for k, i, j in itertools.product(up, up, up):
        if dist[i, k] + dist[k, j] < dist[i, j]:
            dist[i, j] = dist[i, k] + dist[k, j]
    return dist, edge


@settings(max_examples=300, deadline=None)
@given(published_links())
def test_matches_floyd_warshall(case: tuple[dict[str, list[Link]], list[str]]) -> None:
    links, down = case
    dist, edge = brute_force(links, down)
    graph = build_graph(links, down)
    up = [n for n in links if n not in down]
    for source in links:
        result = shortest_paths(graph, source)
        if source in down:
            assert result == {}
            continue
        assert source not in result
        for dest in up:
            if dest == source:
                continue
            if dist[source, dest] == INF:
                assert dest not in result
                continue
            hop = result[dest]
            assert hop.node == dest
            assert hop.cost == dist[source, dest]
            # The first hop is the smallest-named neighbour on some shortest path...
            best_first = min(
                n
                for n in up
                if (source, n) in edge
                and edge[source, n].cost + dist[n, dest] == dist[source, dest]
            )
            assert hop.first_hop == best_first
            # ...reached through the source's cheapest link to it.
            assert hop.via == edge[source, best_first].address
        # Hop-by-hop forwarding from every node reaches the destination without a loop.
        for dest in result:
            at, seen = source, set()
            while at != dest:
                assert at not in seen
                seen.add(at)
                at = shortest_paths(graph, at)[dest].first_hop


# --- the shell's pure parts: route diff, reading `ip -j` output -----------------------------


def test_diff_adds_new_replaces_moved_and_deletes_stale_by_proto() -> None:
    installed = {"10.77.2.0/24": "192.168.12.2", "10.77.3.0/24": "192.168.12.2", "10.77.9.0/24": "192.168.12.2"}  # fmt: skip
    wanted = [
        Route("10.77.2.0/24", "192.168.12.2"),
        Route("10.77.3.0/24", "192.168.14.2"),
        Route("10.77.4.0/24", "192.168.14.2"),
    ]
    lines, change = diff_routes(installed, wanted)
    assert lines == [
        f"route replace 10.77.3.0/24 via 192.168.14.2 proto {ROUTE_PROTO}",
        f"route add 10.77.4.0/24 via 192.168.14.2 proto {ROUTE_PROTO}",
        f"route del 10.77.9.0/24 proto {ROUTE_PROTO}",
    ]
    assert change == RouteChange(added=1, changed=1, removed=1)
    assert diff_routes(installed, [Route(d, v) for d, v in installed.items()]) == ([], RouteChange())  # fmt: skip
    assert not RouteChange() and RouteChange(removed=1)
    assert str(change) == "+1 ~1 -1"


def test_reading_route_get_and_link_show() -> None:
    connected = '[{"dst":"192.168.12.2","dev":"t1-12","prefsrc":"192.168.12.1","flags":[]}]'
    assert _direct_device(connected) == "t1-12"
    gatewayed = '[{"dst":"10.77.4.1","gateway":"192.168.14.2","dev":"t1-14","flags":[]}]'
    assert _direct_device(gatewayed) is None
    assert _direct_device('[{"dst":"192.168.12.2","dev":"t1-12","flags":["linkdown"]}]') is None
    assert _direct_device("") is None  # `ip route get` failed: unreachable
    up = {"flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "operstate": "UP"}
    no_carrier = {"flags": ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP"], "operstate": "DOWN"}
    admin_down = {"flags": ["BROADCAST", "MULTICAST"], "operstate": "DOWN"}
    assert _carrier_up(up)
    assert _carrier_up({**up, "operstate": "UNKNOWN"})
    assert not _carrier_up(no_carrier)
    assert not _carrier_up(admin_down)
    assert not _carrier_up({**up, "operstate": "LOWERLAYERDOWN"})
