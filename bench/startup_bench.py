"""apply -> Running for N pods on one node with the process driver.

    .venv/bin/python bench/startup_bench.py [--pods 100]

Starts `shoal up` in a temporary data dir, watches pods, applies a Deployment of N replicas
(`sleep`), and records for every pod the time from its creation (the watch's ADDED event)
to Running (the MODIFIED event with phase Running), plus the time from apply to all Running.
Prints p50/p99 per pod.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx

from _common import free_port, pct, shoal_process

MANIFEST = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "bench"},
    "spec": {
        "replicas": 0,
        "selector": {"matchLabels": {"app": "bench"}},
        "template": {
            "metadata": {"labels": {"app": "bench"}},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "command": ["sleep", "3600"],
                                     "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]},
        },
    },
}  # fmt: skip


async def run(url: str, n: int) -> tuple[list[float], float]:
    created: dict[str, float] = {}
    bound: dict[str, float] = {}
    running: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10, read=None)) as http:
        r = await http.get("/api/v1/namespaces/default/pods")
        rv = r.json()["metadata"]["resourceVersion"]
        all_running = asyncio.Event()

        async def watch() -> None:
            async with http.stream("GET", "/api/v1/namespaces/default/pods",
                                   params={"watch": "true", "resourceVersion": rv}) as resp:  # fmt: skip
                async for line in resp.aiter_lines():
                    if not line:
                        continue
                    now = time.perf_counter()
                    ev = json.loads(line)
                    name = ev["object"]["metadata"]["name"]
                    created.setdefault(name, now)
                    if ev["object"].get("spec", {}).get("nodeName"):
                        bound.setdefault(name, now)
                    if (
                        ev["object"].get("status", {}).get("phase") == "Running"
                        and name not in running
                    ):
                        running[name] = now
                        if len(running) >= n:
                            all_running.set()
                            return

        w = asyncio.create_task(watch())
        await asyncio.sleep(0.3)
        body = json.loads(json.dumps(MANIFEST))
        body["spec"]["replicas"] = n
        t0 = time.perf_counter()
        r = await http.post("/apis/apps/v1/namespaces/default/deployments", json=body)
        assert r.status_code == 201, r.text
        await asyncio.wait_for(all_running.wait(), 120)
        total = time.perf_counter() - t0
        w.cancel()
        lat = [running[k] - created[k] for k in running]
        sched = [bound[k] - created[k] for k in running if k in bound]
        start = [running[k] - bound[k] for k in running if k in bound]
        first = min(created.values()) - t0
        last_created = max(created.values()) - t0
        print(
            f"  created: first {first * 1000:.0f} ms, last {last_created * 1000:.0f} ms after apply"
        )
        print(
            f"  created -> bound:   p50 {pct(sched, 50) * 1000:.0f} ms  p99 {pct(sched, 99) * 1000:.0f} ms"
        )
        print(
            f"  bound -> Running:   p50 {pct(start, 50) * 1000:.0f} ms  p99 {pct(start, 99) * 1000:.0f} ms"
        )
        await http.delete("/apis/apps/v1/namespaces/default/deployments/bench")
        return lat, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=100)
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (
        tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp,
        shoal_process(
            ["up", "--data-dir", tmp, "--api-port", str(port)],
            f"{url}/readyz",
            Path(tmp) / "up.log",
        ),
    ):
        for _ in range(100):
            if httpx.get(f"{url}/api/v1/nodes").json()["items"]:
                break
            time.sleep(0.1)
        lat, total = asyncio.run(run(url, args.pods))
        print(f"pod startup (created -> Running), {args.pods} pods, process driver, one node:")
        print(
            f"  p50 {pct(lat, 50) * 1000:.0f} ms   p99 {pct(lat, 99) * 1000:.0f} ms   max {max(lat) * 1000:.0f} ms"
        )
        print(f"  apply -> all {args.pods} Running: {total:.2f} s")


if __name__ == "__main__":
    main()
