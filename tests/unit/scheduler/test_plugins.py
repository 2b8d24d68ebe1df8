"""Each built-in plugin on its own: when it passes a node, when it rejects it and with what words."""

from __future__ import annotations

import pytest

from shoal.api import Condition, Pod, Taint, Toleration
from shoal.scheduler.framework import Code, CycleState, FilterPlugin, NodeInfo, Snapshot, Status
from shoal.scheduler.plugins import (
    LeastAllocated,
    NodeName,
    NodeReady,
    NodeResourcesFit,
    NodeSelector,
    NodeUnschedulable,
    TaintToleration,
    least_requested_score,
    tolerates,
)

from . import make_node, make_pod


def run_filter(
    plugin: FilterPlugin, pod: Pod | None = None, node: NodeInfo | None = None
) -> Status:
    """One filter call with a fresh cycle; defaults to a plain pod on a plain Ready node."""
    return plugin.filter(pod or make_pod("p"), node or NodeInfo(make_node("n1")), CycleState())


# --- NodeResourcesFit -------------------------------------------------------------------------


class TestNodeResourcesFit:
    def test_pod_that_fits_passes(self) -> None:
        info = NodeInfo(make_node("n1", cpu="2", memory="1Gi"))
        status = NodeResourcesFit().filter(make_pod("p", cpu="2", memory="1Gi"), info, CycleState())
        assert status.is_success()

    def test_insufficient_cpu(self) -> None:
        info = NodeInfo(make_node("n1", cpu="1"))
        status = NodeResourcesFit().filter(make_pod("p", cpu="1500m"), info, CycleState())
        assert status.code is Code.UNSCHEDULABLE
        assert status.reasons == ("Insufficient cpu",)
        assert status.plugin == "NodeResourcesFit"

    def test_insufficient_memory(self) -> None:
        info = NodeInfo(make_node("n1", memory="128Mi"))
        status = NodeResourcesFit().filter(make_pod("p", memory="129Mi"), info, CycleState())
        assert status.reasons == ("Insufficient memory",)

    def test_every_shortage_is_reported_in_kubernetes_order(self) -> None:
        info = NodeInfo(
            make_node("n1", cpu="1", memory="1Gi", pods=1), [make_pod("a", node_name="n1")]
        )
        status = NodeResourcesFit().filter(make_pod("p", cpu="2", memory="2Gi"), info, CycleState())
        assert status.reasons == ("Too many pods", "Insufficient cpu", "Insufficient memory")

    def test_too_many_pods(self) -> None:
        info = NodeInfo(make_node("n1", pods=2), [make_pod("a"), make_pod("b")])
        status = NodeResourcesFit().filter(make_pod("p"), info, CycleState())
        assert status.reasons == ("Too many pods",)

    def test_node_without_pods_limit_takes_any_number(self) -> None:
        info = NodeInfo(make_node("n1", pods=None), [make_pod(f"p{i}") for i in range(500)])
        assert NodeResourcesFit().filter(make_pod("p"), info, CycleState()).is_success()

    def test_pods_on_the_node_consume_its_capacity(self) -> None:
        # Three 1-cpu pods fill a 3-cpu node; the fourth does not fit.
        node = make_node("n1", cpu="3")
        placed = [make_pod(f"p{i}", cpu="1", node_name="n1", phase="Running") for i in range(3)]
        info = Snapshot.build([node], placed).nodes["n1"]
        assert info.requested_cpu_millis == 3000
        status = NodeResourcesFit().filter(make_pod("p4", cpu="1"), info, CycleState())
        assert status.reasons == ("Insufficient cpu",)
        fewer = Snapshot.build([node], placed[:2]).nodes["n1"]
        assert NodeResourcesFit().filter(make_pod("p4", cpu="1"), fewer, CycleState()).is_success()

    def test_terminated_pods_do_not_consume_capacity(self) -> None:
        node = make_node("n1", cpu="3")
        pods = [
            make_pod("done", cpu="1", node_name="n1", phase="Succeeded"),
            make_pod("crashed", cpu="1", node_name="n1", phase="Failed"),
            make_pod("live", cpu="1", node_name="n1", phase="Running"),
        ]
        info = Snapshot.build([node], pods).nodes["n1"]
        assert info.requested_cpu_millis == 1000
        assert info.pod_count == 1
        assert NodeResourcesFit().filter(make_pod("p", cpu="2"), info, CycleState()).is_success()

    def test_limit_without_request_counts_as_request(self) -> None:
        pod = make_pod("p")
        pod.spec.containers[0].resources.limits = {"cpu": "2", "memory": "1Gi"}
        info = NodeInfo(make_node("n1", cpu="1"))
        assert NodeResourcesFit().filter(pod, info, CycleState()).reasons == ("Insufficient cpu",)

    def test_request_wins_over_limit(self) -> None:
        pod = make_pod("p", cpu="500m")
        pod.spec.containers[0].resources.limits = {"cpu": "2"}
        info = NodeInfo(make_node("n1", cpu="1"))
        assert NodeResourcesFit().filter(pod, info, CycleState()).is_success()

    def test_pod_without_requests_fits_a_node_reporting_no_resources(self) -> None:
        info = NodeInfo(make_node("n1", cpu=None, memory=None))
        assert NodeResourcesFit().filter(make_pod("p"), info, CycleState()).is_success()
        status = NodeResourcesFit().filter(make_pod("q", cpu="1m"), info, CycleState())
        assert status.reasons == ("Insufficient cpu",)

    def test_allocatable_falls_back_to_capacity_per_resource(self) -> None:
        node = make_node("n1", cpu="1", memory=None)
        node.status.capacity = {"cpu": "8", "memory": "2Gi"}
        info = NodeInfo(node)
        assert info.allocatable_cpu_millis == 1000  # allocatable wins where present
        assert info.allocatable_memory_bytes == 2 * 1024**3


