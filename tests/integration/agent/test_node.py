"""Node registration and heartbeats against a real API server."""

from __future__ import annotations

from tests.integration.agent.conftest import Harness, eventually


async def test_node_registration_and_heartbeat(harness: Harness) -> None:
    agent = await harness.start_agent(labels={"zone": "a"})
    node = await harness.client.nodes.get("node-a")
    labels = node.metadata.labels
    assert labels["kubernetes.io/hostname"] == "node-a"
    assert labels["kubernetes.io/os"] == "linux"
    assert labels["kubernetes.io/arch"]
    assert labels["shoal.dev/runtime"] == "process"
    assert labels["zone"] == "a"
    status = node.status
    assert status.capacity["pods"] == "110"
    assert str(status.capacity["memory"]).endswith("Ki")
    assert str(status.capacity["cpu"]).isdigit()
    assert status.allocatable == status.capacity
    assert [a.type for a in status.addresses] == ["InternalIP", "Hostname"]
    assert status.addresses[0].address == "127.0.0.1"
    assert status.daemon_endpoints.kubelet_endpoint.port == agent.http_port
    assert status.node_info.kubelet_version.startswith("shoal-")
    assert status.node_info.container_runtime_version.startswith("process://shoal-")
    assert status.node_info.operating_system == "linux"
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "KubeletReady")
    assert ready.last_heartbeat_time
    # Heartbeats continue; a deleted Node is registered again.
    assert agent.node is not None
    beats = agent.node.heartbeats
    await eventually(lambda: agent.node is not None and agent.node.heartbeats >= beats + 2)
    await harness.client.nodes.delete("node-a")

    async def back() -> bool:
        try:
            n = await harness.client.nodes.get("node-a")
        except Exception:
            return False
        return n.status.daemon_endpoints.kubelet_endpoint.port == agent.http_port

    await eventually(back, timeout=5)


async def test_existing_node_is_updated_keeping_foreign_labels(harness: Harness) -> None:
    await harness.client.nodes.create(
        {
            "metadata": {"name": "node-a", "labels": {"team": "blue"}},
            "spec": {"unschedulable": True},
        }
    )
    await harness.start_agent()
    node = await harness.client.nodes.get("node-a")
    assert node.metadata.labels["team"] == "blue"
    assert node.metadata.labels["shoal.dev/runtime"] == "process"
    assert node.spec.unschedulable, "the agent must not reset spec set by others"
