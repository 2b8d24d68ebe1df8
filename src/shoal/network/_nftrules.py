"""nftables rules for service virtual IPs, NodePorts, hostPorts, the DNS VIP, masquerading and
network isolation, rendered as ``nft -f`` scripts. Pure: no I/O (the shell is ``_nft.py``).

The layout follows kube-proxy's nftables mode (one table, verdict maps keyed by
``address . protocol . port``, one chain per service and per endpoint), so that a lookup costs
the same with 10 or 10,000 services and one endpoint change is a transaction of a few lines:

``nat-prerouting`` / ``nat-output`` -> ``services``:
    ``ip daddr . meta l4proto . th dport vmap @service-ips``   -> ``svc-<id>-<key>``
    node's own addresses: ``@service-nodeports`` -> ``ext-<id>-<key>``, ``@host-ports`` ->
    ``hostport-<proto>-<port>``
``svc-...`` picks an endpoint (``numgen inc`` round robin, ``numgen random``, or ``numgen inc``
over a map in which an endpoint appears ``weight`` times). With ClientIP affinity, one dynamic
map shared by every service remembers ``client . address . protocol . port`` -> the endpoint
last chosen (its number, see :func:`affinity_ids`), refreshed by each connection; the service
chain looks the client up first and, when found, goes to that endpoint through a small
per-service map. (kube-proxy keeps a dynamic set per endpoint instead; the kernel finds sets
by name in a list, so 1,430 of them made a 1,000-service table load ~50% slower.)
``ep-<id>-<ip>-<port>`` marks hairpin traffic (a pod reaching its own service) for masquerade and
DNATs. ``nat-postrouting`` masquerades marked traffic and pod traffic leaving the pod ranges.
``filter-*``: connections to services without Ready endpoints are rejected (refused at once
rather than black-holed), then network isolation: same network accepted, one shoal network to
another dropped, internal networks kept in; everything else is left alone (policy accept).

The script is derived from a :class:`TableModel` (chains, sets, map elements as data). A full
render recreates the table in one transaction; a delta is the difference between two models,
so it ends in exactly the state a full render of the new rule set would produce.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from shoal.network._nftscript import TableModel, diff_models, render_model, script

Protocol = Literal["tcp", "udp"]
Balance = Literal["roundrobin", "random", "weighted"]

MASQ_MARK = 0x4000
"""Packet-mark bit for "masquerade this connection", as kube-proxy uses."""
DEFAULT_AFFINITY_TIMEOUT = 10800
"""Kubernetes' default ``sessionAffinityConfig.clientIP.timeoutSeconds``."""
DNS_PORT = 53
MAX_WEIGHT_SLOTS = 1000
"""Upper bound on a weighted service's map size; larger weight sums are scaled down."""
MAX_NAME = 64
"""Longest chain or set name rendered (the kernel allows 256 since Linux 4.16)."""

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}\Z")
_SLUG_BAD = re.compile(r"[^A-Za-z0-9_./-]")
_VIP_MAP = "type ipv4_addr . inet_proto . inet_service : verdict;"
_AFFINITY_MAP = (
    "type ipv4_addr . ipv4_addr . inet_proto . inet_service : mark; "
    "flags dynamic,timeout; size 1048576;"
)
_AFFINITY_KEY = "ip saddr . ip daddr . meta l4proto . th dport"
_PORT_MAP = "type inet_proto . inet_service : verdict;"
_MAPS = {
    "service-ips": _VIP_MAP,
    "service-nodeports": _PORT_MAP,
    "host-ports": _PORT_MAP,
    "no-endpoint-services": _VIP_MAP,
    "no-endpoint-nodeports": _PORT_MAP,
    "affinity": _AFFINITY_MAP,
}
_HOOKS = {
    "nat-prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    # "priority dstnat" is refused on output by nft 1.0.6; -100 is the same number.
    "nat-output": "type nat hook output priority -100; policy accept;",
    "nat-postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    "filter-input": "type filter hook input priority filter; policy accept;",
    "filter-forward": "type filter hook forward priority filter; policy accept;",
    "filter-output": "type filter hook output priority filter; policy accept;",
}


