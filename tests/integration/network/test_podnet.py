"""Pod network namespaces through the real CNI plugins, on a node that is itself a network
namespace: connectivity, several networks, bandwidth limits, detach, garbage collection,
restart recovery and rollback of a failed attach.

Everything lives in namespaces this test creates (``{prefix}-node`` and the pods'
``{prefix}-<uid>``); the fixtures delete them even when a test fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shoal.errors import NetworkError
from shoal.network._podnet import Bandwidth, Interface, PodNetworker
from tests.rootreq import require_root

TOOLS = ("ip", "nft", "tc", "sysctl", "iptables", "/usr/lib/cni/bridge")


def sh(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def ip_json(netns: str, *args: str) -> list[dict[str, Any]]:
    return json.loads(sh("ip", "-j", "-n", netns, *args) or "[]")  # type: ignore[no-any-return]


def ping(netns: str, address: str) -> bool:
    cmd = ["ip", "netns", "exec", netns, "/bin/busybox", "ping", "-c1", "-W1", address]
    return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0


def netns_list() -> set[str]:
    return set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()


def new_uid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def node(make_netns: Any) -> str:
    require_root(*TOOLS)
    return make_netns("node")  # type: ignore[no-any-return]


@pytest.fixture
async def nw(node: str, prefix: str, tmp_path: Path) -> AsyncIterator[PodNetworker]:
    networker = PodNetworker(node_netns=node, prefix=prefix, state_dir=tmp_path / "state")
    try:
        yield networker
    finally:
        try:
            await networker.cleanup_all()
        finally:
            # Belt and braces: whatever pod namespace this test's prefix still names.
            for name in netns_list():
                if name.startswith(f"{prefix}-") and name != node:
                    sh("ip", "netns", "delete", name, check=False)


def iface(
    nw: PodNetworker, network: str, ifname: str, host: int, *, default: bool = True
) -> Interface:
    """An interface on test network ``a`` (10.70.0.0/16), ``b`` (10.71.0.0/16), ..., with
    this node's subnet 10.7x.1.0/24."""
    second = 70 + ord(network) - ord("a")
    return Interface(
        network=network,
        ifname=ifname,
        bridge=nw.bridge_name(network),
        address=f"10.{second}.1.{host}/24",
        gateway=f"10.{second}.1.1",
        network_cidr=f"10.{second}.0.0/16",
        default_route=default,
    )


def veths(node: str) -> list[str]:
    return [link["ifname"] for link in ip_json(node, "link", "show", "type", "veth")]


async def test_two_pods_on_one_network_reach_each_other(nw: PodNetworker, node: str) -> None:
    one, two = new_uid(), new_uid()
    a1 = await nw.attach(one, [iface(nw, "a", "eth0", 2)])
    a2 = await nw.attach(two, [iface(nw, "a", "eth0", 3)])
    assert a1.netns == f"{nw.prefix}-{one[:12]}"
    assert a1.netns_path == f"/var/run/netns/{a1.netns}" and a1.netns in netns_list()
    assert ping(a1.netns, "10.70.1.3")
    assert ping(a2.netns, "10.70.1.2")
    assert ping(a1.netns, "10.70.1.1")  # the bridge is the gateway
    # Attaching again with the same plan is a no-op returning the same attachment.
    assert await nw.attach(one, [iface(nw, "a", "eth0", 2)]) == a1
    assert len(veths(node)) == 2


async def test_concurrent_attaches_share_a_new_bridge(nw: PodNetworker, node: str) -> None:
    uids = [new_uid() for _ in range(4)]
    atts = await asyncio.gather(
        *(nw.attach(uid, [iface(nw, "a", "eth0", 10 + n)]) for n, uid in enumerate(uids))
    )
    assert len(veths(node)) == 4
    assert all(ping(att.netns, "10.70.1.13") for att in atts[:3])
    await asyncio.gather(*(nw.detach(uid) for uid in uids))
    assert veths(node) == []


