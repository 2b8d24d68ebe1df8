"""The answer table: every name the catalog answers, updated in place, and the responses.

:class:`AnswerTable` maps each lowercased wire-format name to its :class:`Records`. It is
updated per owner (one service, the node list, or one Service's cluster IP), so a change to
one service touches that service's names only, and it reports which names changed so a cache
in front of it (the UDP listener's, keyed by query bytes) forgets exactly those. When owners
share a name their records are merged, except that a cluster IP owner's records replace the
pods' for ``NAME.NS.svc.cluster.local`` (kube-dns answers a Service's virtual IP, and only
a headless Service's pods).

A response is ``flags + counts + the query's own question + records``: the question is
copied from the query so its letter case survives (resolvers using 0x20 case randomisation
check it), and answer owners point at it. Over UDP, Consul's trimming applies (its
``trimUDPResponse``): at most ``udp_answer_limit`` answers for a client limited to 512 bytes,
then as many records as fit in the client's size, in the order of the answer's rotation, with
the SRV targets' addresses of the kept records only; TC tells the client to ask over TCP.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from shoal.discovery._catalog import Catalog
from shoal.discovery._derive import ClusterIPService
from shoal.discovery.dns._config import DNSConfig
from shoal.discovery.dns._records import (
    Records,
    Zones,
    address_rr,
    cluster_ip_names,
    node_names,
    service_names,
)

QTYPE_A = 1
QTYPE_SOA = 6
QTYPE_AAAA = 28
QTYPE_SRV = 33
_QTYPE_OPT = 41
_NOERROR, _FORMERR, _NXDOMAIN, _NOTIMP, _REFUSED = 0, 1, 3, 4, 5
_MAX_UDP_ANSWERS = 8  # Consul's hard cap on udp_answer_limit
_MAX_ROTATIONS = 64
_NODES = ("node",)
_VIP = "vip"
Owner = tuple[str, ...]
"""``("node",)`` for the node names, ``("service", NAME)`` for a service's,
``("vip", NAMESPACE, NAME)`` for a Service's cluster IP names (which win a shared name)."""


