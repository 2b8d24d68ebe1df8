"""The scheduling framework: pure placement logic over an immutable snapshot.

This follows the Kubernetes scheduler framework (plugins with one method per extension point,
"does not fit" returned as a ``Status``) and Nomad's split between a pure scheduler and the code
that commits its decision. Nothing here does I/O: the runner (``shoal.scheduler._runner``) builds
a ``Snapshot`` from its informer caches, calls ``Framework.schedule`` and binds the result, so
every placement decision can be tested with plain objects and no server.

A scheduling cycle for one pod:

1. every filter plugin runs against every node, in order, stopping at the first that rejects the
   node (as Kubernetes does, so a node contributes the reasons of one plugin only);
2. the nodes that passed are scored by every score plugin, times the plugin's weight;
3. the highest total wins; ties go to the node with fewer pods, then to the smaller name, which
   spreads equal pods deterministically.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from shoal.api import Node, Pod, cpu_millis, memory_bytes, parse_quantity

__all__ = [
    "DEFAULT_CPU_REQUEST_MILLIS",
    "DEFAULT_MEMORY_REQUEST_BYTES",
    "MAX_NODE_SCORE",
    "NO_NODES_MESSAGE",
    "Code",
    "CycleState",
    "FilterPlugin",
    "Framework",
    "NodeInfo",
    "Resources",
    "ScheduleResult",
    "ScorePlugin",
    "Snapshot",
    "Status",
    "WeightedScorer",
    "default_framework",
    "pod_non_zero_requests",
    "pod_requests",
]

MAX_NODE_SCORE = 100
"""The best score a plugin may give a node (Kubernetes' ``framework.MaxNodeScore``)."""

DEFAULT_CPU_REQUEST_MILLIS = 100
"""CPU a container without a request is counted as *for scoring only* (Kubernetes'
``DefaultMilliCPURequest``), so that many request-less pods still spread across nodes."""

DEFAULT_MEMORY_REQUEST_BYTES = 200 * 1024 * 1024
"""Memory counted for a container without a request, for scoring only (``DefaultMemoryRequest``)."""

NO_NODES_MESSAGE = "no nodes available to schedule pods"
"""What Kubernetes reports (``ErrNoNodesAvailable``) when the cluster has no nodes at all."""

_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


# --- Status -----------------------------------------------------------------------------------


class Code(Enum):
    """Outcome of one plugin on one node (Kubernetes' ``framework.Code``, the parts we use)."""

    SUCCESS = "Success"
    UNSCHEDULABLE = "Unschedulable"
    """The node does not fit now, but could once other pods go away (e.g. resources)."""
    UNSCHEDULABLE_AND_UNRESOLVABLE = "UnschedulableAndUnresolvable"
    """The node cannot fit the pod whatever happens to other pods (selector, taints)."""
    ERROR = "Error"
    """The plugin itself failed; the whole cycle is abandoned and retried later."""


@dataclass(frozen=True)
class Status:
    """A plugin's verdict. Reasons are the user-facing strings ``shoal describe pod`` shows."""

    code: Code = Code.SUCCESS
    reasons: tuple[str, ...] = ()
    plugin: str = ""

    def is_success(self) -> bool:
        return self.code is Code.SUCCESS

    def message(self) -> str:
        return ", ".join(self.reasons)

    @classmethod
    def success(cls, plugin: str = "") -> Status:
        return cls(Code.SUCCESS, (), plugin)

    @classmethod
    def unschedulable(cls, *reasons: str, plugin: str = "", resolvable: bool = True) -> Status:
        """A rejection; ``resolvable=False`` when no eviction could ever make the node fit."""
        code = Code.UNSCHEDULABLE if resolvable else Code.UNSCHEDULABLE_AND_UNRESOLVABLE
        return cls(code, tuple(reasons), plugin)

    @classmethod
    def error(cls, reason: str, plugin: str = "") -> Status:
        return cls(Code.ERROR, (reason,), plugin)


# --- Resources and node info ------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    """The two resources the scheduler accounts for, in integer base units."""

    cpu_millis: int = 0
    memory_bytes: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis + other.cpu_millis, self.memory_bytes + other.memory_bytes)


def _container_request(pod: Pod, non_zero: bool) -> Resources:
    total = Resources()
    for c in pod.spec.containers:
        # The API server does not copy limits into missing requests the way Kubernetes'
        # defaulting does, so it is done here: a limit alone is also the request.
        res = c.resources
        cpu = res.requests.get("cpu", res.limits.get("cpu"))
        mem = res.requests.get("memory", res.limits.get("memory"))
        cpu_m = cpu_millis(cpu) if cpu is not None else None
        mem_b = memory_bytes(mem) if mem is not None else None
        if non_zero:
            cpu_m = DEFAULT_CPU_REQUEST_MILLIS if cpu_m is None else cpu_m
            mem_b = DEFAULT_MEMORY_REQUEST_BYTES if mem_b is None else mem_b
        total += Resources(cpu_m or 0, mem_b or 0)
    return total


