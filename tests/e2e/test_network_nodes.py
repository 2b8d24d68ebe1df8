"""End to end, routing between nodes: four `shoal agent --runtime runc` processes whose nodes
are network namespaces joined in a ring (n1-n2-n3-n4-n1, not a full mesh), so a pod on n1
reaches a pod on n3 only through n2 or n4. Cutting the link in use reroutes through the
other side within 2 s; restarting an agent keeps its pods' networking; deleting the pods
leaves no pod namespace behind.

Every address reached lives inside namespaces this test made (the nodes') or shoal made for
it (the pods'); the control plane listens on loopback only.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.network._podnet import netns_name
from tests.e2e.conftest import SHOAL, Cluster, ShoalProcess, cleanup_runc, pod_ready, wait_for
from tests.e2e.test_network import CLIENT, SERVER
from tests.netleftovers import network_leftovers, remove_network_leftovers
from tests.rootreq import require_root

pytestmark = pytest.mark.e2e

# (a, b, third octet): a's end is .1, b's end .2 of 192.168.<octet>.0/30.
RING = [("n1", "n2", 12), ("n2", "n3", 23), ("n3", "n4", 34), ("n4", "n1", 41)]


def ip(*args: str, check: bool = True) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check).stdout


@pytest.fixture
def ring(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[str, dict[str, ShoalProcess]]]:
    """Four node namespaces in a ring, each with an agent on the cluster."""
    require_root("runc", "nft", "ip")
    prefix = "t" + secrets.token_hex(3)[:5]
    ns = {n: f"{prefix}_{n}" for n in ("n1", "n2", "n3", "n4")}  # not PREFIX-: pod netns
    links: dict[str, list[str]] = {n: [] for n in ns}
    agents: dict[str, ShoalProcess] = {}
    try:
        for name in ns.values():
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        for a, b, octet in RING:
            ia, ib = f"{prefix}{a[1]}{b[1]}", f"{prefix}{b[1]}{a[1]}"
            ip("link", "add", ia, "netns", ns[a], "type", "veth", "peer", "name", ib,
               "netns", ns[b])  # fmt: skip
            for node, ifname, host in ((a, ia, 1), (b, ib, 2)):
                ip("-n", ns[node], "addr", "add", f"192.168.{octet}.{host}/30", "dev", ifname)
                ip("-n", ns[node], "link", "set", ifname, "up")
            links[a].append(f"{prefix}-{b}=192.168.{octet}.2")
            links[b].append(f"{prefix}-{a}=192.168.{octet}.1")
        for n, netns in ns.items():
            data = tmp_path / f"agent-{n}"
            args = [*SHOAL, "agent", "--server", cluster.url, "--node-name", f"{prefix}-{n}",
                    "--data-dir", str(data), "--heartbeat-interval", "1", "--runtime", "runc",
                    "--network", "bridge", "--network-prefix", prefix, "--node-netns", netns]  # fmt: skip
            for link in links[n]:
                args += ["--link", link]
            agents[n] = ShoalProcess(args, data, tmp_path / f"agent-{n}.log")
            agents[n].start()
        yield prefix, agents
    finally:
        for agent in agents.values():
            agent.stop(signal.SIGTERM)
        for n, agent in agents.items():  # an agent's exit keeps its pods; a failed test's go
            cleanup_runc(agent.data_dir, f"{prefix}-{n}", agent.data_dir / "runc")
        for netns in ns.values():
            remove_network_leftovers(prefix, netns)
        remove_network_leftovers(prefix)
        for netns in ns.values():
            ip("netns", "delete", netns, check=False)


def pinned(name: str, node: str) -> dict[str, Any]:
    """A server pinned to ``node``, probed at its pod IP (which only the node's namespace
    routes to, not the agent's: the agent's probes dial from the node's namespace)."""
    probes = {
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": 8080},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
        "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "srv", "command": ["python3", "-c", SERVER],
                                     "ports": [{"containerPort": 8080}], **probes}]}}  # fmt: skip


def pod_json(c: Cluster, name: str) -> dict[str, Any]:
    r = c.api("GET", f"/api/v1/namespaces/default/pods/{name}")
    return r.json() if r.status_code == 200 else {}


