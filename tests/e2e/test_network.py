"""End to end, container networking on one node: `shoal up --runtime runc` as root gives every
pod its own network namespace on named networks (isolated from each other), Services
virtual IPs balanced in the kernel (round robin, ClientIP affinity, NodePort), hostPorts,
DNS of Service names from inside pods, and leaves no bridge, netns, nft table or route
behind when it exits.

Pods here have no image: the runc sandbox shows the host's /usr read-only, so they run the
host's python3. Every address the tests reach is inside the namespaces shoal created for
this test (pod and service addresses, the bridge) or on loopback.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Cluster, pod_ready, wait_for
from tests.netleftovers import network_leftovers

pytestmark = pytest.mark.e2e

SERVER = """
import http.server, os, socket
NAME = socket.gethostname().encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 503 if self.path == "/healthz" and os.path.exists("/tmp/down") else 200
        self.send_response(code)
        self.send_header("Content-Length", str(len(NAME)))
        self.end_headers()
        self.wfile.write(NAME)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""

# Fresh connection per request, so each one is balanced on its own.
CLIENT = """
import json, sys, urllib.request
out = []
for _ in range(int(sys.argv[2])):
    try:
        out.append(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())
    except Exception as exc:
        out.append("ERR:" + type(exc).__name__)
print(json.dumps(out))
"""


def pod(name: str, *, labels: dict[str, str] | None = None, networks: list[str] | None = None,
        host_port: int | None = None) -> dict[str, Any]:  # fmt: skip
    port: dict[str, Any] = {"name": "http", "containerPort": 8080}
    if host_port:
        port["hostPort"] = host_port
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "srv", "command": ["python3", "-c", SERVER], "ports": [port],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                               "periodSeconds": 1, "failureThreshold": 1},
        }],
    }  # fmt: skip
    if networks:
        spec["networks"] = networks
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {"app": name}}, "spec": spec}  # fmt: skip


