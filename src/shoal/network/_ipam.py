"""Address allocation, pure: which subnet a node gets, which address a pod gets, which
ClusterIP a Service gets, which subnet a new Network gets, which NodePort a Service gets.

No state of its own: every function takes what is already taken (read from the stored
objects, which are the only record) and returns the lowest free choice, so restarting the
allocator can never hand out an address twice, and an address whose holder is gone is free
again as soon as its holder's object is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable

from shoal.errors import ShoalError

SERVICE_CIDR = "10.96.0.0/16"
NETWORK_POOL = "172.16.0.0/12"
NETWORK_POOL_PREFIX = 16
NODE_PORT_RANGE = (30000, 32767)


class ExhaustedError(ShoalError):
    """No free address (or port, or subnet) is left in a range."""


def dns_vip(service_cidr: str = SERVICE_CIDR) -> str:
    """The DNS service's ClusterIP: the 10th address of the service range, as kube-dns's
    10.96.0.10."""
    net = ipaddress.ip_network(service_cidr)
    return str(net[10]) if net.num_addresses > 11 else ""


def _nets(cidrs: Iterable[str]) -> list[ipaddress.IPv4Network]:
    out: list[ipaddress.IPv4Network] = []
    for c in cidrs:
        with_net = ipaddress.ip_network(c, strict=False)
        if isinstance(with_net, ipaddress.IPv4Network):
            out.append(with_net)
    return out


def node_subnet(network_cidr: str, prefix_length: int, taken: Collection[str]) -> str:
    """The lowest /``prefix_length`` of the network's range not already given to a node."""
    net = ipaddress.IPv4Network(network_cidr)
    used = {str(n) for n in _nets(taken)}
    if prefix_length < net.prefixlen:
        raise ExhaustedError(f"{network_cidr}: node prefix /{prefix_length} is larger than it")
    for sub in net.subnets(new_prefix=prefix_length):
        if str(sub) not in used:
            return str(sub)
    raise ExhaustedError(f"{network_cidr}: every /{prefix_length} is given to a node")


def gateway(subnet: str) -> str:
    """The node's own address in its subnet (the bridge's): the first host address."""
    return str(ipaddress.IPv4Network(subnet, strict=False).network_address + 1)


def pod_address(subnet: str, taken: Collection[str]) -> str:
    """The lowest free host address of a node subnet, with the subnet's prefix length
    ("10.244.1.5/24"); skips the network address, the gateway and the broadcast address."""
    net = ipaddress.IPv4Network(subnet, strict=False)
    used = {a.split("/", 1)[0] for a in taken}
    used.add(gateway(subnet))
    for host in net.hosts():
        if str(host) not in used:
            return f"{host}/{net.prefixlen}"
    raise ExhaustedError(f"{subnet}: no free address left on this node")


def cluster_ip(taken: Collection[str], service_cidr: str = SERVICE_CIDR) -> str:
    """The lowest free ClusterIP, skipping .0, .1 (kept for the API, as Kubernetes does) and
    the DNS address."""
    net = ipaddress.IPv4Network(service_cidr)
    used = set(taken) | {str(net.network_address + 1), dns_vip(service_cidr)}
    for host in net.hosts():
        if str(host) not in used:
            return str(host)
    raise ExhaustedError(f"the service range {service_cidr} is full")


def in_range(address: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def network_subnet(taken: Collection[str], pool: str = NETWORK_POOL) -> str:
    """A /16 of the pool overlapping no taken subnet, for a Network that names none."""
    used = _nets(taken)
    for sub in ipaddress.IPv4Network(pool).subnets(new_prefix=NETWORK_POOL_PREFIX):
        if not any(sub.overlaps(u) for u in used):
            return str(sub)
    raise ExhaustedError(f"no free /{NETWORK_POOL_PREFIX} left in {pool}; give spec.subnet")


def overlapping(subnet: str, others: dict[str, str]) -> str | None:
    """The name of another network whose subnet overlaps ``subnet``, if any."""
    mine = ipaddress.ip_network(subnet, strict=False)
    for name, other in sorted(others.items()):
        if mine.overlaps(ipaddress.ip_network(other, strict=False)):
            return name
    return None


def node_port(
    taken: Collection[int], low: int = NODE_PORT_RANGE[0], high: int = NODE_PORT_RANGE[1]
) -> int:
    used = set(taken)
    for port in range(low, high + 1):
        if port not in used:
            return port
    raise ExhaustedError(f"every node port in {low}-{high} is allocated")
