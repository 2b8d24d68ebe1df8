"""Run every benchmark and print its figures: .venv/bin/python bench/run_all.py

The runc, image and DNS benchmarks need root (and runc, umoci, skopeo, docker-registry,
busybox-static, dnsperf, dnsmasq, CNI plugins, nftables, wrk: `make system`); without root they are skipped with a note."""

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = os.geteuid() == 0

RUNS = [
    (["api_bench.py"], False),
    (["startup_bench.py", "--runtime", "process"], False),
    (["startup_bench.py", "--runtime", "runc", "--pods", "50"], True),
    (["memory_bench.py"], False),
    (["image_pull_bench.py"], True),
    (["dns_bench.py"], True),
    (["registry_bench.py"], False),
    (["route_bench.py"], False),
    (["nft_bench.py"], True),
    (["endpoint_rule_bench.py"], True),
    (["clusterip_bench.py"], True),
]

for args, needs_root in RUNS:
    print(f"== {' '.join(args)}", flush=True)
    if needs_root and not ROOT:
        print("   skipped: needs root", flush=True)
        continue
    subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], check=False, cwd=HERE.parent)
