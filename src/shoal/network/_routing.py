"""Link-state routing between nodes: which next hop each node uses towards every other node.

Every node publishes its links (``Node.status.links``: neighbour, the neighbour's address on
that link, a cost). Every agent builds the same graph from all nodes' links, runs Dijkstra
from itself and routes every other node's pod subnets via the first hop of its shortest path,
the way OSPF routers do from their shared link-state database. Because each agent only picks
its own first hop, forwarding is hop by hop; it is loop-free because the distance to the
destination strictly decreases at every hop (costs are >= 1 and every node uses the same
graph and the same tie-break).

This module is the pure core: plain values in, plain values out, no I/O and no asyncio.
:mod:`shoal.network._routes` installs the result in a node's network namespace.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from heapq import heappop, heappush

__all__ = [
    "Graph",
    "Link",
    "NextHop",
    "Route",
    "build_graph",
    "plan_routes",
    "shortest_paths",
]


@dataclass(frozen=True, slots=True)
class Link:
    """One link a node publishes: to ``peer``, reached at ``address`` (the peer's own address
    on that link, so the next hop to use towards it), with a ``cost`` (>= 1) for leaving
    through it."""

    peer: str
    address: str
    cost: int = 1


@dataclass(frozen=True, slots=True)
class NextHop:
    """How the source reaches ``node``: send to ``via`` (the address of the source's link to
    ``first_hop``), for a total path cost of ``cost``."""

    node: str
    via: str
    first_hop: str
    cost: int


@dataclass(frozen=True, slots=True)
class Route:
    """A route to install: ``destination`` (a normalised CIDR) via ``via`` (an address)."""

    destination: str
    via: str


@dataclass(frozen=True, slots=True)
class Graph:
    """The usable links: ``adjacency[a][b]`` is the cheapest link ``a`` publishes to ``b``,
    present only when both ends are up and ``b`` publishes a link back to ``a``. Every node
    that is not down and published a (possibly empty) list of links is a key."""

    adjacency: Mapping[str, Mapping[str, Link]]

    @property
    def nodes(self) -> frozenset[str]:
        return frozenset(self.adjacency)

    def links_of(self, node: str) -> Mapping[str, Link]:
        """``node``'s usable links by peer (empty for a node not in the graph)."""
        return self.adjacency.get(node, {})


def build_graph(links: Mapping[str, Sequence[Link]], down: Collection[str] = ()) -> Graph:
    """The graph of usable links from every node's published ``links``.

    - A link A->B counts only when B also publishes a link to A (the two-way check OSPF does
      with its hellos): a link seen from one end only is half configured or half broken, and
      routing over it would black-hole traffic.
    - Nodes in ``down`` (NotReady, gone) are left out together with every link to them.
    - Of parallel links between the same pair, the cheapest wins (ties: the lowest address,
      so the choice never depends on publication order). Each direction keeps its own cost:
      A's cost to B is what A published.
    - Links that cannot be right are ignored rather than raised on, because one node's bad
      publication must not stop every other node from routing: a cost below 1 (a zero or
      negative cost would let a path grow without getting dearer, which breaks Dijkstra and
      hop-by-hop loop freedom) and a link of a node to itself.

    The address is not parsed here (that would cost more than the rest for a 1,000-node
    graph); only the source's own addresses are ever used, and :func:`shortest_paths` checks
    those.
    """
    down_set = frozenset(down)
    best: dict[str, dict[str, Link]] = {}
    for node, published in links.items():
        if node in down_set:
            continue
        mine: dict[str, Link] = {}
        for link in published:
            peer = link.peer
            if peer == node or peer in down_set or link.cost < 1:
                continue
            current = mine.get(peer)
            if current is None or (link.cost, link.address) < (current.cost, current.address):
                mine[peer] = link
        best[node] = mine
    adjacency: dict[str, dict[str, Link]] = {}
    for node, mine in best.items():
        adjacency[node] = {
            peer: link for peer, link in mine.items() if node in best.get(peer, _NO_LINKS)
        }
    return Graph(adjacency)


