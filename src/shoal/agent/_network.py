"""The node's data plane, as the agent runs it: pod network namespaces on per-network
bridges, the nftables table (service virtual IPs, NodePorts, hostPorts, the DNS address,
isolation between networks, masquerading), and routes to the other nodes' pod subnets along
shortest paths.

Everything is derived from API objects through informers (Networks, Services, Endpoints,
Nodes, and the node's own pods) and re-applied whenever they change, level-triggered: the
rule set is rebuilt from the caches and the nft shell sends only the difference. The node
may be the agent's own network namespace or a named one (``node_netns``), which is how
tests and demos run several nodes on one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path

import httpx

from shoal.agent._config import AgentConfig
from shoal.agent._probes import PodAddress
from shoal.api import (
    ADDRESSES_ANNOTATION,
    Endpoints,
    Network,
    Node,
    NodeLink,
    Pod,
    Service,
    get_condition,
    parse_addresses,
    pod_networks,
)
from shoal.client import Client, Informer
from shoal.errors import NetworkError
from shoal.network._dial import NetnsDialer
from shoal.network._ipam import SERVICE_CIDR, dns_vip, gateway
from shoal.network._linkwatch import RouteKeeper
from shoal.network._nft import NftTable
from shoal.network._nftrules import DNSRule, RuleSet
from shoal.network._podnet import Bandwidth, Interface, PodNetworker, parse_bandwidth
from shoal.network._routes import enable_forwarding, remove_all_routes
from shoal.network._routing import Link
from shoal.network._svcrules import host_ports, network_rules, service_rules

log = logging.getLogger("shoal.agent.network")

INGRESS_ANNOTATION = "kubernetes.io/ingress-bandwidth"
EGRESS_ANNOTATION = "kubernetes.io/egress-bandwidth"
NETNS_DIR = Path("/var/run/netns")


def bandwidth_of(pod: Pod) -> Bandwidth | None:
    """The pod's bandwidth annotations (None when it has neither). Raises ValueError naming
    the annotation and value for a bad one."""
    values: dict[str, int | None] = {}
    for key, annotation in (("ingress", INGRESS_ANNOTATION), ("egress", EGRESS_ANNOTATION)):
        raw = pod.metadata.annotations.get(annotation)
        if raw is None:
            values[key] = None
            continue
        try:
            values[key] = parse_bandwidth(raw)
        except ValueError as exc:
            raise ValueError(f"annotation {annotation}: {exc}") from None
    if values["ingress"] is None and values["egress"] is None:
        return None
    return Bandwidth(ingress_bps=values["ingress"], egress_bps=values["egress"])


def plan_interfaces(
    pod: Pod,
    node_name: str,
    networks: Callable[[str], Network | None],
    bridge_name: Callable[[str], str],
) -> list[Interface] | str:
    """The pod's interfaces (eth0 on its first network, eth1 on the next...), or why they
    cannot be built yet (no address from the IPAM controller, no subnet for this node)."""
    addresses = parse_addresses(pod.metadata.annotations.get(ADDRESSES_ANNOTATION))
    out: list[Interface] = []
    have_default = False
    for i, name in enumerate(pod_networks(pod.spec.networks)):
        net = networks(name)
        if net is None or not net.spec.subnet:
            return f'network "{name}" does not exist'
        if name not in addresses:
            return f'waiting for an address on network "{name}"'
        subnet = next((s.subnet for s in net.status.node_subnets if s.node_name == node_name), None)
        if subnet is None:
            return f'waiting for this node\'s subnet of network "{name}"'
        default = not net.spec.internal and not have_default
        have_default = have_default or default
        out.append(
            Interface(
                network=name,
                ifname=f"eth{i}",
                bridge=bridge_name(name),
                address=addresses[name],
                gateway=gateway(subnet),
                network_cidr=net.spec.subnet,
                default_route=default,
            )
        )
    if out and not have_default:
        # Only internal networks: no default route, but Services (and the DNS address) stay
        # reachable through the first network's gateway; the nft rules decide the rest.
        out[0] = replace(out[0], extra_routes=(SERVICE_CIDR,))
    return out


class PodNetGate:
    """One pod's network namespace, built once before its first container starts and kept
    across agent restarts. Until it can be built, the pod's containers wait in
    ContainerCreating (``waiting`` says why); a failure is a FailedCreatePodSandBox event."""

    def __init__(self, network: NodeNetwork, pod_uid: str) -> None:
        self.network = network
        self.uid = pod_uid
        self.waiting: str | None = None
        self.pod_ips: list[str] = []
        """The pod's addresses, its first network's first (status.podIP, podIPs)."""

    async def ready(self, pod: Pod, emit: Callable[[Pod, str, str, str], None]) -> bool:
        plan = self.network.plan(pod)
        if not isinstance(plan, str):
            self.pod_ips = [i.address.split("/", 1)[0] for i in plan]
        if self.network.is_attached(self.uid):
            self.waiting = None
            return True
        if isinstance(plan, str):
            self.waiting = plan
            return False
        try:
            await self.network.attach(pod, plan)
        except (NetworkError, ValueError) as exc:
            message = f"Failed to create pod sandbox: {exc}"
            if message != self.waiting:
                emit(pod, "FailedCreatePodSandBox", message, "Warning")
            self.waiting = message
            return False
        self.waiting = None
        return True

    def probe_address(self) -> PodAddress | None:
        """Where the pod's probes connect (its first address), once it has one."""
        if not self.pod_ips:
            return None
        return PodAddress(self.pod_ips[0], self.network.dialer, self.network.probe_http)


