"""The IPAM controller: addresses for pods on nodes whose agent networks them.

For a pod bound to a node labelled ``shoal.dev/network=bridge`` (and not ``hostNetwork``),
it gives the node a subnet of each network the pod joins (recorded in the Network's
``status.nodeSubnets``) and the pod the lowest free address of it (the pod's
``networking.shoal.dev/addresses`` annotation). The agent waits for that annotation before
it builds the pod's network namespace.

The stored objects are the only record: what is taken is read from the pods in the
informer cache plus the allocations this controller wrote but has not seen come back yet,
so a restart rebuilds the exact state, a deleted pod's address is free again, and a node
that is gone gives its subnets back. One worker: allocations on one node are serial, which
is what keeps two pods from getting one address.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from shoal._util import Clock
from shoal.api import (
    ADDRESSES_ANNOTATION,
    NETWORK_LABEL,
    Network,
    Node,
    NodeSubnet,
    Pod,
    node_prefix_length,
    parse_addresses,
    pod_networks,
)
from shoal.client import Client
from shoal.controllers._base import Controller, SharedInformers
from shoal.errors import TemporaryError
from shoal.network._ipam import ExhaustedError, node_subnet, pod_address

log = logging.getLogger("shoal.controllers.ipam")


def needs_addresses(pod: Pod, node: Node | None) -> bool:
    """Bound to a bridge-networked node, not on the host network, not finished."""
    return (
        node is not None
        and node.metadata.labels.get(NETWORK_LABEL) == "bridge"
        and not pod.spec.host_network
        and pod.metadata.deletion_timestamp is None
        and pod.status.phase not in ("Succeeded", "Failed")
    )


def missing_networks(pod: Pod) -> list[str]:
    have = parse_addresses(pod.metadata.annotations.get(ADDRESSES_ANNOTATION))
    return [n for n in pod_networks(pod.spec.networks) if n not in have]


class IPAMController(Controller):
    name = "ipam-controller"

    def __init__(
        self, client: Client, informers: SharedInformers, *, clock: Clock | None = None
    ) -> None:
        super().__init__(client, workers=1, clock=clock)
        self.pods = informers.pods
        self.nodes = informers.nodes
        self.networks = informers.networks
        self.pods.add_handler(self._on_pod)
        self.nodes.add_handler(self._on_node)
        self.networks.add_handler(self._on_network)
        self._written: dict[str, dict[str, str]] = {}
        """pod uid -> addresses written but maybe not yet in the cache."""
        self._subnets: dict[tuple[str, str], str] = {}
        """(network, node) -> subnet written but maybe not yet in the cache."""

    # --- events ------------------------------------------------------------------------------

    def _on_pod(self, kind: str, old: Pod | None, new: Pod | None) -> None:
        if new is None:
            if old is not None:
                self._written.pop(old.metadata.uid or "", None)
            return
        if ADDRESSES_ANNOTATION in new.metadata.annotations:
            self._written.pop(new.metadata.uid or "", None)  # the cache has caught up
        if new.spec.node_name and missing_networks(new):
            self.enqueue(f"pod/{new.key}")

    def _on_node(self, kind: str, old: Node | None, new: Node | None) -> None:
        if new is None:
            for net in self.networks.list():
                self.enqueue(f"net/{net.name}")
            return
        if new.metadata.labels.get(NETWORK_LABEL) == "bridge":
            for pod in self.pods.list():
                if pod.spec.node_name == new.name and missing_networks(pod):
                    self.enqueue(f"pod/{pod.key}")

    def _on_network(self, kind: str, old: Network | None, new: Network | None) -> None:
        net = new or old
        assert net is not None
        if new is not None and old is None:
            for pod in self.pods.list():
                if pod.spec.node_name and net.name in missing_networks(pod):
                    self.enqueue(f"pod/{pod.key}")
        self.enqueue(f"net/{net.name}")

    # --- reconcile ---------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        what, _, rest = key.partition("/")
        if what == "pod":
            await self._pod(rest)
        elif what == "net":
            await self._release_subnets(rest)

    def _taken(self, network: str, node: str, skip_uid: str) -> set[str]:
        taken: set[str] = set()
        for pod in self.pods.list():
            if pod.spec.node_name != node or pod.metadata.uid == skip_uid:
                continue
            got = parse_addresses(pod.metadata.annotations.get(ADDRESSES_ANNOTATION))
            if network in got:
                taken.add(got[network])
        for uid, written in self._written.items():
            if uid != skip_uid and network in written:
                taken.add(written[network])
        return taken

    def _node_subnet(self, net: Network, node: str) -> str | None:
        for ns in net.status.node_subnets:
            if ns.node_name == node:
                return ns.subnet
        return self._subnets.get((net.name, node))

    async def _ensure_subnet(self, net: Network, node: str) -> str:
        have = self._node_subnet(net, node)
        if have is not None:
            return have
        assert net.spec.subnet is not None
        fresh = await self.client.networks.get(net.name)
        for ns in fresh.status.node_subnets:
            if ns.node_name == node:
                return ns.subnet
        taken = [ns.subnet for ns in fresh.status.node_subnets]
        try:
            subnet = node_subnet(
                net.spec.subnet,
                node_prefix_length(net.spec.subnet, net.spec.node_prefix_length),
                taken,
            )
        except ExhaustedError as exc:
            raise TemporaryError(f"network {net.name}: {exc}", delay=10.0) from None
        fresh.status.node_subnets.append(NodeSubnet(node_name=node, subnet=subnet))
        await self.client.networks.update_status(fresh)  # CAS: a conflict retries the pod
        self._subnets[(net.name, node)] = subnet
        log.info("network %s: node %s gets %s", net.name, node, subnet)
        return subnet

    async def _pod(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or not pod.spec.node_name:
            return
        node = self.nodes.get(pod.spec.node_name)
        if not needs_addresses(pod, node):
            return
        missing = missing_networks(pod)
        if not missing:
            return
        uid = pod.metadata.uid or ""
        addresses = parse_addresses(pod.metadata.annotations.get(ADDRESSES_ANNOTATION))
        for name in missing:
            net = self.networks.get(name)
            if net is None or not net.spec.subnet:
                await self.client.record_event(
                    pod, "NetworkNotFound", f'network "{name}" does not exist', type="Warning"
                )
                raise TemporaryError(f"pod {key}: network {name} does not exist", delay=5.0)
            subnet = await self._ensure_subnet(net, pod.spec.node_name)
            try:
                addresses[name] = pod_address(subnet, self._taken(name, pod.spec.node_name, uid))
            except ExhaustedError as exc:
                raise TemporaryError(f"pod {key}: {exc}", delay=5.0) from None
        patch = {
            "metadata": {
                "annotations": {ADDRESSES_ANNOTATION: json.dumps(addresses, sort_keys=True)}
            }
        }
        self._written[uid] = dict(addresses)
        await self.client.pods.patch(pod.name, patch, pod.namespace)

    async def _release_subnets(self, name: str) -> None:
        """Give back the node subnets of nodes that no longer exist."""
        net = self.networks.get(name)
        if net is None:
            return
        nodes = {n.name for n in self.nodes.list()}
        keep = [ns for ns in net.status.node_subnets if ns.node_name in nodes]
        if len(keep) == len(net.status.node_subnets):
            return
        gone = _names(ns.node_name for ns in net.status.node_subnets if ns.node_name not in nodes)
        fresh = net.model_copy(deep=True)
        fresh.status.node_subnets = keep
        await self.client.networks.update_status(fresh)
        for node in gone:
            self._subnets.pop((name, node), None)
        log.info("network %s: released the subnets of gone nodes %s", name, ", ".join(gone))


def _names(items: Iterable[str]) -> list[str]:
    return sorted(set(items))