# --- NodeUnschedulable ------------------------------------------------------------------------


class TestNodeUnschedulable:
    def test_schedulable_node_passes(self) -> None:
        assert run_filter(NodeUnschedulable()).is_success()

    def test_cordoned_node_is_rejected(self) -> None:
        status = run_filter(NodeUnschedulable(), node=NodeInfo(make_node("n1", unschedulable=True)))
        assert status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
        assert status.reasons == ("node(s) were unschedulable",)

    @pytest.mark.parametrize(
        "toleration",
        [
            Toleration(
                key="node.kubernetes.io/unschedulable", operator="Exists", effect="NoSchedule"
            ),
            Toleration(key="node.kubernetes.io/unschedulable", operator="Exists"),
            Toleration(operator="Exists"),
        ],
    )
    def test_toleration_lets_pod_onto_cordoned_node(self, toleration: Toleration) -> None:
        info = NodeInfo(make_node("n1", unschedulable=True))
        assert run_filter(
            NodeUnschedulable(), make_pod("p", tolerations=[toleration]), info
        ).is_success()

    def test_toleration_for_other_effect_does_not_help(self) -> None:
        tol = Toleration(
            key="node.kubernetes.io/unschedulable", operator="Exists", effect="NoExecute"
        )
        info = NodeInfo(make_node("n1", unschedulable=True))
        assert not run_filter(
            NodeUnschedulable(), make_pod("p", tolerations=[tol]), info
        ).is_success()


# --- NodeName ---------------------------------------------------------------------------------


class TestNodeName:
    def test_pod_without_node_name_passes(self) -> None:
        assert run_filter(NodeName()).is_success()

    def test_matching_node_name_passes(self) -> None:
        assert run_filter(NodeName(), make_pod("p", node_name="n1")).is_success()

    def test_other_node_is_rejected(self) -> None:
        status = run_filter(NodeName(), make_pod("p", node_name="n2"))
        assert status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
        assert status.reasons == ("node(s) didn't match the requested node name",)


# --- NodeSelector -----------------------------------------------------------------------------


