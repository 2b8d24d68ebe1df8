"""The agent's Node object: what it advertises (labels, capacity, addresses, endpoint) and
keeping it alive (register, then heartbeat the Ready condition).

Registration and heartbeats ride out an absent API server: they retry with back-off and
never stop the pods, as a kubelet keeps its containers running while the control plane is
down. A Node deleted by someone is simply created again on the next heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from shoal import __version__
from shoal._util import Backoff, Clock, format_time
from shoal.agent._config import AgentConfig
from shoal.api import (
    NETWORK_LABEL,
    Condition,
    Node,
    NodeAddress,
    NodeLink,
    NodeStatus,
    NodeSystemInfo,
    ObjectMeta,
    format_cpu,
    set_condition,
)
from shoal.client import Client
from shoal.errors import (
    AlreadyExistsError,
    APIStatusError,
    ConflictError,
    NotFoundError,
    ServerUnreachableError,
)
from shoal.runtime import Fingerprint

log = logging.getLogger("shoal.agent.node")

MAX_PODS = "110"
"""The kubelet's default pod capacity."""

_GO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "i386": "386",
    "i686": "386",
}


@dataclass(frozen=True)
class HostFacts:
    """What the Node says about the machine (read once at start)."""

    hostname: str
    os: str
    arch: str
    kernel: str
    os_image: str = ""
    machine_id: str = ""
    boot_id: str = ""

    @classmethod
    def detect(cls) -> HostFacts:
        machine = platform.machine()
        return cls(
            hostname=socket.gethostname(),
            os="linux" if sys.platform.startswith("linux") else sys.platform,
            arch=_GO_ARCH.get(machine.lower(), machine.lower()),
            kernel=platform.release(),
            os_image=_os_image(),
            machine_id=_read_first(Path("/etc/machine-id")),
            boot_id=_read_first(Path("/proc/sys/kernel/random/boot_id")),
        )


