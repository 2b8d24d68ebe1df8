"""Node failure and server crash: rescheduling onto another agent; kill -9 loses nothing."""

from __future__ import annotations

import signal
import threading

import httpx
import pytest

from tests.e2e.conftest import Cluster, pod_ready, wait_for
from tests.e2e.manifests import deployment

pytestmark = pytest.mark.e2e


def test_stopped_agents_pods_move_to_another_node(cluster: Cluster) -> None:
    agent = cluster.add_agent("node-b")
    wait_for(lambda: len(cluster.get_json("/api/v1/nodes")["items"]) == 2, what="2 nodes")
    # Cordon node-a so everything lands on node-b first.
    cluster.api("PATCH", "/api/v1/nodes/node-a", content=b'{"spec":{"unschedulable":true}}',
                headers={"content-type": "application/merge-patch+json"})  # fmt: skip
    cluster.cli("apply", "-f", "-", input=deployment("mover", 2, probe=False))
    pods = wait_for(lambda: len(r := [p for p in cluster.pods("app=mover") if pod_ready(p)]) == 2 and r,
                    timeout=30, what="2 running pods on node-b")  # fmt: skip
    assert {p["spec"]["nodeName"] for p in pods} == {"node-b"}
    cluster.api("PATCH", "/api/v1/nodes/node-a", content=b'{"spec":{"unschedulable":false}}',
                headers={"content-type": "application/merge-patch+json"})  # fmt: skip
    agent.stop(signal.SIGKILL)

    def node_b_ready() -> str:
        node = cluster.get_json("/api/v1/nodes/node-b")
        return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")

    wait_for(lambda: node_b_ready() == "Unknown", timeout=20, what="node-b NotReady")
    assert "NotReady" in cluster.cli("get", "nodes").stdout

    def moved() -> bool:
        pods = [p for p in cluster.pods("app=mover") if pod_ready(p)]
        return len(pods) == 2 and all(p["spec"]["nodeName"] == "node-a" for p in pods)

    wait_for(moved, timeout=40, what="pods rescheduled onto node-a")


def test_kill9_during_writes_loses_no_acknowledged_object(cluster: Cluster) -> None:
    acked: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        with httpx.Client(base_url=cluster.url, timeout=5) as http:
            while not stop.is_set():
                name = f"cm-{i}"
                body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                        "spec": {"ports": [{"port": 80}]}}  # fmt: skip
                try:
                    r = http.post("/api/v1/namespaces/default/services", json=body)
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    acked.append(name)
                i += 1

    t = threading.Thread(target=writer)
    t.start()
    wait_for(lambda: len(acked) >= 200, timeout=30, what="200 acknowledged writes")
    cluster.up.kill9()
    stop.set()
    t.join()

    # `shoal up` runs its API server in a child process; it must die with its parent.
    def server_gone() -> bool:
        try:
            httpx.get(f"{cluster.url}/healthz", timeout=0.5)
        except httpx.HTTPError:
            return True
        return False

    wait_for(server_gone, timeout=5, what="the API server child to exit with its parent")
    n = len(acked)
    cluster.restart()
    names = {
        s["metadata"]["name"]
        for s in cluster.get_json("/api/v1/namespaces/default/services")["items"]
    }
    missing = [a for a in acked if a not in names]
    assert not missing, f"{len(missing)} of {n} acknowledged objects lost: {missing[:5]}"
