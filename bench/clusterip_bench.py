"""ClusterIP vs pod IP: bulk TCP throughput and HTTP request rates through a service VIP
(nftables DNAT, as shoal's kernel data plane programs it) side by side with the same traffic
sent straight to the pod, in one run.

    .venv/bin/python bench/clusterip_bench.py [--rounds 7] [--bulk-seconds 1.5]
        [--wrk-seconds 1] [--connections 16] [--cpus 0,1|none]

Needs root: one node network namespace holds the bridge (built by PodNetworker through the
CNI plugins, as an agent with ``--node-netns`` would) and the service table (NftTable, with
the network's isolation and masquerade rules present as in production); a server pod and a
client pod hang off the bridge. Everything is created under a unique prefix and deleted at
the end, even on failure; processes are stopped by PID.

Figures, alternating direct and VIP every round (the order flips each round, so drift on a
shared 2-core machine falls on both sides alike):
1. bulk TCP, one stream, Gbit/s: small Python sender/receiver (1 MiB sendall/recv_into);
2. wrk against a tiny keep-alive HTTP server in the server pod: req/s on kept-alive
   connections, and with ``Connection: close`` (a new connection, so a new conntrack entry
   and a DNAT decision, per request). Skipped with a note when /usr/bin/wrk is missing.
The server pod listens on separate ports for the VIP's target and for direct traffic (see
HTTP_VIP_PORT for why), and the client pod's ephemeral port range is widened.
The client pod's programs run on CPU 0 and the server pod's on CPU 1 (``--cpus``).
Guide (issue 5): VIP >= 0.9 of direct, medians.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from shoal.errors import NetworkError
from shoal.network._exec import NETNS_DIR, arun, run
from shoal.network._nft import NftTable
from shoal.network._nftrules import Backend, NetworkRule, RuleSet, ServiceRule
from shoal.network._podnet import Interface, PodNetworker

NETWORK, NETWORK_CIDR, GATEWAY = "bench", "10.71.0.0/16", "10.71.1.1"
SERVER_IP, CLIENT_IP = "10.71.1.2", "10.71.1.3"
CLUSTER_IP = "10.96.0.50"
# The server listens on two ports per test: the service's target port (reached only through
# the VIP) and another one for direct traffic. With one port, a new VIP connection DNAT-ed to
# server:8080 from a client port that a direct connection to server:8080 used within the last
# 120 s has the same reply tuple as that direct flow's conntrack entry (still in TIME_WAIT):
# the NAT cannot make it unique, the SYN is dropped and the client waits 1 s to retry. That
# is real (a client hammering one backend both ways hits it) but it would measure the
# alternation, not the VIP: it took new connections/s through the VIP from ~9k to ~1k.
HTTP_VIP_PORT, HTTP_TARGET_PORT, HTTP_DIRECT_PORT = 80, 8080, 8081
BULK_VIP_PORT, BULK_TARGET_PORT, BULK_DIRECT_PORT = 5201, 5201, 5202
WRK = "/usr/bin/wrk"
GUIDE = 0.9

RECEIVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
buf = bytearray(1 << 20)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    n = 0
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        n += k
    c.sendall(f"{n} {peer[0]}\\n".encode())
    c.close()
"""

SENDER = """
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
data = bytes(1 << 20)
c = socket.create_connection((host, port), timeout=10)
sent = 0
t0 = time.perf_counter()
end = t0 + seconds
while time.perf_counter() < end:
    c.sendall(data)
    sent += len(data)
c.shutdown(socket.SHUT_WR)
received, peer = c.makefile().readline().split()
print(sent, received, time.perf_counter() - t0, peer)
"""