_NO_LINKS: Mapping[str, Link] = {}


def _is_address(text: str) -> bool:
    return _parse_address(text) is not None


def shortest_paths(graph: Graph, source: str) -> dict[str, NextHop]:
    """The next hop from ``source`` to every node it can reach (Dijkstra with a binary heap).

    Paths are compared by (total cost, first hop's name): among equally cheap paths the one
    leaving through the lexicographically smallest neighbour wins, so two runs, and agents on
    different machines, always make the same choice. The comparison is monotone (extending
    two paths by the same link keeps their order) and every link costs >= 1, so Dijkstra's
    first pop of a node is final for this order too.

    Unreachable nodes are absent, as is ``source`` itself (and everything, when ``source`` is
    not in the graph). The source's links whose address is not an IP address are not used:
    no route could be installed through them.
    """
    adjacency = graph.adjacency
    own = adjacency.get(source)
    if own is None:
        return {}
    best: dict[str, tuple[int, str]] = {}
    heap: list[tuple[int, str, str]] = []
    for peer, link in own.items():
        if _is_address(link.address):
            best[peer] = (link.cost, peer)
            heappush(heap, (link.cost, peer, peer))
    done = {source}
    result: dict[str, NextHop] = {}
    while heap:
        cost, first, node = heappop(heap)
        if node in done:
            continue
        done.add(node)
        result[node] = NextHop(node, own[first].address, first, cost)
        for peer, link in adjacency[node].items():
            if peer in done:
                continue
            new = (cost + link.cost, first)
            current = best.get(peer)
            if current is None or new < current:
                best[peer] = new
                heappush(heap, (new[0], first, peer))
    return result


_Subnet = tuple[int, int, int, str]
"""A parsed subnet: (IP version, network address as an int, prefix length, normalised CIDR);
tuples sort in the order routes are listed."""


def plan_routes(
    next_hops: Mapping[str, NextHop], subnets: Mapping[str, Sequence[str]]
) -> list[Route]:
    """The routes the source needs: every reachable node's pod subnets (``subnets``: node ->
    its subnets across all networks) via that node's next hop.

    Subnets are normalised (``10.77.3.1/24`` -> ``10.77.3.0/24``) so they compare equal to what
    ``ip route`` reports. Entries that cannot become a route are skipped: an unparseable
    subnet, or one whose address family differs from the next hop's (an IPv6 subnet cannot
    be routed via an IPv4 neighbour). When two nodes claim the same subnet (a transient state
    while the IPAM controller moves it), the nearer node wins (then the smaller node name), so
    there is one route per destination. Sorted by address family, network address, then
    prefix length: the same inputs always give the same list.
    """
    chosen: dict[_Subnet, tuple[int, str, str]] = {}
    for node, hop in next_hops.items():
        node_subnets = subnets.get(node)
        if not node_subnets:
            continue
        via = _parse_address(hop.via)
        if via is None:
            continue
        candidate = (hop.cost, node, via[1])
        for text in node_subnets:
            subnet = _parse_network(text)
            if subnet is None or subnet[0] != via[0]:
                continue
            current = chosen.get(subnet)
            if current is None or candidate < current:
                chosen[subnet] = candidate
    return [Route(subnet[3], chosen[subnet][2]) for subnet in sorted(chosen)]


@lru_cache(maxsize=65536)
def _parse_network(text: str) -> _Subnet | None:
    """A subnet, normalised; cached because agents re-plan the same subnets every time
    anything changes, and parsing dominates planning."""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return (network.version, int(network.network_address), network.prefixlen, str(network))


@lru_cache(maxsize=4096)
def _parse_address(text: str) -> tuple[int, str] | None:
    """(IP version, normalised address), or None when ``text`` is not an address."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return (address.version, str(address))