def fetch_from(netns: str, url: str, n: int = 1) -> list[str]:
    """Requests from inside a namespace, straight through `ip netns exec` (no agent)."""
    out = ip("netns", "exec", netns, "python3", "-c", CLIENT, url, str(n))
    result: list[str] = json.loads(out)
    return result


def route_via(node_ns: str, address: str) -> str:
    got = json.loads(ip("-n", node_ns, "-j", "route", "get", address))
    return str(got[0].get("gateway", ""))


def test_pods_on_a_ring_reroute_and_survive_agent_restart(
    cluster: Cluster, ring: tuple[str, dict[str, ShoalProcess]]
) -> None:
    c = cluster
    prefix, agents = ring
    n1, n3 = f"{prefix}-n1", f"{prefix}-n3"  # node names
    ns1 = f"{prefix}_n1"  # node n1's network namespace

    def nodes_ready() -> bool:
        items = c.get_json("/api/v1/nodes")["items"]
        ours = [n for n in items if n["metadata"]["name"].startswith(prefix)]
        return len(ours) == 4 and all(len(n["status"].get("links") or []) == 2 for n in ours)

    wait_for(nodes_ready, timeout=40, what="4 nodes publishing 2 links each")
    c.cli(
        "apply",
        "-f",
        "-",
        input=json.dumps(pinned("a", n1)) + "\n---\n" + json.dumps(pinned("c", n3)),
    )
    wait_for(lambda: pod_ready(pod_json(c, "a")) and pod_ready(pod_json(c, "c")), timeout=60,
             what="pods a and c Ready")  # fmt: skip
    a, cp = pod_json(c, "a"), pod_json(c, "c")
    a_ip, c_ip = a["status"]["podIP"], cp["status"]["podIP"]
    a_ns = netns_name(prefix, a["metadata"]["uid"])
    url = f"http://{c_ip}:8080/"

    # The probes really check: c's readiness fails while /tmp/down exists, and comes back.
    c.cli("exec", "c", "--", "touch", "/tmp/down")
    wait_for(lambda: not pod_ready(pod_json(c, "c")), timeout=10, what="c NotReady")
    c.cli("exec", "c", "--", "rm", "/tmp/down")
    wait_for(lambda: pod_ready(pod_json(c, "c")), timeout=10, what="c Ready again")

    # n1 reaches n3's pod subnet through n2 (equal cost both ways round; the lower name wins).
    wait_for(lambda: fetch_from(a_ns, url) == ["c"], timeout=10, what="a reaches c")
    assert route_via(ns1, c_ip) == "192.168.12.2"
    assert c.cli("exec", "a", "--", "python3", "-c", CLIENT, url, "1").stdout.strip() == '["c"]'

    # Cut n1-n2: within 2 s traffic flows the other way round, through n4.
    ip("-n", ns1, "link", "set", f"{prefix}12", "down")
    cut = time.monotonic()
    wait_for(lambda: fetch_from(a_ns, url) == ["c"] and route_via(ns1, c_ip) == "192.168.41.1",
             timeout=5, interval=0.1, what="rerouted through n4")  # fmt: skip
    assert time.monotonic() - cut < 2.0
    assert fetch_from(a_ns, url, 5) == ["c"] * 5

    # An agent restart keeps the pods' networking: traffic flows while it is down and after.
    uid_before = a["status"]["containerStatuses"][0]["containerID"]
    agents["n1"].stop(signal.SIGTERM)
    assert fetch_from(a_ns, url, 3) == ["c"] * 3
    agents["n1"].start()
    time.sleep(2)
    assert fetch_from(a_ns, url, 3) == ["c"] * 3
    wait_for(lambda: pod_ready(pod_json(c, "a")), timeout=20, what="a Ready after restart")
    after = pod_json(c, "a")["status"]
    assert after["podIP"] == a_ip
    assert after["containerStatuses"][0]["containerID"] == uid_before
    assert after["containerStatuses"][0]["restartCount"] == 0

    # Deleting the pods removes their namespaces.
    c.cli("delete", "pod", "a", "c")
    wait_for(lambda: not pod_json(c, "a") and not pod_json(c, "c"), timeout=30, what="pods gone")
    wait_for(lambda: not network_leftovers(prefix)["netns"], timeout=10, what="pod netns gone")
