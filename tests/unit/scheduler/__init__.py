"""Scheduler unit tests. The factories below build the few objects every test needs."""

from __future__ import annotations

from shoal.api import (
    Condition,
    Container,
    Node,
    NodeSpec,
    NodeStatus,
    ObjectMeta,
    Pod,
    PodPhase,
    PodSpec,
    PodStatus,
    ResourceRequirements,
    Taint,
    Toleration,
)


def make_node(
    name: str,
    *,
    cpu: str | None = "4",
    memory: str | None = "8Gi",
    pods: int | None = 110,
    labels: dict[str, str] | None = None,
    taints: list[Taint] | None = None,
    unschedulable: bool = False,
    ready: str | None = "True",
) -> Node:
    """A Ready node reporting ``cpu``/``memory``/``pods`` as allocatable (None leaves it out)."""
    allocatable: dict[str, str | int | float] = {}
    if cpu is not None:
        allocatable["cpu"] = cpu
    if memory is not None:
        allocatable["memory"] = memory
    if pods is not None:
        allocatable["pods"] = str(pods)
    conditions = [] if ready is None else [Condition(type="Ready", status=ready)]
    return Node(
        metadata=ObjectMeta(name=name, labels=labels or {}),
        spec=NodeSpec(unschedulable=unschedulable, taints=taints or []),
        status=NodeStatus(allocatable=allocatable, conditions=conditions),
    )


def make_pod(
    name: str,
    *,
    cpu: str | None = None,
    memory: str | None = None,
    node_name: str | None = None,
    phase: PodPhase = "Pending",
    node_selector: dict[str, str] | None = None,
    tolerations: list[Toleration] | None = None,
    namespace: str = "default",
) -> Pod:
    """A one-container pod requesting ``cpu``/``memory`` (None: no request)."""
    requests: dict[str, str | int | float] = {}
    if cpu is not None:
        requests["cpu"] = cpu
    if memory is not None:
        requests["memory"] = memory
    return Pod(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=PodSpec(
            containers=[
                Container(
                    name="c", image="busybox", resources=ResourceRequirements(requests=requests)
                )
            ],
            node_name=node_name,
            node_selector=node_selector or {},
            tolerations=tolerations or [],
        ),
        status=PodStatus(phase=phase),
    )
