"""What the Node advertises (pure parts)."""

from __future__ import annotations

from pathlib import Path

from shoal.agent import AgentConfig
from shoal.agent._node import HostFacts, apply_node_status, node_labels
from shoal.api import Condition, NodeStatus, get_condition
from shoal.runtime import Fingerprint

FACTS = HostFacts(hostname="box", os="linux", arch="amd64", kernel="6.1.0")
FP = Fingerprint(driver="process", cpu_millis=4000, memory_bytes=8 * 2**30)
CFG = AgentConfig(
    "n1", Path("/tmp/x"), address="10.1.2.3", labels={"zone": "a", "kubernetes.io/os": "custom"}
)


def test_labels() -> None:
    assert node_labels(CFG, FACTS) == {
        "kubernetes.io/hostname": "n1",
        "kubernetes.io/os": "custom",  # the operator's labels win
        "kubernetes.io/arch": "amd64",
        "shoal.dev/runtime": "process",
        "shoal.dev/network": "host",
        "zone": "a",
    }
    assert node_labels(CFG, FACTS, "runc", "bridge")["shoal.dev/network"] == "bridge"


def test_status_advertises_capacity_addresses_endpoint_and_ready() -> None:
    st = apply_node_status(
        NodeStatus(), config=CFG, fingerprint=FP, facts=FACTS, http_port=10250, now=1_700_000_000
    )
    assert st.capacity == {"cpu": "4", "memory": f"{8 * 2**20}Ki", "pods": "110"}
    assert st.allocatable == st.capacity
    assert [(a.type, a.address) for a in st.addresses] == [
        ("InternalIP", "10.1.2.3"),
        ("Hostname", "box"),
    ]
    assert st.daemon_endpoints.kubelet_endpoint.port == 10250
    assert st.node_info.container_runtime_version.startswith("process://shoal-")
    assert st.node_info.kubelet_version.startswith("shoal-")
    assert (
        st.node_info.operating_system,
        st.node_info.architecture,
        st.node_info.kernel_version,
    ) == ("linux", "amd64", "6.1.0")
    ready = get_condition(st.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("True", "KubeletReady")
    assert ready.last_heartbeat_time == "2023-11-14T22:13:20Z"


def test_heartbeat_moves_only_the_heartbeat_and_keeps_foreign_conditions() -> None:
    other = Condition(
        type="DiskPressure", status="False", last_transition_time="2020-01-01T00:00:00Z"
    )
    first = apply_node_status(
        NodeStatus(conditions=[other]),
        config=CFG,
        fingerprint=FP,
        facts=FACTS,
        http_port=1,
        now=1_700_000_000,
    )
    later = apply_node_status(
        first, config=CFG, fingerprint=FP, facts=FACTS, http_port=1, now=1_700_000_010
    )
    ready = get_condition(later.conditions, "Ready")
    assert ready is not None
    assert ready.last_heartbeat_time == "2023-11-14T22:13:30Z"
    assert ready.last_transition_time == "2023-11-14T22:13:20Z"
    assert get_condition(later.conditions, "DiskPressure") == other


def test_node_marked_not_ready_by_others_becomes_ready_again() -> None:
    stale = NodeStatus(
        conditions=[Condition(type="Ready", status="Unknown", reason="NodeStatusUnknown")]
    )
    st = apply_node_status(
        stale, config=CFG, fingerprint=FP, facts=FACTS, http_port=1, now=1_700_000_000
    )
    ready = get_condition(st.conditions, "Ready")
    assert ready is not None and ready.status == "True" and ready.reason == "KubeletReady"


def test_host_facts_detect() -> None:
    facts = HostFacts.detect()
    assert facts.hostname and facts.os and facts.arch and facts.kernel
