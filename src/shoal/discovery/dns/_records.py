"""DNS answers precomputed as wire bytes from a catalog snapshot, and the per-query hot path.

Building a DNS message with a library costs tens of microseconds, which caps a Python server
at a few thousand queries per second. So the cold path (:func:`build_table`, run when the
catalog changes) renders every answer shoal can give with dnspython, once, and splits each
rendered message around its question. The hot path (:meth:`AnswerTable.answer`) reads only
the header and the question of a query, looks the lowercased name and type up, and glues
``query ID + flags/counts + the query's own question bytes + the template's tail``. The
question is copied from the query so its letter case survives (resolvers using 0x20 case
randomisation check it); compression pointers in the tail point into the question, whose
length does not depend on case, so they stay valid.

Multi-record answers are rendered in a few rotations handed out round robin, which spreads
clients over instances the way Consul's per-answer shuffle does. EDNS0 is honoured by
appending an OPT record and sizing the UDP limit from the client's; answers that do not fit
go out as an empty response with the TC bit, and the client retries over TCP.
"""

from __future__ import annotations

import functools
import io
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from shoal.discovery._catalog import Catalog, Instance

QTYPE_A = 1
QTYPE_SOA = 6
QTYPE_AAAA = 28
QTYPE_SRV = 33
_QTYPE_OPT = 41
_NODATA = 0  # key under which a known name keeps its "no records of that type" answer
_IN = dns.rdataclass.IN


@dataclass(frozen=True)
class DNSConfig:
    """How the DNS answers are shaped; the defaults are Consul's."""

    domain: str = "consul"
    """The zone for ``.service``, ``.node`` and ``.addr`` names."""
    datacenter: str = "dc1"
    """Names are answered with and without this label (``web.service.dc1.consul``)."""
    cluster_domain: str = "cluster.local"
    """The zone for Kubernetes-style ``NAME.NAMESPACE.svc`` names."""
    ttl: int = 0
    """TTL of A/AAAA/SRV records, seconds (Consul's default 0: always ask again)."""
    only_passing: bool = False
    """Answer only passing instances; by default warning counts as passing, as in Consul.
    Critical instances are never answered."""
    rotations: int = 4
    """How many orders of a multi-record answer are kept and handed out round robin."""
    max_udp_payload: int = 4096
    """The most this server sends over UDP to an EDNS client (and advertises in its OPT)."""
    soa_mname: str = "ns"
    """SOA primary name server, relative to each zone."""
    soa_rname: str = "hostmaster"
    """SOA responsible mailbox, relative to each zone."""
    soa_serial: int = 1
    soa_refresh: int = 3600
    soa_retry: int = 600
    soa_expire: int = 86400
    soa_minimum: int = 0
    """Negative-caching TTL (also the SOA record's own TTL), seconds."""


class _Template:
    """One rendered response, split around its question (see the module docstring)."""

    __slots__ = ("heads", "heads_edns", "size", "size_edns", "tail", "tail_edns")

    def __init__(self, wire: bytes, question_len: int, opt: bytes) -> None:
        hi, lo = wire[2], wire[3]
        counts = wire[4:12]
        arcount = int.from_bytes(counts[6:8], "big") + 1
        counts_edns = counts[:6] + arcount.to_bytes(2, "big")
        # Index 0: the query had RD clear; index 1: set (RD is copied into the answer).
        self.heads = (bytes((hi, lo)) + counts, bytes((hi | 1, lo)) + counts)
        self.heads_edns = (bytes((hi, lo)) + counts_edns, bytes((hi | 1, lo)) + counts_edns)
        self.tail = wire[12 + question_len :]
        self.tail_edns = self.tail + opt
        # Without the question, which each query brings (and may be longer than ours).
        self.size = 12 + len(self.tail)
        self.size_edns = self.size + len(opt)


class _Entry:
    """The rotations of one answer and the round-robin cursor over them."""

    __slots__ = ("next", "templates")

    def __init__(self, templates: list[_Template]) -> None:
        self.templates = templates
        self.next = 0

    def pick(self) -> _Template:
        templates = self.templates
        if len(templates) == 1:
            return templates[0]
        i = self.next
        self.next = (i + 1) % len(templates)
        return templates[i]