def _read_first(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read_first(Path("/etc/os-release")).splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def runtime_version(fingerprint: Fingerprint) -> str:
    """status.nodeInfo.containerRuntimeVersion: ``runc://1.1.5+ds1`` for runc (the version
    its fingerprint reports), ``process://shoal-<version>`` for shoal's own process driver."""
    version = fingerprint.attributes.get(f"{fingerprint.driver}.version", "")
    if version and version != "unknown":
        return f"{fingerprint.driver}://{version}"
    return f"{fingerprint.driver}://shoal-{__version__}"


def node_labels(
    config: AgentConfig, facts: HostFacts, runtime: str | None = None, network: str = "host"
) -> dict[str, str]:
    """``runtime``: the driver actually in use (default: the configured one); ``network``:
    the pod networking in use (bridge or host)."""
    labels = {
        "kubernetes.io/hostname": config.node_name,
        "kubernetes.io/os": facts.os,
        "kubernetes.io/arch": facts.arch,
        "shoal.dev/runtime": runtime or config.runtime,
        NETWORK_LABEL: network,
    }
    labels.update(config.labels)
    return labels


def apply_node_status(
    current: NodeStatus,
    *,
    config: AgentConfig,
    fingerprint: Fingerprint,
    facts: HostFacts,
    http_port: int,
    now: float,
    links: list[NodeLink] | None = None,
) -> NodeStatus:
    """``current`` with everything the agent owns set: capacity, addresses, info, endpoint,
    and Ready=True with a fresh heartbeat. Conditions written by others are kept."""
    resources: dict[str, str | int | float] = {
        "cpu": format_cpu(fingerprint.cpu_millis),
        "memory": f"{fingerprint.memory_bytes // 1024}Ki",
        "pods": MAX_PODS,
    }
    status = current.model_copy(deep=True)
    status.capacity = dict(resources)
    status.allocatable = dict(resources)
    status.addresses = [
        NodeAddress(type="InternalIP", address=config.address),
        NodeAddress(type="Hostname", address=facts.hostname),
    ]
    status.node_info = NodeSystemInfo(
        machine_id=facts.machine_id,
        boot_id=facts.boot_id,
        kernel_version=facts.kernel,
        os_image=facts.os_image,
        operating_system=facts.os,
        architecture=facts.arch,
        container_runtime_version=runtime_version(fingerprint),
        kubelet_version=f"shoal-{__version__}",
    )
    status.daemon_endpoints.kubelet_endpoint.port = http_port
    status.links = list(links or [])
    stamp = format_time(now)
    set_condition(
        status.conditions,
        Condition(
            type="Ready",
            status="True",
            reason="KubeletReady",
            message="shoal agent is posting ready status",
            last_heartbeat_time=stamp,
        ),
        stamp,
    )
    return status


class NodeKeeper:
    """Registers the Node and heartbeats it. ``node`` is the last copy written."""

    def __init__(
        self,
        client: Client,
        config: AgentConfig,
        fingerprint: Fingerprint,
        http_port: int,
        clock: Clock,
        facts: HostFacts | None = None,
        network: str = "host",
    ) -> None:
        self.client = client
        self.config = config
        self.fingerprint = fingerprint
        self.http_port = http_port
        self.clock = clock
        self.facts = facts or HostFacts.detect()
        self.node: Node | None = None
        self.heartbeats = 0
        self.network = network
        self.links: list[NodeLink] = []
        """The node's live links, published with every heartbeat."""
        self._soon = asyncio.Event()

    def publish_links(self, links: list[NodeLink]) -> None:
        """New live links: heartbeat now rather than at the next interval, so neighbours
        reroute within a second."""
        self.links = list(links)
        self._soon.set()

    def _status(self, current: NodeStatus) -> NodeStatus:
        return apply_node_status(
            current,
            config=self.config,
            fingerprint=self.fingerprint,
            facts=self.facts,
            http_port=self.http_port,
            now=self.clock.now(),
            links=self.links,
        )

    async def register(self) -> Node:
        """Create or update our Node, retrying until the server takes it."""
        backoff = Backoff(0.2, 5.0, jitter=0.2)
        name = self.config.node_name
        labels = node_labels(self.config, self.facts, self.fingerprint.driver, self.network)
        while True:
            try:
                try:
                    existing = await self.client.nodes.get(name)
                except NotFoundError:
                    fresh = Node(
                        metadata=ObjectMeta(name=name, labels=labels),
                        status=self._status(NodeStatus()),
                    )
                    try:
                        self.node = await self.client.nodes.create(fresh)
                    except AlreadyExistsError:
                        continue
                    log.info("registered node %s", name)
                    return self.node
                existing.metadata.labels = {**existing.metadata.labels, **labels}
                existing.status = self._status(existing.status)
                updated = await self.client.nodes.update(existing)
                updated.status = self._status(updated.status)
                self.node = await self.client.nodes.update_status(updated)
                log.info("updated node %s", name)
                return self.node
            except ConflictError:
                continue
            except (ServerUnreachableError, APIStatusError) as exc:
                delay = backoff.next()
                log.warning("cannot register node %s (%s); retrying in %.1fs", name, exc, delay)
                await asyncio.sleep(delay)

    async def heartbeat(self) -> None:
        """One Ready heartbeat. Raises ServerUnreachableError/APIStatusError when the server
        is away (the caller retries on its schedule)."""
        if self.node is None:
            await self.register()
            return
        node = self.node.model_copy(deep=True)
        node.status = self._status(node.status)
        try:
            self.node = await self.client.nodes.update_status(node)
        except ConflictError:
            fresh = await self.client.nodes.get(self.config.node_name)
            fresh.status = self._status(fresh.status)
            self.node = await self.client.nodes.update_status(fresh)
        except NotFoundError:
            log.warning("node %s was deleted; registering again", self.config.node_name)
            self.node = None
            await self.register()
        self.heartbeats += 1

    async def run(self) -> None:
        """Heartbeat every ``heartbeat_interval`` until cancelled; retry sooner after errors."""
        backoff = Backoff(0.2, self.config.heartbeat_interval, jitter=0.2)
        while True:
            try:
                await self.heartbeat()
            except (ServerUnreachableError, APIStatusError) as exc:
                log.debug("heartbeat of node %s failed: %s", self.config.node_name, exc)
                await asyncio.sleep(backoff.next())
                continue
            except Exception:
                # A heartbeat bug must not take the node's pods down with it.
                log.exception("heartbeat of node %s failed", self.config.node_name)
                await asyncio.sleep(self.config.heartbeat_interval)
                continue
            backoff.reset()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._soon.wait(), self.config.heartbeat_interval)
            self._soon.clear()
