"""The registry inside `shoal up`: a Deployment's pods appear as instances of their Service
as they become Ready and disappear when they go, in the Consul API (real py-consul client),
in DNS (real dig) and in `shoal services`."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import consul
import pytest

from tests.e2e.conftest import Cluster, pod_ready, wait_for
from tests.e2e.manifests import deployment

pytestmark = pytest.mark.e2e

SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {team: blue}
  annotations: {consul.hashicorp.com/service-tags: "http,v1"}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def _dig(c: Cluster, *args: str) -> list[str]:
    dig = shutil.which("dig")
    assert dig is not None, "dig (dnsutils) is required; `make test` installs it"
    out = subprocess.run(
        [dig, "@127.0.0.1", "-p", str(c.dns_port), "+short", "+time=2", "+tries=2", *args],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout  # fmt: skip
    return sorted(line for line in out.splitlines() if line)


def _endpoints(pods: list[dict[str, Any]]) -> set[tuple[str, int]]:
    result = set()
    for p in pods:
        port = next(
            pt["hostPort"]
            for cs in p["status"].get("containerStatuses", [])
            for pt in cs.get("ports", [])
            if pt.get("hostPort")
        )
        result.add((p["status"]["podIP"], int(port)))
    return result


def test_deployment_pods_are_registered_resolved_and_listed(cluster: Cluster) -> None:
    cluster.cli("apply", "-f", "-", input=deployment("web", replicas=2) + "---\n" + SERVICE)
    c = consul.Consul(host="127.0.0.1", port=cluster.consul_port)

    def ready() -> list[dict[str, Any]]:
        return [p for p in cluster.pods("app=web") if pod_ready(p)]

    def passing() -> list[dict[str, Any]]:
        return list(c.health.service("web", passing=True)[1])

    pods = wait_for(lambda: len(ready()) == 2 and ready(), timeout=40, what="2 ready pods")
    wait_for(lambda: len(passing()) == 2, timeout=10, what="2 passing instances")
    entries = passing()
    got = {(e["Service"]["Address"], e["Service"]["Port"]) for e in entries}
    assert got == _endpoints(pods)
    for e in entries:
        assert e["Service"]["Tags"] == ["http", "v1"]
        assert e["Service"]["Meta"] == {"team": "blue"}
        assert e["Node"]["Node"] == "node-a"
        assert {ch["CheckID"] for ch in e["Checks"]} >= {"serfHealth"}
        assert all(ch["Status"] == "passing" for ch in e["Checks"])
    _, tagged = c.catalog.service("web", tag="v1")
    assert len(tagged) == 2

    # DNS: A, SRV (ports), tag filter, the Kubernetes name; unknown names are NXDOMAIN.
    addresses = sorted({a for a, _ in got})
    wait_for(lambda: sorted(set(_dig(cluster, "web.service.consul"))) == addresses,
             timeout=5, what="A records")  # fmt: skip
    srv = _dig(cluster, "SRV", "_web._tcp.service.consul")
    assert sorted(int(line.split()[2]) for line in srv) == sorted(p for _, p in got)
    assert sorted(set(_dig(cluster, "v1.web.service.consul"))) == addresses
    assert _dig(cluster, "nosuchtag.web.service.consul") == []
    # A Service with a cluster IP resolves to it under its Kubernetes name (kube-dns).
    cluster_ip = cluster.get_json("/api/v1/namespaces/default/services/web")["spec"]["clusterIP"]
    assert _dig(cluster, "web.default.svc.cluster.local") == [cluster_ip]

    # shoal services
    table = cluster.cli("services", "--consul", f"127.0.0.1:{cluster.consul_port}").stdout
    line = next(line for line in table.splitlines() if line.split()[:1] == ["web"])
    assert line.split()[1:4] == ["2", "2", "0"]
    shown = cluster.cli(
        "services", "show", "web", "--consul", f"127.0.0.1:{cluster.consul_port}"
    ).stdout
    for p in pods:
        assert p["metadata"]["name"] in shown
    assert "serfHealth" in shown

    # Scaling down removes the instance; deleting the Service removes them all.
    cluster.cli("scale", "deployment/web", "--replicas", "1")
    wait_for(lambda: len(c.catalog.service("web")[1]) == 1, timeout=20, what="one instance left")
    cluster.cli("delete", "service", "web")
    wait_for(lambda: "web" not in c.catalog.services()[1], timeout=10, what="service gone")
    assert _dig(cluster, "web.service.consul") == []
