"""describe (with events) and rollout status/undo/history against a real API server.

No controllers run here: the tests write the ReplicaSets and statuses a deployment
controller would, then check what the CLI makes of them."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from shoal.api import Condition, Deployment, Pod
from shoal.client import Client
from tests.integration.cli.conftest import Cli

HUGE = """
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  nodeSelector: {disk: ssd}
  containers: [{name: c, command: [sleep, "60"], resources: {requests: {cpu: "500"}}}]
"""


def _deployment(version: str) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web, version: {version}}}}}
    spec:
      containers: [{{name: c, image: "web:{version}"}}]
"""


async def test_describe_pending_pod_shows_scheduler_reasons(cli: Cli, client: Client) -> None:
    await cli("apply", "-f", "-", input=HUGE)
    pod = await client.pods.get("huge")
    message = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    pod.status.conditions = [
        Condition(type="PodScheduled", status="False", reason="Unschedulable", message=message)
    ]
    await client.pods.update_status(pod)
    await client.record_event(pod, "FailedScheduling", message, "Warning", "default-scheduler")
    other = Pod.model_validate({**pod.to_dict(), "metadata": {"name": "other"}})
    await client.record_event(other, "Scheduled", "not about huge", component="default-scheduler")

    res = await cli("describe", "pod", "huge")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "Name:" in out and "huge" in out
    assert "Pending" in out
    assert "Unschedulable" in out
    assert "FailedScheduling" in out
    assert out.count(message) == 2  # the condition and the event
    assert "not about huge" not in out
    assert "disk=ssd" in out

    events = await cli("get", "events")
    assert events.stdout.splitlines()[0].split() == [
        "LAST",
        "SEEN",
        "TYPE",
        "REASON",
        "OBJECT",
        "MESSAGE",
    ]
    assert "pod/huge" in events.stdout


async def test_describe_node_deployment_and_generic(cli: Cli, client: Client) -> None:
    await client.request("POST", "/api/v1/nodes", body={
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
        "status": {"capacity": {"cpu": "4", "memory": "8Gi"},
                   "allocatable": {"cpu": "4", "memory": "8Gi"},
                   "addresses": [{"type": "InternalIP", "address": "10.1.0.5"}],
                   "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}]},
    })  # fmt: skip
    await cli("apply", "-f", "-", input=HUGE.replace('"500"', "250m"))
    await client.bind("huge", "default", "node-a")

    node = (await cli("describe", "node", "node-a")).stdout
    assert "10.1.0.5" in node and "AgentReady" in node
    assert "Non-terminated Pods:  (1 in total)" in node
    assert "huge" in node and "250m (6%)" in node

    nodes = (await cli("get", "nodes")).stdout.splitlines()
    assert nodes[1].split()[:3] == ["node-a", "Ready", "<none>"]

    await cli("apply", "-f", "-", input=_deployment("v1"))
    dep = (await cli("describe", "deploy", "web")).stdout
    assert "3 desired | 0 updated | 0 total | 0 available | 0 unavailable" in dep
    assert "RollingUpdate" in dep and "web:v1" in dep

    ns = (await cli("describe", "namespace", "default")).stdout
    assert "Name:" in ns and "phase: Active" in ns


async def _make_history(client: Client) -> dict[str, Any]:
    """Two ReplicaSets of deployment "web", as its controller would have left them after
    rolling from v1 (revision 1) to v2 (revision 2)."""
    dep: dict[str, Any] = await client.request(
        "GET", "/apis/apps/v1/namespaces/default/deployments/web"
    )
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
             "uid": dep["metadata"]["uid"], "controller": True}  # fmt: skip
    for rev, version, hash_ in ((1, "v1", "aaaa1"), (2, "v2", "bbbb2")):
        template = copy.deepcopy(dep["spec"]["template"])
        template["metadata"]["labels"].update({"version": version, "pod-template-hash": hash_})
        template["spec"]["containers"][0]["image"] = f"web:{version}"
        await client.request("POST", "/apis/apps/v1/namespaces/default/replicasets", body={
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"web-{hash_}", "ownerReferences": [owner],
                         "labels": template["metadata"]["labels"],
                         "annotations": {"deployment.kubernetes.io/revision": str(rev)}},
            "spec": {"replicas": 3 if version == "v2" else 0,
                     "selector": {"matchLabels": {"app": "web", "pod-template-hash": hash_}},
                     "template": template},
        })  # fmt: skip
    # An unrelated ReplicaSet with a revision annotation must not count.
    await client.request("POST", "/apis/apps/v1/namespaces/default/replicasets", body={
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "stranger", "annotations": {"deployment.kubernetes.io/revision": "7"}},
        "spec": {"selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    })  # fmt: skip
    return dep


async def test_rollout_undo_writes_the_previous_template(cli: Cli, client: Client) -> None:
    await cli("apply", "-f", "-", input=_deployment("v2"))
    await _make_history(client)

    history = await cli("rollout", "history", "deployment", "web")
    assert history.stdout.splitlines() == [
        "deployment.apps/web",
        "REVISION  CHANGE-CAUSE",
        "1         <none>",
        "2         <none>",
    ]
    described = (await cli("describe", "deploy", "web")).stdout
    assert "NewReplicaSet:   web-bbbb2 (0/3 replicas created)" in described

    res = await cli("rollout", "undo", "deployment", "web")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == "deployment.apps/web rolled back"
    dep = await client.deployments.get("web")
    assert dep.spec.template.metadata.labels == {"app": "web", "version": "v1"}
    assert dep.spec.template.spec.containers[0].image == "web:v1"
    assert dep.metadata.generation == 2

    again = await cli("rollout", "undo", "deploy/web", "--to-revision", "1")
    assert "skipped rollback" in again.stdout

    back = await cli("rollout", "undo", "deploy", "web", "--to-revision", "2")
    assert back.stdout.strip() == "deployment.apps/web rolled back"
    assert (await client.deployments.get("web")).spec.template.spec.containers[0].image == "web:v2"

    missing = await cli("rollout", "undo", "deploy", "web", "--to-revision", "9")
    assert missing.exit_code == 1
    assert "unable to find specified revision 9" in missing.stderr


async def _set_status(client: Client, **status: Any) -> None:
    dep = await client.deployments.get("web")
    body = dep.to_dict()
    body["status"] = {"observedGeneration": dep.metadata.generation, **status}
    await client.deployments.update_status(Deployment.model_validate(body))


async def test_rollout_status_follows_until_done(cli: Cli, client: Client) -> None:
    await cli("apply", "-f", "-", input=_deployment("v1"))
    await _set_status(client, replicas=3, updatedReplicas=1, availableReplicas=1)

    waiting = asyncio.create_task(cli("rollout", "status", "deployment", "web", "--timeout", "20s"))
    await asyncio.sleep(0.5)
    await _set_status(client, replicas=3, updatedReplicas=3, availableReplicas=2)
    await asyncio.sleep(0.3)
    await _set_status(client, replicas=3, updatedReplicas=3, availableReplicas=3)
    res = await asyncio.wait_for(waiting, 20)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == (
        'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...'
    )
    assert lines[-1] == 'deployment "web" successfully rolled out'
    assert (
        'Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are available...'
        in lines
    )


async def test_rollout_status_times_out(cli: Cli, client: Client) -> None:
    await cli("apply", "-f", "-", input=_deployment("v1"))
    res = await cli("rollout", "status", "deploy", "web", "--timeout", "0.5")
    assert res.exit_code == 1
    assert "Waiting for deployment spec update to be observed..." in res.stdout
    assert "timed out" in res.stderr
