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
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _common import REPO, cpu_seconds, free_port, machine_busy_seconds, pct, rss_kib, shoal_process

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


def runc_alone(n: int, tmp: Path) -> tuple[list[float], float]:
    """The reference floor: ``n`` concurrent ``runc run --detach`` of prepared bundles (a shared
    read-only busybox root, `runc spec` defaults, own cgroups), no shoal involved. Returns each
    container's time to running and the time until all ran; then removes everything."""
    root, state = tmp / "floor", tmp / "floor" / "state"
    rootfs = root / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sleep").symlink_to("busybox")
    subprocess.run(["runc", "spec", "--bundle", str(root)], check=True)
    spec = json.loads((root / "config.json").read_text())
    spec["process"].update({"terminal": False, "args": ["/bin/sleep", "3600"]})
    spec["root"] = {"path": str(rootfs), "readonly": True}
    group = f"/shoal-bench-floor-{os.getpid()}"
    ids = [f"floor{i}" for i in range(n)]
    for cid in ids:
        (root / cid).mkdir()
        spec["linux"]["cgroupsPath"] = f"{group}/{cid}"
        spec["hostname"] = cid
        (root / cid / "config.json").write_text(json.dumps(spec))
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["runc", "--root", str(state), "run", "--detach", "--bundle",
                               str(root / cid), cid], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for cid in ids]  # fmt: skip
    done: list[float] = []
    try:
        for proc in procs:
            proc.wait()
            done.append(time.perf_counter() - t0)
        return done, time.perf_counter() - t0
    finally:
        for cid in ids:
            subprocess.run(["runc", "--root", str(state), "delete", "--force", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            top = hierarchy / group.strip("/")
            for leaf in [top / cid for cid in ids] + [top]:
                with contextlib.suppress(OSError):
                    leaf.rmdir()


def _api_server_pid(up_pid: int) -> int:
    """`shoal up` runs its API server as a child process (python -m shoal.apiserver)."""
    for kid in Path(f"/proc/{up_pid}/task/{up_pid}/children").read_text().split():
        if b"shoal.apiserver" in Path(f"/proc/{kid}/cmdline").read_bytes():
            return int(kid)
    raise RuntimeError("no API server child found")


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
        up = [
            "up",
            "--data-dir",
            tmp,
            "--api-port",
            str(port),
            "--consul-port",
            str(free_port()),
            "--dns-port",
            str(free_port()),
            "--runtime",
            args.runtime,
        ]
        with shoal_process(up, f"{url}/readyz", Path(tmp) / "up.log") as proc:
            for _ in range(100):
                if httpx.get(f"{url}/api/v1/nodes").json()["items"]:
                    break
                time.sleep(0.1)
            time.sleep(args.settle)
            rss_before = rss_kib(proc.pid)
            api_pid = _api_server_pid(proc.pid)
            cpu0 = (cpu_seconds(proc.pid), cpu_seconds(api_pid), machine_busy_seconds())
            lat, total = asyncio.run(run(url, args.pods, image))
            cpu1 = (cpu_seconds(proc.pid), cpu_seconds(api_pid), machine_busy_seconds())
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
        comp, kids = (cpu1[0][0] - cpu0[0][0]), (cpu1[0][1] - cpu0[0][1])
        api, busy = cpu1[1][0] - cpu0[1][0], cpu1[2] - cpu0[2]
        print(f"  CPU from apply to all Running: {busy:.2f} s busy on {os.cpu_count()} cores in "
              f"{total:.2f} s: components {comp:.2f} s, API server {api:.2f} s, "
              f"reaped child processes (runc) {kids:.2f} s")  # fmt: skip
        if args.runtime == "runc":
            floor, floor_total = runc_alone(args.pods, Path(tmp))
            print(f"  reference, runc alone ({args.pods} concurrent `runc run -d`, no shoal): "
                  f"p50 {pct(floor, 50) * 1000:.0f} ms  p99 {pct(floor, 99) * 1000:.0f} ms, "
                  f"all running after {floor_total:.2f} s")  # fmt: skip
        per = (rss_after - rss_before) / args.pods
        print(f"  agent memory per running container: {per:.0f} KiB (shoal up components RSS "
              f"{rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB; no shim process per container)")  # fmt: skip


if __name__ == "__main__":
    main()
