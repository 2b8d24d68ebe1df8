"""apply -> Running for N pods on one node, and the agent's memory per running container.

    .venv/bin/python bench/startup_bench.py [--pods 100] [--runtime process]
    .venv/bin/python bench/startup_bench.py --pods 50 --runtime runc     # root, runc

Starts `shoal up` in a temporary data dir, watches pods, applies a Deployment of N replicas
(`sleep`), and records for every pod the time from its creation (the watch's ADDED event)
to Running (the MODIFIED event with phase Running), plus the time from apply to all Running.
Prints p50/p99 per pod. With runc, the pods run a busybox image (built with umoci and loaded
into the node's image store first, pull policy Never), each in its own overlay root, and the
bench also prints how much the `shoal up` process grew per running container.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _common import REPO, free_port, pct, rss_kib, shoal_process

sys.path.insert(0, str(REPO))
from tests.oci_support import build_busybox_image

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


def _manifest(n: int, image: str | None) -> dict:  # type: ignore[type-arg]
    body = json.loads(json.dumps(MANIFEST))
    body["spec"]["replicas"] = n
    if image:
        container = body["spec"]["template"]["spec"]["containers"][0]
        container.update({"image": image, "imagePullPolicy": "Never"})
    return body  # type: ignore[no-any-return]


async def run(url: str, n: int, image: str | None) -> tuple[list[float], float]:
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
        body = _manifest(n, image)
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
        return lat, total


def _delete_all(url: str) -> None:
    httpx.delete(f"{url}/apis/apps/v1/namespaces/default/deployments/bench")
    for _ in range(300):
        if not httpx.get(f"{url}/api/v1/namespaces/default/pods").json()["items"]:
            return
        time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--runtime", choices=["process", "runc"], default="process")
    ap.add_argument("--settle", type=float, default=5.0, help="idle seconds before reading RSS")
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    image = None
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        if args.runtime == "runc":
            image = "shoal.bench/busybox:1"
            layout = build_busybox_image(Path(tmp) / "img", tag="1")
            subprocess.run([sys.executable, "-m", "shoal.cli", "image", "load", "--data-dir", tmp,
                            str(layout), "--tag", image], check=True, cwd=REPO,
                           stdout=subprocess.DEVNULL)  # fmt: skip
        up = ["up", "--data-dir", tmp, "--api-port", str(port), "--runtime", args.runtime]
        with shoal_process(up, f"{url}/readyz", Path(tmp) / "up.log") as proc:
            for _ in range(100):
                if httpx.get(f"{url}/api/v1/nodes").json()["items"]:
                    break
                time.sleep(0.1)
            time.sleep(args.settle)
            rss_before = rss_kib(proc.pid)
            lat, total = asyncio.run(run(url, args.pods, image))
            time.sleep(args.settle)
            rss_after = rss_kib(proc.pid)
            _delete_all(url)
        print(
            f"pod startup (created -> Running), {args.pods} pods, {args.runtime} driver, one node:"
        )
        print(
            f"  p50 {pct(lat, 50) * 1000:.0f} ms   p99 {pct(lat, 99) * 1000:.0f} ms   max {max(lat) * 1000:.0f} ms"
        )
        print(f"  apply -> all {args.pods} Running: {total:.2f} s")
        per = (rss_after - rss_before) / args.pods
        print(f"  agent memory per running container: {per:.0f} KiB (shoal up components RSS "
              f"{rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB; no shim process per container)")  # fmt: skip


if __name__ == "__main__":
    main()