# One fixed response, written in one write per batch of pipelined requests; a request asking
# for "Connection: close" gets its answer and the connection closed (what wrk then counts as
# a new connection per request).
HTTP_SERVER = """
import asyncio, sys
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
KEEP = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n"
CLOSE = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 3\\r\\nConnection: close\\r\\n\\r\\nok\\n"

class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        buf = self.buf + data
        out = []
        close = False
        while True:
            end = buf.find(b"\\r\\n\\r\\n")
            if end < 0:
                break
            head, buf = buf[:end].lower(), buf[end + 4:]
            if b"\\nconnection: close" in head:
                out.append(CLOSE)
                close = True
                break
            out.append(KEEP)
        self.buf = buf
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.transport.close()

async def main():
    loop = asyncio.get_running_loop()
    for port in sys.argv[1:]:
        await loop.create_server(Http, "0.0.0.0", int(port), backlog=1024)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@dataclass
class Bench:
    """The resources one run creates, so that :meth:`teardown` can remove exactly those."""

    prefix: str
    state_dir: Path
    node: str = ""
    networker: PodNetworker | None = None
    table: NftTable | None = None
    server_ns: str = ""
    client_ns: str = ""
    cpus: tuple[int, int] | None = None
    """(client CPU, server CPU) the pods' programs are pinned to; None: not pinned."""
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def pinned(self, argv: list[str], side: int) -> list[str]:
        """``argv`` pinned to the client's (``side`` 0) or the server's (1) CPU. Unpinned, the
        scheduler now and then stacks sender and receiver on one CPU: bulk rounds then ranged
        12-22 Gbit/s instead of 20-31 here."""
        return argv if self.cpus is None else ["taskset", "-c", str(self.cpus[side]), *argv]

    def start(self, netns: str, script: str, *args: str) -> subprocess.Popen[str]:
        """A Python program in the server pod; returns once it printed "ready"."""
        argv = self.pinned([sys.executable, "-c", script, *args], 1)
        cmd = ["ip", "netns", "exec", netns, *argv]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"server in {netns} did not start (exit {proc.wait()})")
        return proc


def interface(nw: PodNetworker, ip: str) -> Interface:
    return Interface(
        network=NETWORK,
        ifname="eth0",
        bridge=nw.bridge_name(NETWORK),
        address=f"{ip}/24",
        gateway=GATEWAY,
        network_cidr=NETWORK_CIDR,
        default_route=True,  # the service range is reached through the gateway
    )


def ruleset(b: Bench, bridge: str) -> RuleSet:
    """One service with two ports (HTTP and bulk) backed by the server pod, and the bridge's
    network, so the isolation and masquerade rules sit in the path as on a real node."""
    return RuleSet(
        table=f"{b.prefix}svc",
        services=(
            ServiceRule("bench/web:http", CLUSTER_IP, HTTP_VIP_PORT, "tcp",
                        (Backend(SERVER_IP, HTTP_TARGET_PORT),)),
            ServiceRule("bench/web:bulk", CLUSTER_IP, BULK_VIP_PORT, "tcp",
                        (Backend(SERVER_IP, BULK_TARGET_PORT),)),
        ),
        networks=(NetworkRule(NETWORK, NETWORK_CIDR, bridge),),
        pod_cidrs=(NETWORK_CIDR,),
    )  # fmt: skip


async def setup(b: Bench) -> None:
    b.node = f"{b.prefix}-node"
    await arun(["ip", "netns", "add", b.node])
    await arun(["ip", "link", "set", "lo", "up"], netns=b.node)
    nw = b.networker = PodNetworker(node_netns=b.node, state_dir=b.state_dir, prefix=b.prefix)
    t0 = time.perf_counter()
    server = await nw.attach(str(uuid.uuid4()), [interface(nw, SERVER_IP)])
    client = await nw.attach(str(uuid.uuid4()), [interface(nw, CLIENT_IP)])
    b.server_ns, b.client_ns = server.netns, client.netns
    # The load generator's own namespace: every port for new connections (wrk with
    # "Connection: close" opens ~15k/s and leaves TIME_WAIT sockets behind).
    await arun(["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"], netns=b.client_ns)
    attached = time.perf_counter() - t0
    b.table = NftTable(f"{b.prefix}svc", netns=b.node)
    t0 = time.perf_counter()
    await b.table.apply(ruleset(b, nw.bridge_name(NETWORK)))
    print(f"setup: 2 pods attached in {attached * 1e3:.0f} ms, service table applied in "
          f"{(time.perf_counter() - t0) * 1e3:.0f} ms (node netns {b.node})")  # fmt: skip


