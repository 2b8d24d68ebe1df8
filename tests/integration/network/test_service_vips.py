"""Service VIPs, NodePorts, hostPorts, the DNS VIP and network isolation on a real kernel.

One "node" network namespace holds two bridges (networks 10.66.0.0/24 and 10.67.0.0/24);
"pod" namespaces hang off them by veth, each running a tiny TCP server that answers
``<its name> <the peer address it saw>``. A "client" pod sits on the first bridge, and an
"ext" namespace is linked to the node by veth (192.168.77.0/24), standing for another
machine. Everything is created under a unique prefix and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest

from shoal.network._nft import NftTable
from shoal.network._nftrules import (
    Backend,
    DNSRule,
    HostPort,
    NetworkRule,
    RuleSet,
    ServiceRule,
)
from tests.rootreq import require_root

GW0, GW1, NODE_UP, EXT = "10.66.0.1", "10.67.0.1", "192.168.77.1", "192.168.77.2"
PODS = {"p1": "10.66.0.2", "p2": "10.66.0.3", "p3": "10.66.0.4", "cl": "10.66.0.5"}
PODS1 = {"q1": "10.67.0.2", "q2": "10.67.0.3"}
DNS_TARGET_PORT = 8653

SERVER = """
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(64)
while True:
    c, peer = s.accept()
    c.sendall(f"{name} {peer[0]}\\n".encode())
    c.close()