async def test_pod_on_two_networks(nw: PodNetworker, node: str) -> None:
    uid = new_uid()
    att = await nw.attach(
        uid, [iface(nw, "a", "eth0", 5), iface(nw, "b", "eth1", 6, default=False)]
    )
    addrs = {
        link["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]]
        for link in ip_json(att.netns, "-4", "addr", "show")
    }
    assert addrs == {"lo": ["127.0.0.1/8"], "eth0": ["10.70.1.5/24"], "eth1": ["10.71.1.6/24"]}
    lo = ip_json(att.netns, "link", "show", "lo")[0]
    assert "UP" in lo["flags"]
    routes = {(r["dst"], r.get("gateway"), r["dev"]) for r in ip_json(att.netns, "-4", "route")}
    assert ("default", "10.70.1.1", "eth0") in routes
    assert ("10.70.0.0/16", "10.70.1.1", "eth0") in routes
    assert ("10.71.0.0/16", "10.71.1.1", "eth1") in routes
    assert not any(dst == "default" and dev == "eth1" for dst, _, dev in routes)
    assert ping(att.netns, "10.71.1.1")
    # The node's sysctls: forwarding, bridged traffic through netfilter, route_localnet.
    for bridge in (nw.bridge_name("a"), nw.bridge_name("b")):
        key = f"net.ipv4.conf.{bridge}.route_localnet"
        assert sh("ip", "netns", "exec", node, "sysctl", "-n", key).strip() == "1"
    for key in ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"):
        assert sh("ip", "netns", "exec", node, "sysctl", "-n", key).strip() == "1"


async def test_detach_removes_veths_ifb_netns_and_state(nw: PodNetworker, node: str) -> None:
    uid = new_uid()
    att = await nw.attach(uid, [iface(nw, "a", "eth0", 7)], Bandwidth(5_000_000, 5_000_000))
    assert veths(node)
    assert any(link["ifname"].startswith("bwp") for link in ip_json(node, "link"))
    await nw.detach(uid)
    assert veths(node) == []
    assert not any(link["ifname"].startswith("bwp") for link in ip_json(node, "link"))
    assert att.netns not in netns_list()
    assert list(nw.state_dir.glob("*.json")) == []
    await nw.detach(uid)  # again: fine
    await nw.detach(new_uid())  # never attached: fine


async def test_collect_removes_leaked_pods_only(nw: PodNetworker, node: str, prefix: str) -> None:
    keep, leaked, lost = new_uid(), new_uid(), new_uid()
    kept = await nw.attach(keep, [iface(nw, "a", "eth0", 2)])
    gone = await nw.attach(leaked, [iface(nw, "a", "eth0", 3)])
    orphan = await nw.attach(lost, [iface(nw, "a", "eth0", 4)], Bandwidth(None, 8_000_000))
    (nw.state_dir / f"{lost}.json").unlink()  # its state file is lost: an orphaned netns
    assert [link["ifname"][:3] for link in ip_json(node, "link", "show", "type", "ifb")] == ["bwp"]
    # A namespace with our prefix but not wired to this node (another agent's) stays.
    stranger = f"{prefix}-{new_uid()[:12]}"
    sh("ip", "netns", "add", stranger)

    removed = await nw.collect([keep])
    assert sorted(removed) == sorted([leaked, orphan.netns])
    assert gone.netns not in netns_list()
    assert orphan.netns not in netns_list()
    assert stranger in netns_list()
    assert ping(kept.netns, "10.70.1.1")
    assert len(veths(node)) == 1
    assert ip_json(node, "link", "show", "type", "ifb") == []  # its egress shaper went too
    assert await nw.collect([keep]) == []


async def test_cleanup_all_leaves_nothing(nw: PodNetworker, node: str, prefix: str) -> None:
    for host, network in ((2, "a"), (3, "b")):
        await nw.attach(new_uid(), [iface(nw, network, "eth0", host)], Bandwidth(None, 8_000_000))
    # What portmap leaves after DEL: an iptables-nft table holding only empty chains.
    sh("ip", "netns", "exec", node, "iptables", "-t", "nat", "-N", "CNI-HOSTPORT-DNAT")
    assert "table ip nat" in sh("ip", "netns", "exec", node, "nft", "list", "tables")

    await nw.cleanup_all()
    assert ip_json(node, "link", "show", "type", "bridge") == []
    assert veths(node) == []
    assert [link["ifname"] for link in ip_json(node, "link")] == ["lo"]  # no ifb either
    assert [n for n in netns_list() if n.startswith(f"{prefix}-") and n != node] == []
    assert sh("ip", "netns", "exec", node, "nft", "list", "tables").strip() == ""
    await nw.cleanup_all()  # again: fine


async def test_cleanup_all_keeps_iptables_tables_with_rules(nw: PodNetworker, node: str) -> None:
    rule = ["iptables", "-A", "FORWARD", "-s", "10.9.9.9", "-j", "DROP"]
    sh("ip", "netns", "exec", node, *rule)
    await nw.attach(new_uid(), [iface(nw, "a", "eth0", 2)])
    await nw.cleanup_all()
    assert "10.9.9.9" in sh("ip", "netns", "exec", node, "iptables", "-S", "FORWARD")


async def test_restart_recovers_and_detaches(nw: PodNetworker, node: str) -> None:
    uid = new_uid()
    att = await nw.attach(uid, [iface(nw, "a", "eth0", 9)], Bandwidth(2_000_000, None))
    restarted = PodNetworker(node_netns=node, prefix=nw.prefix, state_dir=nw.state_dir)
    assert restarted.recover() == [att]
    assert ping(att.netns, "10.70.1.1")  # recovering touched nothing
    await restarted.detach(uid)
    assert restarted.recover() == []
    assert veths(node) == []
    assert att.netns not in netns_list()


async def test_failed_add_rolls_back(nw: PodNetworker, node: str) -> None:
    first = await nw.attach(new_uid(), [iface(nw, "a", "eth0", 2)])
    uid = new_uid()
    clash = Interface(  # network "c" on network "a"'s bridge, which holds another subnet
        network="c",
        ifname="eth1",
        bridge=nw.bridge_name("a"),
        address="10.72.1.2/24",
        gateway="10.72.1.1",
        network_cidr="10.72.0.0/16",
    )
    with pytest.raises(NetworkError) as info:
        await nw.attach(uid, [iface(nw, "b", "eth0", 2), clash], Bandwidth(1_000_000, None))
    message = str(info.value)
    # The plugin's own error, naming plugin, network and pod.
    assert message.startswith(f"CNI bridge ADD on network 'c' for pod {uid} (eth1): ")
    assert "already has an IP address different from 10.72.1.1/24" in message
    assert nw.netns_name(uid) not in netns_list()
    assert not (nw.state_dir / f"{uid}.json").exists()
    assert len(veths(node)) == 1  # only the first pod's
    assert not any(link["ifname"].startswith("bwp") for link in ip_json(node, "link"))
    assert ping(first.netns, "10.70.1.1")
    # The failed attach left network b's bridge without ports: remove_bridges drops it.
    assert await nw.remove_bridges() == [nw.bridge_name("b")]
    assert [b["ifname"] for b in ip_json(node, "link", "show", "type", "bridge")] == [
        nw.bridge_name("a")
    ]


async def test_bad_plan_touches_nothing(nw: PodNetworker, node: str) -> None:
    uid = new_uid()
    bad = iface(nw, "a", "eth0", 2)
    with pytest.raises(ValueError, match="gateway"):
        await nw.attach(uid, [dataclasses.replace(bad, gateway="10.99.0.1")])
    with pytest.raises(ValueError, match="pod uid"):
        await nw.attach("../etc", [bad])
    with pytest.raises(ValueError, match="default route"):
        await nw.attach(uid, [iface(nw, "a", "eth0", 2), iface(nw, "b", "eth1", 2)])
    assert nw.netns_name(uid) not in netns_list()
    assert list(nw.state_dir.glob("*.json")) == []


# --- bandwidth -------------------------------------------------------------------------

RECEIVER = r"""
import json, socket, sys, time
addr, port, skip, window = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, port))
srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept()
total, start, mark = 0, None, None
while True:
    data = conn.recv(1 << 16)
    if not data:
        break
    now = time.monotonic()
    start = start or now
    total += len(data)
    if mark is None and now - start >= skip:
        mark = (now, total)  # past the token bucket's initial burst
    if mark is not None and now - mark[0] >= window:
        break
print(json.dumps({"bps": (total - mark[1]) * 8 / (now - mark[0])}) if mark else "{}", flush=True)
"""

SENDER = r"""
import socket, sys, time
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
block = b"x" * (1 << 16)
deadline = time.monotonic() + 8
try:
    while time.monotonic() < deadline:
        conn.sendall(block)
except OSError:
    pass
"""


def measure(sender_ns: str, receiver_ns: str, receiver_addr: str, port: int) -> float:
    """Throughput (bit/s) of one TCP stream, measured by the receiver over 2.5 s after
    skipping the first 0.5 s. Both processes are ours and killed by PID."""
    py = sys.executable
    receiver = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            receiver_ns,
            py,
            "-c",
            RECEIVER,
            receiver_addr,
            str(port),
            "0.5",
            "2.5",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    sender: subprocess.Popen[bytes] | None = None
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready"
        sender = subprocess.Popen(
            ["ip", "netns", "exec", sender_ns, py, "-c", SENDER, receiver_addr, str(port)]
        )
        out, _ = receiver.communicate(timeout=15)
        return float(json.loads(out)["bps"])
    finally:
        for proc in (sender, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_bandwidth_limits_egress_and_ingress(nw: PodNetworker) -> None:
    port = 5201  # inside the pods' own namespaces: no clash with anything else
    limit = 10_000_000
    shaped = await nw.attach(new_uid(), [iface(nw, "a", "eth0", 2)], Bandwidth(limit, limit))
    other = await nw.attach(new_uid(), [iface(nw, "a", "eth0", 3)])
    # TCP payload over a limit counted on Ethernet frames: ~96% of it.
    low, high = 0.85 * limit, 1.15 * limit

    def rate(sender_ns: str, receiver_ns: str, addr: str) -> list[float]:
        """Measured rates; a run below the band is taken again (twice at most), since a
        sender starved of CPU by a busy machine also reads low. A cap that is missing or
        too tight reads out of band every time."""
        rates = [measure(sender_ns, receiver_ns, addr, port)]
        while rates[-1] < low and len(rates) < 3:
            rates.append(measure(sender_ns, receiver_ns, addr, port))
        return rates

    egress = rate(shaped.netns, other.netns, "10.70.1.3")
    ingress = rate(other.netns, shaped.netns, "10.70.1.2")
    assert low <= egress[-1] <= high, egress
    assert low <= ingress[-1] <= high, ingress