def service(name: str, app: str = "echo", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": app},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}], **spec}}  # fmt: skip


def network(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.shoal.dev/v1", "kind": "Network",
            "metadata": {"name": name}, "spec": spec}  # fmt: skip


def fetch(c: Cluster, client: str, url: str, n: int = 1) -> list[str]:
    out = c.cli("exec", client, "--", "python3", "-c", CLIENT, url, str(n)).stdout
    result: list[str] = json.loads(out)
    return result


def resolve(c: Cluster, client: str, name: str) -> str:
    code = f"import socket; print(socket.gethostbyname({name!r}))"
    return c.cli("exec", client, "--", "python3", "-c", code).stdout.strip()


def ips(c: Cluster, name: str) -> list[str]:
    got = c.get_json(f"/api/v1/namespaces/default/pods/{name}")
    return [p["ip"] for p in got["status"].get("podIPs") or []]


def endpoints_ready(c: Cluster, name: str) -> list[str]:
    r = c.api("GET", f"/api/v1/namespaces/default/endpoints/{name}")
    if r.status_code != 200:
        return []
    return sorted(a["ip"] for s in r.json().get("subsets") or [] for a in s.get("addresses") or [])


def test_networks_services_dns_and_cleanup(runc_cluster: Cluster) -> None:
    c = runc_cluster
    objs = [network("front"), network("back"), network("vault", internal=True)]
    objs += [pod(f"echo-{i}", labels={"app": "echo"}) for i in range(3)]
    objs += [pod("client"), pod("web", networks=["front"]), pod("web2", networks=["front"]),
             pod("api", networks=["back"]), pod("both", networks=["front", "back"]),
             pod("safe", networks=["vault"]), pod("safe2", networks=["vault"]),
             pod("hp", host_port=18080)]  # fmt: skip
    objs += [service("echo"), service("sticky", sessionAffinity="ClientIP"),
             service("echo-np", type="NodePort"), service("duo", app="both")]  # fmt: skip
    c.cli("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objs))
    names = ["echo-0", "echo-1", "echo-2", "client", "web", "web2", "api", "both", "safe",
             "safe2", "hp"]  # fmt: skip
    wait_for(lambda: all(pod_ready(p) for p in c.pods()) and len(c.pods()) == len(names),
             timeout=90, what="every pod Ready")  # fmt: skip

    # Every pod has an address per network; -o wide shows them.
    assert len(ips(c, "both")) == 2 and all(len(ips(c, n)) == 1 for n in names if n != "both")
    front = c.get_json("/apis/networking.shoal.dev/v1/networks/front")["spec"]["subnet"]
    assert ips(c, "web")[0].rsplit(".", 2)[0] == front.rsplit(".", 2)[0]
    wide = c.cli("get", "pods", "-o", "wide").stdout
    assert ",".join(ips(c, "both")) in wide
    nets = c.cli("get", "networks", "-o", "wide").stdout
    assert "vault" in nets and "true" in nets and front in nets

    # Isolation: same network reaches, different networks do not (both ways), a pod on two
    # networks reaches both, an internal network keeps its pods in.
    web2, api, web = ips(c, "web2")[0], ips(c, "api")[0], ips(c, "web")[0]
    assert fetch(c, "web", f"http://{web2}:8080/") == ["web2"]
    assert fetch(c, "web", f"http://{api}:8080/")[0].startswith("ERR")
    assert fetch(c, "api", f"http://{web}:8080/")[0].startswith("ERR")
    assert fetch(c, "both", f"http://{web}:8080/") == ["web"]
    assert fetch(c, "both", f"http://{api}:8080/") == ["api"]
    echo0 = ips(c, "echo-0")[0]
    assert fetch(c, "safe", f"http://{ips(c, 'safe2')[0]}:8080/") == ["safe2"]
    assert fetch(c, "safe", f"http://{echo0}:8080/")[0].startswith("ERR")
    assert fetch(c, "client", f"http://{ips(c, 'safe')[0]}:8080/")[0].startswith("ERR")

    # A Service of a pod on two networks is reached from either, at the pod's address on the
    # network the client shares with it (as a Compose service on two networks).
    duo = c.get_json("/api/v1/namespaces/default/services/duo")["spec"]["clusterIP"]
    assert fetch(c, "web", f"http://{duo}/") == ["both"]
    assert fetch(c, "api", f"http://{duo}/") == ["both"]
    assert fetch(c, "client", f"http://{duo}/")[0].startswith("ERR")  # shares no network

    # ClusterIP: round robin over the 3 Ready endpoints, exactly.
    vip = c.get_json("/api/v1/namespaces/default/services/echo")["spec"]["clusterIP"]
    got = fetch(c, "client", f"http://{vip}/", 30)
    assert sorted(got) == sorted(["echo-0", "echo-1", "echo-2"] * 10), got
    # DNS from inside a pod: the Service's name (short, through the search path, and full)
    # resolves to its ClusterIP.
    assert resolve(c, "client", "echo") == vip
    assert resolve(c, "client", "echo.default.svc.cluster.local") == vip
    assert fetch(c, "client", "http://echo/", 3) != []
    # The DNS address is reachable from inside an internal network too.
    assert resolve(c, "safe", "echo") == vip

    # Session affinity pins the client to one endpoint.
    sticky = c.get_json("/api/v1/namespaces/default/services/sticky")["spec"]["clusterIP"]
    assert len(set(fetch(c, "client", f"http://{sticky}/", 10))) == 1

    # NodePort and hostPort answer on the node's own addresses (here the bridge's).
    gw = c.get_json("/apis/networking.shoal.dev/v1/networks/default")["status"]["nodeSubnets"]
    node_ip = gw[0]["subnet"].rsplit(".", 1)[0] + ".1"
    np = c.get_json("/api/v1/namespaces/default/services/echo-np")["spec"]["ports"][0]["nodePort"]
    assert httpx.get(f"http://{node_ip}:{np}/", timeout=5).text in {"echo-0", "echo-1", "echo-2"}
    assert fetch(c, "client", f"http://{node_ip}:{np}/")[0].startswith("echo-")
    assert httpx.get(f"http://{node_ip}:18080/", timeout=5).text == "hp"

    # An endpoint that turns unready is taken out of the rotation within a second or two.
    c.cli("exec", "echo-0", "--", "python3", "-c", "open('/tmp/down', 'w').close()")
    wait_for(lambda: echo0 not in endpoints_ready(c, "echo"), timeout=15, what="echo-0 unready")
    wait_for(lambda: "echo-0" not in fetch(c, "client", f"http://{vip}/", 6), timeout=5,
             what="rules without echo-0")  # fmt: skip
    assert "echo-0" not in fetch(c, "client", f"http://{vip}/", 20)

    # Deleting pods and stopping shoal leaves no network state behind.
    c.cli("delete", "pod", "web2")
    wait_for(lambda: all(p["metadata"]["name"] != "web2" for p in c.pods()), timeout=20,
             what="web2 deleted")  # fmt: skip
    c.up.stop()
    left = network_leftovers(c.network_prefix)
    assert all(not v for v in left.values()), left
