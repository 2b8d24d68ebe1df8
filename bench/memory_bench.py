"""Idle resident memory of `shoal up` with the quickstart running.

    .venv/bin/python bench/memory_bench.py [--idle 10]

Starts `shoal up -f examples/quickstart.yaml`, waits until the 3 replicas are Ready, idles,
and prints the RSS of the shoal process (and, separately, of the three app processes).
"""

from __future__ import annotations

import argparse
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
        cmd = ["up", "--data-dir", tmp, "--api-port", str(port), "-f", "examples/quickstart.yaml"]
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
            shoal = rss_kib(proc.pid)
            print(
                f"shoal up idle RSS: {shoal / 1024:.1f} MiB (quickstart: 3 pods running, idle {args.idle:.0f} s)"
            )
            children = []
            for state in Path(tmp).rglob("*.json"):
                import json

                try:
                    pid = json.loads(state.read_text()).get("pid")
                    if pid:
                        children.append(rss_kib(pid))
                except (OSError, ValueError):
                    pass
            if children:
                print(
                    f"  the 3 app processes: {sum(children) / 1024:.1f} MiB together (not shoal's)"
                )


if __name__ == "__main__":
    main()
