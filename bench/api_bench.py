"""API server throughput and watch latency.

    .venv/bin/python bench/api_bench.py [--creates 3000] [--gets 10000] [--list 10000] [--watchers 100]

Starts the API server alone (`bench/_apiserver.py`, no scheduler or controllers reacting)
in its own process, then drives it from this process over keep-alive connections.
Prints creates/s, gets/s, the time to list N pods, and watch delivery latency p50/p99 to
W concurrent watchers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import RawHTTP, free_port, pct

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "", "labels": {"app": "bench", "tier": "web"}},
    "spec": {"containers": [{"name": "c", "command": ["sleep", "3600"],
                              "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
}  # fmt: skip


async def creates(port: int, n: int, conc: int, prefix: str) -> float:
    conns = [RawHTTP("127.0.0.1", port) for _ in range(conc)]
    for c in conns:
        await c.connect()
    counter = iter(range(n))

    async def worker(c: RawHTTP) -> None:
        for i in counter:
            body = json.loads(json.dumps(POD))
            body["metadata"]["name"] = f"{prefix}-{i}"
            status, data = await c.request("POST", "/api/v1/namespaces/default/pods", body)
            assert status == 201, data

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    dt = time.perf_counter() - t0
    for c in conns:
        c.close()
    return n / dt


async def gets(port: int, n: int, conc: int, names: list[str]) -> float:
    conns = [RawHTTP("127.0.0.1", port) for _ in range(conc)]
    for c in conns:
        await c.connect()
    counter = iter(range(n))

    async def worker(c: RawHTTP) -> None:
        for i in counter:
            status, _ = await c.request(
                "GET", f"/api/v1/namespaces/default/pods/{names[i % len(names)]}"
            )
            assert status == 200

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    dt = time.perf_counter() - t0
    for c in conns:
        c.close()
    return n / dt


async def list_time(port: int) -> tuple[float, int]:
    c = RawHTTP("127.0.0.1", port)
    await c.connect()
    best = float("inf")
    count = 0
    for _ in range(3):
        t0 = time.perf_counter()
        status, data = await c.request("GET", "/api/v1/namespaces/default/pods")
        best = min(best, time.perf_counter() - t0)
        assert status == 200
        count = len(json.loads(data)["items"])
    c.close()
    return best, count


async def watch_latency(port: int, watchers: int, events: int) -> list[float]:
    lat: list[float] = []
    ready = 0
    done = asyncio.Event()
    sent: dict[str, float] = {}

    async def watcher() -> None:
        nonlocal ready
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(
            b"GET /api/v1/namespaces/bench-watch/services?watch=true HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        while (await r.readline()) not in (b"\r\n", b""):
            pass
        ready += 1
        got = 0
        while got < events:
            size = int((await r.readline()).strip(), 16)
            chunk = await r.readexactly(size)
            await r.readline()
            for line in chunk.splitlines():
                if not line.strip():
                    continue
                now = time.perf_counter()
                name = json.loads(line)["object"]["metadata"]["name"]
                if name in sent:
                    lat.append(now - sent[name])
                    got += 1
        w.close()

    c = RawHTTP("127.0.0.1", port)
    await c.connect()
    await c.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-watch"}},
    )
    tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
    while ready < watchers:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    for i in range(events):
        name = f"w-{i}"
        sent[name] = time.perf_counter()
        status, data = await c.request("POST", "/api/v1/namespaces/bench-watch/services",
                                       {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                                        "spec": {"ports": [{"port": 80}]}})  # fmt: skip
        assert status == 201, data
        await asyncio.sleep(0.02)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    c.close()
    done.set()
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--creates", type=int, default=3000)
    ap.add_argument("--gets", type=int, default=10000)
    ap.add_argument("--list", type=int, default=10000)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--watch-events", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    import subprocess

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "_apiserver.py"), tmp, str(port)]
        )
        try:
            import httpx

            for _ in range(100):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            cps = asyncio.run(creates(port, args.creates, args.concurrency, "c"))
            print(
                f"creates/s        {cps:8.0f}   ({args.creates} pods, {args.concurrency} connections)"
            )
            names = [f"c-{i}" for i in range(args.creates)]
            gps = asyncio.run(gets(port, args.gets, args.concurrency, names))
            print(f"gets/s           {gps:8.0f}   ({args.gets} gets)")
            if args.list > args.creates:
                asyncio.run(creates(port, args.list - args.creates, args.concurrency, "l"))
            t, count = asyncio.run(list_time(port))
            print(f"list {count} pods {t * 1000:8.0f} ms")
            lat = asyncio.run(watch_latency(port, args.watchers, args.watch_events))
            print(f"watch latency    p50 {pct(lat, 50) * 1000:.1f} ms  p99 {pct(lat, 99) * 1000:.1f} ms"
                  f"   ({args.watchers} watchers x {args.watch_events} events)")  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
