"""Which DNS names a catalog answers, and the records behind each, as wire-format pieces.

This is the cold path, run when the catalog changes, and it is split by owner so a change
re-renders only what it touches: :func:`service_names` gives the names of one service
(``web.service.consul``, tags, RFC 2782 ``_web._tcp``, ``web.NS.svc.cluster.local``),
:func:`node_names` those of the nodes (``n1.node.consul``) and :func:`cluster_ip_names`
those of a Service with a virtual IP (``web.NS.svc.cluster.local`` and its ports' SRV
names, kube-dns' schema, which take precedence over the pods' answers for that name).

Records are kept as the bytes they take in a response. An answer record's owner is always
the question's name, so it is written as a compression pointer to offset 12 (``c00c``) and
the record is the same bytes in every response; a response is then the header, the query's
own question and a concatenation (see :mod:`._answers`). dnspython renders what is worth a
library (the zones' SOA records, in :mod:`._answers`); the A/AAAA/SRV RDATA are a packed
address and three integers plus a name, packed here directly because dnspython's rdata
objects cost 13-26 us each, which alone would take a 10,000-instance catalog past its
build budget. The tests parse every kind of answer back with dnspython and dig.
"""

from __future__ import annotations

import functools
import ipaddress
import struct

from shoal.discovery._catalog import Catalog, Instance
from shoal.discovery._derive import ClusterIPService
from shoal.discovery.dns._config import DNSConfig

_POINTER_TO_QUESTION = b"\xc0\x0c"
_SRV_HEAD = struct.Struct("!HHIHHHH")  # type, class, ttl, rdlength, priority, weight, port