@functools.lru_cache(maxsize=65536)
def _is_ipv4(value: str) -> bool:
    """(Cached: every rule rebuild sees the same ten thousand endpoint addresses again.)"""
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _ipv4(value: str, what: str) -> None:
    if not _is_ipv4(value):
        raise ValueError(f"{what}: {value!r} is not an IPv4 address")


def _port(value: int, what: str) -> None:
    if not 1 <= value <= 65535:
        raise ValueError(f"{what}: port {value} out of range 1-65535")


def _protocol(value: str) -> None:
    if value not in ("tcp", "udp"):
        raise ValueError(f"protocol must be tcp or udp, not {value!r}")


@dataclass(frozen=True)
class Backend:
    """One Ready endpoint of a service; ``weight`` counts only for ``balance="weighted"``."""

    ip: str
    port: int
    weight: int = 1
    alternates: tuple[tuple[str, str], ...] = ()
    """(subnet, address) pairs: the same pod on its other networks. A client from one of
    those subnets is sent to the pod's address there, as a Compose service is reached on
    whichever network the two share; everyone else to ``ip``."""

    def __post_init__(self) -> None:
        _ipv4(self.ip, "backend")
        _port(self.port, "backend")
        for subnet, address in self.alternates:
            _ipv4(address, f"backend {self.ip} alternate")
            try:
                ipaddress.IPv4Network(subnet)
            except ValueError:
                raise ValueError(f"backend {self.ip}: bad subnet {subnet!r}") from None
        if self.weight < 1:
            raise ValueError(f"backend {self.ip}:{self.port}: weight must be >= 1")


@dataclass(frozen=True)
class ServiceRule:
    """One service port. ``key`` (e.g. ``default/web:http``) plus the protocol names its chains,
    so the same port keeps the same chains across updates. ``backends`` are the Ready
    endpoints only (the caller filters); none means connections are refused."""

    key: str
    cluster_ip: str | None
    port: int
    protocol: Protocol = "tcp"
    backends: tuple[Backend, ...] = ()
    balance: Balance = "roundrobin"
    affinity_timeout: int | None = None
    """Seconds a client stays pinned to its endpoint (ClientIP affinity); None: no affinity."""
    node_port: int | None = None

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("service key must not be empty")
        if self.cluster_ip is not None:
            _ipv4(self.cluster_ip, f"service {self.key}")
        _port(self.port, f"service {self.key}")
        _protocol(self.protocol)
        if self.balance not in ("roundrobin", "random", "weighted"):
            raise ValueError(f"service {self.key}: unknown balance {self.balance!r}")
        if self.affinity_timeout is not None and self.affinity_timeout < 1:
            raise ValueError(f"service {self.key}: affinity timeout must be >= 1 s")
        if self.node_port is not None:
            _port(self.node_port, f"service {self.key} nodePort")
        seen = {(b.ip, b.port) for b in self.backends}
        if len(seen) != len(self.backends):
            raise ValueError(f"service {self.key}: the same backend is listed twice")


@dataclass(frozen=True)
class HostPort:
    """A container ``hostPort``: ``host_port`` on the node's own addresses -> the pod."""

    host_port: int
    protocol: Protocol
    pod_ip: str
    container_port: int

    def __post_init__(self) -> None:
        _port(self.host_port, "hostPort")
        _protocol(self.protocol)
        _ipv4(self.pod_ip, "hostPort pod")
        _port(self.container_port, "hostPort container port")


@dataclass(frozen=True)
class NetworkRule:
    """A shoal network on this node: ``subnet`` is the whole network's range (all nodes),
    ``bridge`` the local bridge its pods hang off (packets from it must come from the subnet).
    An ``internal`` network exchanges no traffic with anything outside its subnet."""

    name: str
    subnet: str
    bridge: str
    internal: bool = False

    def __post_init__(self) -> None:
        try:
            ipaddress.IPv4Network(self.subnet)
        except ValueError:
            raise ValueError(f"network {self.name}: bad subnet {self.subnet!r}") from None
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", self.bridge):
            raise ValueError(f"network {self.name}: bad bridge name {self.bridge!r}")


