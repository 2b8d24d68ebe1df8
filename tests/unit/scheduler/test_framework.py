"""The framework: snapshots, one scheduling cycle, the user-facing message, tie-breaking."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from shoal.api import Container, Pod, ResourceRequirements, Taint
from shoal.scheduler.framework import (
    Code,
    CycleState,
    Framework,
    NodeInfo,
    Resources,
    Snapshot,
    Status,
    default_framework,
    pod_non_zero_requests,
    pod_requests,
)
from shoal.scheduler.plugins import LeastAllocated, NodeResourcesFit

from . import make_node, make_pod

# --- Status, requests, NodeInfo, Snapshot -----------------------------------------------------


def test_status_is_immutable_and_reports_success() -> None:
    ok = Status.success("X")
    bad = Status.unschedulable("a", "b", plugin="X")
    assert ok.is_success() and not bad.is_success()
    assert bad.code is Code.UNSCHEDULABLE and bad.message() == "a, b"
    assert Status.unschedulable("a", resolvable=False).code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    with pytest.raises(dataclasses.FrozenInstanceError):
        bad.code = Code.SUCCESS  # type: ignore[misc]


def test_pod_requests_sum_containers() -> None:
    pod = make_pod("p", cpu="250m", memory="64Mi")
    pod.spec.containers += [
        Container(
            name="d", resources=ResourceRequirements(requests={"cpu": "250m", "memory": "64Mi"})
        ),
        Container(name="e"),
    ]
    assert pod_requests(pod) == Resources(500, 128 * 1024**2)
    # The request-less container counts 100m / 200Mi, for scoring only.
    assert pod_non_zero_requests(pod) == Resources(600, 128 * 1024**2 + 200 * 1024**2)


def test_node_info_counts_its_pods() -> None:
    info = NodeInfo(
        make_node("n1"), [make_pod("a", cpu="1", memory="1Gi"), make_pod("b", cpu="500m")]
    )
    assert (info.pod_count, info.requested_cpu_millis, info.requested_memory_bytes) == (
        2,
        1500,
        1024**3,
    )
    assert (info.allocatable_cpu_millis, info.allocatable_memory_bytes, info.allocatable_pods) == (
        4000,
        8 * 1024**3,
        110,
    )


def test_snapshot_assigns_bound_pods_to_their_nodes() -> None:
    nodes = [make_node("b"), make_node("a")]
    pods = [
        make_pod("on-a", cpu="1", node_name="a", phase="Running"),
        make_pod("on-b", cpu="2", node_name="b"),
        make_pod("pending", cpu="3"),
        make_pod("elsewhere", cpu="3", node_name="gone"),
        make_pod("finished", cpu="3", node_name="a", phase="Succeeded"),
    ]
    snap = Snapshot.build(nodes, pods)
    assert [ni.name for ni in snap] == ["a", "b"]  # sorted, whatever the input order
    assert [p.name for p in snap.nodes["a"].pods] == ["on-a"]
    assert snap.nodes["b"].requested_cpu_millis == 2000
    assert len(snap) == 2 and snap.get("gone") is None


def test_snapshot_counts_a_pod_once_even_if_listed_twice() -> None:
    # The runner appends "assumed" copies of pods it has just bound; the later copy wins.
    unbound = make_pod("p", cpu="1")
    assumed = unbound.model_copy(deep=True)
    assumed.spec.node_name = "a"
    snap = Snapshot.build([make_node("a")], [unbound, assumed])
    assert snap.nodes["a"].requested_cpu_millis == 1000
    snap = Snapshot.build([make_node("a")], [assumed, assumed])
    assert snap.nodes["a"].pod_count == 1


# --- Messages ---------------------------------------------------------------------------------


def test_message_for_mixed_failures_across_three_nodes() -> None:
    nodes = [
        make_node("n1", cpu="1", labels={"disk": "ssd"}),
        make_node("n2", cpu="1", labels={"disk": "ssd"}),
        make_node("n3", cpu="8", labels={"disk": "hdd"}),
    ]
    pod = make_pod("p", cpu="2", node_selector={"disk": "ssd"})
    result = default_framework().schedule(pod, Snapshot.build(nodes, []))
    assert result.node_name is None
    # Kubernetes sorts the "<count> <reason>" strings, so "1 node(s)..." precedes "2 Insufficient".
    assert result.message() == (
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "2 Insufficient cpu."
    )
    assert result.statuses["n1"].plugin == "NodeResourcesFit"
    assert result.statuses["n3"].plugin == "NodeSelector"


def test_a_node_contributes_each_of_its_reasons() -> None:
    nodes = [make_node("a", cpu="1", memory="1Gi"), make_node("b", cpu="1", memory="8Gi")]
    result = default_framework().schedule(
        make_pod("p", cpu="2", memory="2Gi"), Snapshot.build(nodes, [])
    )
    assert result.message() == "0/2 nodes are available: 1 Insufficient memory, 2 Insufficient cpu."


def test_only_the_first_rejecting_filter_is_reported() -> None:
    node = make_node("a", cpu="1", unschedulable=True, taints=[Taint(key="k", effect="NoSchedule")])
    result = default_framework().schedule(make_pod("p", cpu="2"), Snapshot.build([node], []))
    assert result.message() == "0/1 nodes are available: 1 node(s) were unschedulable."


def test_message_with_every_default_reason() -> None:
    nodes = [
        make_node("cordoned", unschedulable=True),
        make_node("tainted", taints=[Taint(key="dedicated", value="db", effect="NoExecute")]),
        make_node("down", ready="False"),
        make_node("small", cpu="1", labels={"tier": "web"}),
        make_node("full", pods=0, labels={"tier": "web"}),
        make_node("other", labels={"tier": "db"}),
    ]
    pod = make_pod("p", cpu="2", node_selector={"tier": "web"})
    result = default_framework().schedule(pod, Snapshot.build(nodes, []))
    assert result.message() == (
        "0/6 nodes are available: "
        "1 Insufficient cpu, "
        "1 Too many pods, "
        "1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) had untolerated taint {dedicated: db}, "
        "1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, "
        "1 node(s) were unschedulable."
    )


def test_zero_nodes_message() -> None:
    result = default_framework().schedule(make_pod("p"), Snapshot.build([], []))
    assert result.node_name is None
    assert result.num_nodes == 0
    assert result.message() == "no nodes available to schedule pods"


def test_scheduled_result_has_no_message() -> None:
    result = default_framework().schedule(make_pod("p"), Snapshot.build([make_node("a")], []))
    assert result.node_name == "a" and result.scheduled
    assert result.message() == ""


def test_fourth_one_cpu_pod_does_not_fit_a_three_cpu_node() -> None:
    node = make_node("n1", cpu="3")
    pods: list[Pod] = []
    fw = default_framework()
    for i in range(3):
        pod = make_pod(f"p{i}", cpu="1")
        result = fw.schedule(pod, Snapshot.build([node], pods))
        assert result.node_name == "n1"
        pod.spec.node_name = result.node_name
        pods.append(pod)
    result = fw.schedule(make_pod("p3", cpu="1"), Snapshot.build([node], pods))
    assert result.node_name is None
    assert result.message() == "0/1 nodes are available: 1 Insufficient cpu."
    # Once one of them finishes, the fourth fits.
    pods[0].status.phase = "Succeeded"
    assert fw.schedule(make_pod("p3", cpu="1"), Snapshot.build([node], pods)).node_name == "n1"


# --- Scoring and tie-breaking -----------------------------------------------------------------


def test_least_allocated_prefers_the_emptier_node() -> None:
    nodes = [make_node("a"), make_node("b")]
    pods = [make_pod("x", cpu="2", memory="4Gi", node_name="a")]
    result = default_framework().schedule(
        make_pod("p", cpu="1", memory="1Gi"), Snapshot.build(nodes, pods)
    )
    assert result.node_name == "b"
    assert result.scores["b"] > result.scores["a"]


def test_bigger_node_wins_for_the_same_request() -> None:
    nodes = [make_node("small", cpu="2", memory="4Gi"), make_node("big", cpu="16", memory="32Gi")]
    result = default_framework().schedule(
        make_pod("p", cpu="1", memory="1Gi"), Snapshot.build(nodes, [])
    )
    assert result.node_name == "big"


def test_ties_go_to_fewer_pods_then_to_name() -> None:
    class Flat:
        name = "Flat"

        def score(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> int:
            return 50

    fw = Framework(filters=[NodeResourcesFit()], scorers=[(Flat(), 1)])
    nodes = [make_node("c"), make_node("b"), make_node("a")]
    assert fw.schedule(make_pod("p"), Snapshot.build(nodes, [])).node_name == "a"
    busy = [make_pod("x", node_name="a"), make_pod("y", node_name="b")]
    for _ in range(3):  # deterministic: same input, same answer
        assert fw.schedule(make_pod("p"), Snapshot.build(nodes, busy)).node_name == "c"


def test_equal_pods_spread_over_equal_nodes() -> None:
    nodes = [make_node("a"), make_node("b"), make_node("c")]
    placed: list[Pod] = []
    fw = default_framework()
    for i in range(6):
        pod = make_pod(f"p{i}")
        pod.spec.node_name = fw.schedule(pod, Snapshot.build(nodes, placed)).node_name
        placed.append(pod)
    assert [p.spec.node_name for p in placed] == ["a", "b", "c", "a", "b", "c"]


def test_weights_multiply_plugin_scores() -> None:
    class Prefer:
        def __init__(self, node: str) -> None:
            self.node = node
            self.name = f"Prefer-{node}"

        def score(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> int:
            return 100 if node_info.name == self.node else 0

    nodes = [make_node("a"), make_node("b")]
    fw = Framework(filters=[], scorers=[(Prefer("a"), 1), (Prefer("b"), 3)])
    result = fw.schedule(make_pod("p"), Snapshot.build(nodes, []))
    assert result.node_name == "b"
    assert result.scores == {"a": 100, "b": 300}
    with pytest.raises(ValueError):
        Framework(filters=[], scorers=[(Prefer("a"), -1)])


def test_cycle_state_is_shared_across_nodes_within_one_cycle() -> None:
    seen: list[int] = []

    class Counting:
        name = "Counting"

        def filter(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> Status:
            state["calls"] = state.get("calls", 0) + 1
            seen.append(state["calls"])
            return Status.success()

    fw = Framework(filters=[Counting()])
    snap = Snapshot.build([make_node("a"), make_node("b")], [])
    fw.schedule(make_pod("p"), snap)
    fw.schedule(make_pod("q"), snap)
    assert seen == [1, 2, 1, 2]


# --- Plugin failures --------------------------------------------------------------------------


def test_a_raising_filter_becomes_an_error_result() -> None:
    class Broken:
        name = "Broken"

        def filter(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> Status:
            raise RuntimeError("boom")

    result = Framework(filters=[Broken()]).schedule(
        make_pod("p"), Snapshot.build([make_node("a")], [])
    )
    assert result.node_name is None
    assert result.error is not None and result.error.code is Code.ERROR
    assert result.error.plugin == "Broken"
    assert "boom" in result.message()


def test_an_out_of_range_score_is_an_error() -> None:
    class TooHigh:
        name = "TooHigh"

        def score(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> int:
            return 101

    result = Framework(filters=[], scorers=[(TooHigh(), 1)]).schedule(
        make_pod("p"), Snapshot.build([make_node("a")], [])
    )
    assert result.node_name is None
    assert result.error is not None and "invalid score 101" in result.message()


def test_unnamed_status_is_attributed_to_its_plugin() -> None:
    class Anonymous:
        name = "Anonymous"

        def filter(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> Status:
            return Status.unschedulable("nope")

    result = Framework(filters=[Anonymous()]).schedule(
        make_pod("p"), Snapshot.build([make_node("a")], [])
    )
    assert result.statuses["a"].plugin == "Anonymous"


# --- Shape of the package ---------------------------------------------------------------------


def test_default_framework_runs_kubernetes_filter_order() -> None:
    fw = default_framework()
    assert [p.name for p in fw.filters] == [
        "NodeUnschedulable",
        "NodeName",
        "TaintToleration",
        "NodeReady",
        "NodeSelector",
        "NodeResourcesFit",
    ]
    assert [(p.name, w) for p, w in fw.scorers] == [("LeastAllocated", 1)]
    assert isinstance(fw.scorers[0][0], LeastAllocated)


def test_core_imports_no_client_or_http() -> None:
    # The pure core must be usable (and testable) without the HTTP stack.
    code = (
        "import sys, shoal.scheduler.framework, shoal.scheduler.plugins; "
        "bad = [m for m in sys.modules if m == 'httpx' or m.startswith('shoal.client')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