class Records:
    """What one name answers: complete answer records (owner ``c00c``) per type, and for
    each SRV record the address record of its target for the additional section."""

    __slots__ = ("a", "aaaa", "cursor", "srv")

    def __init__(
        self,
        a: list[bytes] | None = None,
        aaaa: list[bytes] | None = None,
        srv: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.a: list[bytes] = a if a is not None else []
        self.aaaa: list[bytes] = aaaa if aaaa is not None else []
        self.srv: list[tuple[bytes, bytes]] = srv if srv is not None else []
        self.cursor = 0
        """Round-robin position for answers that are not cached (TCP, odd queries)."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Records):
            return NotImplemented
        return self.a == other.a and self.aaaa == other.aaaa and self.srv == other.srv

    __hash__ = None  # type: ignore[assignment]

    def dedupe(self) -> Records:
        """Drop repeated records (two instances at one address answer one A record)."""
        self.a = list(dict.fromkeys(self.a))
        self.aaaa = list(dict.fromkeys(self.aaaa))
        self.srv = list(dict.fromkeys(self.srv))
        return self

    def merged(self, other: Records) -> Records:
        """The union of two owners' records for one name (a rare collision)."""
        return Records(self.a + other.a, self.aaaa + other.aaaa, self.srv + other.srv).dedupe()


def name_wire(labels: tuple[str, ...], suffix: bytes) -> bytes | None:
    """``labels`` (already valid, see :func:`label`) before the wire-format ``suffix``, or
    None when the whole name would exceed DNS's 255 bytes."""
    wire = b"".join(bytes((len(x),)) + x.encode("ascii") for x in labels) + suffix
    return wire if len(wire) <= 255 else None


@functools.lru_cache(maxsize=65536)
def label(text: str) -> str | None:
    """``text`` lowercased if it can be one DNS label (ASCII, 1-63 characters, no dot or
    backslash), else None: names built from it are not answered."""
    lowered = text.lower()
    if not 0 < len(lowered) <= 63 or not lowered.isascii() or "." in lowered or "\\" in lowered:
        return None
    return lowered


@functools.lru_cache(maxsize=65536)
def packed_address(address: str) -> bytes | None:
    """The 4 or 16 bytes of an IP address, None for anything else (such instances are
    skipped, as Consul answers no CNAMEs here)."""
    try:
        return ipaddress.ip_address(address).packed
    except ValueError:
        return None


@functools.lru_cache(maxsize=65536)
def address_rr(packed: bytes, ttl: int) -> bytes:
    """An A or AAAA record without its owner: type, class, TTL, RDLENGTH, RDATA."""
    rtype = b"\x00\x01" if len(packed) == 4 else b"\x00\x1c"
    return rtype + b"\x00\x01" + ttl.to_bytes(4, "big") + len(packed).to_bytes(2, "big") + packed


def _srv_rr(weight: int, port: int, target: bytes, ttl: int, priority: int = 1) -> bytes:
    """An SRV answer (owner ``c00c``). RFC 2782: the target is never compressed."""
    head = _SRV_HEAD.pack(33, 1, ttl, 6 + len(target), priority, weight, port)
    return _POINTER_TO_QUESTION + head + target


class Zones:
    """The wire-format suffixes names are built under, from a config."""

    def __init__(self, config: DNSConfig) -> None:
        domain = name_wire(tuple(config.domain.strip(".").lower().split(".")), b"\x00")
        cluster = name_wire(tuple(config.cluster_domain.strip(".").lower().split(".")), b"\x00")
        if domain is None or cluster is None:
            raise ValueError("zone names longer than 255 bytes")  # DNSConfig checks labels
        self.domain: bytes = domain
        self.cluster: bytes = cluster
        dc = label(config.datacenter)
        self.dc_domain = bytes((len(dc),)) + dc.encode() + self.domain if dc else None
        # Answers are given under both forms; SRV targets use the most specific one.
        self.suffixes = [self.domain] + ([self.dc_domain] if self.dc_domain else [])
        self.target_suffix = self.suffixes[-1]
        self.service = [b"\x07service" + s for s in self.suffixes]
        self.node = [b"\x04node" + s for s in self.suffixes]
        self.addr = [b"\x04addr" + s for s in self.suffixes]


def node_names(catalog: Catalog, config: DNSConfig, zones: Zones) -> dict[bytes, Records]:
    """``NODE.node.consul`` and ``NODE.node.DC.consul`` for every node with an IP address.
    Nodes are answered whatever their health, as in Consul."""
    ttl = config.node_record_ttl
    names: dict[bytes, Records] = {}
    for node in catalog.nodes():
        node_label = label(node.name)
        packed = packed_address(node.address)
        if node_label is None or packed is None:
            continue
        rr = _POINTER_TO_QUESTION + address_rr(packed, ttl)
        records = Records([rr]) if len(packed) == 4 else Records(aaaa=[rr])
        for suffix in zones.node:
            key = name_wire((node_label,), suffix)
            if key is not None:
                names[key] = records
    return names


class _ServiceBuilder:
    """Collects one service's records per name while walking its instances once."""

    def __init__(self, catalog: Catalog, config: DNSConfig, zones: Zones, service: str) -> None:
        self.catalog = catalog
        self.zones = zones
        self.ttl = config.ttl_for_service(service)
        self.everything = Records()
        self.tagged: dict[str, Records] = {}
        self.namespaced: dict[str, Records] = {}

    def add(self, inst: Instance, packed: bytes) -> None:
        ttl = self.ttl
        address = address_rr(packed, ttl)
        target = self._target(inst, packed)
        weight = inst.weights[0] if inst.status == "passing" else inst.weights[1]
        srv = (_srv_rr(weight, inst.port, target, ttl), target + address)
        answer = _POINTER_TO_QUESTION + address
        sets = [self.everything]
        for tag in {t for t in map(label, inst.tags) if t is not None}:
            sets.append(self.tagged.setdefault(tag, Records()))
        ns = label(inst.namespace) if inst.namespace else None
        if ns is not None:
            sets.append(self.namespaced.setdefault(ns, Records()))
        for records in sets:
            (records.a if len(packed) == 4 else records.aaaa).append(answer)
            records.srv.append(srv)

    def _target(self, inst: Instance, packed: bytes) -> bytes:
        """Consul's SRV target: the node's name when the instance uses the node's address,
        else ``HEXIP.addr.DC.DOMAIN`` (which every ``.addr`` query decodes)."""
        node = self.catalog.node(inst.node)
        node_label = label(inst.node)
        suffix = self.zones.target_suffix
        if node is not None and node_label is not None and packed_address(node.address) == packed:
            wire = name_wire((node_label, "node"), suffix)
            if wire is not None:
                return wire
        wire = name_wire((packed.hex(), "addr"), suffix)
        assert wire is not None  # at most 32 + 5 bytes before a suffix DNSConfig bounds
        return wire

    def names(self, svc: str) -> dict[bytes, Records]:
        names: dict[bytes, Records] = {}
        if not (self.everything.a or self.everything.aaaa):
            return names  # no healthy instance: the service does not exist in DNS
        for records in (self.everything, *self.tagged.values(), *self.namespaced.values()):
            records.dedupe()
        forms: list[tuple[tuple[str, ...], Records]] = [
            ((svc,), self.everything),
            (("_" + svc, "_tcp"), self.everything),
        ]
        for tag, records in self.tagged.items():
            forms.append(((tag, svc), records))
            if tag != "tcp":
                forms.append((("_" + svc, "_" + tag), records))
        for suffix in self.zones.service:
            for labels, records in forms:
                key = name_wire(labels, suffix)
                if key is not None:
                    names[key] = records
        for ns, records in self.namespaced.items():
            key = name_wire((svc, ns, "svc"), self.zones.cluster)
            if key is not None:
                names[key] = records
        return names


def service_names(
    catalog: Catalog, service: str, config: DNSConfig, zones: Zones
) -> tuple[dict[bytes, Records], set[str]]:
    """The names ``service`` answers in ``catalog`` (none when no instance is healthy),
    and the nodes its instances run on (their addresses and names appear in the answers)."""
    nodes: set[str] = set()
    svc = label(service)
    if svc is None:
        return {}, nodes
    builder = _ServiceBuilder(catalog, config, zones, service)
    include_warning = not config.only_passing
    for inst in catalog.instances(service):
        nodes.add(inst.node)
        if not inst.is_healthy(include_warning=include_warning):
            continue
        packed = packed_address(catalog.instance_address(inst))
        if packed is not None:
            builder.add(inst, packed)
    return builder.names(svc), nodes


def cluster_ip_names(
    service: ClusterIPService, config: DNSConfig, zones: Zones
) -> dict[bytes, Records]:
    """kube-dns' names for a Service with a cluster IP (none if its names are not valid):

    * ``NAME.NS.svc.ZONE`` A (or AAAA): the cluster IP; SRV: one record per port, the
      target being that same name, its address in the additional section;
    * ``_PORT._PROTO.NAME.NS.svc.ZONE`` SRV for each named port.

    SRV records have priority 0 and weight ``100 // count``, as CoreDNS writes them; the TTL
    is the service's (:meth:`DNSConfig.ttl_for_service`).
    """
    svc, ns = label(service.name), label(service.namespace)
    packed = packed_address(service.address)
    if svc is None or ns is None or packed is None:
        return {}
    target = name_wire((svc, ns, "svc"), zones.cluster)
    if target is None:
        return {}
    ttl = config.ttl_for_service(service.name)
    address = address_rr(packed, ttl)
    extra = target + address
    answer = _POINTER_TO_QUESTION + address
    numbers = list(dict.fromkeys(p.port for p in service.ports))  # 53/tcp + 53/udp: one
    weight = max(1, 100 // len(numbers)) if numbers else 0
    bare = Records(
        [answer] if len(packed) == 4 else None,
        [answer] if len(packed) == 16 else None,
        [(_srv_rr(weight, port, target, ttl, priority=0), extra) for port in numbers],
    )
    names = {target: bare}
    for p in service.ports:  # Kubernetes keeps port names unique within a Service
        port_label, proto = label(p.name) if p.name else None, label(p.protocol)
        if port_label is None or proto is None:
            continue
        key = name_wire(("_" + port_label, "_" + proto, svc, ns, "svc"), zones.cluster)
        if key is not None and key not in names:
            names[key] = Records(srv=[(_srv_rr(100, p.port, target, ttl, priority=0), extra)])
    return names