async def teardown(b: Bench) -> None:
    """Remove everything, carrying on past failures, and say what could not be removed."""
    errors: list[str] = []
    for proc in b.procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    steps: list[Callable[[], Awaitable[None]]] = []
    if b.table is not None:
        steps.append(b.table.remove)
    if b.networker is not None:
        steps.append(b.networker.cleanup_all)
    for step in steps:
        try:
            await step()
        except NetworkError as exc:
            errors.append(str(exc))
    # Whatever namespace this run's prefix still names, the node's last.
    for name in sorted(_our_netns(b), key=lambda n: n == b.node):
        try:
            await arun(["ip", "netns", "delete", name])
        except NetworkError as exc:
            errors.append(str(exc))
    shutil.rmtree(b.state_dir, ignore_errors=True)
    left = _our_netns(b)
    if errors or left:
        print(f"cleanup problems: {errors}; namespaces left: {left}", file=sys.stderr)


def _our_netns(b: Bench) -> list[str]:
    names = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    return [n for n in names if n.startswith(f"{b.prefix}-")]


# --- measurements ---------------------------------------------------------------------------


def bulk(b: Bench, host: str, port: int, seconds: float) -> tuple[float, str]:
    """One sender run from the client pod: (Gbit/s, the client address the receiver saw)."""
    argv = b.pinned([sys.executable, "-c", SENDER, host, str(port), str(seconds)], 0)
    out = run(argv, netns=b.client_ns).split()
    sent, received, elapsed = int(out[0]), int(out[1]), float(out[2])
    if sent != received:
        raise RuntimeError(f"sent {sent} bytes, receiver counted {received}")
    return sent * 8 / elapsed / 1e9, out[3]


