"""Taint-based filters: TaintToleration, and NodeReady, which acts as the not-ready taint."""

from __future__ import annotations

from collections.abc import Iterable

from shoal.api import Pod, Taint, Toleration, get_condition
from shoal.scheduler.framework import CycleState, NodeInfo, Status

TAINT_NOT_READY = "node.kubernetes.io/not-ready"
"""Kubernetes puts this NoSchedule taint on a node whose Ready condition is False."""
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
"""Kubernetes puts this NoSchedule taint on a node whose Ready condition is Unknown."""

_FILTERED_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


def tolerates(toleration: Toleration, taint: Taint) -> bool:
    """Kubernetes' ``Toleration.ToleratesTaint``: an empty key with Exists matches any taint,
    an empty effect matches every effect."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator == "Exists":
        return True
    return (toleration.value or "") == (taint.value or "")


def tolerated(tolerations: Iterable[Toleration], taint: Taint) -> bool:
    return any(tolerates(t, taint) for t in tolerations)


def untolerated_taint_reason(taint: Taint) -> str:
    """The reason text the Kubernetes TaintToleration plugin uses, e.g.
    ``node(s) had untolerated taint {dedicated: gpu}``."""
    return f"node(s) had untolerated taint {{{taint.key}: {taint.value or ''}}}"


class TaintToleration:
    """Rejects nodes with a NoSchedule or NoExecute taint the pod does not tolerate.

    PreferNoSchedule taints are a scoring matter and are ignored here. Only the first
    untolerated taint is reported, as Kubernetes does.
    """

    name = "TaintToleration"

    def filter(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> Status:
        for taint in node_info.node.spec.taints:
            if taint.effect in _FILTERED_EFFECTS and not tolerated(pod.spec.tolerations, taint):
                return Status.unschedulable(
                    untolerated_taint_reason(taint), plugin=self.name, resolvable=False
                )
        return Status.success(self.name)


class NodeReady:
    """Rejects nodes that are not Ready, unless the pod tolerates it.

    Kubernetes does this indirectly: the node lifecycle controller taints such nodes with
    ``node.kubernetes.io/not-ready`` (Ready=False) or ``node.kubernetes.io/unreachable``
    (Ready=Unknown), and TaintToleration rejects them. shoal's agents report the condition but
    nothing adds the taint, so this plugin behaves as if it were there — same reason text, and
    a pod with a matching toleration may still land on the node. A node with no Ready
    condition yet is treated as not-ready, like a freshly registered kubelet. If the node does
    carry the real taint, TaintToleration already judges it and this plugin stays out.
    """

    name = "NodeReady"

    def filter(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> Status:
        node = node_info.node
        ready = get_condition(node.status.conditions, "Ready")
        if ready is not None and ready.status == "True":
            return Status.success(self.name)
        key = (
            TAINT_UNREACHABLE
            if ready is not None and ready.status == "Unknown"
            else TAINT_NOT_READY
        )
        if any(t.key == key for t in node.spec.taints):
            return Status.success(self.name)
        taint = Taint(key=key, effect="NoSchedule")
        if tolerated(pod.spec.tolerations, taint):
            return Status.success(self.name)
        return Status.unschedulable(
            untolerated_taint_reason(taint), plugin=self.name, resolvable=False
        )
