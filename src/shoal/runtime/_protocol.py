"""The runtime-driver seam: how a node agent runs a pod's containers.

A driver knows nothing of the API server. The agent translates a Pod into ContainerConfigs,
asks the driver to start them, polls ``inspect``/``list`` and reports status. Drivers:
``process`` (plain host processes, no root) now; ``runc`` (OCI containers) later.
Like Nomad's driver interface: fingerprint, start, wait/inspect, stop, remove, recover, exec,
stats.
"""

from __future__ import annotations

import asyncio
import builtins
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

ContainerState = Literal["created", "running", "exited", "unknown"]


@dataclass(frozen=True)
class PortRequest:
    """A declared containerPort. ``name`` may be empty."""

    container_port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class Mount:
    """A host file or directory made visible inside the container (a volume mount)."""

    source: Path
    """Absolute host path (an emptyDir's directory, a hostPath)."""
    destination: str
    """Absolute path inside the container."""
    read_only: bool = False


@dataclass(frozen=True)
class SecurityConfig:
    """The honoured part of a container's securityContext (pod-level values merged in)."""

    run_as_user: int | None = None
    """None: the image's USER (or root)."""
    run_as_group: int | None = None
    read_only_root_filesystem: bool = False
    privileged: bool = False
    """True drops the default restrictions (all capabilities, no masked paths), as Docker's
    --privileged; False keeps Docker's default capability set and masked/read-only paths."""


@dataclass(frozen=True)
class ContainerConfig:
    """Everything a driver needs to start one container of one pod."""

    pod_uid: str
    pod_name: str
    namespace: str
    name: str
    """Container name, unique within the pod."""
    attempt: int
    """0 for the first start, +1 on each restart (used for per-attempt log files)."""
    image: str = ""
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    ports: list[PortRequest] = field(default_factory=list)
    cpu_limit_millis: int | None = None
    memory_limit_bytes: int | None = None
    cpu_request_millis: int | None = None
    """requests.cpu: the cgroup's relative CPU weight (shares)."""
    memory_request_bytes: int | None = None
    pids_limit: int | None = None
    """Most processes the container may have (None: the driver's default)."""
    hostname: str = ""
    """Hostname inside the container ("" means the pod name)."""
    mounts: list[Mount] = field(default_factory=list)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    dns_nameservers: list[str] = field(default_factory=list)
    """For the container's /etc/resolv.conf; empty: copy the host's resolv.conf."""
    dns_searches: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    network_namespace: str = ""
    """Path of the pod's network namespace (e.g. /var/run/netns/X); "" shares the host's."""

    @property
    def container_id(self) -> str:
        """Stable id of this container (not of the attempt)."""
        return f"{self.pod_uid}_{self.name}"


@dataclass(frozen=True)
class ContainerStatus:
    """What a driver knows of one container."""

    container_id: str
    pod_uid: str
    name: str
    attempt: int
    state: ContainerState
    pid: int | None = None
    started_at: float | None = None
    """Unix time."""
    finished_at: float | None = None
    exit_code: int | None = None
    """None while running, or when the exit status could not be observed."""
    reason: str = ""
    """For exited: Completed (0), Error (non-zero), OOMKilled, or Unknown when unobserved."""
    host_ports: dict[int, int] = field(default_factory=dict)
    """containerPort -> the host port the container actually listens on."""


@dataclass(frozen=True)
class ContainerStats:
    """Resource usage of one running container, read from its cgroup (or /proc)."""

    container_id: str
    timestamp: float
    """Unix time of the reading."""
    cpu_usage_nanos: int
    """Cumulative CPU time used (user + system), in nanoseconds."""
    memory_bytes: int
    """Working set: usage minus inactive file cache, as the kubelet reports it."""
    memory_limit_bytes: int | None = None
    pids: int = 0


@dataclass(frozen=True)
class Fingerprint:
    """What the driver reports about the node (advertised on the Node object)."""

    driver: str
    cpu_millis: int
    memory_bytes: int
    attributes: dict[str, str] = field(default_factory=dict)


class Driver(Protocol):
    name: str

    def fingerprint(self) -> Fingerprint: ...

    async def start(self, config: ContainerConfig) -> ContainerStatus:
        """Start a container (replacing an exited one of the same container_id).
        Raises DriverError when it cannot be started (e.g. command not found)."""
        ...

    async def inspect(self, container_id: str) -> ContainerStatus:
        """Current status. Raises DriverError for an unknown id."""
        ...

    async def list(self) -> list[ContainerStatus]:
        """Every container this driver knows of, including ones adopted after a restart."""
        ...

    async def stop(self, container_id: str, grace_period: float) -> ContainerStatus:
        """SIGTERM, then SIGKILL after ``grace_period`` seconds; returns the exited status."""
        ...

    async def remove(self, container_id: str) -> None:
        """Forget a stopped container and delete its runtime state (not its logs)."""
        ...

    async def recover(self) -> builtins.list[ContainerStatus]:
        # builtins.list: inside this class body ``list`` names the method above.
        """After an agent restart: adopt the containers still running from saved state, and
        report the ones that exited meanwhile. Called once before anything else."""
        ...

    def log_path(self, container_id: str, attempt: int) -> Path:
        """The log file of one attempt (stdout and stderr interleaved)."""
        ...

    async def exec(
        self, container_id: str, command: builtins.list[str]
    ) -> asyncio.subprocess.Process:
        """Run ``command`` inside a running container (its namespaces, env, user, cwd).

        Returns the started process with stdin, stdout and stderr as pipes; the caller feeds
        and drains them and waits for the exit code. Raises DriverError if the container is
        not running or the command cannot be started."""
        ...

    async def stats(self, container_id: str) -> ContainerStats:
        """Current CPU and memory usage. Raises DriverError for an unknown or stopped
        container."""
        ...