class AnswerTable:
    """Every answer for one catalog snapshot; immutable apart from round-robin cursors.

    ``answer`` never raises: a packet whose header cannot be read (or that is itself a
    response) yields None — drop it; a readable but malformed one yields FORMERR.
    """

    def __init__(
        self,
        names: dict[bytes, dict[int, _Entry]],
        zones: list[tuple[bytes, _Entry]],
        max_udp_payload: int,
        opt: bytes,
    ) -> None:
        self._names = names
        self._zones = zones
        self._opt = opt
        self._max_udp = max_udp_payload
        self._refused = _Entry([_Template(bytes((0, 0, 0x80, 5, 0, 1)) + bytes(6), 0, opt)])
        self._fast: dict[bytes, bytes | _Rotor] = {}
        """UDP responses (without the 2-byte ID) by query bytes after the ID: a repeated
        query costs one slice, one dict lookup and one concatenation."""
        self._truncated = _Template(bytes((0, 0, 0x86, 0, 0, 1)) + bytes(6), 0, opt)

    def __len__(self) -> int:
        """How many names have answers."""
        return len(self._names)

    def answer(self, data: bytes, udp: bool = True) -> bytes | None:
        """The response to the query ``data``, or None when it must be dropped.

        Over UDP (``udp``) an answer larger than the client's limit (512 bytes, or its EDNS0
        payload size capped by ``max_udp_payload``) is replaced by a truncated one (TC set).
        """
        if udp:
            hit = self._fast.get(data[2:])
            if hit is not None:
                if isinstance(hit, bytes):
                    return data[:2] + hit
                return data[:2] + hit.next()
        n = len(data)
        if n < 12:
            return None
        b2 = data[2]
        if b2 & 0x80:  # a response, not a query: answering it could start a loop
            return None
        rd = b2 & 0x01
        if b2 & 0x78:  # opcode other than QUERY
            return data[:2] + bytes((0x80 | (b2 & 0x79), 4)) + bytes(8)
        if data[4] or data[5] != 1:
            return data[:2] + bytes((0x80 | rd, 1)) + bytes(8)
        i = 12
        while True:
            if i >= n:
                return data[:2] + bytes((0x80 | rd, 1)) + bytes(8)
            length = data[i]
            if length == 0:
                break
            if length > 63:  # a compression pointer or reserved label type: not in questions
                return data[:2] + bytes((0x80 | rd, 1)) + bytes(8)
            i += length + 1
        end = i + 5
        if end > n or i - 12 > 254:  # cut short, or a name over 255 bytes
            return data[:2] + bytes((0x80 | rd, 1)) + bytes(8)
        qname = data[12 : i + 1].lower()
        qtype = (data[i + 1] << 8) | data[i + 2]
        edns = 0
        if (
            (data[10] or data[11])
            and n >= end + 11
            and data[end] == 0
            and data[end + 1] == 0
            and data[end + 2] == _QTYPE_OPT
        ):
            edns = max((data[end + 3] << 8) | data[end + 4], 512)
        if data[i + 3] != 0 or data[i + 4] != 1:  # class other than IN
            entry = self._refused
        else:
            by_type = self._names.get(qname)
            if by_type is not None:
                entry = by_type.get(qtype) or by_type[_NODATA]
            else:
                entry = self._refused
                for suffix, nxdomain in self._zones:
                    if qname.endswith(suffix):
                        entry = nxdomain
                        break
        if udp and len(self._fast) < _FAST_LIMIT:
            cached = self._remember(data, entry, rd, end, edns)
            return data[:2] + (cached if isinstance(cached, bytes) else cached.next())
        template = entry.pick()
        if edns:
            if udp and template.size_edns + (end - 12) > min(edns, self._max_udp):
                template = self._truncated
            return data[:2] + template.heads_edns[rd] + data[12:end] + template.tail_edns
        if udp and template.size + (end - 12) > 512:
            template = self._truncated
        return data[:2] + template.heads[rd] + data[12:end] + template.tail

    def _remember(self, data: bytes, entry: _Entry, rd: int, end: int, edns: int) -> bytes | _Rotor:
        """Cache the UDP responses (every rotation) to this exact query. Only queries
        whose bytes end with their question (and OPT) are cached, so the key is the query."""
        question = data[12:end]
        responses = []
        for template in entry.templates:
            if edns:
                if template.size_edns + (end - 12) > min(edns, self._max_udp):
                    template = self._truncated
                responses.append(template.heads_edns[rd] + question + template.tail_edns)
            else:
                if template.size + (end - 12) > 512:
                    template = self._truncated
                responses.append(template.heads[rd] + question + template.tail)
        start = entry.next % len(responses)  # continue the entry's round robin
        cached: bytes | _Rotor = (
            responses[0] if len(responses) == 1 else _Rotor(responses[start:] + responses[:start])
        )
        self._fast[data[2:]] = cached
        return cached