def pod_requests(pod: Pod) -> Resources:
    """What the pod reserves on its node: the sum of its containers' requests."""
    return _container_request(pod, non_zero=False)


def pod_non_zero_requests(pod: Pod) -> Resources:
    """Requests with defaults for unset ones; used by scoring only, never by fitting."""
    return _container_request(pod, non_zero=True)


def _node_quantity(node: Node, key: str) -> str | int | float | None:
    status = node.status
    return status.allocatable.get(key, status.capacity.get(key))


class NodeInfo:
    """A node plus the pods assigned to it and what they reserve, for one scheduling cycle.

    Allocatable comes from ``status.allocatable``, falling back per resource to
    ``status.capacity``. A node that reports no cpu or memory has none to give (as in
    Kubernetes); a node that reports no ``pods`` limit has no pod-count limit.
    """

    def __init__(self, node: Node, pods: Iterable[Pod] = ()) -> None:
        self.node = node
        self.pods: list[Pod] = []
        self.requested = Resources()
        self.non_zero_requested = Resources()
        cpu = _node_quantity(node, "cpu")
        mem = _node_quantity(node, "memory")
        pods_q = _node_quantity(node, "pods")
        self.allocatable = Resources(
            cpu_millis(cpu) if cpu is not None else 0,
            memory_bytes(mem) if mem is not None else 0,
        )
        self.allocatable_pods: int | None = (
            int(parse_quantity(pods_q)) if pods_q is not None else None
        )
        for pod in pods:
            self.add_pod(pod)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def pod_count(self) -> int:
        return len(self.pods)

    @property
    def requested_cpu_millis(self) -> int:
        return self.requested.cpu_millis

    @property
    def requested_memory_bytes(self) -> int:
        return self.requested.memory_bytes

    @property
    def allocatable_cpu_millis(self) -> int:
        return self.allocatable.cpu_millis

    @property
    def allocatable_memory_bytes(self) -> int:
        return self.allocatable.memory_bytes

    def add_pod(self, pod: Pod) -> None:
        """Count ``pod`` against this node. Only ``Snapshot.build`` should call this."""
        self.pods.append(pod)
        self.requested += pod_requests(pod)
        self.non_zero_requested += pod_non_zero_requests(pod)

    def __repr__(self) -> str:
        return (
            f"NodeInfo({self.name!r}, pods={self.pod_count}, "
            f"requested={self.requested}, allocatable={self.allocatable})"
        )


