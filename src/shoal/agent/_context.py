"""What every pod worker shares with the agent, and how a runtime exit reads as a
Kubernetes termination."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from shoal._util import Clock
from shoal.agent._config import AgentConfig
from shoal.agent._images import ImagePuller
from shoal.agent._network import NodeNetwork
from shoal.agent._reporter import StatusReporter
from shoal.agent._status import UNKNOWN_EXIT_CODE, Termination
from shoal.agent._volumes import PodVolumes
from shoal.api import Pod
from shoal.client import Client
from shoal.runtime import ContainerStatus as RuntimeStatus
from shoal.runtime import Driver

EventSink = Callable[[Pod, str, str, str], None]
"""(pod, reason, message, type) -> records an Event in the background."""


@dataclass
class WorkerContext:
    """What every pod worker shares with the agent."""

    config: AgentConfig
    driver: Driver
    client: Client
    reporter: StatusReporter
    clock: Clock
    http: httpx.AsyncClient
    """For httpGet probes (one connection pool for all of them)."""
    emit: EventSink
    remove_logs: Callable[[str], None]
    resync_interval: float = 5.0
    """Longest sleep between syncs; also how often a driver without exit hooks is polled."""
    images: ImagePuller | None = None
    """Where images come from, for drivers that run images (None: the driver ignores
    ``image``, as the process driver does, and nothing is pulled)."""
    volumes: PodVolumes | None = None
    """Sets up and removes pod volumes (None: volumes are not prepared, for tests)."""
    network: NodeNetwork | None = None
    """The node's data plane when pods get their own network namespaces (None: host
    networking)."""


def termination_of(st: RuntimeStatus, runtime: str = "process") -> Termination:
    """A runtime exit as a Termination; an unobserved exit code (the process was adopted
    after an agent restart, so it was not our child) is reported as Kubernetes reports a
    lost container: 137, ContainerStatusUnknown."""
    if st.exit_code is None:
        return Termination(
            UNKNOWN_EXIT_CODE,
            "ContainerStatusUnknown",
            st.started_at,
            st.finished_at,
            st.container_id,
            "The container's exit status could not be observed (it was adopted after an "
            "agent restart)",
            runtime,
        )
    reason = st.reason or ("Completed" if st.exit_code == 0 else "Error")
    return Termination(
        st.exit_code, reason, st.started_at, st.finished_at, st.container_id, runtime=runtime
    )
