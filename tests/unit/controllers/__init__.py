"""Unit tests of the controllers' pure parts. Factories for the objects they need."""

from __future__ import annotations

from shoal._util import format_time
from shoal.api import (
    Condition,
    Container,
    ContainerPort,
    ContainerStatus,
    ObjectMeta,
    Pod,
    PodPhase,
    PodSpec,
    PodStatus,
)

T0 = 1_700_000_000.0


def make_pod(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    node: str | None = None,
    phase: PodPhase = "Running",
    ready: bool | None = True,
    ready_at: float | None = T0,
    created: float | None = T0,
    restarts: int = 0,
    ip: str | None = None,
    ports: list[ContainerPort] | None = None,
    host_ports: dict[int, int] | None = None,
    uid: str | None = None,
    deleting: bool = False,
) -> Pod:
    """A one-container pod. ``ready`` None leaves the Ready condition out; ``host_ports``
    maps containerPort -> hostPort as the process driver reports them."""
    conditions = []
    if ready is not None:
        conditions.append(
            Condition(
                type="Ready",
                status="True" if ready else "False",
                last_transition_time=format_time(ready_at) if ready_at is not None else None,
            )
        )
    statuses = [
        ContainerStatus(
            name="main",
            ready=bool(ready),
            restart_count=restarts,
            ports=[
                ContainerPort(container_port=c, host_port=h) for c, h in (host_ports or {}).items()
            ],
        )
    ]
    return Pod(
        metadata=ObjectMeta(
            name=name,
            namespace="default",
            uid=uid or f"uid-{name}",
            labels=labels or {},
            creation_timestamp=format_time(created) if created is not None else None,
            deletion_timestamp=format_time(T0) if deleting else None,
        ),
        spec=PodSpec(
            containers=[Container(name="main", image="app", ports=ports or [])],
            node_name=node,
        ),
        status=PodStatus(
            phase=phase, conditions=conditions, container_statuses=statuses, pod_ip=ip
        ),
    )
