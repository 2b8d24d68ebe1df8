"""DNS: dnsperf against shoal's DNS server and against dnsmasq serving the same A names.

    .venv/bin/python bench/dns_bench.py [--services 1000] [--seconds 10] [--loop uvloop]

Both servers answer ``svc-NNNN.service.consul`` A queries for the same names and addresses
(dnsmasq from an ``--addn-hosts`` file, shoal from a catalog snapshot), one single-threaded
process each, on loopback, both pinned to the same last CPU (one core's worth of server
each) while dnsperf runs on the others; dnsperf replays the same query file with the same
flags and duration at each in turn, alternating for a few rounds. Prints queries/s, average
latency, the servers' CPU time per query (steadier than queries/s on a machine shared
with other work) and the shoal/dnsmasq ratio; first, the render times of the cold path.
Needs dnsperf and dnsmasq (`make system`).

With ``--serve`` this script is the shoal server process itself (used by the bench).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import free_port
from shoal.discovery import Catalog, Instance, Node
from shoal.discovery.dns import DNSConfig, DNSServer, build_table


def _address(i: int) -> str:
    return f"127.3.{i // 250}.{i % 250 + 1}"


def _names(count: int) -> list[str]:
    return [f"svc-{i:04}.service.consul" for i in range(count)]


def _catalog(count: int) -> Catalog:
    insts = [
        Instance(f"svc-{i:04}-1", f"svc-{i:04}", "bench-node", _address(i), 8000)
        for i in range(count)
    ]
    return Catalog.build([Node("bench-node", "127.0.0.1")], insts)


async def _serve(port: int, count: int) -> None:
    started = time.perf_counter()
    server = DNSServer(DNSConfig(), _catalog(count))
    await server.flush()
    built = time.perf_counter() - started
    await server.start("127.0.0.1", port)
    print(f"ready {len(server.table)} names built in {built:.2f}s", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def _render_figures() -> None:
    """The cold path: a full render of 1,000 services x 10 instances, and one service."""
    nodes = [Node(f"n{i}", f"10.200.0.{i + 1}") for i in range(10)]
    insts = [
        Instance(f"s{s}-{i}", f"svc-{s:04}", f"n{i}", f"10.{s // 250}.{s % 250}.{i + 1}", 8000 + i,
                 tags=("v1", "prod") if i % 2 else ("v2",))
        for s in range(1000)
        for i in range(10)
    ]  # fmt: skip
    catalog = Catalog.build(nodes, insts)
    fulls, ones = [], []
    for round_ in range(3):
        started = time.perf_counter()
        table = build_table(catalog)
        fulls.append(time.perf_counter() - started)
        moved = Instance("s7-0", "svc-0007", "n0", f"10.99.0.{round_ + 1}", 8000)
        changed = catalog.replace({"svc-0007": [moved, *catalog.instances("svc-0007")[1:]]})
        started = time.perf_counter()
        table.set_service(changed, "svc-0007")
        ones.append(time.perf_counter() - started)
    print(
        f"   render: 1,000 services x 10 instances in {min(fulls) * 1000:.0f} ms "
        f"(first {fulls[0] * 1000:.0f} ms, {len(table)} names); "
        f"one service changed in {min(ones) * 1000:.2f} ms",
        flush=True,
    )


_CPUS = sorted(os.sched_getaffinity(0))
_SERVER_CPU = {_CPUS[-1]}
_CLIENT_CPUS = set(_CPUS[:-1]) or _SERVER_CPU


def _dnsperf(port: int, query_file: Path, seconds: int) -> tuple[float, float, int]:
    """(queries/s, average latency ms, lost queries) from one dnsperf run."""
    proc = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(query_file),
         "-l", str(seconds), "-c", "4", "-q", "200"],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
        preexec_fn=lambda: os.sched_setaffinity(0, _CLIENT_CPUS),
    )  # fmt: skip
    out = proc.stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    lat = re.search(r"Average Latency \(s\):\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    if not (qps and lat and lost):
        raise RuntimeError(f"could not parse dnsperf output:\n{out}\n{proc.stderr}")
    return float(qps.group(1)), float(lat.group(1)) * 1000, int(lost.group(1))


def _wait_udp(port: int, name: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        probe = subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(port), "+short", "+time=1", "+tries=1", name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if probe.returncode == 0 and probe.stdout.strip():
            return
        time.sleep(0.2)
    raise RuntimeError(f"no answer for {name} on port {port}")


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(_serve(args.port, args.services))
        else:
            asyncio.run(_serve(args.port, args.services))
        return

    missing = [t for t in ("dnsperf", "dnsmasq", "dig") if shutil.which(t) is None]
    if missing:
        print(f"   skipped: {', '.join(missing)} not installed (make system)")
        return
    _render_figures()
    names = _names(args.services)
    shoal_label = f"shoal ({args.loop})"
    runs: dict[str, list[tuple[float, float, int, float]]] = {shoal_label: [], "dnsmasq": []}
    with tempfile.TemporaryDirectory(prefix="shoal-dnsbench-") as tmp:
        query_file = Path(tmp) / "queries.txt"
        query_file.write_text("".join(f"{n} A\n" for n in names))
        hosts = Path(tmp) / "hosts"
        hosts.write_text("".join(f"{_address(i)} {n}\n" for i, n in enumerate(names)))
        shoal_port, dnsmasq_port = free_port(), free_port()
        shoal = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--port", str(shoal_port),
             "--services", str(args.services), "--loop", args.loop],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        dnsmasq: subprocess.Popen[bytes] | None = None
        try:
            assert shoal.stdout is not None
            print(f"   {shoal_label}: {shoal.stdout.readline().strip()}", flush=True)
            dnsmasq = subprocess.Popen(
                ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--port={dnsmasq_port}",
                 "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                 f"--addn-hosts={hosts}", "--pid-file", "--cache-size=10000", "--user=root"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            servers = [(shoal_label, shoal.pid, shoal_port), ("dnsmasq", dnsmasq.pid, dnsmasq_port)]
            for _, pid, _ in servers:
                os.sched_setaffinity(pid, _SERVER_CPU)
            for _, _, port in servers:
                _wait_udp(port, names[-1])
            # Alternate the two, several rounds: on a 2-core machine shared with dnsperf the
            # figures move by 20% from run to run, and alternating spreads that evenly.
            for _ in range(args.rounds):
                for label, pid, port in servers:
                    cpu_before = _cpu_seconds(pid)
                    qps, lat, lost = _dnsperf(port, query_file, args.seconds)
                    cpu = _cpu_seconds(pid) - cpu_before
                    runs[label].append((qps, lat, lost, cpu / (qps * args.seconds) * 1e6))
        finally:
            _stop(shoal)
            if dnsmasq is not None:
                _stop(dnsmasq)

    medians = {}
    for label, rows in runs.items():
        qps = statistics.median(r[0] for r in rows)
        medians[label] = qps
        print(
            f"   {label:16} {qps:8.0f} queries/s (median of {len(rows)}: "
            f"{', '.join(f'{r[0]:.0f}' for r in rows)})  "
            f"avg latency {statistics.median(r[1] for r in rows):.3f} ms  "
            f"server CPU {statistics.median(r[3] for r in rows):.1f} us/query  "
            f"lost {sum(r[2] for r in rows)}"
        )
    print(f"   shoal/dnsmasq: {medians[shoal_label] / medians['dnsmasq']:.2f}x", flush=True)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (from /proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
