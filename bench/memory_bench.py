"""Idle resident memory of `shoal up` with the quickstart running.

    .venv/bin/python bench/memory_bench.py [--idle 10]

Starts `shoal up -f examples/quickstart.yaml`, waits until the 3 replicas are Ready, idles,
and prints the RSS of the shoal process (and, separately, of the three app processes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx

from _common import free_port, rss_kib, shoal_process


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=10)
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        cmd = [
            "up",
            "--data-dir",
            tmp,
            "--api-port",
            str(port),
            "--consul-port",
            str(free_port()),
            "--dns-port",
            str(free_port()),
            "-f",
            "examples/quickstart.yaml",
        ]
        with shoal_process(cmd, f"{url}/readyz", Path(tmp) / "up.log") as proc:
            deadline = time.monotonic() + 60
            pods: list[dict] = []  # type: ignore[type-arg]
            while time.monotonic() < deadline:
                pods = httpx.get(f"{url}/api/v1/namespaces/default/pods").json()["items"]
                ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                                 for c in p.get("status", {}).get("conditions", []))]  # fmt: skip
                if len(ready) == 3:
                    break
                time.sleep(0.5)
            time.sleep(args.idle)
            # `shoal up` is two processes: itself (components) and its API-server child.
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            api = [int(k) for k in kids if b"apiserver" in Path(f"/proc/{k}/cmdline").read_bytes()]
            per = [rss_kib(pid) for pid in [proc.pid, *api]]
            parts = " + ".join(f"{kib / 1024:.1f}" for kib in per)
            print(f"shoal up idle RSS: {sum(per) / 1024:.1f} MiB ({parts} MiB: components + API server;"
                  f" quickstart: 3 pods running, idle {args.idle:.0f} s)")  # fmt: skip
            apps = []
            for state in Path(tmp).rglob("*.json"):
                try:
                    pid = json.loads(state.read_text()).get("pid")
                    if pid:
                        apps.append(rss_kib(pid))
                except (OSError, ValueError):
                    pass
            if apps:
                print(f"  the 3 app processes: {sum(apps) / 1024:.1f} MiB together (not shoal's)")


if __name__ == "__main__":
    main()