class _Rotor:
    """Rotations of one cached response, handed out round robin."""

    __slots__ = ("i", "items")

    def __init__(self, items: list[bytes]) -> None:
        self.items = items
        self.i = 0

    def next(self) -> bytes:
        i = self.i
        self.i = (i + 1) % len(self.items)
        return self.items[i]


_FAST_LIMIT = 65536
"""Distinct cached query forms per table (a flood of random names must not grow memory
without bound; past the limit queries take the parsing path)."""


# --- cold path -----------------------------------------------------------------------------


def _opt_record(payload: int) -> bytes:
    """An EDNS0 OPT pseudo-record: root owner, type 41, class = UDP payload, no options."""
    return b"\x00\x00\x29" + payload.to_bytes(2, "big") + bytes(6)


def _soa_rrset(zone: dns.name.Name, config: DNSConfig) -> dns.rrset.RRset:
    text = (
        f"{_sub(zone, config.soa_mname)} {_sub(zone, config.soa_rname)} {config.soa_serial} "
        f"{config.soa_refresh} {config.soa_retry} {config.soa_expire} {config.soa_minimum}"
    )
    soa = dns.rdata.from_text(_IN, dns.rdatatype.SOA, text)
    return dns.rrset.from_rdata(zone, config.soa_minimum, soa)


def _render(
    qname: dns.name.Name,
    qtype: int,
    answer: Iterable[dns.rrset.RRset] = (),
    authority: Iterable[dns.rrset.RRset] = (),
    additional: Iterable[dns.rrset.RRset] = (),
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
) -> bytes:
    msg = dns.message.Message(id=0)
    msg.flags = dns.flags.QR | dns.flags.AA
    msg.set_rcode(rcode)
    msg.find_rrset(msg.question, qname, _IN, dns.rdatatype.RdataType.make(qtype), create=True)
    msg.answer.extend(answer)
    msg.authority.extend(authority)
    msg.additional.extend(additional)
    return msg.to_wire()


