"""The precomputed DNS answers, checked by parsing them with dnspython."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shoal.discovery.dns
from shoal.discovery import Catalog, Check, Instance, Node
from shoal.discovery.dns import AnswerTable, DNSConfig, build_table

NODES = [Node("n1", "10.0.0.1"), Node("n2", "10.0.0.2")]


def _inst(
    iid: str,
    node: str,
    address: str,
    port: int,
    tags: tuple[str, ...] = (),
    status: str | None = None,
    namespace: str | None = None,
    service: str = "web",
) -> Instance:
    checks = (Check("c-" + iid, "c", status),) if status else ()  # type: ignore[arg-type]
    return Instance(iid, service, node, address, port, tags, checks=checks, namespace=namespace)


INSTANCES = [
    _inst("web-1", "n1", "", 8080, ("v1", "Prod")),
    _inst("web-2", "n2", "10.1.0.2", 8081, ("v2",), status="warning", namespace="default"),
    _inst("web-3", "n2", "10.1.0.3", 8082, ("v1",), status="critical"),
    _inst("db-1", "n1", "fd00::5", 5432, (), service="db"),
]


@pytest.fixture
def table() -> AnswerTable:
    return build_table(Catalog.build(NODES, INSTANCES), DNSConfig(ttl=7))


def ask(
    table: AnswerTable,
    name: str,
    rdtype: str = "A",
    *,
    qid: int = 4242,
    udp: bool = True,
    **kwargs: object,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]
    query.id = qid
    wire = table.answer(query.to_wire(), udp)
    assert wire is not None
    return dns.message.from_wire(wire)


def records(msg: dns.message.Message, section: str = "answer") -> set[str]:
    return {rd.to_text() for rrset in getattr(msg, section) for rd in rrset}


def test_all_is_pinned() -> None:
    assert shoal.discovery.dns.__all__ == [
        "AnswerTable",
        "DNSConfig",
        "DNSServer",
        "build_table",
    ]


def test_a_records_of_healthy_instances_with_ttl_and_id(table: AnswerTable) -> None:
    msg = ask(table, "web.service.consul")
    assert msg.id == 4242 and msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.AA
    # web-1 uses its node's address; web-2 is warning (included); web-3 critical (never).
    assert records(msg) == {"10.0.0.1", "10.1.0.2"}
    assert {rrset.ttl for rrset in msg.answer} == {7}
    assert records(ask(table, "web.service.dc1.consul")) == {"10.0.0.1", "10.1.0.2"}


def test_only_passing_excludes_warning() -> None:
    table = build_table(Catalog.build(NODES, INSTANCES), DNSConfig(only_passing=True))
    assert records(ask(table, "web.service.consul")) == {"10.0.0.1"}


def test_srv_with_targets_in_additional(table: AnswerTable) -> None:
    msg = ask(table, "web.service.consul", "SRV")
    assert records(msg) == {"1 1 8080 n1.node.dc1.consul.", "1 1 8081 0a010002.addr.dc1.consul."}
    extra = {(str(r.name), rd.to_text()) for r in msg.additional for rd in r}
    assert extra == {("n1.node.dc1.consul.", "10.0.0.1"), ("0a010002.addr.dc1.consul.", "10.1.0.2")}
    # The targets resolve too.
    assert records(ask(table, "0a010002.addr.dc1.consul")) == {"10.1.0.2"}


def test_tag_filter_and_rfc2782_forms(table: AnswerTable) -> None:
    assert records(ask(table, "v1.web.service.consul")) == {"10.0.0.1"}
    assert records(ask(table, "prod.web.service.consul")) == {"10.0.0.1"}
    assert records(ask(table, "v2.web.service.consul", "SRV")) == {
        "1 1 8081 0a010002.addr.dc1.consul."
    }
    assert records(ask(table, "_web._tcp.service.consul", "SRV")) == {
        "1 1 8080 n1.node.dc1.consul.",
        "1 1 8081 0a010002.addr.dc1.consul.",
    }
    assert records(ask(table, "_web._v2.service.consul", "SRV")) == {
        "1 1 8081 0a010002.addr.dc1.consul."
    }
    # A tag only a critical instance has does not exist in DNS.
    assert ask(table, "v3.web.service.consul").rcode() == dns.rcode.NXDOMAIN


def test_node_and_cluster_local_and_ipv6(table: AnswerTable) -> None:
    assert records(ask(table, "n2.node.consul")) == {"10.0.0.2"}
    assert records(ask(table, "n2.node.dc1.consul")) == {"10.0.0.2"}
    assert records(ask(table, "web.default.svc.cluster.local")) == {"10.1.0.2"}
    assert records(ask(table, "web.default.svc.cluster.local", "SRV")) == {
        "1 1 8081 0a010002.addr.dc1.consul."
    }
    assert records(ask(table, "db.service.consul", "AAAA")) == {"fd00::5"}


def test_nxdomain_nodata_refused(table: AnswerTable) -> None:
    msg = ask(table, "nope.service.consul", qid=77)
    assert (msg.id, msg.rcode(), msg.answer) == (77, dns.rcode.NXDOMAIN, [])
    assert [str(r.name) for r in msg.authority] == ["consul."]
    assert records(msg, "authority") == {"ns.consul. hostmaster.consul. 1 3600 600 86400 0"}
    local = ask(table, "nope.default.svc.cluster.local")
    assert local.rcode() == dns.rcode.NXDOMAIN
    assert [str(r.name) for r in local.authority] == ["cluster.local."]
    nodata = ask(table, "web.service.consul", "AAAA")
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    assert [str(r.name) for r in nodata.authority] == ["consul."]
    assert ask(table, "example.com").rcode() == dns.rcode.REFUSED
    assert records(ask(table, "consul", "SOA")) == {
        "ns.consul. hostmaster.consul. 1 3600 600 86400 0"
    }


def test_case_insensitive_and_question_case_kept(table: AnswerTable) -> None:
    msg = ask(table, "WeB.SeRvIcE.CoNsUl", "SRV")
    assert str(msg.question[0].name) == "WeB.SeRvIcE.CoNsUl."
    assert records(msg) == {"1 1 8080 n1.node.dc1.consul.", "1 1 8081 0a010002.addr.dc1.consul."}
    assert records(ask(table, "PROD.web.service.consul")) == {"10.0.0.1"}


def test_rd_bit_copied(table: AnswerTable) -> None:
    assert ask(table, "web.service.consul").flags & dns.flags.RD
    query = dns.message.make_query("web.service.consul", "A")
    query.flags &= ~dns.flags.RD
    wire = table.answer(query.to_wire())
    assert wire is not None and not dns.message.from_wire(wire).flags & dns.flags.RD


def test_round_robin_rotations() -> None:
    insts = [_inst(f"w{i}", "n1", f"10.2.0.{i}", 80) for i in range(1, 9)]
    table = build_table(Catalog.build(NODES, insts), DNSConfig(rotations=4))
    query = dns.message.make_query("web.service.consul", "A").to_wire()
    firsts = []
    for _ in range(8):
        wire = table.answer(query, False)
        assert wire is not None
        assert records(dns.message.from_wire(wire)) == {f"10.2.0.{i}" for i in range(1, 9)}
        # The first answer's RDATA follows the question and a 12-byte compressed RR header.
        firsts.append(wire[len(query) + 12 : len(query) + 16])
    # Four rotations (starting at records 1, 3, 5, 7), handed out in turn, twice.
    assert firsts[:4] == firsts[4:]
    assert [f[-1] for f in firsts[:4]] == [1, 3, 5, 7]


def test_edns_opt_echoed_with_our_payload() -> None:
    insts = [_inst(f"w{i:03}", "n1", f"10.3.{i // 250}.{i % 250 + 1}", 80) for i in range(60)]
    table = build_table(Catalog.build(NODES, insts))
    big = ask(table, "web.service.consul", use_edns=0, payload=4096)
    assert not big.flags & dns.flags.TC and len(records(big)) == 60
    assert big.edns == 0 and big.payload == 4096
    assert ask(table, "web.service.consul").edns == -1
    # TCP (udp=False) is never trimmed.
    tcp = ask(table, "web.service.consul", udp=False)
    assert not tcp.flags & dns.flags.TC and len(records(tcp)) == 60


def test_malformed_headers(table: AnswerTable) -> None:
    assert table.answer(b"") is None
    assert table.answer(b"\x12\x34\x01") is None
    response = dns.message.make_response(dns.message.make_query("web.service.consul", "A"))
    assert table.answer(response.to_wire()) is None  # never answer a response
    two = b"\xab\xcd\x01\x00\x00\x02" + bytes(6)
    formerr = table.answer(two)
    assert formerr is not None and formerr[:2] == b"\xab\xcd" and formerr[3] & 0x0F == 1
    truncated_question = b"\xab\xcd\x01\x00\x00\x01" + bytes(6) + b"\x03web"
    out = table.answer(truncated_question)
    assert out is not None and out[:2] == b"\xab\xcd" and out[3] & 0x0F == 1
    notify = b"\x00\x07\x20\x00\x00\x01" + bytes(6) + b"\x00\x00\x01\x00\x01"
    notimp = table.answer(notify)
    assert notimp is not None and notimp[3] & 0x0F == dns.rcode.NOTIMP
    chaos = dns.message.make_query("web.service.consul", "A", "CH")
    assert dns.message.from_wire(table.answer(chaos.to_wire()) or b"").rcode() == dns.rcode.REFUSED


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_packets_never_raise(data: bytes) -> None:
    table = _SHARED
    for udp in (True, False):
        out = table.answer(data, udp)
        if out is not None:
            assert out[:2] == data[:2]
            msg_rcode = out[3] & 0x0F
            assert out[2] & 0x80
            if msg_rcode == dns.rcode.FORMERR:
                assert len(out) == 12


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_queries_never_raise(data: st.DataObject) -> None:
    base = bytearray(
        dns.message.make_query("v1.web.service.consul", "SRV", use_edns=0, payload=1232).to_wire()
    )
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    packet = bytes(base[:cut])
    out = _SHARED.answer(packet)
    if out is not None:
        assert out[:2] == packet[:2]
        dns.message.from_wire(out, question_only=True)


_SHARED = build_table(Catalog.build(NODES, INSTANCES))