class TestNodeSelector:
    node = NodeInfo(make_node("n1", labels={"disk": "ssd", "zone": "a"}))

    def test_empty_selector_passes(self) -> None:
        assert run_filter(NodeSelector(), node=self.node).is_success()

    def test_subset_of_labels_passes(self) -> None:
        assert run_filter(
            NodeSelector(), make_pod("p", node_selector={"disk": "ssd"}), self.node
        ).is_success()

    @pytest.mark.parametrize(
        "selector", [{"disk": "hdd"}, {"gpu": "yes"}, {"disk": "ssd", "zone": "b"}]
    )
    def test_mismatch_is_rejected(self, selector: dict[str, str]) -> None:
        status = run_filter(NodeSelector(), make_pod("p", node_selector=selector), self.node)
        assert status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
        assert status.reasons == ("node(s) didn't match Pod's node affinity/selector",)


# --- TaintToleration --------------------------------------------------------------------------


def tainted(*taints: Taint) -> NodeInfo:
    return NodeInfo(make_node("n1", taints=list(taints)))


class TestTaintToleration:
    def test_untainted_node_passes(self) -> None:
        assert run_filter(TaintToleration()).is_success()

    @pytest.mark.parametrize("effect", ["NoSchedule", "NoExecute"])
    def test_untolerated_taint_is_rejected_in_kubernetes_words(self, effect: str) -> None:
        node = tainted(Taint(key="dedicated", value="gpu", effect=effect))
        status = run_filter(TaintToleration(), node=node)
        assert status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
        assert status.reasons == ("node(s) had untolerated taint {dedicated: gpu}",)

    def test_taint_without_value_prints_empty_value(self) -> None:
        status = run_filter(
            TaintToleration(), node=tainted(Taint(key="maint", effect="NoSchedule"))
        )
        assert status.reasons == ("node(s) had untolerated taint {maint: }",)

    def test_prefer_no_schedule_is_not_a_filter(self) -> None:
        node = tainted(Taint(key="soft", value="x", effect="PreferNoSchedule"))
        assert run_filter(TaintToleration(), node=node).is_success()

    def test_only_first_untolerated_taint_is_reported(self) -> None:
        node = tainted(
            Taint(key="a", value="1", effect="NoSchedule"),
            Taint(key="b", value="2", effect="NoSchedule"),
        )
        tol = Toleration(key="a", value="1", effect="NoSchedule")
        status = run_filter(TaintToleration(), make_pod("p", tolerations=[tol]), node)
        assert status.reasons == ("node(s) had untolerated taint {b: 2}",)

    def test_matching_toleration_passes(self) -> None:
        node = tainted(Taint(key="dedicated", value="gpu", effect="NoSchedule"))
        tol = Toleration(key="dedicated", operator="Equal", value="gpu", effect="NoSchedule")
        assert run_filter(TaintToleration(), make_pod("p", tolerations=[tol]), node).is_success()


@pytest.mark.parametrize(
    ("toleration", "expected"),
    [
        (Toleration(key="k", value="v", effect="NoSchedule"), True),
        (Toleration(key="k", value="v"), True),  # empty effect: every effect
        (Toleration(key="k", value="other", effect="NoSchedule"), False),
        (Toleration(key="k", value="v", effect="NoExecute"), False),
        (Toleration(key="other", operator="Exists"), False),
        (Toleration(key="k", operator="Exists"), True),
        (Toleration(operator="Exists"), True),  # empty key + Exists: every taint
        (Toleration(operator="Exists", effect="NoExecute"), False),
    ],
)
def test_tolerates_follows_kubernetes_rules(toleration: Toleration, expected: bool) -> None:
    assert tolerates(toleration, Taint(key="k", value="v", effect="NoSchedule")) is expected


# --- NodeReady --------------------------------------------------------------------------------


