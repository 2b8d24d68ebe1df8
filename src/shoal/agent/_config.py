"""The agent's settings: one dataclass, a docstring on every field."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shoal.api import NodeLink

RUNTIMES = ("process", "runc")
NETWORK_MODES = ("auto", "bridge", "host")


@dataclass
class AgentConfig:
    """How one node agent runs. Only ``node_name`` and ``data_dir`` have no default."""

    node_name: str
    """Name of the Node object this agent registers and the pods it runs (spec.nodeName)."""

    data_dir: Path
    """Where the runtime keeps container state and logs; reuse it across restarts so the next
    agent can adopt the containers still running."""

    address: str = "127.0.0.1"
    """The node's InternalIP: the agent's HTTP endpoint binds here, and pods are reported at
    this IP (status.podIP = status.hostIP), since process containers share the host network."""

    http_port: int = 0
    """Port of the agent HTTP endpoint (container logs, health); 0 picks a free port, which is
    then published on the Node as daemonEndpoints.kubeletEndpoint.Port."""

    heartbeat_interval: float = 2.0
    """Seconds between Node status heartbeats (the Ready condition's lastHeartbeatTime)."""

    labels: dict[str, str] = field(default_factory=dict)
    """Extra Node labels (on top of kubernetes.io/hostname, os, arch and shoal.dev/runtime)."""

    runtime: str = "process"
    """Runtime driver: "process" (host processes, no root) or "runc" (OCI containers from
    images; needs root). Published as the ``shoal.dev/runtime`` label. ``default_runtime()``
    picks runc where it works."""

    image_dir: Path | None = None
    """Where the runc runtime stores pulled images (default ``data_dir/images``); agents on
    one machine may share it."""

    cgroup_parent: str = ""
    """Parent cgroup of the runc runtime's containers (default ``/shoal/<node_name>``). Must
    be distinct per agent on one machine: the agent removes unknown cgroups under it."""

    auth_file: Path | None = None
    """Registry credentials (Docker's config.json format); default: the image service's
    lookup ($SHOAL_AUTH_FILE, ~/.config/shoal/auth.json, ~/.docker/config.json)."""

    insecure_registries: tuple[str, ...] = ()
    """Registries (``host:port``) reached over plain HTTP; loopback ones always are."""

    image_pull_backoff_initial: float = 10.0
    """First delay in seconds before retrying a failed image pull; it doubles on each
    further failure (ImagePullBackOff)."""

    image_pull_backoff_cap: float = 300.0
    """Longest delay in seconds between image pull retries."""

    stop_pods_on_exit: bool = False
    """Stop every container when the agent stops (the all-in-one ``shoal up``). False leaves
    them running for the next agent on the same data_dir to adopt, as a kubelet restart does."""

    backoff_initial: float = 10.0
    """First crash-loop back-off delay in seconds; it doubles on each further restart."""

    backoff_cap: float = 300.0
    """Longest crash-loop back-off delay in seconds."""

    backoff_reset_after: float = 600.0
    """A container that ran at least this long before exiting restarts with a fresh back-off."""

    log_max_bytes: int = 10 * 1024 * 1024
    """A running container's log is rotated (copytruncate) once it grows past this size."""

    housekeeping_interval: float = 5.0
    """Seconds between log-size checks, sweeps for orphaned containers, and samples of the
    running containers' CPU and memory usage (``Agent.stats_summary``)."""

    status_coalesce: float = 0.05
    """Pod status changes within this many seconds are written as one update."""

    force_kill_grace: float = 2.0
    """Grace period for containers whose pod object is already gone (force-deleted, or deleted
    while the agent was down): nobody is waiting for a graceful exit any more."""

    network: str = "host"
    """Pod networking: "bridge" (each pod its own network namespace on shoal's networks,
    service virtual IPs in nftables, routes between nodes; needs root and the runc
    runtime), "host" (pods share the node's network, as process containers do), or "auto"
    (bridge with runc as root, host otherwise; what ``shoal up`` and ``shoal agent`` ask
    for unless told otherwise). Published as the ``shoal.dev/network``
    label, which tells the IPAM controller to give this node's pods addresses."""

    node_netns: str = ""
    """The named network namespace that *is* this node's network (bridges, routes, nft
    table live there); "" for the agent's own. Lets tests and demos run several nodes on
    one machine."""

    network_prefix: str = "shoal"
    """Prefix of everything the data plane creates (pod netns, bridges, the nft table);
    distinct per agent when several share one network namespace."""

    links: tuple[NodeLink, ...] = ()
    """This node's links to its neighbours (peer node, the peer's address, cost), published
    in Node.status.links while their interface has carrier, for routing between nodes."""

    dns_target: str = ""
    """``IP:PORT`` of shoal's DNS server as seen from this node; pods' resolv.conf names the
    DNS service address (10.96.0.10), which the nft table forwards here. "" leaves pods with
    the host's resolv.conf."""

    cluster_domain: str = "cluster.local"

    @property
    def resolved_image_dir(self) -> Path:
        return self.image_dir if self.image_dir is not None else self.data_dir / "images"

    @property
    def resolved_cgroup_parent(self) -> str:
        return self.cgroup_parent or f"/shoal/{self.node_name}"
