"""Service registry: registrations/s, /v1/health/service latency with 10,000 instances,
and the time until 1,000 blocking watchers have all seen one change.

    .venv/bin/python bench/registry_bench.py [--registrations 2000] [--services 1000]
        [--per-service 10] [--watchers 1000] [--conc 32]

Starts `python -m shoal.apiserver` with the registry (Consul API; DNS off) in its own
process over a fresh SQLite store and drives the Consul API from this process over
keep-alive connections. Guides (issue 4): >= 1,000 registrations/s, health p99 <= 10 ms
with 10,000 instances, all 1,000 watchers within 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _common import REPO, RawHTTP, cpu_seconds, free_port, pct


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


async def watchers(port: int, n: int) -> tuple[float, int]:
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
    t0 = time.perf_counter()
    await c.request("PUT", "/v1/agent/service/register", body("watched", "watched-1", 2))
    await asyncio.gather(*tasks)
    for w in [c, *conns]:
        w.close()
    return max(done_at) - t0, len(done_at)


async def main_async(args: argparse.Namespace, port: int, pid: int) -> None:
    prefix = f"r{random.randrange(10**6)}"
    items = [(f"{prefix}-svc-{i % 100}", f"{prefix}-{i}") for i in range(args.registrations)]
    cpu0 = sum(cpu_seconds(pid))
    rate, lat = await register(port, items, args.conc)
    cpu = sum(cpu_seconds(pid)) - cpu0
    print(f"registrations (TTL check each, {args.conc} clients): {rate:,.0f}/s  "
          f"p50 {pct(lat, 50) * 1000:.1f} ms  p99 {pct(lat, 99) * 1000:.1f} ms  "
          f"server CPU {cpu / args.registrations * 1e6:.0f} µs/registration   (guide >= 1,000/s)")  # fmt: skip

    # Fill up to services x per-service instances in total.
    total = args.services * args.per_service
    fill = [(f"h-svc-{i % args.services}", f"h-{i}") for i in range(total - args.registrations)]
    t = time.perf_counter()
    await register(port, fill, args.conc)
    print(
        f"filled to {total:,} instances in {args.services:,} services in {time.perf_counter() - t:.1f} s"
    )
    names = [f"h-svc-{i}" for i in range(args.services)]
    for conc in (1, 8):
        n, lat = await health_latency(port, names, 4.0, conc)
        print(f"/v1/health/service/NAME?passing ({args.per_service} instances each, {total:,} in all, "
              f"{conc} clients): {n / 4.0:,.0f} req/s  p50 {pct(lat, 50) * 1000:.2f} ms  "
              f"p99 {pct(lat, 99) * 1000:.2f} ms   (guide p99 <= 10 ms)")  # fmt: skip

    took, count = await watchers(port, args.watchers)
    print(
        f"{count:,} blocking watchers all answered {took * 1000:.0f} ms after one change   (guide <= 1 s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--registrations", type=int, default=2000)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--per-service", type=int, default=10)
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--conc", type=int, default=32)
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