def _rotations(count: int, wanted: int) -> list[int]:
    """Start offsets of the kept rotations of a ``count``-record answer, spread evenly."""
    return sorted({(k * count) // wanted for k in range(min(count, wanted))}) or [0]


def _addr_rrset(name: dns.name.Name, address: str, ttl: int) -> dns.rrset.RRset:
    return dns.rrset.from_rdata(name, ttl, _addr_rdata(address))


@functools.lru_cache(maxsize=65536)
def _addr_rdata(address: str) -> dns.rdata.Rdata:
    """Parsed once per address: one address appears under many names (rdata is immutable)."""
    rdtype = dns.rdatatype.A if _ip_version(address) == 4 else dns.rdatatype.AAAA
    return dns.rdata.from_text(_IN, rdtype, address)


@functools.lru_cache(maxsize=65536)
def _srv_rdata(port: int, target: dns.name.Name) -> dns.rdata.Rdata:
    return dns.rdata.from_text(_IN, dns.rdatatype.SRV, f"1 1 {port} {target}")


def _ip_version(address: str) -> int:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return 0


def _sub(parent: dns.name.Name, *labels: str) -> dns.name.Name:
    """``labels`` prepended to ``parent``: ``_sub(consul, "web", "service")``."""
    return dns.name.Name(labels).concatenate(parent)


def _label(text: str) -> str | None:
    """``text`` lowercased if it can be one DNS label, else None (such names are skipped)."""
    label = text.lower()
    if not 0 < len(label) <= 63 or "." in label or "\\" in label:
        return None
    return label


@dataclass(frozen=True)
class _Target:
    """One SRV record: the instance's port, its target name and the address it resolves to."""

    port: int
    target: dns.name.Name
    address: str


class _Builder:
    """Collects, per DNS name, the records to answer, then renders every template."""

    def __init__(self, catalog: Catalog, config: DNSConfig) -> None:
        self.catalog = catalog
        self.config = config
        self.opt = _opt_record(config.max_udp_payload)
        self.zone = dns.name.from_text(config.domain)
        self.cluster_zone = dns.name.from_text(config.cluster_domain)
        self.soa = {z: _soa_rrset(z, config) for z in (self.zone, self.cluster_zone)}
        self.addresses: dict[dns.name.Name, list[str]] = {}
        self.services: dict[dns.name.Name, list[_Target]] = {}
        self._negatives: dict[tuple[dns.name.Name, dns.rcode.Rcode], _Entry] = {}

    def _dns_suffixes(self) -> list[dns.name.Name]:
        dc = _label(self.config.datacenter)
        return [self.zone] + ([_sub(self.zone, dc)] if dc else [])

    def _add_address(self, name: dns.name.Name, address: str) -> None:
        found = self.addresses.setdefault(name, [])
        if address not in found:
            found.append(address)

    def _target(self, inst: Instance, address: str) -> dns.name.Name:
        """Consul's SRV target: the node's name when the instance uses the node's address,
        else ``HEXIP.addr.DC.DOMAIN``; both also resolve as A/AAAA names."""
        node = self.catalog.node(inst.node)
        node_label = _label(inst.node)
        suffix = self._dns_suffixes()[-1]
        if node is not None and node.address == address and node_label is not None:
            return _sub(suffix, node_label, "node")
        hexip = ipaddress.ip_address(address).packed.hex()
        target = _sub(suffix, hexip, "addr")
        self._add_address(target, address)
        return target

    def collect(self) -> None:
        healthy_only = not self.config.only_passing
        for node in self.catalog.nodes():
            label = _label(node.name)
            if label is not None and _ip_version(node.address):
                for suffix in self._dns_suffixes():
                    self._add_address(_sub(suffix, label, "node"), node.address)
        for service, _tags in self.catalog.services().items():
            svc = _label(service)
            if svc is None:
                continue
            healthy = [
                (inst, addr)
                for inst in self.catalog.instances(
                    service, passing_only=True, include_warning=healthy_only
                )
                if _ip_version(addr := self.catalog.instance_address(inst))
            ]
            targets = {inst.id: _Target(inst.port, self._target(inst, a), a) for inst, a in healthy}
            tagged: dict[str, list[str]] = {}
            for inst, _ in healthy:
                for tag in {t for t in map(_label, inst.tags) if t is not None}:
                    tagged.setdefault(tag, []).append(inst.id)
            all_ids = [inst.id for inst, _ in healthy]
            for suffix in self._dns_suffixes():
                base = _sub(suffix, "service")
                self._add_service(_sub(base, svc), all_ids, targets)
                self._add_service(_sub(base, f"_{svc}", "_tcp"), all_ids, targets)
                for tag, ids in tagged.items():
                    self._add_service(_sub(base, tag, svc), ids, targets)
                    if tag != "tcp":
                        self._add_service(_sub(base, f"_{svc}", f"_{tag}"), ids, targets)
            by_namespace: dict[str, list[str]] = {}
            for inst, _ in healthy:
                ns = _label(inst.namespace or "")
                if ns is not None:
                    by_namespace.setdefault(ns, []).append(inst.id)
            for ns, ids in by_namespace.items():
                name = _sub(self.cluster_zone, svc, ns, "svc")
                self._add_service(name, ids, targets)

    def _add_service(
        self, name: dns.name.Name, ids: list[str], targets: dict[str, _Target]
    ) -> None:
        found = self.services.setdefault(name, [])
        found.extend(targets[i] for i in ids if targets[i] not in found)
        for i in ids:
            self._add_address(name, targets[i].address)

    def render(self) -> AnswerTable:
        names: dict[bytes, dict[int, _Entry]] = {}
        zones: list[tuple[bytes, _Entry]] = []
        for zone, soa in self.soa.items():
            wire = zone.to_wire()
            assert wire is not None
            zones.append((wire, self._negative(zone, dns.rcode.NXDOMAIN)))
            apex = {_NODATA: self._nodata(zone)}
            apex[QTYPE_SOA] = self._entry(zone, QTYPE_SOA, [_render(zone, QTYPE_SOA, [soa])])
            names[wire] = apex
        for name, addresses in self.addresses.items():
            names[self._key(name)] = self._address_entries(name, addresses)
        for name, targets in self.services.items():
            entries = names.setdefault(self._key(name), {_NODATA: self._nodata(name)})
            entries[QTYPE_SRV] = self._srv_entry(name, targets)
        return AnswerTable(names, zones, self.config.max_udp_payload, self.opt)

    @staticmethod
    def _key(name: dns.name.Name) -> bytes:
        wire = name.to_wire()
        assert wire is not None
        return wire.lower()

    def _zone_of(self, name: dns.name.Name) -> dns.name.Name:
        return self.cluster_zone if name.is_subdomain(self.cluster_zone) else self.zone

    def _entry(self, name: dns.name.Name, qtype: int, wires: list[bytes]) -> _Entry:
        qlen = len(self._key(name)) + 4
        return _Entry([_Template(w, qlen, self.opt) for w in wires])

    def _nodata(self, name: dns.name.Name) -> _Entry:
        """NOERROR, no answer, the zone's SOA: a known name without records of that type."""
        return self._negative(name, dns.rcode.NOERROR)

    def _negative(self, name: dns.name.Name, rcode: dns.rcode.Rcode) -> _Entry:
        """No answer, the zone's SOA in the authority section, ``rcode``.

        The SOA is rendered without compression, as a tail that follows any question, so
        one template serves every name of the zone (NXDOMAIN has no per-name entry)."""
        zone = self._zone_of(name)
        cached = self._negatives.get((zone, rcode))
        if cached is None:
            soa = self.soa[zone]
            head = _render(zone, QTYPE_A, authority=[soa], rcode=rcode)[:12]
            tail = io.BytesIO()
            soa.to_wire(tail)
            cached = _Entry([_Template(head + tail.getvalue(), 0, self.opt)])
            self._negatives[(zone, rcode)] = cached
        return cached

    def _address_entries(self, name: dns.name.Name, addresses: list[str]) -> dict[int, _Entry]:
        ttl = self.config.ttl
        entries = {_NODATA: self._nodata(name)}
        for qtype, version in ((QTYPE_A, 4), (QTYPE_AAAA, 6)):
            chosen = [a for a in addresses if _ip_version(a) == version]
            if not chosen:
                continue
            wires = []
            for offset in _rotations(len(chosen), self.config.rotations):
                order = chosen[offset:] + chosen[:offset]
                wires.append(_render(name, qtype, [_addr_rrset(name, a, ttl) for a in order]))
            entries[qtype] = self._entry(name, qtype, wires)
        return entries

    def _srv_entry(self, name: dns.name.Name, targets: list[_Target]) -> _Entry:
        ttl = self.config.ttl
        wires = []
        for offset in _rotations(len(targets), self.config.rotations):
            order = targets[offset:] + targets[:offset]
            answer = [
                dns.rrset.from_rdata(
                    name,
                    ttl,
                    _srv_rdata(t.port, t.target),
                )
                for t in order
            ]
            extra: dict[dns.name.Name, dns.rrset.RRset] = {}
            for t in order:
                extra.setdefault(t.target, _addr_rrset(t.target, t.address, ttl))
            wires.append(_render(name, QTYPE_SRV, answer, additional=extra.values()))
        return self._entry(name, QTYPE_SRV, wires)


def build_table(catalog: Catalog, config: DNSConfig | None = None) -> AnswerTable:
    """Render every answer for ``catalog`` (the cold path: run on change, not per query)."""
    builder = _Builder(catalog, config or DNSConfig())
    builder.collect()
    return builder.render()


def service_table(catalog: Catalog, service: str, config: DNSConfig | None = None) -> AnswerTable:
    """The answers for one service of ``catalog`` (plus its nodes and zones), to be merged
    with :func:`merge_tables`: a change to one service re-renders that service only."""
    part = Catalog.build(catalog.nodes(), catalog.instances(service), catalog.all_node_checks())
    return build_table(part, config)


def merge_tables(base: AnswerTable, parts: Iterable[AnswerTable]) -> AnswerTable:
    """One table answering every name of ``base`` (nodes and zones) and of ``parts`` (one per
    service, from :func:`service_table` over the same nodes). Entries are shared, not
    re-rendered, so this costs a dict merge."""
    names = dict(base._names)
    for part in parts:
        names.update(part._names)
    return AnswerTable(names, base._zones, base._max_udp, base._opt)
