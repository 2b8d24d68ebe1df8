"""Service registry: registrations/s, /v1/health/service latency with 10,000 instances,
and the time until 1,000 blocking watchers have all seen one change.

    .venv/bin/python bench/registry_bench.py [--registrations 2000] [--services 1000]
        [--per-service 10] [--watchers 1000] [--conc 32] [--big 1000] [--seconds 4]

Starts `python -m shoal.apiserver` with the registry (Consul API; DNS off) in its own
process over a fresh SQLite store and drives the Consul API from this process over
keep-alive connections. Guides (issue 4): >= 1,000 registrations/s, health p99 <= 10 ms
with 10,000 instances, all 1,000 watchers within 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _common import REPO, RawHTTP, cpu_seconds, free_port, machine_busy_seconds, pct


class CPU:
    """Server, bench-client and everything-else CPU over one phase: on a shared 2-core
    machine the figures only mean something next to how busy the rest of the machine was."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = time.perf_counter()
        self.server0 = sum(cpu_seconds(pid))
        self.client0 = sum(os.times()[:2])
        self.busy0 = machine_busy_seconds()

    def report(self, ops: int, unit: str = "µs", scale: float = 1e6) -> str:
        wall = time.perf_counter() - self.t0
        server = sum(cpu_seconds(self.pid)) - self.server0
        client = sum(os.times()[:2]) - self.client0
        other = machine_busy_seconds() - self.busy0 - server - client
        digits = 0 if unit == "µs" else 1
        return (f"server CPU {server / ops * scale:.{digits}f} {unit}/op, client "
                f"{client / ops * scale:.{digits}f} {unit}/op, other load {max(0.0, other) / wall:.1f} "
                f"cores of {os.cpu_count()}")  # fmt: skip


def body(service: str, sid: str, port: int) -> dict[str, object]:
    return {"Name": service, "ID": sid, "Address": "127.0.0.1", "Port": port,
            "Tags": ["bench"], "Check": {"TTL": "600s"}}  # fmt: skip


async def register(port: int, items: list[tuple[str, str]], conc: int) -> tuple[float, list[float]]:
    conns = [RawHTTP("127.0.0.1", port) for _ in range(conc)]
    for c in conns:
        await c.connect()
    it = iter(enumerate(items))
    lat: list[float] = []

    async def worker(c: RawHTTP) -> None:
        for i, (svc, sid) in it:
            t = time.perf_counter()
            status, data = await c.request(
                "PUT", "/v1/agent/service/register", body(svc, sid, 1000 + i % 50000)
            )
            lat.append(time.perf_counter() - t)
            assert status == 200, data

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    dt = time.perf_counter() - t0
    for c in conns:
        c.close()
    return len(items) / dt, lat


async def health_latency(
    port: int, services: list[str], seconds: float, conc: int
) -> tuple[int, list[float]]:
    conns = [RawHTTP("127.0.0.1", port) for _ in range(conc)]
    for c in conns:
        await c.connect()
    lat: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(c: RawHTTP) -> None:
        while time.perf_counter() < deadline:
            name = random.choice(services)
            t = time.perf_counter()
            status, _ = await c.request("GET", f"/v1/health/service/{name}?passing")
            lat.append(time.perf_counter() - t)
            assert status == 200

    await asyncio.gather(*(worker(c) for c in conns))
    for c in conns:
        c.close()
    return len(lat), lat


async def watchers(port: int, pid: int, n: int) -> tuple[float, int, str]:
    c = RawHTTP("127.0.0.1", port)
    await c.connect()
    await c.request("PUT", "/v1/agent/service/register", body("watched", "watched-0", 1))
    c2 = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")
    index = int((await c2.get("/v1/health/service/watched")).headers["X-Consul-Index"])
    await c2.aclose()
    conns = [RawHTTP("127.0.0.1", port) for _ in range(n)]
    for w in conns:
        await w.connect()
    done_at: list[float] = []

    async def watch(w: RawHTTP) -> None:
        status, data = await w.request("GET", f"/v1/health/service/watched?index={index}&wait=60s")
        assert status == 200
        assert len(json.loads(data)) == 2
        done_at.append(time.perf_counter())

    tasks = [asyncio.create_task(watch(w)) for w in conns]
    await asyncio.sleep(2.0)  # let every request reach the server and park
    assert not any(t.done() for t in tasks), "a watcher returned before the change"
    cpu = CPU(pid)
    t0 = time.perf_counter()
    await c.request("PUT", "/v1/agent/service/register", body("watched", "watched-1", 2))
    await asyncio.gather(*tasks)
    usage = cpu.report(1, "ms", 1e3)
    for w in [c, *conns]:
        w.close()
    return max(done_at) - t0, len(done_at), usage