def _rotations(count: int, wanted: int) -> list[int]:
    """Start offsets of ``wanted`` rotations of a ``count``-record answer, spread evenly."""
    return sorted({(k * count) // wanted for k in range(min(count, wanted))}) or [0]


class _Zone:
    """One zone's negative-answer tail: its SOA record with an uncompressed owner, so it
    follows any question unchanged."""

    def __init__(self, wire: bytes, config: DNSConfig) -> None:
        origin = dns.name.from_wire(wire, 0)[0]
        text = (
            f"{config.soa_mname} {config.soa_rname} {config.soa_serial} {config.soa_refresh} "
            f"{config.soa_retry} {config.soa_expire} {config.soa_minimum}"
        )
        soa = dns.rdata.from_text(
            dns.rdataclass.IN, dns.rdatatype.SOA, text, origin=origin, relativize=False
        )
        rdata = soa.to_wire()
        assert rdata is not None  # to_wire() without a file returns the bytes
        self.tail = (
            b"\x00\x06\x00\x01"
            + config.soa_minimum.to_bytes(4, "big")
            + len(rdata).to_bytes(2, "big")
            + rdata
        )
        self.soa = wire + self.tail
        """The authority record of negative answers."""
        self.apex_answer = b"\xc0\x0c" + self.tail
        """The SOA answer to a query for the apex itself."""


class AnswerTable:
    """Every answer for the current catalog; ``answer`` never raises.

    A packet whose header cannot be read (or that is itself a response) yields None, drop
    it; a readable but malformed one yields FORMERR. Mutated only through :meth:`set_nodes`
    and :meth:`set_service`, from one thread.
    """

    def __init__(self, config: DNSConfig | None = None) -> None:
        self.config = config = config or DNSConfig()
        self.zones = zones = Zones(config)
        self._opt = b"\x00\x00\x29" + config.max_udp_payload.to_bytes(2, "big") + bytes(6)
        self._zones = [(zones.domain, _Zone(zones.domain, config))]
        self._zones.append((zones.cluster, _Zone(zones.cluster, config)))
        self._zones.sort(key=lambda z: -len(z[0]))  # the most specific zone first
        self._names: dict[bytes, Records] = {}
        self._owned: dict[Owner, dict[bytes, Records]] = {}
        self._claims: dict[bytes, list[Owner]] = {}
        self._node_services: dict[str, set[str]] = {}
        self._addr_ttl = config.ttl

    def __len__(self) -> int:
        """How many names have answers (zone apexes and ``.addr`` names not counted)."""
        return len(self._names)

    # --- updates -------------------------------------------------------------------------

    def set_nodes(self, catalog: Catalog) -> set[bytes]:
        """Answer ``catalog``'s nodes; returns the names whose answers changed."""
        return self._set(_NODES, node_names(catalog, self.config, self.zones))

    def set_service(self, catalog: Catalog, service: str) -> set[bytes]:
        """Answer ``service`` as it is in ``catalog`` (absent: remove its names); returns
        the names whose answers changed."""
        names, nodes = service_names(catalog, service, self.config, self.zones)
        for node in nodes:
            self._node_services.setdefault(node, set()).add(service)
        return self._set(("service", service), names)

    def set_cluster_ip(
        self, namespace: str, name: str, service: ClusterIPService | None
    ) -> set[bytes]:
        """Answer the Service ``namespace/name`` with its cluster IP (None: it has none, or
        is gone; its name then answers its pods, if any); returns the names that changed."""
        names = {} if service is None else cluster_ip_names(service, self.config, self.zones)
        return self._set((_VIP, namespace, name), names)

    def services_on(self, nodes: Iterable[str]) -> set[str]:
        """Services that had instances on ``nodes`` when last rendered (a superset: entries
        are added as services are rendered, never pruned, which only costs a re-render)."""
        found: set[str] = set()
        for node in nodes:
            found |= self._node_services.get(node, set())
        return found

    def _set(self, owner: Owner, names: dict[bytes, Records]) -> set[bytes]:
        old = self._owned.pop(owner, {})
        if names:
            self._owned[owner] = names
        changed: set[bytes] = set()
        for key in old.keys() - names.keys():
            claims = self._claims[key]
            claims.remove(owner)
            if not claims:
                del self._claims[key]
        for key in names.keys() - old.keys():
            self._claims.setdefault(key, []).append(owner)
        for key in old.keys() | names.keys():
            owners = self._claims.get(key)
            before = self._names.get(key)
            if owners is None:
                del self._names[key]
                changed.add(key)
                continue
            if len(owners) > 1:
                owners = [o for o in owners if o[0] == _VIP] or owners
            merged = self._owned[owners[0]][key]
            for other in owners[1:]:
                merged = merged.merged(self._owned[other][key])
            if before is None or before != merged:
                changed.add(key)
            if before is not None and before == merged:
                merged.cursor = before.cursor
            self._names[key] = merged
        return changed

    # --- queries -------------------------------------------------------------------------

    def answer(self, data: bytes, udp: bool = True) -> bytes | None:
        """The response to the query ``data``, or None when it must be dropped.

        Over UDP (``udp``) the answer is trimmed to the client's limit (512 bytes, or its
        EDNS0 payload size capped by ``max_udp_payload``), with TC set when records were
        left out; over TCP it is whole.
        """
        result = self.resolve(data, udp, every_rotation=False)
        return None if result is None else data[:2] + result[0][0]

    def resolve(
        self, data: bytes, udp: bool, every_rotation: bool = True
    ) -> tuple[list[bytes], bytes | None] | None:
        """The response(s) to ``data`` without the 2-byte ID, and the lowercased name they
        depend on (None: do not cache them), or None to drop the packet.

        With ``every_rotation`` the list holds every rotation of the answer in round-robin
        order (for a cache to hand out); without, only the next one.
        """
        n = len(data)
        if n < 12:
            return None
        b2 = data[2]
        if b2 & 0x80:  # a response, not a query: answering it could start a loop
            return None
        rd = b2 & 0x01
        if b2 & 0x78:  # opcode other than QUERY
            return [bytes((0x80 | (b2 & 0x79), _NOTIMP)) + bytes(8)], None
        formerr = [bytes((0x80 | rd, _FORMERR)) + bytes(8)], None
        if data[4] or data[5] != 1:
            return formerr
        i = 12
        while True:
            if i >= n:
                return formerr
            length = data[i]
            if length == 0:
                break
            if length > 63:  # a compression pointer or reserved label type: not in questions
                return formerr
            i += length + 1
        end = i + 5
        if end > n or i - 12 > 254:  # cut short, or a name over 255 bytes
            return formerr
        raw = data[12 : i + 1]
        qname = raw.lower()
        question = data[12:end]
        qtype = (data[i + 1] << 8) | data[i + 2]
        edns = False
        limit = 512 if udp else 65535
        if (
            (data[10] or data[11])
            and n >= end + 11
            and data[end] == 0
            and data[end + 1] == 0
            and data[end + 2] == _QTYPE_OPT
        ):
            edns = True
            if udp:
                offered = (data[end + 3] << 8) | data[end + 4]
                limit = min(max(offered, 512), self.config.max_udp_payload)
        key = qname if raw == qname else None  # mixed case (0x20) queries are not cached
        flags = 0x84 | rd  # QR, AA, RD copied
        if data[i + 3] != 0 or data[i + 4] != 1:  # class other than IN
            return [self._negative(flags, _REFUSED, question, None, edns)], key
        records = self._names.get(qname)
        if records is None:
            records = self._addr_records(qname)
        if records is None:
            return self._no_records(flags, qname, qtype, question, edns), key
        if qtype == QTYPE_SRV:
            srv = records.srv
            if not srv:
                return self._no_records(flags, qname, qtype, question, edns), key
            answers, extras = [s[0] for s in srv], [s[1] for s in srv]
        else:
            answers = records.a if qtype == QTYPE_A else records.aaaa if qtype == QTYPE_AAAA else []
            if not answers:
                return self._no_records(flags, qname, qtype, question, edns), key
            extras = None
            if self.config.a_record_limit:
                answers = answers[: self.config.a_record_limit]
        return self._rotations(
            records, flags, question, answers, extras, edns, udp, limit, every_rotation
        ), key

    def _rotations(
        self,
        records: Records,
        flags: int,
        question: bytes,
        answers: list[bytes],
        extras: list[bytes] | None,
        edns: bool,
        udp: bool,
        limit: int,
        every_rotation: bool,
    ) -> list[bytes]:
        count = len(answers)
        max_count = count
        if udp and limit == 512:
            max_count = min(count, _MAX_UDP_ANSWERS, self.config.udp_answer_limit)
        base = 12 + len(question) + (11 if edns else 0)
        starts = _rotations(count, self.config.rotations)

        def body(start: int) -> tuple[bytes, int]:
            order = range(start, start + count)
            return self._fit(flags, question, answers, extras, order, base, limit, max_count, edns)

        first, kept = body(0)
        if kept < count:
            # Trimmed: more rotations, so that every record is in some answer.
            wanted = min(count, max(len(starts), math.ceil(count / kept)), _MAX_ROTATIONS)
            starts = _rotations(count, wanted)
        if every_rotation:
            return [first] + [body(start)[0] for start in starts[1:]]
        position = records.cursor % len(starts)
        records.cursor = position + 1
        return [first if position == 0 else body(starts[position])[0]]

    def _fit(
        self,
        flags: int,
        question: bytes,
        answers: list[bytes],
        extras: list[bytes] | None,
        order: range,
        base: int,
        limit: int,
        max_count: int,
        edns: bool,
    ) -> tuple[bytes, int]:
        """One response with as many records of ``order`` as fit (at least one)."""
        count = len(answers)
        size = base
        kept: list[bytes] = []
        extra: dict[bytes, None] = {}
        for j in order:
            if len(kept) >= max_count:
                break
            rr = answers[j % count]
            grow = len(rr)
            target = None
            if extras is not None:
                target = extras[j % count]
                if target not in extra:
                    grow += len(target)
            if kept and size + grow > limit:
                break
            size += grow
            kept.append(rr)
            if target is not None:
                extra[target] = None
        if len(kept) < count and self.config.enable_truncate:
            flags |= 0x02  # TC
        ar = len(extra) + edns
        head = bytes((flags, _NOERROR, 0, 1)) + len(kept).to_bytes(2, "big") + bytes(2)
        body = [head, ar.to_bytes(2, "big"), question, *kept, *extra]
        if edns:
            body.append(self._opt)
        return b"".join(body), len(kept)

    def _no_records(
        self, flags: int, qname: bytes, qtype: int, question: bytes, edns: bool
    ) -> list[bytes]:
        """NODATA for a known name, SOA at a zone apex, NXDOMAIN in our zones, else REFUSED."""
        for wire, zone in self._zones:
            if qname == wire:
                if qtype == QTYPE_SOA:
                    ar = b"\x00\x01" if edns else b"\x00\x00"
                    head = bytes((flags, _NOERROR, 0, 1, 0, 1, 0, 0)) + ar
                    return [head + question + zone.apex_answer + (self._opt if edns else b"")]
                return [self._negative(flags, _NOERROR, question, zone, edns)]
            if qname.endswith(wire):
                known = qname in self._names or self._addr_records(qname) is not None
                rcode = _NOERROR if known else _NXDOMAIN
                return [self._negative(flags, rcode, question, zone, edns)]
        return [self._negative(flags, _REFUSED, question, None, edns)]

    def _negative(
        self, flags: int, rcode: int, question: bytes, zone: _Zone | None, edns: bool
    ) -> bytes:
        ns = b"\x00\x01" if zone is not None else b"\x00\x00"
        ar = b"\x00\x01" if edns else b"\x00\x00"
        head = bytes((flags, rcode, 0, 1, 0, 0)) + ns + ar
        return (
            head + question + (zone.soa if zone is not None else b"") + (self._opt if edns else b"")
        )

    def _addr_records(self, qname: bytes) -> Records | None:
        """``HEXIP.addr[.DC].DOMAIN``: Consul decodes the address from the name itself."""
        size = qname[0]
        if size not in (8, 32) or qname[size + 1 :] not in self.zones.addr:
            return None
        try:
            packed = bytes.fromhex(qname[1 : size + 1].decode("ascii"))
        except ValueError:
            return None
        rr = b"\xc0\x0c" + address_rr(packed, self._addr_ttl)
        return Records([rr]) if size == 8 else Records(aaaa=[rr])


def build_table(
    catalog: Catalog,
    config: DNSConfig | None = None,
    cluster_ips: Iterable[ClusterIPService] = (),
) -> AnswerTable:
    """A table answering everything in ``catalog`` and the Services with ``cluster_ips``
    (the cold path: all at once)."""
    table = AnswerTable(config)
    table.set_nodes(catalog)
    for service in catalog.services():
        table.set_service(catalog, service)
    for vip in cluster_ips:
        table.set_cluster_ip(vip.namespace, vip.name, vip)
    return table


def changed_services(
    old: Catalog,
    new: Catalog,
    services: Collection[str] | None,
    nodes_changed: bool,
    table: AnswerTable,
) -> tuple[set[str], bool]:
    """What to re-render going from ``old`` to ``new``: (services, whether the nodes).

    ``services`` None means anything may have changed: every service is compared (cheap
    when snapshots share unchanged instances, as :meth:`Catalog.replace` makes them).
    When nodes changed, so did the answers of services on the nodes that differ.
    """
    if services is None:
        names = old.services().keys() | new.services().keys()
        todo = {s for s in names if old.instances(s) != new.instances(s)}
        nodes_changed = True
    else:
        todo = set(services)
    if not nodes_changed:
        return todo, False
    before = {n.name: (n, old.node_checks(n.name)) for n in old.nodes()}
    after = {n.name: (n, new.node_checks(n.name)) for n in new.nodes()}
    moved = {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}
    if not moved:
        return todo, False
    return todo | table.services_on(moved), True