class Snapshot:
    """The cluster as one scheduling cycle sees it: node name -> ``NodeInfo``, sorted by name.

    Treat it as read-only once built; plugins get ``NodeInfo`` objects out of it and must
    not change them.
    """

    def __init__(self, node_infos: Iterable[NodeInfo] = ()) -> None:
        self.nodes: dict[str, NodeInfo] = {
            ni.name: ni for ni in sorted(node_infos, key=lambda ni: ni.name)
        }

    @classmethod
    def build(cls, nodes: Iterable[Node], pods: Iterable[Pod]) -> Snapshot:
        """Assign every pod that has ``spec.nodeName`` to that node's ``NodeInfo``.

        Pods that have finished (Succeeded/Failed) hold no resources and are skipped; pods
        bound to a node that is not in ``nodes`` are ignored. A pod listed twice (same
        namespace/name) is counted once, the later copy winning, so callers may append
        "assumed" copies of pods they have just bound.
        """
        infos = {n.name: NodeInfo(n) for n in nodes}
        latest: dict[str, Pod] = {}
        for pod in pods:
            latest[pod.key] = pod
        for pod in latest.values():
            node_name = pod.spec.node_name
            if not node_name or pod.status.phase in _TERMINAL_PHASES:
                continue
            info = infos.get(node_name)
            if info is not None:
                info.add_pod(pod)
        return cls(infos.values())

    def get(self, name: str) -> NodeInfo | None:
        return self.nodes.get(name)

    def list(self) -> list[NodeInfo]:
        return list(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[NodeInfo]:
        return iter(self.nodes.values())


class CycleState(dict[str, Any]):
    """Scratch space shared by the plugins during one pod's cycle, thrown away after it.

    A plugin that computes something per pod (not per node) can store it here under its own
    name on the first node and reuse it on the others.
    """


# --- Plugins ----------------------------------------------------------------------------------


@runtime_checkable
class FilterPlugin(Protocol):
    """Decides whether a pod may run on a node. Rejection is a ``Status``, never an exception."""

    @property
    def name(self) -> str: ...

    def filter(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> Status: ...


@runtime_checkable
class ScorePlugin(Protocol):
    """Ranks a node that passed every filter: 0 (worst) to ``MAX_NODE_SCORE`` (best)."""

    @property
    def name(self) -> str: ...

    def score(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> int: ...


# --- Framework --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleResult:
    """The outcome of one cycle: the chosen node (or None) and why.

    ``statuses`` holds the filter verdict for every node (success included); ``scores`` the
    weighted total for every node that passed. ``error`` is set when a plugin failed, in which
    case nothing was chosen and the pod should be retried rather than reported unschedulable.
    """

    node_name: str | None
    num_nodes: int
    statuses: Mapping[str, Status] = field(default_factory=dict)
    scores: Mapping[str, int] = field(default_factory=dict)
    error: Status | None = None

    @property
    def scheduled(self) -> bool:
        return self.node_name is not None

    def message(self) -> str:
        """Why the pod was not placed, worded exactly like Kubernetes' ``FitError.Error``.

        ``"0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector,
        2 Insufficient cpu."`` — each rejected node contributes each reason of its status; the
        "<count> <reason>" entries are sorted as strings, as the real scheduler sorts them.
        Empty when a node was chosen.
        """
        if self.node_name is not None:
            return ""
        if self.error is not None:
            return self.error.message()
        if self.num_nodes == 0:
            return NO_NODES_MESSAGE
        counts: Counter[str] = Counter()
        for status in self.statuses.values():
            if not status.is_success():
                counts.update(status.reasons)
        msg = f"0/{self.num_nodes} nodes are available:"
        histogram = sorted(f"{n} {reason}" for reason, n in counts.items())
        if histogram:
            msg += f" {', '.join(histogram)}."
        return msg


WeightedScorer = tuple[ScorePlugin, int]


class Framework:
    """An ordered list of filters and weighted scorers; ``schedule`` runs one cycle.

    Filters run in the order given, cheapest and most decisive first, because a node is
    reported with the reasons of the first filter that rejects it.
    """

    def __init__(
        self, filters: Sequence[FilterPlugin], scorers: Sequence[WeightedScorer] = ()
    ) -> None:
        for _, weight in scorers:
            if weight < 0:
                raise ValueError(f"score plugin weights must be >= 0, got {weight}")
        self.filters: tuple[FilterPlugin, ...] = tuple(filters)
        self.scorers: tuple[WeightedScorer, ...] = tuple(scorers)

    def run_filters(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> Status:
        """The first non-success verdict on this node, or success if every filter passes."""
        for plugin in self.filters:
            try:
                status = plugin.filter(pod, node_info, state)
            except Exception as exc:  # a plugin bug must not kill the scheduler loop
                return Status.error(f"running {plugin.name} filter: {exc!r}", plugin.name)
            if not status.is_success():
                if not status.plugin:
                    status = Status(status.code, status.reasons, plugin.name)
                return status
        return Status.success()

    def run_scorers(self, pod: Pod, node_info: NodeInfo, state: CycleState) -> int | Status:
        """The weighted total score of one feasible node, or an error ``Status``."""
        total = 0
        for plugin, weight in self.scorers:
            try:
                score = plugin.score(pod, node_info, state)
            except Exception as exc:
                return Status.error(f"running {plugin.name} score: {exc!r}", plugin.name)
            if not 0 <= score <= MAX_NODE_SCORE:
                return Status.error(
                    f"plugin {plugin.name} returned an invalid score {score} for node "
                    f"{node_info.name}, want 0..{MAX_NODE_SCORE}",
                    plugin.name,
                )
            total += score * weight
        return total

    def schedule(self, pod: Pod, snapshot: Snapshot) -> ScheduleResult:
        """Pick a node for ``pod`` in ``snapshot``. Never raises for a pod that does not fit."""
        state = CycleState()
        statuses: dict[str, Status] = {}
        feasible: list[NodeInfo] = []
        for info in snapshot:
            status = self.run_filters(pod, info, state)
            statuses[info.name] = status
            if status.code is Code.ERROR:
                return ScheduleResult(None, len(snapshot), statuses, {}, status)
            if status.is_success():
                feasible.append(info)
        scores: dict[str, int] = {}
        for info in feasible:
            result = self.run_scorers(pod, info, state)
            if isinstance(result, Status):
                return ScheduleResult(None, len(snapshot), statuses, scores, result)
            scores[info.name] = result
        if not feasible:
            return ScheduleResult(None, len(snapshot), statuses, scores)
        best = min(feasible, key=lambda ni: (-scores[ni.name], ni.pod_count, ni.name))
        return ScheduleResult(best.name, len(snapshot), statuses, scores)


def default_framework() -> Framework:
    """The plugin set ``shoal`` runs with, in Kubernetes' default filter order."""
    # Imported here because the plugins import this module for Status and NodeInfo.
    from shoal.scheduler.plugins import (
        LeastAllocated,
        NodeName,
        NodeReady,
        NodeResourcesFit,
        NodeSelector,
        NodeUnschedulable,
        TaintToleration,
    )

    return Framework(
        filters=[
            NodeUnschedulable(),
            NodeName(),
            TaintToleration(),
            NodeReady(),
            NodeSelector(),
            NodeResourcesFit(),
        ],
        scorers=[(LeastAllocated(), 1)],
    )
