"""Controllers against a real API server (``shoal.testing.running_api_server``).

There is no scheduler or node agent in these tests: ``FakeAgent`` plays the node side by
writing pod status through the client, exactly as an agent would (Running, Ready, podIP,
reported host ports). The server is real; nothing of it is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from shoal._util import format_time
from shoal.api import (
    Condition,
    Container,
    ContainerPort,
    ContainerState,
    ContainerStateRunning,
    ContainerStatus,
    Deployment,
    DeploymentSpec,
    DeploymentStrategy,
    LabelSelector,
    ObjectMeta,
    Pod,
    PodSpec,
    PodTemplateSpec,
    ReplicaSet,
    ReplicaSetSpec,
    RollingUpdateDeployment,
    get_condition,
)
from shoal.client import Client
from shoal.controllers import ControllerManager
from shoal.errors import ConflictError, NotFoundError
from shoal.testing import RunningAPIServer, running_api_server

T = TypeVar("T")


@dataclass
class Cluster:
    server: RunningAPIServer
    client: Client
    manager: ControllerManager
    agent: FakeAgent


@contextlib.asynccontextmanager
async def cluster(**manager_options: Any) -> AsyncIterator[Cluster]:
    """A real API server, a client and a running ControllerManager."""
    async with running_api_server() as srv, Client(srv.url, timeout=10) as client:
        manager = ControllerManager(client, **manager_options)
        task = asyncio.create_task(manager.run())
        try:
            await manager.wait_synced(10)
            yield Cluster(srv, client, manager, FakeAgent(client))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert task.done()


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Poll ``check`` until it returns something truthy; fail with the last value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = await check()
        except AssertionError as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {last!r}")
        await asyncio.sleep(interval)


def template(
    image: str = "web:1",
    labels: dict[str, str] | None = None,
    ports: list[ContainerPort] | None = None,
) -> PodTemplateSpec:
    return PodTemplateSpec(
        metadata=ObjectMeta(labels=labels or {"app": "web"}),
        spec=PodSpec(containers=[Container(name="web", image=image, ports=ports or [])]),
    )


def replicaset(name: str, replicas: int, labels: dict[str, str] | None = None) -> ReplicaSet:
    labels = labels or {"app": name}
    return ReplicaSet(
        metadata=ObjectMeta(name=name, namespace="default"),
        spec=ReplicaSetSpec(
            replicas=replicas,
            selector=LabelSelector(match_labels=labels),
            template=template(labels=labels),
        ),
    )


def deployment(
    name: str = "web",
    replicas: int = 3,
    image: str = "web:1",
    *,
    strategy: str = "RollingUpdate",
    max_surge: int | str = "25%",
    max_unavailable: int | str = "25%",
    history: int = 10,
) -> Deployment:
    labels = {"app": name}
    strat = (
        DeploymentStrategy(
            type="RollingUpdate",
            rolling_update=RollingUpdateDeployment(
                max_surge=max_surge, max_unavailable=max_unavailable
            ),
        )
        if strategy == "RollingUpdate"
        else DeploymentStrategy(type="Recreate")
    )
    return Deployment(
        metadata=ObjectMeta(name=name, namespace="default"),
        spec=DeploymentSpec(
            replicas=replicas,
            selector=LabelSelector(match_labels=labels),
            template=template(image, labels),
            strategy=strat,
            revision_history_limit=history,
        ),
    )


def is_ready(pod: Pod) -> bool:
    cond = get_condition(pod.status.conditions, "Ready")
    return cond is not None and cond.status == "True"


def live(pods: list[Pod]) -> list[Pod]:
    """Pods that are not terminating."""
    return [p for p in pods if p.metadata.deletion_timestamp is None]


class FakeAgent:
    """Writes pod status the way a node agent does. Test harness, not a mock."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def set_status(
        self,
        name: str,
        *,
        ready: bool = True,
        ip: str = "127.0.0.1",
        host_ports: dict[int, int] | None = None,
        phase: str = "Running",
        namespace: str = "default",
    ) -> Pod:
        """Report ``name`` as ``phase`` with Ready=``ready``, ``ip`` and the given
        containerPort -> hostPort mapping. Retries lost compare-and-swaps."""
        for _ in range(20):
            pod = await self.client.pods.get(name, namespace)
            now = format_time(time.time())
            status = pod.status.model_copy(deep=True)
            status.phase = phase  # type: ignore[assignment]
            status.pod_ip = ip
            status.host_ip = ip
            status.start_time = status.start_time or now
            conds = [c for c in status.conditions if c.type != "Ready"]
            old = get_condition(status.conditions, "Ready")
            want = "True" if ready else "False"
            since = old.last_transition_time if old is not None and old.status == want else now
            conds.append(Condition(type="Ready", status=want, last_transition_time=since))
            status.conditions = conds
            status.container_statuses = [
                ContainerStatus(
                    name=c.name,
                    ready=ready,
                    started=True,
                    image=c.image or "",
                    state=ContainerState(running=ContainerStateRunning(started_at=now)),
                    ports=[
                        ContainerPort(container_port=cp, host_port=hp)
                        for cp, hp in (host_ports or {}).items()
                    ],
                )
                for c in pod.spec.containers
            ]
            try:
                return await self.client.pods.update_status(
                    pod.model_copy(update={"status": status})
                )
            except ConflictError:
                continue
        raise AssertionError(f"could not write the status of pod {name}")

    async def ready_all(self, label_selector: str, **kwargs: Any) -> list[Pod]:
        """Mark every live, not yet Ready pod matching ``label_selector`` Ready."""
        done = []
        for pod in live(await self.client.pods.list("default", label_selector)):
            if not is_ready(pod):
                with contextlib.suppress(NotFoundError):
                    done.append(await self.set_status(pod.metadata.name, **kwargs))
        return done