@dataclass(frozen=True)
class DNSRule:
    """The pods' DNS server address ``vip``:53 (udp and tcp), DNAT-ed to where shoal's DNS
    listens. A loopback target needs ``route_localnet=1`` on the bridges (the CNI side)."""

    vip: str
    target_ip: str
    target_port: int

    def __post_init__(self) -> None:
        _ipv4(self.vip, "DNS VIP")
        _ipv4(self.target_ip, "DNS target")
        _port(self.target_port, "DNS target")


@dataclass(frozen=True)
class RuleSet:
    """Everything one node's table holds. Construction checks that no two entries claim the
    same address, protocol and port (nft would refuse the whole transaction)."""

    table: str
    services: tuple[ServiceRule, ...] = ()
    host_ports: tuple[HostPort, ...] = ()
    networks: tuple[NetworkRule, ...] = ()
    dns: DNSRule | None = None
    pod_cidrs: tuple[str, ...] = ()
    """Every pod subnet of the cluster: traffic to them is never masqueraded."""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.table):
            raise ValueError(f"bad nft table name {self.table!r}")
        for cidr in self.pod_cidrs:
            ipaddress.IPv4Network(cidr)
        keys: set[tuple[str, str]] = set()
        vips: set[tuple[str, str, int]] = set()
        local: set[tuple[str, int]] = set()
        if self.dns is not None:
            vips |= {(self.dns.vip, "tcp", DNS_PORT), (self.dns.vip, "udp", DNS_PORT)}
        for s in self.services:
            _claim(keys, (s.key, s.protocol), f"service {s.key}/{s.protocol} listed twice")
            if s.cluster_ip is not None:
                what = f"{s.cluster_ip}:{s.port}/{s.protocol} is claimed twice"
                _claim(vips, (s.cluster_ip, s.protocol, s.port), what)
            if s.node_port is not None:
                _claim(local, (s.protocol, s.node_port), f"node port {s.node_port} used twice")
        for h in self.host_ports:
            _claim(local, (h.protocol, h.host_port), f"host port {h.host_port} used twice")
        names = [n.name for n in self.networks]
        if len(set(names)) != len(names):
            raise ValueError("a network is listed twice")


def _claim(seen: set[Any], item: object, message: str) -> None:
    if item in seen:
        raise ValueError(message)
    seen.add(item)


# --- names ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceNames:
    """The chain and set names of one service port. ``id`` is a stable hash of key and
    protocol (8 base32 characters), what an incremental update addresses; the rest of a name
    is the key made readable for ``nft list``."""

    id: str
    slug: str

    @classmethod
    def of(cls, key: str, protocol: str) -> ServiceNames:
        digest = hashlib.sha256(f"{key}/{protocol}".encode()).digest()
        return cls(base64.b32encode(digest)[:8].decode(), _SLUG_BAD.sub("_", key)[:40])

    @property
    def service(self) -> str:
        return f"svc-{self.id}-{self.slug}"

    @property
    def external(self) -> str:
        return f"ext-{self.id}-{self.slug}"

    @property
    def balancer(self) -> str:
        return f"lb-{self.id}-{self.slug}"

    def endpoint(self, b: Backend) -> str:
        return f"ep-{self.id}-{b.ip}-{b.port}"

    @property
    def affinity(self) -> str:
        return f"aff-{self.id}-{self.slug}"


def host_port_chain(h: HostPort) -> str:
    return f"hostport-{h.protocol}-{h.host_port}"


# --- the model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fragment:
    """What one service port or host port adds to the table."""

    chains: tuple[tuple[str, tuple[str, ...]], ...] = ()
    sets: tuple[tuple[str, str], ...] = ()
    elements: tuple[tuple[str, str, str], ...] = ()
    """(map, key, verdict)"""


def _ip_key(b: Backend) -> tuple[int, ...]:
    return (*(int(x) for x in b.ip.split(".")), b.port)


