"""nftables service rules: time to program 1,000 services x 10 endpoints from scratch
(render + one ``nft -f``), and one endpoint change among them (render_delta + ``nft -f``).

    .venv/bin/python bench/nft_bench.py [--services 1000] [--endpoints 10] [--runs 5]

Needs root: everything happens in a network namespace the bench creates and deletes.
Guides (issue 5): full apply <= 1 s, one endpoint change <= 100 ms (medians). Run without
affinity, then with every 7th service using ClientIP affinity (one shared dynamic map, plus a
small map per such service; kube-proxy's dynamic set per endpoint made this ~50% slower, as
the kernel looks sets up by name in a list).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import time

from shoal.network._exec import arun
from shoal.network._nft import NftTable
from shoal.network._nftrules import (
    Backend,
    DNSRule,
    NetworkRule,
    RuleSet,
    ServiceRule,
    _service,
    build_model,
    render_delta,
    render_full,
)


def ruleset(
    table: str, services: int, endpoints: int, generation: int = 0, affinity_every: int = 7
) -> RuleSet:
    """``services`` ClusterIP services (every 10th also a NodePort, every ``affinity_every``th
    with ClientIP affinity); ``generation`` swaps the last endpoint of the first service."""
    rules = []
    for i in range(services):
        backends = tuple(
            Backend(f"10.{64 + (i * endpoints + e) // 65536}.{(i * endpoints + e) // 256 % 256}."
                    f"{(i * endpoints + e) % 256}", 8080)
            for e in range(endpoints)
        )  # fmt: skip
        if i == 0 and generation:
            backends = (*backends[:-1], Backend(f"10.63.255.{generation % 250 + 1}", 8080))
        rules.append(
            ServiceRule(
                key=f"ns{i % 20}/svc{i}:http",
                cluster_ip=f"10.96.{i // 250}.{i % 250 + 1}",
                port=80,
                protocol="tcp",
                backends=backends,
                affinity_timeout=10800 if affinity_every and i % affinity_every == 0 else None,
                node_port=30000 + i if i % 10 == 0 else None,
            )
        )
    return RuleSet(
        table=table,
        services=tuple(rules),
        networks=(NetworkRule("default", "10.64.0.0/12", "br0"),),
        dns=DNSRule("10.96.255.10", "127.0.0.1", 8600),
        pod_cidrs=("10.64.0.0/12",),
    )


def counts(rs: RuleSet) -> str:
    model = build_model(rs)
    rules = sum(len(r) for r in model.chains.values())
    elements = sum(len(e) for e in model.elements.values())
    return (f"{len(model.chains)} chains, {rules} rules, {len(model.sets)} sets/maps, "
            f"{elements} set/map elements")  # fmt: skip


async def bench(ns: str, args: argparse.Namespace, every: int) -> None:
    table = NftTable("shoalbench", netns=ns)
    base = ruleset("shoalbench", args.services, args.endpoints, 0, every)
    print(f"rules: {counts(base)}")
    _service.cache_clear()
    t0 = time.perf_counter()
    script = render_full(base)
    print(f"render_full: {(time.perf_counter() - t0) * 1e3:.0f} ms, "
          f"{len(script) / 1e6:.1f} MB, {script.count(chr(10))} lines")  # fmt: skip

    full: list[float] = []
    for _ in range(args.runs):
        await table.remove()
        table = NftTable("shoalbench", netns=ns)
        _service.cache_clear()  # from scratch: no service fragment rendered yet
        t0 = time.perf_counter()
        how = await table.apply(base)
        full.append(time.perf_counter() - t0)
        assert how == "full"
    delta: list[float] = []
    current = base
    for gen in range(1, args.runs * 4 + 1):
        nxt = ruleset("shoalbench", args.services, args.endpoints, gen, every)
        t0 = time.perf_counter()
        how = await table.apply(nxt)
        delta.append(time.perf_counter() - t0)
        assert how == "delta", how
        current = nxt
    first = ruleset("shoalbench", args.services, args.endpoints, 1, every)
    lines = render_delta(first, current)
    print(f"one endpoint change: {lines.count(chr(10))}-line transaction")
    # The table as nft holds it, to be sure the deltas left what a full render makes.
    listed = await arun(["nft", "list", "table", "ip", "shoalbench"], netns=ns)
    print(f"listed table: {listed.count(chr(10))} lines")
    await table.remove()

    f_med, d_med = statistics.median(full), statistics.median(delta)
    print(
        f"full apply ({args.services} services x {args.endpoints} endpoints, render + nft -f): "
        f"median {f_med * 1e3:.0f} ms over {len(full)} runs (min {min(full) * 1e3:.0f}, "
        f"max {max(full) * 1e3:.0f}) -> {'PASS' if f_med <= 1.0 else 'FAIL'} (guide <= 1 s)"
    )
    print(f"one endpoint change (render_delta + nft -f): median {d_med * 1e3:.1f} ms over "
          f"{len(delta)} runs (min {min(delta) * 1e3:.1f}, max {max(delta) * 1e3:.1f}) -> "
          f"{'PASS' if d_med <= 0.1 else 'FAIL'} (guide <= 100 ms)")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    ns = f"nftb-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        scenarios = [0, 7] if args.affinity_every is None else [args.affinity_every]
        for every in scenarios:
            affinity = f"every {every}th service with ClientIP affinity" if every else "no affinity"
            print(f"-- {args.services} services x {args.endpoints} endpoints, {affinity}")
            asyncio.run(bench(ns, args, every))
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--affinity-every", type=int, default=None, help="0: none (default: 0, then 7)"
    )
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces, nft)")
        sys.exit(0)
    sys.exit(main(parser.parse_args()))
