"""Link-state routing core: build_graph + shortest_paths on a 1,000-node, 5,000-link graph,
and plan_routes for one network.

    .venv/bin/python bench/route_bench.py [--nodes 1000] [--links 5000] [--runs 20] [--seed 5]

Builds a random connected graph (a random spanning tree plus random extra links, costs 1-10,
each link published by both ends, as Node statuses carry them), then times, from one source,
what an agent does on every change: build the graph from all nodes' published links and run
Dijkstra. Guide (issue 5): <= 50 ms in CPython. Pure Python, no root, no I/O.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from shoal.network._routing import Link, build_graph, plan_routes, shortest_paths

GUIDE_MS = 50.0


def random_graph(nodes: int, links: int, seed: int) -> dict[str, list[Link]]:
    """``links`` distinct undirected links over ``nodes`` nodes, connected, both ends
    published; link k gets its own /30 from 100.64.0.0/10, one address per end."""
    rng = random.Random(seed)
    names = [f"node-{i:04d}" for i in range(nodes)]
    pairs: set[tuple[int, int]] = set()
    order = list(range(nodes))
    rng.shuffle(order)
    for k in range(1, nodes):
        a, b = order[k], order[rng.randrange(k)]
        pairs.add((min(a, b), max(a, b)))
    while len(pairs) < links:
        a, b = rng.sample(range(nodes), 2)
        pairs.add((min(a, b), max(a, b)))
    published: dict[str, list[Link]] = {name: [] for name in names}
    for k, (a, b) in enumerate(sorted(pairs)):
        base = 4 * k
        addr_a = f"100.{64 + (base >> 16)}.{(base >> 8) & 255}.{(base & 255) + 1}"
        addr_b = f"100.{64 + (base >> 16)}.{(base >> 8) & 255}.{(base & 255) + 2}"
        cost = rng.randint(1, 10)
        published[names[a]].append(Link(names[b], addr_b, cost))
        published[names[b]].append(Link(names[a], addr_a, cost))
    return published


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--links", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    published = random_graph(args.nodes, args.links, args.seed)
    source = "node-0000"
    subnets = {name: [f"10.{i >> 8}.{i & 255}.0/24"] for i, name in enumerate(sorted(published))}

    build_ms: list[float] = []
    total_ms: list[float] = []
    plan_ms: list[float] = []
    reached = 0
    for _ in range(args.runs):
        t0 = time.perf_counter()
        graph = build_graph(published)
        t1 = time.perf_counter()
        hops = shortest_paths(graph, source)
        t2 = time.perf_counter()
        routes = plan_routes(hops, subnets)
        t3 = time.perf_counter()
        build_ms.append((t1 - t0) * 1e3)
        total_ms.append((t2 - t0) * 1e3)
        plan_ms.append((t3 - t2) * 1e3)
        reached = len(hops)
    assert reached == args.nodes - 1, f"graph not connected: reached {reached}"
    assert len(routes) == args.nodes - 1

    med, worst = statistics.median(total_ms), max(total_ms)
    print(f"graph: {args.nodes} nodes, {args.links} links (seed {args.seed}), source {source}, "
          f"{args.runs} runs, Python {sys.version.split()[0]}")  # fmt: skip
    print(f"build_graph:                  median {statistics.median(build_ms):6.1f} ms  "
          f"max {max(build_ms):6.1f} ms")  # fmt: skip
    print(f"build_graph + shortest_paths: median {med:6.1f} ms  max {worst:6.1f} ms  "
          f"(guide <= {GUIDE_MS:.0f} ms: {'PASS' if med <= GUIDE_MS else 'FAIL'})")  # fmt: skip
    print(f"plan_routes (1 network, {len(routes)} routes): median "
          f"{statistics.median(plan_ms):6.1f} ms  max {max(plan_ms):6.1f} ms  "
          f"(first run, parse cache cold: {plan_ms[0]:.1f} ms)")  # fmt: skip


if __name__ == "__main__":
    main()
