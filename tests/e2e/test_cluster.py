"""End-to-end behaviour of `shoal up`, driven only through the CLI and HTTP."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Cluster, pod_ready, wait_for
from tests.e2e.manifests import deployment

pytestmark = pytest.mark.e2e


def ready_pods(c: Cluster, selector: str) -> list[dict[str, Any]]:
    return [
        p for p in c.pods(selector) if pod_ready(p) and not p["metadata"].get("deletionTimestamp")
    ]


def host_port(p: dict[str, Any]) -> int:
    for cs in p["status"].get("containerStatuses", []):
        for port in cs.get("ports", []):
            if port.get("hostPort"):
                return int(port["hostPort"])
    raise AssertionError(f"no host port reported for {p['metadata']['name']}")


def test_deployment_reaches_three_ready_pods_that_answer(cluster: Cluster) -> None:
    out = cluster.cli("apply", "-f", "examples/quickstart.yaml").stdout
    assert "deployment.apps/hello created" in out
    assert "service/hello created" in out
    pods = wait_for(lambda: len(ready_pods(cluster, "app=hello")) == 3 and ready_pods(cluster, "app=hello"),
                    timeout=30, what="3 ready pods")  # fmt: skip
    names = {p["metadata"]["name"] for p in pods}
    for p in pods:
        body = httpx.get(f"http://{p['status']['podIP']}:{host_port(p)}/", timeout=5).text
        assert body.strip() == f"hello from {p['metadata']['name']}"
    table = cluster.cli("get", "pods").stdout
    for n in names:
        assert n in table
    assert table.count("Running") == 3

    # The Service's endpoints list exactly the three ready pods.
    def endpoints() -> set[str]:
        ep = cluster.api("GET", "/api/v1/namespaces/default/endpoints/hello")
        if ep.status_code != 200:
            return set()
        return {
            a["targetRef"]["name"]
            for s in ep.json().get("subsets", [])
            for a in s.get("addresses", [])
        }

    wait_for(lambda: endpoints() == names, what="endpoints of the 3 pods")
    dep = cluster.get_json("/apis/apps/v1/namespaces/default/deployments/hello")
    wait_for(
        lambda: (
            cluster.get_json("/apis/apps/v1/namespaces/default/deployments/hello")["status"].get(
                "availableReplicas"
            )
            == 3
        )
    )
    assert dep["spec"]["replicas"] == 3


def test_crashing_container_backs_off(cluster: Cluster) -> None:
    cluster.cli("apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
    - name: c
      command: ["sh", "-c", "echo boom; exit 3"]
""")  # fmt: skip

    def status() -> dict[str, Any]:
        p = cluster.get_json("/api/v1/namespaces/default/pods/crasher")
        return (p["status"].get("containerStatuses") or [{}])[0]

    first = wait_for(
        lambda: (s := status()).get("restartCount", 0) >= 1 and s, timeout=30, what="a restart"
    )
    assert first["lastState"]["terminated"]["exitCode"] == 3
    wait_for(lambda: (status().get("state", {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff",
             timeout=30, what="CrashLoopBackOff")  # fmt: skip
    wait_for(lambda: status().get("restartCount", 0) >= 2, timeout=40, what="restartCount 2")
    assert "CrashLoopBackOff" in cluster.cli("get", "pods").stdout or status()["restartCount"] >= 2
    logs = cluster.cli("logs", "crasher").stdout
    assert "boom" in logs


def test_deleted_pod_is_replaced(cluster: Cluster) -> None:
    cluster.cli("apply", "-f", "-", input=deployment("web", 2))
    pods = wait_for(
        lambda: len(r := ready_pods(cluster, "app=web")) == 2 and r, what="2 ready pods"
    )
    victim = pods[0]["metadata"]["name"]
    out = cluster.cli("delete", "pod", victim).stdout
    assert f'pod "{victim}" deleted' in out
    wait_for(
        lambda: victim not in {p["metadata"]["name"] for p in cluster.pods("app=web")},
        what="pod gone",
    )
    after = wait_for(
        lambda: len(r := ready_pods(cluster, "app=web")) == 2 and r, what="replacement"
    )
    assert victim not in {p["metadata"]["name"] for p in after}


def test_rolling_update_keeps_availability(cluster: Cluster) -> None:
    cluster.cli(
        "apply",
        "-f",
        "-",
        input=deployment("roll", 3, version="v1", max_surge=1, max_unavailable=1),
    )
    wait_for(lambda: len(ready_pods(cluster, "app=roll")) == 3, what="3 ready v1 pods")
    old = {p["metadata"]["name"] for p in cluster.pods("app=roll")}
    low = [3]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                low[0] = min(low[0], len(ready_pods(cluster, "app=roll")))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        out = cluster.cli(
            "apply",
            "-f",
            "-",
            input=deployment("roll", 3, version="v2", max_surge=1, max_unavailable=1),
        ).stdout
        assert "configured" in out
        res = cluster.cli("rollout", "status", "deployment", "roll", "--timeout", "60")
        assert "successfully rolled out" in res.stdout

        def done() -> bool:
            pods = ready_pods(cluster, "app=roll")
            return len(pods) == 3 and all(p["metadata"]["labels"]["version"] == "v2" for p in pods)

        wait_for(done, timeout=30, what="all pods on v2")
    finally:
        stop.set()
        sampler.join()
    assert low[0] >= 3 - 1, f"ready pods dropped to {low[0]} (maxUnavailable 1)"
    new = {p["metadata"]["name"] for p in cluster.pods("app=roll")}
    assert not (new & old)
    # Undo goes back to v1.
    assert "rolled back" in cluster.cli("rollout", "undo", "deployment", "roll").stdout
    wait_for(lambda: len(p := ready_pods(cluster, "app=roll")) == 3 and all(x["metadata"]["labels"]["version"] == "v1" for x in p),
             timeout=40, what="rolled back to v1")  # fmt: skip


def test_unschedulable_pod_shows_reasons(cluster: Cluster) -> None:
    cluster.cli("apply", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  nodeSelector: {disk: ssd}
  containers:
    - name: c
      command: ["sleep", "60"]
      resources: {requests: {cpu: "500"}}
""")  # fmt: skip

    def cond() -> dict[str, Any] | None:
        p = cluster.get_json("/api/v1/namespaces/default/pods/huge")
        return next(
            (c for c in p["status"].get("conditions", []) if c["type"] == "PodScheduled"), None
        )

    c = wait_for(lambda: (x := cond()) and x["status"] == "False" and x, what="PodScheduled=False")
    assert c["reason"] == "Unschedulable"
    assert c["message"].startswith("0/1 nodes are available: 1 ")
    assert (
        "Insufficient cpu" in c["message"]
        or "didn't match Pod's node affinity/selector" in c["message"]
    )
    desc = cluster.cli("describe", "pod", "huge").stdout
    assert "FailedScheduling" in desc
    assert "0/1 nodes are available" in desc
    assert cluster.get_json("/api/v1/namespaces/default/pods/huge")["status"]["phase"] == "Pending"


def test_invalid_manifest_and_api_bodies_change_nothing(cluster: Cluster) -> None:
    bad = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: good}
spec:
  replicas: 1
  selector: {matchLabels: {app: good}}
  template:
    metadata: {labels: {app: good}}
    spec:
      containers: [{name: c, command: [sleep, "60"]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  replicas: -1
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: other}}
    spec:
      containers: [{name: c}]
"""
    res = cluster.cli("apply", "-f", "-", input=bad, check=False)
    assert res.returncode == 1
    err = res.stderr + res.stdout
    assert "document 2" in err
    assert "spec.replicas" in err
    assert "spec.template.spec.containers[0].image: Required value" in err
    assert "spec.template.metadata.labels" in err
    assert "Traceback" not in err
    assert cluster.get_json("/apis/apps/v1/namespaces/default/deployments")["items"] == []

    r = cluster.api("POST", "/api/v1/namespaces/default/pods", content=json.dumps(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
         "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 70000}]}], "restartPolicy": "Sometimes"}}))  # fmt: skip
    assert r.status_code == 422
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    fields = {c["field"] for c in body["details"]["causes"]}
    assert "spec.restartPolicy" in fields
    r = cluster.api("POST", "/api/v1/namespaces/default/pods", content=b"{not json")
    assert r.status_code == 400 and r.json()["kind"] == "Status"
    r = cluster.api("POST", "/api/v1/namespaces/default/pods", content=json.dumps(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
         "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 70000}]}]}}))  # fmt: skip
    assert r.status_code == 422
    assert any(
        c["field"] == "spec.containers[0].ports[0].containerPort"
        for c in r.json()["details"]["causes"]
    )
    assert cluster.get_json("/api/v1/namespaces/default/pods")["items"] == []


def test_ctrl_c_stops_everything(cluster: Cluster) -> None:
    import signal

    from shoal.runtime import _procutil as pu

    cluster.cli("apply", "-f", "examples/quickstart.yaml")
    wait_for(lambda: len(ready_pods(cluster, "app=hello")) == 3, timeout=30, what="3 ready pods")
    states = [
        json.loads(p.read_text())
        for p in cluster.up.data_dir.rglob("*.json")
        if "start_ticks" in p.read_text()
    ]
    running = [
        (s["pid"], s["start_ticks"])
        for s in states
        if pu.is_same_process(s["pid"], s["start_ticks"])
    ]
    assert len(running) == 3
    assert cluster.up.stop(signal.SIGINT) == 0
    assert "shoal stopped." in cluster.up.output()
    left = [pid for pid, ticks in running if pu.is_same_process(pid, ticks)]
    assert not left, f"container processes left behind: {left}"