_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_ERRORS = re.compile(r"Socket errors: (.*)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def wrk(b: Bench, host: str, port: int, seconds: int, conns: int, close: bool) -> float:
    """req/s of one wrk run (one thread) from the client pod. Socket errors and non-2xx
    answers are printed next to the figure (they make it suspect, not worthless)."""
    argv = [WRK, "-t1", f"-c{conns}", f"-d{seconds}s", f"http://{host}:{port}/"]
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    out = run(b.pinned(argv, 0), netns=b.client_ns)
    rate = _RATE.search(out)
    if rate is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    for bad in (_ERRORS.search(out), _NON2XX.search(out)):
        if bad is not None:
            print(f"   note: wrk to {host}:{port}: {bad.group(0).strip()}", flush=True)
    return float(rate.group(1))


def side_by_side(
    title: str,
    unit: str,
    rounds: int,
    measure: Callable[[str, int], float],
    targets: dict[str, tuple[str, int]],
) -> None:
    """Alternate direct and VIP each round (order flipped every other round); print each
    round with its own VIP/direct ratio, the medians, and the ratio of the medians against
    the guide. The median of the per-round ratios is printed too: the two figures of a round
    are taken back to back, so their ratio cancels slow drift in what else the machine does."""
    print(f"-- {title}")
    direct: list[float] = []
    vip: list[float] = []
    for r in range(rounds):
        order = ["direct", "VIP"] if r % 2 == 0 else ["VIP", "direct"]
        for label in order:
            (direct if label == "direct" else vip).append(measure(*targets[label]))
        print(f"   round {r + 1}: direct {direct[-1]:9.2f}   VIP {vip[-1]:9.2f} {unit}   "
              f"VIP/direct {vip[-1] / direct[-1]:.3f}", flush=True)  # fmt: skip
    d_med, v_med = statistics.median(direct), statistics.median(vip)
    ratio = v_med / d_med
    paired = statistics.median(v / d for v, d in zip(vip, direct, strict=True))
    verdict = "PASS" if ratio >= GUIDE else "FAIL"
    print(f"   median: direct {d_med:.2f} {unit}, VIP {v_med:.2f} {unit} -> VIP/direct "
          f"{ratio:.3f} {verdict} (guide >= {GUIDE}; median of per-round ratios "
          f"{paired:.3f})", flush=True)  # fmt: skip


def measure_all(b: Bench, args: argparse.Namespace) -> None:
    bulk_targets = {"direct": (SERVER_IP, BULK_DIRECT_PORT), "VIP": (CLUSTER_IP, BULK_VIP_PORT)}
    http_targets = {"direct": (SERVER_IP, HTTP_DIRECT_PORT), "VIP": (CLUSTER_IP, HTTP_VIP_PORT)}
    for port in (BULK_TARGET_PORT, BULK_DIRECT_PORT):
        b.start(b.server_ns, RECEIVER, str(port))
    # Warm-up (interpreter caches, ARP, conntrack) and a check of the path itself: the VIP is
    # DNAT-ed (the connection succeeds) and not SNAT-ed (the server sees the client's address).
    seen = {label: bulk(b, host, port, 0.3)[1] for label, (host, port) in bulk_targets.items()}
    print(f"server saw the client as {seen['direct']} (direct) and {seen['VIP']} (VIP "
          f"{CLUSTER_IP}:{BULK_VIP_PORT} -> {SERVER_IP}:{BULK_TARGET_PORT})")  # fmt: skip
    side_by_side(
        f"bulk TCP, 1 stream, {args.bulk_seconds} s per round, client pod -> server pod",
        "Gbit/s",
        args.rounds,
        lambda host, port: bulk(b, host, port, args.bulk_seconds)[0],
        bulk_targets,
    )
    if not os.access(WRK, os.X_OK):
        print(f"-- HTTP request rate: skipped, {WRK} is not installed (Debian package wrk)")
        return
    b.start(b.server_ns, HTTP_SERVER, str(HTTP_TARGET_PORT), str(HTTP_DIRECT_PORT))
    for host, port in http_targets.values():
        wrk(b, host, port, 1, args.connections, close=False)  # warm-up
    for close, what in ((False, "keep-alive"), (True, "Connection: close (new connection each)")):
        side_by_side(
            f"HTTP req/s, wrk 1 thread {args.connections} connections, {what}, "
            f"{args.wrk_seconds} s per round",
            "req/s",
            args.rounds,
            functools.partial(
                wrk, b, seconds=args.wrk_seconds, conns=args.connections, close=close
            ),
            http_targets,
        )
    count = run(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"], netns=b.node).strip()
    print(f"conntrack entries in the node now: {count} (direct flows are tracked too: "
          "bridged traffic passes the ip hooks)")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    b = Bench(prefix=f"cb{secrets.token_hex(3)}", state_dir=Path(tempfile.mkdtemp("-cbbench")))
    if args.cpus != "none":
        client_cpu, server_cpu = (int(c) for c in args.cpus.split(","))
        b.cpus = (client_cpu, server_cpu)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally below

    signal.signal(signal.SIGTERM, stop)
    t0 = time.perf_counter()
    pins = "not pinned" if b.cpus is None else f"client on CPU {b.cpus[0]}, server on {b.cpus[1]}"
    print(f"{os.cpu_count()} CPUs ({pins}), load average {os.getloadavg()[0]:.2f}, "
          f"prefix {b.prefix}")  # fmt: skip
    try:
        asyncio.run(setup(b))
        measure_all(b, args)
    finally:
        asyncio.run(teardown(b))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds per figure (each side)")
    parser.add_argument("--bulk-seconds", type=float, default=1.5)
    parser.add_argument("--wrk-seconds", type=int, default=1, help="whole seconds (wrk -d)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument(
        "--cpus",
        default="0,1" if (os.cpu_count() or 1) >= 2 else "none",
        help="client,server CPUs to pin the pods' programs to, or none",
    )
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces, CNI plugins, nft)")
        sys.exit(0)
    sys.exit(main(parser.parse_args()))