def selection_order(backends: Iterable[Backend], balance: Balance) -> list[Backend]:
    """The endpoint sequence a service's ``numgen`` indexes: each backend once, or for
    ``weighted`` each ``weight`` times (reduced by their gcd, scaled to at most
    :data:`MAX_WEIGHT_SLOTS`), interleaved by smooth weighted round robin so that a 3:1 split
    reads a a b a rather than a a a b."""
    ordered = sorted(backends, key=_ip_key)
    if balance != "weighted" or len(ordered) < 2:
        return ordered
    weights = [b.weight for b in ordered]
    divisor = math.gcd(*weights)
    weights = [w // divisor for w in weights]
    total = sum(weights)
    if total > MAX_WEIGHT_SLOTS:
        weights = [max(1, w * MAX_WEIGHT_SLOTS // total) for w in weights]
        total = sum(weights)
    current = [0] * len(ordered)
    sequence: list[Backend] = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(ordered)), key=lambda i: current[i])
        current[best] -= total
        sequence.append(ordered[best])
    return sequence


def affinity_ids(backends: Iterable[Backend]) -> dict[Backend, int]:
    """Each endpoint's number in the affinity map: its IPv4 address as an integer, so that a
    client's pin survives other endpoints coming and going. Endpoints sharing an address
    (host-network pods on different ports) are numbered 1, 2, ... in (address, port) order
    instead (no pod address is below 1.0.0.0)."""
    ordered = sorted(backends, key=_ip_key)
    by_ip = Counter(b.ip for b in ordered)
    shared = [b for b in ordered if by_ip[b.ip] > 1]
    ids = {b: int(ipaddress.IPv4Address(b.ip)) for b in ordered if by_ip[b.ip] == 1}
    ids.update({b: n for n, b in enumerate(shared, start=1)})
    return ids


@functools.lru_cache(maxsize=16384)
def _service(s: ServiceRule) -> _Fragment:
    """A service port's chains, sets and map elements (cached: a full render after a change
    rebuilds only the services that changed)."""
    names = ServiceNames.of(s.key, s.protocol)
    vip_key = f"{s.cluster_ip} . {s.protocol} . {s.port}"
    node_key = f"{s.protocol} . {s.node_port}"
    elements: list[tuple[str, str, str]] = []
    if not s.backends:
        if s.cluster_ip is not None:
            elements.append(("no-endpoint-services", vip_key, "goto reject-chain"))
        if s.node_port is not None:
            elements.append(("no-endpoint-nodeports", node_key, "goto reject-chain"))
        return _Fragment(elements=tuple(elements))
    svc = names.service
    chains: list[tuple[str, tuple[str, ...]]] = []
    sets: list[tuple[str, str]] = []
    if s.cluster_ip is not None:
        elements.append(("service-ips", vip_key, f"goto {svc}"))
    if s.node_port is not None:
        chains.append((names.external, ("jump mark-for-masquerade", f"goto {svc}")))
        elements.append(("service-nodeports", node_key, f"goto {names.external}"))
    rules: list[str] = []
    ids = affinity_ids(s.backends) if s.affinity_timeout is not None else {}
    if ids:
        # The client's endpoint, if it has one: its number into ct mark (a scratch register:
        # the endpoint chain clears it), then on to that endpoint. A number whose endpoint
        # has gone finds nothing and the balancer below picks anew.
        sets.append((names.affinity, _AFFINITY_PICK_MAP))
        rules.append(f"ct mark set {_AFFINITY_KEY} map @affinity ct mark vmap @{names.affinity}")
        # Found, but the endpoint is gone: forget the pin (an update never replaces a map
        # entry's data), so the endpoint the balancer picks next is remembered instead. The
        # kernel wants data with a map delete; only the key counts.
        rules.append(f"ct mark != 0 delete @affinity {{ {_AFFINITY_KEY} : 0 }} ct mark set 0")
        elements += [
            (names.affinity, f"{n:#x}", f"goto {names.endpoint(b)}") for b, n in ids.items()
        ]
    for b in sorted(s.backends, key=_ip_key):
        ep = names.endpoint(b)
        ep_rules = [f"ip saddr {b.ip} jump mark-for-masquerade"]  # hairpin
        ep_rules += [f"ip saddr {alt} jump mark-for-masquerade" for _, alt in b.alternates]
        if ids:
            # A rule of its own: a full map fails the update, which must not skip the DNAT.
            ep_rules.append("ct mark set 0")
            ep_rules.append(
                f"update @affinity {{ {_AFFINITY_KEY} timeout {s.affinity_timeout}s : {ids[b]:#x} }}"
            )
        ep_rules += [
            f"ip saddr {subnet} meta l4proto {s.protocol} dnat to {alt}:{b.port}"
            for subnet, alt in b.alternates
        ]
        ep_rules.append(f"meta l4proto {s.protocol} dnat to {b.ip}:{b.port}")
        chains.append((ep, tuple(ep_rules)))
    # The endpoint is chosen through a named map rather than an anonymous one: the kernel
    # binds each anonymous set by walking the whole transaction, quadratic in a full load.
    sequence = selection_order(s.backends, s.balance)
    sets.append((names.balancer, _BALANCER_MAP))
    gen = "random" if s.balance == "random" else "inc"
    rules.append(f"numgen {gen} mod {len(sequence)} vmap @{names.balancer}")
    elements += [
        (names.balancer, str(i), f"goto {names.endpoint(b)}") for i, b in enumerate(sequence)
    ]
    chains.append((svc, tuple(rules)))
    return _Fragment(tuple(chains), tuple(sets), tuple(elements))


@functools.lru_cache(maxsize=4096)
def _host_port(h: HostPort) -> _Fragment:
    chain = host_port_chain(h)
    # Only a pod reaching its own host port is masqueraded; others keep their address.
    rules = (
        f"ip saddr {h.pod_ip} jump mark-for-masquerade",
        f"meta l4proto {h.protocol} dnat to {h.pod_ip}:{h.container_port}",
    )
    element = ("host-ports", f"{h.protocol} . {h.host_port}", f"goto {chain}")
    return _Fragment(chains=((chain, rules),), elements=(element,))


def _merge(
    fragments: Iterable[_Fragment],
    chains: dict[str, tuple[str, ...]],
    sets: dict[str, str],
    elements: dict[str, dict[str, str]],
) -> None:
    for f in fragments:
        chains.update(f.chains)
        sets.update(f.sets)
        for name, key, value in f.elements:
            elements.setdefault(name, {})[key] = value


_INTERVAL_SET = "type ipv4_addr; flags interval; auto-merge;"
_AFFINITY_PICK_MAP = "typeof ct mark : verdict;"
_BALANCER_MAP = "typeof numgen inc mod 2 : verdict;"
_LOCAL = "fib daddr type local ip daddr != 127.0.0.0/8"


def build_model(rs: RuleSet) -> TableModel:
    """The complete table for ``rs`` as data (see :class:`TableModel`)."""
    sets = dict(_MAPS)
    elements: dict[str, dict[str, str]] = {m: {} for m in _MAPS}
    subnets = sorted({n.subnet for n in rs.networks})
    internal = sorted({n.subnet for n in rs.networks if n.internal})
    pod_ranges = sorted(set(rs.pod_cidrs) | set(subnets))
    for name, members in (
        ("networks", subnets),
        ("internal-networks", internal),
        ("pod-cidrs", pod_ranges),
    ):
        if members:
            sets[name] = _INTERVAL_SET
            elements[name] = dict.fromkeys(members, "")

    chains: dict[str, tuple[str, ...]] = {
        "nat-prerouting": ("jump services",),
        "nat-output": ("jump services",),
        "nat-postrouting": ("jump masquerading",),
        "services": (
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            f"{_LOCAL} meta l4proto . th dport vmap @service-nodeports",
            f"{_LOCAL} meta l4proto . th dport vmap @host-ports",
        ),
        "mark-for-masquerade": (f"meta mark set meta mark | {MASQ_MARK:#x}",),
        "reject-chain": ("reject",),
        "service-endpoints-check": (
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
        ),
        "nodeport-endpoints-check": (
            f"{_LOCAL} meta l4proto . th dport vmap @no-endpoint-nodeports",
        ),
    }
    masq = [
        f"meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} "
        f"meta mark set meta mark ^ {MASQ_MARK:#x} masquerade fully-random"
    ]
    if internal:
        masq.append("ip saddr @internal-networks return")
    if subnets:
        masq.append("ip saddr @networks ip daddr != @pod-cidrs masquerade")
    chains["masquerading"] = tuple(masq)

    forward = ["ct state new jump service-endpoints-check"]
    inbound = ["ct state new jump nodeport-endpoints-check"]
    if rs.dns is not None:
        target = f"{rs.dns.target_ip}:{rs.dns.target_port}"
        chains["dns"] = (f"meta l4proto {{ tcp, udp }} dnat to {target}",)
        for proto in ("tcp", "udp"):
            elements["service-ips"][f"{rs.dns.vip} . {proto} . {DNS_PORT}"] = "goto dns"
        # Even an internal network's pods may ask the DNS server.
        exempt = f"ct status dnat ct original ip daddr {rs.dns.vip} accept"
        forward.append(exempt)
        inbound.append(exempt)
    if rs.networks:
        chains["isolation"] = _isolation(rs.networks, bool(internal))
        # Isolation is stateless and symmetric, so replies of allowed connections pass by the
        # same rules; no "ct state established accept" ahead of it, which would let flows
        # opened before a network became isolated or internal carry on.
        forward.append("jump isolation")
        inbound.append("jump isolation")
    chains["filter-forward"] = tuple(forward)
    chains["filter-input"] = tuple(inbound)
    chains["filter-output"] = ("ct state new jump service-endpoints-check",)

    services = sorted(rs.services, key=lambda s: (s.key, s.protocol))
    host_ports = sorted(rs.host_ports, key=lambda h: (h.protocol, h.host_port))
    _merge(map(_service, services), chains, sets, elements)
    _merge(map(_host_port, host_ports), chains, sets, elements)
    return TableModel(rs.table, _HOOKS, chains, sets, elements)


def _isolation(networks: tuple[NetworkRule, ...], any_internal: bool) -> tuple[str, ...]:
    rules = [f'iifname "{n.bridge}" ip saddr != {n.subnet} drop' for n in networks]
    rules += [f"ip saddr {n.subnet} ip daddr {n.subnet} accept" for n in networks]
    rules.append("ip saddr @networks ip daddr @networks drop")
    if any_internal:
        rules += ["ip saddr @internal-networks drop", "ip daddr @internal-networks drop"]
    return tuple(rules)


# --- scripts -------------------------------------------------------------------------------


def render_full(ruleset: RuleSet) -> str:
    """One ``nft -f`` script that atomically replaces (or creates) the whole table."""
    return render_model(build_model(ruleset))


def render_delete(table: str) -> str:
    """Delete the table; not an error when it does not exist (``add`` first)."""
    if not _NAME_RE.match(table):
        raise ValueError(f"bad nft table name {table!r}")
    return script([f"add table ip {table}", f"delete table ip {table}"])


def render_delta(old: RuleSet, new: RuleSet) -> str:
    """A script changing a table that holds ``old`` into one holding ``new``, touching only
    the services and host ports that changed (empty when nothing did). When the table name,
    networks, DNS or pod ranges change it is :func:`render_full` instead: those shape the
    shared chains, and such changes are rare.

    Only the changed services' fragments are built and diffed; no two services share a map
    key (RuleSet checks), so the rest of the table cannot be affected."""
    shared = (new.table, new.networks, new.dns, new.pod_cidrs)
    if (old.table, old.networks, old.dns, old.pod_cidrs) != shared:
        return render_full(new)
    old_svc = {(s.key, s.protocol): s for s in old.services}
    new_svc = {(s.key, s.protocol): s for s in new.services}
    old_hp = {(h.protocol, h.host_port): h for h in old.host_ports}
    new_hp = {(h.protocol, h.host_port): h for h in new.host_ports}
    parts = []
    for svc, hp, other_svc, other_hp in (
        (old_svc, old_hp, new_svc, new_hp),
        (new_svc, new_hp, old_svc, old_hp),
    ):
        chains: dict[str, tuple[str, ...]] = {}
        sets: dict[str, str] = {}
        elements: dict[str, dict[str, str]] = {}
        _merge(
            (_service(s) for k, s in sorted(svc.items()) if other_svc.get(k) != s),
            chains,
            sets,
            elements,
        )
        _merge(
            (_host_port(h) for k, h in sorted(hp.items()) if other_hp.get(k) != h),
            chains,
            sets,
            elements,
        )
        parts.append(TableModel(new.table, {}, chains, sets, elements))
    return diff_models(parts[0], parts[1])
