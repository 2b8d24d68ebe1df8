"""Networking kinds and fields (apiVersion networking.shoal.dev/v1).

A ``Network`` is a named, isolated layer-3 network, like a Docker Compose network: pods name
the networks they join (``spec.networks``; none means ``default``), get one address per
network from shoal's IPAM, and reach only pods that share a network with them. Networks are
cluster-scoped, as Docker networks are per engine rather than per project: the names are the
ones users write in ``spec.networks``.

The network's range is split per node (``nodePrefixLength``, a /24 by default), so each node
routes whole per-node subnets to the others; which node has which subnet is recorded in the
Network's ``status.nodeSubnets`` by the IPAM controller, and every pod's addresses in its
``networking.shoal.dev/addresses`` annotation, so allocations survive every restart.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Literal

from pydantic import Field

from shoal.api._fielderrors import duplicate, invalid
from shoal.api._labels import dns1123_label_errors
from shoal.api._meta import Model, Resource
from shoal.errors import FieldError

DEFAULT_NETWORK = "default"
DEFAULT_NETWORK_SUBNET = "10.244.0.0/16"
ADDRESSES_ANNOTATION = "networking.shoal.dev/addresses"
"""Pod annotation written by the IPAM controller: JSON ``{"network": "10.244.1.5/24"}``,
address with the node subnet's prefix length."""
NETWORK_LABEL = "shoal.dev/network"
"""Node label the agent sets: ``bridge`` (pods get their own network namespace and
addresses) or ``host`` (pods share the node's network, as with the process driver)."""
WEIGHT_ANNOTATION = "shoal.dev/weight"
"""Pod annotation: the pod's weight behind a Service using weighted balancing (default 1)."""
WEIGHTS_ANNOTATION = "shoal.dev/weights"
"""On Endpoints (written by the endpoints controller): JSON ``{"10.244.0.5": 3}``, the weight
of each selected pod that sets one; the others weigh 1."""
ENDPOINT_ADDRESSES_ANNOTATION = "networking.shoal.dev/endpoint-addresses"
"""On Endpoints (written by the endpoints controller): JSON ``{"10.244.0.5": {"back":
"172.17.0.3"}}``, the other-network addresses of each selected pod on several networks, so
a client is sent to the pod on the network the two share."""
BALANCE_ANNOTATION = "shoal.dev/load-balancing"
"""Service annotation: ``round-robin`` (default), ``random`` or ``weighted``."""
BALANCE_MODES = ("round-robin", "random", "weighted")


class NetworkSpec(Model):
    subnet: str | None = None
    """IPv4 CIDR; allocated from 172.16.0.0/12 in /16 steps when omitted."""
    internal: bool = False
    """No traffic between this network and anything outside it (Compose's ``internal``)."""
    node_prefix_length: int | None = None
    """Prefix length of each node's share; default /24 (or 4 bits below the subnet's own
    prefix for subnets smaller than /20)."""


class NodeSubnet(Model):
    node_name: str
    subnet: str


class NetworkStatus(Model):
    node_subnets: list[NodeSubnet] = Field(default_factory=list)


class Network(Resource):
    api_version: Literal["networking.shoal.dev/v1"] = "networking.shoal.dev/v1"
    kind: Literal["Network"] = "Network"
    spec: NetworkSpec = Field(default_factory=NetworkSpec)
    status: NetworkStatus = Field(default_factory=NetworkStatus)


class NodeLink(Model):
    """One link of a node to a neighbour, published in ``Node.status.links`` for routing."""

    peer: str
    """The neighbour's node name."""
    address: str
    """The neighbour's address on this link: the next hop towards it."""
    cost: int = 1


def node_prefix_length(subnet: str, explicit: int | None) -> int:
    """The per-node prefix length for a network's subnet."""
    if explicit is not None:
        return explicit
    prefix = ipaddress.ip_network(subnet, strict=False).prefixlen
    return 24 if prefix <= 20 else min(prefix + 4, 28)


def validate_network(obj: Network) -> list[FieldError]:
    errs: list[FieldError] = []
    s = obj.spec
    net: ipaddress.IPv4Network | None = None
    if s.subnet is not None:
        try:
            parsed = ipaddress.ip_network(s.subnet, strict=True)
        except ValueError as exc:
            errs.append(invalid("spec.subnet", s.subnet, f"must be an IPv4 CIDR ({exc})"))
        else:
            if not isinstance(parsed, ipaddress.IPv4Network):
                errs.append(invalid("spec.subnet", s.subnet, "must be an IPv4 CIDR"))
            elif parsed.prefixlen > 28:
                errs.append(invalid("spec.subnet", s.subnet, "must be /28 or larger"))
            else:
                net = parsed
    if s.node_prefix_length is not None:
        low = net.prefixlen if net is not None else 8
        if not low <= s.node_prefix_length <= 30:
            errs.append(
                invalid(
                    "spec.nodePrefixLength",
                    s.node_prefix_length,
                    f"must be between {low} (the subnet's prefix) and 30",
                )
            )
    return errs


def validate_pod_networks(networks: list[str], host_network: bool, path: str) -> list[FieldError]:
    """``spec.networks``: DNS labels, no duplicates, not combined with hostNetwork."""
    errs: list[FieldError] = []
    seen: set[str] = set()
    for i, name in enumerate(networks):
        errs += [invalid(f"{path}.networks[{i}]", name, m) for m in dns1123_label_errors(name)]
        if name in seen:
            errs.append(duplicate(f"{path}.networks[{i}]", name))
        seen.add(name)
    if host_network and networks:
        errs.append(
            invalid(
                f"{path}.networks", ",".join(networks), "may not be set when hostNetwork is true"
            )
        )
    return errs


def pod_networks(networks: list[str]) -> list[str]:
    """The networks a pod joins, in order (``default`` when it names none)."""
    return list(networks) or [DEFAULT_NETWORK]


def parse_addresses(annotation: str | None) -> dict[str, str]:
    """The IPAM annotation's network -> address-with-prefix map ({} when absent or bad)."""
    if not annotation:
        return {}
    try:
        data = json.loads(annotation)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}