class TestNodeReady:
    def test_ready_node_passes(self) -> None:
        assert run_filter(NodeReady()).is_success()

    @pytest.mark.parametrize(
        ("ready", "key"),
        [
            ("False", "node.kubernetes.io/not-ready"),
            (None, "node.kubernetes.io/not-ready"),
            ("Unknown", "node.kubernetes.io/unreachable"),
        ],
    )
    def test_unready_node_is_rejected_as_if_tainted(self, ready: str | None, key: str) -> None:
        status = run_filter(NodeReady(), node=NodeInfo(make_node("n1", ready=ready)))
        assert status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
        assert status.reasons == (f"node(s) had untolerated taint {{{key}: }}",)

    def test_pod_tolerating_not_ready_may_land(self) -> None:
        tol = Toleration(key="node.kubernetes.io/not-ready", operator="Exists", effect="NoSchedule")
        info = NodeInfo(make_node("n1", ready="False"))
        assert run_filter(NodeReady(), make_pod("p", tolerations=[tol]), info).is_success()

    def test_no_execute_toleration_does_not_cover_the_no_schedule_taint(self) -> None:
        tol = Toleration(key="node.kubernetes.io/not-ready", operator="Exists", effect="NoExecute")
        info = NodeInfo(make_node("n1", ready="False"))
        assert not run_filter(NodeReady(), make_pod("p", tolerations=[tol]), info).is_success()

    def test_real_taint_is_left_to_taint_toleration(self) -> None:
        taint = Taint(key="node.kubernetes.io/not-ready", effect="NoSchedule")
        info = NodeInfo(make_node("n1", ready="False", taints=[taint]))
        assert run_filter(NodeReady(), node=info).is_success()
        assert not run_filter(TaintToleration(), node=info).is_success()

    def test_other_conditions_do_not_matter(self) -> None:
        node = make_node("n1")
        node.status.conditions.append(Condition(type="MemoryPressure", status="True"))
        assert run_filter(NodeReady(), node=NodeInfo(node)).is_success()


# --- LeastAllocated ---------------------------------------------------------------------------


class TestLeastAllocated:
    def test_kubernetes_formula(self) -> None:
        # After placing: cpu 1/4 used -> 75, memory 4Gi/8Gi used -> 50; average 62 (integer).
        info = NodeInfo(make_node("n1", cpu="4", memory="8Gi"))
        score = LeastAllocated().score(make_pod("p", cpu="1", memory="4Gi"), info, CycleState())
        assert score == (75 + 50) // 2

    def test_prefers_the_emptier_node(self) -> None:
        pod = make_pod("p", cpu="500m", memory="512Mi")
        busy = NodeInfo(make_node("busy"), [make_pod("x", cpu="3", memory="6Gi", node_name="busy")])
        idle = NodeInfo(make_node("idle"))
        plugin = LeastAllocated()
        assert plugin.score(pod, idle, CycleState()) > plugin.score(pod, busy, CycleState())

    def test_request_less_pods_count_a_default_so_they_spread(self) -> None:
        pod = make_pod("p")
        empty = NodeInfo(make_node("a"))
        one = NodeInfo(make_node("b"), [make_pod("x", node_name="b")])
        plugin = LeastAllocated()
        assert plugin.score(pod, empty, CycleState()) > plugin.score(pod, one, CycleState())

    def test_weights(self) -> None:
        info = NodeInfo(make_node("n1", cpu="4", memory="8Gi"))
        pod = make_pod("p", cpu="1", memory="4Gi")
        assert LeastAllocated(cpu_weight=1, memory_weight=0).score(pod, info, CycleState()) == 75
        assert (
            LeastAllocated(cpu_weight=1, memory_weight=3).score(pod, info, CycleState())
            == (75 + 150) // 4
        )
        with pytest.raises(ValueError):
            LeastAllocated(cpu_weight=0, memory_weight=0)

    @pytest.mark.parametrize(
        ("requested", "allocatable", "score"),
        [(0, 1000, 100), (250, 1000, 75), (1000, 1000, 0), (1500, 1000, 0), (10, 0, 0), (1, 3, 66)],
    )
    def test_least_requested_score(self, requested: int, allocatable: int, score: int) -> None:
        assert least_requested_score(requested, allocatable) == score