class NodeNetwork:
    """One node's networking. ``start()`` once, after the agent's pod informer is running;
    ``close()`` at the end (``remove=True`` tears everything down, for ``shoal up``)."""

    def __init__(
        self,
        client: Client,
        config: AgentConfig,
        own_pods: Informer[Pod],
        publish_links: Callable[[list[NodeLink]], None],
    ) -> None:
        self.client = client
        self.config = config
        self.netns = config.node_netns or None
        self.own_pods = own_pods
        self.podnet = PodNetworker(
            node_netns=self.netns,
            prefix=config.network_prefix,
            state_dir=config.data_dir / "network",
        )
        self.table = NftTable(config.network_prefix.replace("-", "_"), netns=self.netns)
        self.networks: Informer[Network] = Informer(client.networks)
        self.services: Informer[Service] = Informer(client.services)
        self.endpoints: Informer[Endpoints] = Informer(client.endpoints)
        self.nodes: Informer[Node] = Informer(client.nodes)
        self._publish_links = publish_links
        own = [Link(lk.peer, lk.address, lk.cost) for lk in config.links]
        self.routes = RouteKeeper(
            self.netns,
            config.node_name,
            self._routing_inputs,
            own_links=own,
            on_live_links=self._on_live_links,
        )
        # Pod addresses are routed in the node's namespace; when that is not the agent's own,
        # probes open their connections there.
        self.dialer = NetnsDialer(self.netns) if self.netns else None
        self.probe_http = (
            httpx.AsyncClient(
                transport=self.dialer.http_transport(verify=False), follow_redirects=False
            )
            if self.dialer is not None
            else None
        )
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._attached: set[str] = set()
        self.applied = 0
        """Rule sets applied so far (for tests)."""
        self.rules_applied = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._attached = {a.pod_uid for a in self.podnet.recover()}
        await enable_forwarding(self.netns)
        # Rules depend on Networks, Services, Endpoints and this node's pods (host ports);
        # Node heartbeats only move routes.
        for rules_input in (self.networks, self.services, self.endpoints, self.own_pods):
            rules_input.add_handler(self._changed)
        for informer in (self.networks, self.services, self.endpoints, self.nodes):
            await informer.start()
        for informer in (self.networks, self.services, self.endpoints, self.nodes):
            await informer.wait_synced()
        self.nodes.add_handler(lambda *_: self.routes.poke())
        self.networks.add_handler(lambda *_: self.routes.poke())
        self._tasks = [
            asyncio.create_task(self._rules_loop(), name="network-rules"),
            asyncio.create_task(self.routes.run(), name="network-routes"),
        ]

    async def close(self, *, remove: bool) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for informer in (self.networks, self.services, self.endpoints, self.nodes):
            with contextlib.suppress(Exception):
                await informer.stop()
        if self.probe_http is not None:
            await self.probe_http.aclose()
        if self.dialer is not None:
            self.dialer.close()
        if remove:
            for step in (
                self.podnet.cleanup_all(),
                self.table.remove(),
                remove_all_routes(self.netns),
            ):
                try:
                    await step
                except NetworkError as exc:
                    log.warning("network cleanup: %s", exc)

    # --- pods --------------------------------------------------------------------------------

    def netns_path(self, pod_uid: str) -> str:
        return str(NETNS_DIR / self.podnet.netns_name(pod_uid))

    def plan(self, pod: Pod) -> list[Interface] | str:
        return plan_interfaces(
            pod, self.config.node_name, self.networks.get, self.podnet.bridge_name
        )

    def is_attached(self, pod_uid: str) -> bool:
        """The pod's namespace is built (by us, or by a previous agent: kept as it is)."""
        return pod_uid in self._attached

    async def attach(self, pod: Pod, interfaces: list[Interface]) -> None:
        uid = pod.metadata.uid or ""
        await self.podnet.attach(uid, interfaces, bandwidth_of(pod))
        self._attached.add(uid)
        self._dirty.set()  # host ports point at the pod's address

    async def detach(self, pod_uid: str) -> None:
        await self.podnet.detach(pod_uid)
        self._attached.discard(pod_uid)

    async def collect(self, keep: Collection[str]) -> None:
        """Remove the networking of pods that are no longer on this node."""
        removed = await self.podnet.collect(keep)
        if removed:
            log.info("removed the networking of %d gone pod(s)", len(removed))

    # --- rules -------------------------------------------------------------------------------

    def _changed(self, *_: object) -> None:
        self._dirty.set()

    def ruleset(self) -> RuleSet:
        eps = {e.key: e for e in self.endpoints.list()}
        networks = self.networks.list()
        target_ip, _, port = self.config.dns_target.rpartition(":")
        dns = DNSRule(dns_vip(), target_ip, int(port)) if self.config.dns_target else None
        return RuleSet(
            table=self.table.table,
            services=service_rules(
                self.services.list(),
                eps,
                {n.name: n.spec.subnet for n in networks if n.spec.subnet},
            ),
            host_ports=host_ports(self.own_pods.list()),
            networks=network_rules(networks, self.podnet.bridge_name),
            dns=dns,
            pod_cidrs=tuple(sorted(n.spec.subnet for n in networks if n.spec.subnet)),
        )

    async def _rules_loop(self) -> None:
        """Re-apply on every change, coalescing bursts (10 ms) so a hundred endpoint
        updates become one transaction."""
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.01)
            self._dirty.clear()
            try:
                how = await self.table.apply(self.ruleset())
            except (NetworkError, ValueError) as exc:
                log.warning("nftables rules not applied: %s", exc)
                await asyncio.sleep(1.0)
                self._dirty.set()
                continue
            self.applied += 1
            self.rules_applied.set()
            log.debug("nftables table %s: %s", self.table.table, how)

    # --- routing -----------------------------------------------------------------------------

    def _routing_inputs(
        self,
    ) -> tuple[dict[str, list[Link]], set[str], dict[str, list[str]]]:
        links: dict[str, list[Link]] = {}
        down: set[str] = set()
        for node in self.nodes.list():
            links[node.name] = [Link(lk.peer, lk.address, lk.cost) for lk in node.status.links]
            ready = get_condition(node.status.conditions, "Ready")
            if node.name != self.config.node_name and (ready is None or ready.status != "True"):
                down.add(node.name)
        subnets: dict[str, list[str]] = {}
        for net in self.networks.list():
            for ns in net.status.node_subnets:
                subnets.setdefault(ns.node_name, []).append(ns.subnet)
        return links, down, subnets

    def _on_live_links(self, live: list[Link]) -> None:
        self._publish_links(
            [NodeLink(peer=lk.peer, address=lk.address, cost=lk.cost) for lk in live]
        )


def bridge_unavailable_reason() -> str | None:
    """Why bridge networking cannot run here (None when it can): root, the CNI plugins, nft."""
    if os.geteuid() != 0:
        return "bridge networking needs root"
    for tool in ("/usr/lib/cni/bridge", "/usr/sbin/nft"):
        if not Path(tool).exists():
            return f"bridge networking needs {tool}"
    return None
