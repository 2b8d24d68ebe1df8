"""Resource plugins: NodeResourcesFit (filter) and LeastAllocated (score)."""

from __future__ import annotations

from shoal.api import Pod
from shoal.scheduler.framework import (
    MAX_NODE_SCORE,
    CycleState,
    NodeInfo,
    Resources,
    Status,
    pod_non_zero_requests,
    pod_requests,
)

_REQUESTS_KEY = "NodeResourcesFit/requests"
_NON_ZERO_KEY = "LeastAllocated/requests"


def _cached_requests(pod: Pod, state: CycleState, key: str, non_zero: bool) -> Resources:
    """The pod's requests, computed once per cycle rather than once per node."""
    cached = state.get(key)
    if isinstance(cached, Resources):
        return cached
    value = pod_non_zero_requests(pod) if non_zero else pod_requests(pod)
    state[key] = value
    return value


class NodeResourcesFit:
    """Rejects a node when the pod's requests exceed what is left of its allocatable
    resources, or when the node already runs as many pods as it allows.

    Like Kubernetes, a resource the pod does not request is not checked, and every shortage
    is reported, in the order pods, cpu, memory.
    """

    name = "NodeResourcesFit"

    def filter(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> Status:
        reasons: list[str] = []
        limit = node_info.allocatable_pods
        if limit is not None and node_info.pod_count + 1 > limit:
            reasons.append("Too many pods")
        want = _cached_requests(pod, state, _REQUESTS_KEY, non_zero=False)
        free_cpu = node_info.allocatable.cpu_millis - node_info.requested.cpu_millis
        free_mem = node_info.allocatable.memory_bytes - node_info.requested.memory_bytes
        if want.cpu_millis > 0 and want.cpu_millis > free_cpu:
            reasons.append("Insufficient cpu")
        if want.memory_bytes > 0 and want.memory_bytes > free_mem:
            reasons.append("Insufficient memory")
        if reasons:
            return Status.unschedulable(*reasons, plugin=self.name)
        return Status.success(self.name)


def least_requested_score(requested: int, allocatable: int) -> int:
    """Kubernetes' ``leastRequestedScore``: the free share after placing, 0..100, integer."""
    if allocatable <= 0 or requested > allocatable:
        return 0
    return (allocatable - requested) * MAX_NODE_SCORE // allocatable


class LeastAllocated:
    """Prefers the node with the most room left once the pod is placed, so load spreads.

    Kubernetes' NodeResourcesFit ``LeastAllocated`` strategy: per resource
    ``(allocatable - requested) * 100 / allocatable``, where requested includes this pod and
    counts request-less containers at a small default (100m cpu, 200Mi memory) so that empty
    pods still spread; then the weighted average (equal weights by default).
    """

    name = "LeastAllocated"

    def __init__(self, cpu_weight: int = 1, memory_weight: int = 1) -> None:
        if cpu_weight < 0 or memory_weight < 0 or cpu_weight + memory_weight == 0:
            raise ValueError("LeastAllocated weights must be >= 0 and not both 0")
        self.cpu_weight = cpu_weight
        self.memory_weight = memory_weight

    def score(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> int:
        want = _cached_requests(pod, state, _NON_ZERO_KEY, non_zero=True)
        after = node_info.non_zero_requested + want
        cpu = least_requested_score(after.cpu_millis, node_info.allocatable.cpu_millis)
        mem = least_requested_score(after.memory_bytes, node_info.allocatable.memory_bytes)
        total = cpu * self.cpu_weight + mem * self.memory_weight
        return total // (self.cpu_weight + self.memory_weight)
