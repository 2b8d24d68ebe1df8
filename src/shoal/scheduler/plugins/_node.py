"""Filters on a node's identity and labels: NodeUnschedulable, NodeName, NodeSelector."""

from __future__ import annotations

from shoal.api import Pod, Selector, Taint
from shoal.scheduler.framework import CycleState, NodeInfo, Status
from shoal.scheduler.plugins._taints import tolerated

TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
"""The taint key a pod tolerates to be placed on a cordoned node (as DaemonSet pods do)."""


class NodeUnschedulable:
    """Rejects cordoned nodes (``spec.unschedulable``) unless the pod tolerates
    ``node.kubernetes.io/unschedulable:NoSchedule``."""

    name = "NodeUnschedulable"
    reason = "node(s) were unschedulable"

    def filter(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> Status:
        if not node_info.node.spec.unschedulable:
            return Status.success(self.name)
        taint = Taint(key=TAINT_UNSCHEDULABLE, effect="NoSchedule")
        if tolerated(pod.spec.tolerations, taint):
            return Status.success(self.name)
        return Status.unschedulable(self.reason, plugin=self.name, resolvable=False)


class NodeName:
    """Keeps a pod that names its node (``spec.nodeName``) to that node only.

    The runner never queues such pods; this matters when the framework is asked directly
    whether a pinned pod would fit, e.g. by tests or a future preemption step.
    """

    name = "NodeName"
    reason = "node(s) didn't match the requested node name"

    def filter(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> Status:
        wanted = pod.spec.node_name
        if not wanted or wanted == node_info.name:
            return Status.success(self.name)
        return Status.unschedulable(self.reason, plugin=self.name, resolvable=False)


class NodeSelector:
    """Requires every ``spec.nodeSelector`` label to be on the node with the same value.

    Named after what shoal supports; the reason text is Kubernetes' NodeAffinity plugin's,
    which also judges nodeSelector.
    """

    name = "NodeSelector"
    reason = "node(s) didn't match Pod's node affinity/selector"

    def filter(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> Status:
        wanted = pod.spec.node_selector
        if not wanted or Selector.from_labels(wanted).matches(node_info.node.metadata.labels):
            return Status.success(self.name)
        return Status.unschedulable(self.reason, plugin=self.name, resolvable=False)
