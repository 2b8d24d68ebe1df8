"""From an Endpoints change in the API server to the node's nftables rules: how long until the
kernel holds the new endpoint, with 1,000 services x 10 endpoints in the cluster.

    .venv/bin/python bench/endpoint_rule_bench.py [--services 1000] [--endpoints 10]
        [--changes 20]

Needs root. An API server (in this process, as under `shoal up`) holds the services; the
agent's real NodeNetwork (informers, rule loop, NftTable) programs a node whose network is
a namespace this bench creates. Each change replaces one endpoint address of one service
through the API; the time is taken from just before that write until `nft monitor`, run in
the node's namespace, reports the rule DNATing to the new address (the kernel has committed
the transaction). Everything is deleted at the end, even on failure.
Guide (issue 5): rules applied within 1 s of the endpoint change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import pct
from shoal.agent._config import AgentConfig
from shoal.agent._network import NodeNetwork
from shoal.api import Pod
from shoal.client import Client, Informer
from shoal.testing import running_api_server


def service(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc{i}", "namespace": "default"},
            "spec": {"selector": {"app": f"a{i}"}, "ports": [{"port": 80, "targetPort": 8080}]}}  # fmt: skip


def endpoints(i: int, n: int, swap: str | None = None) -> dict[str, Any]:
    ips = [f"10.{64 + (i * n + e) // 65536}.{(i * n + e) // 256 % 256}.{(i * n + e) % 256}"
           for e in range(n)]  # fmt: skip
    if swap is not None:
        ips[-1] = swap
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": f"svc{i}", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips],
                         "ports": [{"port": 8080, "protocol": "TCP"}]}]}  # fmt: skip


async def gather_limited(coros: list[Any], limit: int = 32) -> None:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> None:
        async with sem:
            await c

    await asyncio.gather(*(one(c) for c in coros))


async def bench(ns: str, args: argparse.Namespace) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="shoal-epbench-") as tmp:
        async with running_api_server(Path(tmp) / "api") as srv, Client(srv.url) as client:
            t0 = time.perf_counter()
            await gather_limited([client.services.create(service(i)) for i in range(args.services)])
            await gather_limited(
                [
                    client.endpoints.create(endpoints(i, args.endpoints))
                    for i in range(args.services)
                ]
            )
            print(f"created {args.services} services x {args.endpoints} endpoints in "
                  f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
            prefix = "e" + secrets.token_hex(3)[:5]
            config = AgentConfig(node_name=f"{prefix}-node", data_dir=Path(tmp) / "agent",
                                 network="bridge", node_netns=ns, network_prefix=prefix)  # fmt: skip
            pods: Informer[Pod] = Informer(client.pods, field_selector=f"spec.nodeName={prefix}")
            await pods.start()
            net = NodeNetwork(client, config, pods, lambda _links: None)
            monitor = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", ns, "nft", "monitor", "rules",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                t0 = time.perf_counter()
                await net.start()
                await asyncio.wait_for(net.rules_applied.wait(), 60)
                print(f"first full apply {time.perf_counter() - t0:.2f} s after the agent started")
                return await changes(client, monitor, args)
            finally:
                monitor.kill()
                await monitor.wait()
                await net.close(remove=True)
                await pods.stop()


async def changes(
    client: Client, monitor: asyncio.subprocess.Process, args: argparse.Namespace
) -> list[float]:
    assert monitor.stdout is not None
    latencies: list[float] = []
    for k in range(args.changes):
        i = (k * 37) % args.services
        new_ip = f"10.63.{k // 250}.{k % 250 + 1}"
        current = await client.endpoints.get(f"svc{i}", "default")
        body = endpoints(i, args.endpoints, swap=new_ip)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        t0 = time.perf_counter()
        await client.endpoints.update(body)
        want = f"dnat to {new_ip}:8080".encode()
        while True:
            line = await asyncio.wait_for(monitor.stdout.readline(), 10)
            if want in line:
                break
        latencies.append(time.perf_counter() - t0)
        await asyncio.sleep(0.2)  # changes apart, not one coalesced burst
    return latencies


def main(args: argparse.Namespace) -> int:
    ns = f"epb-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    try:
        lat = asyncio.run(bench(ns, args))
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
    print("each change, ms:", " ".join(f"{x * 1e3:.0f}" for x in lat))
    med, p99, worst = statistics.median(lat), pct(lat, 99), max(lat)
    print(f"Endpoints update -> rule in the kernel, {len(lat)} changes: median {med * 1e3:.0f} ms, "
          f"p99 {p99 * 1e3:.0f} ms, max {worst * 1e3:.0f} ms -> "
          f"{'PASS' if worst <= 1.0 else 'FAIL'} (guide <= 1 s, every change)")  # fmt: skip
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--changes", type=int, default=20)
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces, nft)")
        sys.exit(0)
    sys.exit(main(parser.parse_args()))