async def main_async(args: argparse.Namespace, port: int, pid: int) -> None:
    prefix = f"r{random.randrange(10**6)}"
    items = [(f"{prefix}-svc-{i % 100}", f"{prefix}-{i}") for i in range(args.registrations)]
    cpu = CPU(pid)
    rate, lat = await register(port, items, args.conc)
    print(f"registrations (TTL check each, {args.conc} clients): {rate:,.0f}/s  "
          f"p50 {pct(lat, 50) * 1000:.1f} ms  p99 {pct(lat, 99) * 1000:.1f} ms   (guide >= 1,000/s)\n"
          f"    {cpu.report(len(items))}")  # fmt: skip

    # Fill up to services x per-service instances in total.
    total = args.services * args.per_service
    fill = [(f"h-svc-{i % args.services}", f"h-{i}") for i in range(total - args.registrations)]
    cpu = CPU(pid)
    fill_rate, fill_lat = await register(port, fill, args.conc)
    print(f"filled to {total:,} instances in {args.services:,} services: {fill_rate:,.0f}/s  "
          f"p99 {pct(fill_lat, 99) * 1000:.1f} ms\n    {cpu.report(max(1, len(fill)))}")  # fmt: skip
    names = [f"h-svc-{i}" for i in range(args.services)]
    await health_latency(port, names, 0.5, 1)  # warm up
    for conc in (1, 8):
        cpu = CPU(pid)
        n, lat = await health_latency(port, names, args.seconds, conc)
        print(f"/v1/health/service/NAME?passing ({args.per_service} instances each, {total:,} in all, "
              f"{conc} clients): {n / args.seconds:,.0f} req/s  p50 {pct(lat, 50) * 1000:.2f} ms  "
              f"p99 {pct(lat, 99) * 1000:.2f} ms  max {max(lat) * 1000:.1f} ms   (guide p99 <= 10 ms)\n"
              f"    {cpu.report(n)}")  # fmt: skip

    # For information: one big service (the response is ~1,000 entries of JSON).
    big = [("big-svc", f"big-{i}") for i in range(args.big)]
    if big:
        cpu = CPU(pid)
        big_rate, big_lat = await register(port, big, args.conc)
        print(f"registrations into one service up to {args.big:,} instances: {big_rate:,.0f}/s  "
              f"p99 {pct(big_lat, 99) * 1000:.1f} ms   (information)\n"
              f"    {cpu.report(len(big))}")  # fmt: skip
        cpu = CPU(pid)
        n, lat = await health_latency(port, ["big-svc"], args.seconds / 2, 1)
        print(f"/v1/health/service/big-svc?passing ({args.big:,} instances, 1 client): "
              f"{n / (args.seconds / 2):,.0f} req/s  p50 {pct(lat, 50) * 1000:.2f} ms  "
              f"p99 {pct(lat, 99) * 1000:.2f} ms   (information)\n"
              f"    {cpu.report(n, 'ms', 1e3)}")  # fmt: skip

    took, count, usage = await watchers(port, pid, args.watchers)
    print(f"{count:,} blocking watchers all answered {took * 1000:.0f} ms after one change   "
          f"(guide <= 1 s)\n    {usage}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--registrations", type=int, default=2000)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--per-service", type=int, default=10)
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--conc", type=int, default=32)
    ap.add_argument("--big", type=int, default=1000, help="instances of the one big service")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each latency run")
    args = ap.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    api_port, consul_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="shoal-regbench-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "shoal.apiserver", "--data-dir", tmp, "--port", str(api_port),
                 "--consul-port", str(consul_port), "--dns-port", "-1", "--node-name", "bench"],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (
                        httpx.get(
                            f"http://127.0.0.1:{consul_port}/v1/status/leader", timeout=1
                        ).status_code
                        == 200
                    ):
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the registry did not start:\n{log.read_text()}")
                time.sleep(0.1)
            asyncio.run(main_async(args, consul_port, proc.pid))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