"""
UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(b"echo " + data, peer)
"""
CLIENT = """
import socket, sys, time
host, port, n, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
for _ in range(n):
    t = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as c:
            print(c.makefile().readline().strip(), flush=True)
    except OSError as e:
        print(f"ERR {type(e).__name__} {time.monotonic() - t:.3f}", flush=True)
"""
UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
s.sendto(b"hello", (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recvfrom(2048)[0].decode())
except OSError as e:
    print(f"ERR {type(e).__name__}")
"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@dataclass
class Node:
    prefix: str
    netns: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ns(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    @property
    def table(self) -> str:
        return f"{self.prefix}svc"

    def add_ns(self, suffix: str) -> str:
        name = self.ns(suffix)
        sh("ip", "netns", "add", name)
        self.netns.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def start(self, suffix: str, script: str, *args: str) -> None:
        cmd = ["ip", "netns", "exec", self.ns(suffix), sys.executable, "-c", script, *args]
        self.procs.append(subprocess.Popen(cmd))

    def connect(
        self, src: str, host: str, port: int, n: int = 1, timeout: float = 2.0
    ) -> list[str]:
        """``n`` TCP connections from namespace ``src``; each line is the server's answer or
        ``ERR <exception> <seconds>``."""
        argv = [sys.executable, "-c", CLIENT, host, str(port), str(n), str(timeout)]
        out = sh("ip", "netns", "exec", self.ns(src), *argv)
        return out.splitlines()

    def names(self, src: str, host: str, port: int, n: int) -> Counter[str]:
        return Counter(line.split()[0] for line in self.connect(src, host, port, n))

    def apply(self, rs: RuleSet, table: NftTable | None = None) -> str:
        return asyncio.run((table or NftTable(self.table, netns=self.ns("node"))).apply(rs))


def pod(node: Node, bridge_ns: str, bridge: str, name: str, ip: str, gw: str) -> None:
    ns = node.add_ns(name)
    host_if = f"{node.prefix}-h{name}"
    sh("ip", "link", "add", host_if, "netns", bridge_ns, "type", "veth", "peer", "name", "eth0",
       "netns", ns)  # fmt: skip
    sh("ip", "-n", bridge_ns, "link", "set", host_if, "master", bridge, "up")
    # A pod reaching itself through a VIP: br_netfilter DNATs at bridge level and sends the
    # frame back out of the port it came in by (the CNI bridge plugin's hairpinMode).
    sh("ip", "-n", bridge_ns, "link", "set", host_if, "type", "bridge_slave", "hairpin", "on")
    sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "route", "add", "default", "via", gw)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    require_root("ip", "nft")
    n = Node("t" + secrets.token_hex(3)[:5])
    try:
        nodens = n.add_ns("node")
        for bridge, gw in (("b0", GW0), ("b1", GW1)):
            br = f"{n.prefix}-{bridge}"
            sh("ip", "-n", nodens, "link", "add", br, "type", "bridge")
            sh("ip", "-n", nodens, "addr", "add", f"{gw}/24", "dev", br)
            sh("ip", "-n", nodens, "link", "set", br, "up")
            # DNAT of the DNS VIP to 127.0.0.1 from pods (what the CNI side sets).
            sh("ip", "netns", "exec", nodens, "sysctl", "-qw",
               f"net.ipv4.conf.{br}.route_localnet=1")  # fmt: skip
        sh("ip", "netns", "exec", nodens, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # Pod traffic crossing bridged ports goes through the ip hooks (per netns here).
        bnf = "/proc/sys/net/bridge/bridge-nf-call-iptables"
        assert sh("ip", "netns", "exec", nodens, "cat", bnf).strip() == "1"
        for name, ip in PODS.items():
            pod(n, nodens, f"{n.prefix}-b0", name, ip, GW0)
        for name, ip in PODS1.items():
            pod(n, nodens, f"{n.prefix}-b1", name, ip, GW1)
        ext = n.add_ns("ext")
        sh("ip", "link", "add", f"{n.prefix}-up", "netns", nodens, "type", "veth", "peer", "name",
           "eth0", "netns", ext)  # fmt: skip
        sh("ip", "-n", nodens, "addr", "add", f"{NODE_UP}/24", "dev", f"{n.prefix}-up")
        sh("ip", "-n", nodens, "link", "set", f"{n.prefix}-up", "up")
        sh("ip", "-n", ext, "addr", "add", f"{EXT}/24", "dev", "eth0")
        sh("ip", "-n", ext, "link", "set", "eth0", "up")
        # The node routes the service range (here: its default route), as in Kubernetes.
        sh("ip", "-n", nodens, "route", "add", "default", "via", EXT)
        for name in [*PODS, *PODS1]:
            if name != "cl":
                n.start(name, SERVER, name, "8080")
        n.start("ext", SERVER, "ext", "9000")
        n.start("node", UDP_ECHO, str(DNS_TARGET_PORT))
        deadline = time.monotonic() + 10
        targets = [(ip, 8080) for k, ip in {**PODS, **PODS1}.items() if k != "cl"]
        for ip, port in [*targets, (EXT, 9000)]:
            while n.connect("node", ip, port, 1, 0.5)[0].startswith("ERR"):
                assert time.monotonic() < deadline, f"server {ip}:{port} did not come up"
                time.sleep(0.05)
        yield n
    finally:
        for proc in n.procs:
            proc.kill()
            proc.wait()
        for name in reversed(n.netns):
            subprocess.run(["ip", "netns", "delete", name], check=False)


def base(node: Node, *services: ServiceRule, internal: bool = False, **kw: object) -> RuleSet:
    return RuleSet(
        node.table,
        services=services,
        networks=(
            NetworkRule("default", "10.66.0.0/24", f"{node.prefix}-b0"),
            NetworkRule("other", "10.67.0.0/24", f"{node.prefix}-b1", internal=internal),
        ),
        dns=DNSRule("10.96.0.10", "127.0.0.1", DNS_TARGET_PORT),
        pod_cidrs=("10.66.0.0/16",),
        **kw,  # type: ignore[arg-type]
    )


def web(*pods: str, **kw: object) -> ServiceRule:
    backends = tuple(Backend(PODS[p], 8080) for p in pods)
    return ServiceRule("default/web:http", "10.96.0.5", 80, "tcp", backends, **kw)  # type: ignore[arg-type]


def test_round_robin_splits_exactly_and_keeps_the_client_address(node: Node) -> None:
    assert node.apply(base(node, web("p1", "p2", "p3"))) == "full"
    lines = node.connect("cl", "10.96.0.5", 80, 30)
    assert Counter(line.split()[0] for line in lines) == {"p1": 10, "p2": 10, "p3": 10}
    assert {line.split()[1] for line in lines} == {PODS["cl"]}


def test_a_removed_backend_is_never_hit_after_one_apply(node: Node) -> None:
    table = NftTable(node.table, netns=node.ns("node"))
    node.apply(base(node, web("p1", "p2", "p3")), table)
    assert node.names("cl", "10.96.0.5", 80, 3) == {"p1": 1, "p2": 1, "p3": 1}
    t0 = time.perf_counter()
    assert node.apply(base(node, web("p1", "p2")), table) == "delta"
    elapsed = time.perf_counter() - t0
    print(
        f"\napply of one endpoint removal (delta, nft -f in the node netns): {elapsed * 1e3:.1f} ms"
    )
    assert node.names("cl", "10.96.0.5", 80, 30) == {"p1": 15, "p2": 15}


def test_random_spreads_over_every_backend(node: Node) -> None:
    node.apply(base(node, web("p1", "p2", "p3", balance="random")))
    counts = node.names("cl", "10.96.0.5", 80, 60)
    assert set(counts) == {"p1", "p2", "p3"}
    assert min(counts.values()) >= 5, counts


def test_weighted_follows_the_weights(node: Node) -> None:
    svc = ServiceRule(
        "default/web:http",
        "10.96.0.5",
        80,
        "tcp",
        (Backend(PODS["p1"], 8080, 3), Backend(PODS["p2"], 8080, 1)),
        "weighted",
    )
    node.apply(base(node, svc))
    assert node.names("cl", "10.96.0.5", 80, 40) == {"p1": 30, "p2": 10}


def test_client_ip_affinity_pins_a_client(node: Node) -> None:
    table = NftTable(node.table, netns=node.ns("node"))  # one table: changes are deltas
    assert node.apply(base(node, web("p1", "p2", "p3", affinity_timeout=60)), table) == "full"
    counts = node.names("cl", "10.96.0.5", 80, 20)
    assert len(counts) == 1 and sum(counts.values()) == 20, counts
    # Another client is balanced on its own (and pinned too; p1 is itself an endpoint, so
    # when pinned to itself the hairpin still works).
    other = node.names("p1", "10.96.0.5", 80, 5)
    assert len(other) == 1, other
    # Other endpoints coming and going move no pin; losing its endpoint re-balances a client.
    (pinned,) = counts
    rest = [p for p in ("p1", "p2", "p3") if p != pinned]
    assert node.apply(base(node, web(pinned, rest[0], affinity_timeout=60)), table) == "delta"
    assert node.names("cl", "10.96.0.5", 80, 5) == {pinned: 5}
    assert node.apply(base(node, web(pinned, *rest, affinity_timeout=60)), table) == "delta"
    assert node.names("cl", "10.96.0.5", 80, 5) == {pinned: 5}
    assert node.apply(base(node, web(*rest, affinity_timeout=60)), table) == "delta"
    moved = node.names("cl", "10.96.0.5", 80, 6)
    assert len(moved) == 1 and pinned not in moved, moved


def test_hairpin_a_pod_reaches_itself_through_its_service(node: Node) -> None:
    node.apply(base(node, web("p1")))
    # Masqueraded to the bridge address, or p1's reply would skip the DNAT on the way back.
    assert node.connect("p1", "10.96.0.5", 80, 3) == [f"p1 {GW0}"] * 3


def test_node_port_and_host_port_on_the_node_address(node: Node) -> None:
    rs = base(
        node,
        web("p1", "p2", "p3", node_port=30080),
        host_ports=(HostPort(8081, "tcp", PODS["p2"], 8080),),
    )
    node.apply(rs)
    lines = node.connect("ext", NODE_UP, 30080, 6)
    assert Counter(line.split()[0] for line in lines) == {"p1": 2, "p2": 2, "p3": 2}
    assert {line.split()[1] for line in lines} == {GW0}  # NodePort traffic is masqueraded
    assert node.connect("ext", NODE_UP, 8081, 2) == [f"p2 {EXT}"] * 2  # hostPort keeps the client
    assert node.connect("p2", NODE_UP, 8081) == [f"p2 {GW0}"]  # hairpin through the host port


def test_services_without_endpoints_refuse_at_once(node: Node) -> None:
    empty = ServiceRule("default/empty:x", "10.96.0.9", 80, "tcp", (), node_port=30090)
    node.apply(base(node, web("p1"), empty))
    for src, host, port in (("cl", "10.96.0.9", 80), ("ext", NODE_UP, 30090)):
        (line,) = node.connect(src, host, port, 1, timeout=3.0)
        kind, seconds = line.split()[1:]
        assert kind == "ConnectionRefusedError", line
        assert float(seconds) < 1.0
    # Once an endpoint is Ready the same address works.
    node.apply(base(node, web("p1"), replace(empty, backends=(Backend(PODS["p3"], 8080),))))
    assert node.names("cl", "10.96.0.9", 80, 2) == {"p3": 2}


def test_networks_are_isolated_from_each_other(node: Node) -> None:
    node.apply(base(node, web("p1")))
    assert node.names("cl", PODS["p1"], 8080, 1) == {"p1": 1}  # same network
    assert node.names("q1", PODS1["q2"], 8080, 1) == {"q2": 1}
    for src, dst in (("cl", PODS1["q1"]), ("q1", PODS["p1"]), ("q1", "10.96.0.5")):
        (line,) = node.connect(src, dst, 8080 if dst != "10.96.0.5" else 80, 1, timeout=0.5)
        assert line.startswith("ERR TimeoutError"), (src, dst, line)
    # Outside the cluster is fine for a non-internal network (masqueraded).
    assert node.connect("q1", EXT, 9000) == [f"ext {NODE_UP}"]


def test_an_internal_network_is_kept_in(node: Node) -> None:
    node.apply(base(node, web("p1"), internal=True))
    assert node.names("q1", PODS1["q2"], 8080, 1) == {"q2": 1}
    for dst, port in ((EXT, 9000), (PODS["p1"], 8080), (NODE_UP, 22)):
        (line,) = node.connect("q1", dst, port, 1, timeout=0.5)
        assert line.startswith("ERR TimeoutError"), (dst, line)
    (line,) = node.connect("cl", PODS1["q1"], 8080, 1, timeout=0.5)
    assert line.startswith("ERR TimeoutError"), line
    # ... but its pods still reach the DNS VIP.
    out = sh(
        "ip", "netns", "exec", node.ns("q1"), sys.executable, "-c", UDP_CLIENT, "10.96.0.10", "53"
    )
    assert out.strip() == "echo hello"
    node.apply(base(node, web("p1")))
    assert node.connect("q1", EXT, 9000) == [f"ext {NODE_UP}"]


def test_dns_vip_is_dnatted_to_the_loopback_server(node: Node) -> None:
    node.apply(base(node))
    out = sh(
        "ip", "netns", "exec", node.ns("cl"), sys.executable, "-c", UDP_CLIENT, "10.96.0.10", "53"
    )
    assert out.strip() == "echo hello"


def test_removing_the_table_leaves_nothing_behind(node: Node) -> None:
    table = NftTable(node.table, netns=node.ns("node"))
    asyncio.run(table.apply(base(node, web("p1"))))
    assert asyncio.run(table.exists())
    asyncio.run(table.remove())
    assert not asyncio.run(table.exists())
    assert node.table not in sh("ip", "netns", "exec", node.ns("node"), "nft", "list", "tables")
    asyncio.run(table.remove())  # already gone: fine
    # Without the table there is no VIP any more.
    (line,) = node.connect("cl", "10.96.0.5", 80, 1, timeout=0.5)
    assert line.startswith("ERR")
