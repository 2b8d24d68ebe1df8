"""Incremental table updates answer exactly like a full build; DNSConfig's checks and TTLs."""

from __future__ import annotations

import random

import dns.message
import dns.rcode
import pytest

from shoal.discovery import Catalog, Check, Instance, Node
from shoal.discovery.dns import AnswerTable, DNSConfig, DNSServer, build_table
from shoal.errors import ConfigError


def _view(table: AnswerTable, name: str, rdtype: str) -> tuple[object, ...]:
    """An answer over TCP (never trimmed) with record order ignored (rotations differ)."""
    wire = table.answer(dns.message.make_query(name, rdtype).to_wire(), False)
    assert wire is not None
    msg = dns.message.from_wire(wire)
    return (
        msg.rcode(),
        sorted((str(r.name), r.ttl, rd.to_text()) for r in msg.answer for rd in r),
        sorted((str(r.name), rd.to_text()) for r in msg.additional for rd in r),
        [str(r.name) for r in msg.authority],
    )


def _names(services: list[str], nodes: list[str]) -> list[str]:
    names = [f"{n}.node.consul" for n in nodes]
    for svc in services:
        names += [
            f"{svc}.service.consul",
            f"{svc}.service.dc1.consul",
            f"_{svc}._tcp.service.consul",
            f"blue.{svc}.service.consul",
            f"_{svc}._blue.service.dc1.consul",
            f"{svc}.default.svc.cluster.local",
        ]
    return names


def _random_catalog(rng: random.Random, services: list[str], nodes: list[str]) -> Catalog:
    node_objs = [Node(n, f"10.9.{k}.{rng.randint(1, 3)}") for k, n in enumerate(nodes)]
    insts = []
    for svc in services:
        for i in range(rng.randint(0, 4)):
            status = rng.choice(["passing", "passing", "warning", "critical"])
            insts.append(
                Instance(
                    f"{svc}-{i}", svc, rng.choice(nodes),
                    rng.choice(["", f"10.8.{i}.{rng.randint(1, 3)}", "fd00::7"]),
                    8000 + rng.randint(0, 3),
                    tags=tuple(rng.sample(["blue", "green", "Blue"], rng.randint(0, 2))),
                    checks=(Check(f"c-{svc}-{i}", "c", status),),  # type: ignore[arg-type]
                    namespace=rng.choice([None, "default"]),
                    weights=(rng.randint(1, 9), rng.randint(1, 9)),
                )
            )  # fmt: skip
    return Catalog.build(node_objs, insts)


def test_incremental_updates_answer_like_a_full_build() -> None:
    rng = random.Random(4)
    services, nodes = [f"svc{i}" for i in range(6)], ["n1", "n2", "n3"]
    names = _names(services, nodes)
    server = DNSServer(DNSConfig(ttl=2), Catalog.build([], []))  # no loop: renders at once
    old = Catalog.build([], [])
    for step in range(40):
        new = _random_catalog(rng, services, nodes)
        if step % 4 == 1:  # only the nodes move: the services on them must follow
            new = Catalog.build(new.nodes(), old.all_instances())
            server.update(new, [], nodes_changed=True)
        elif step % 3 == 0:
            server.update(new)  # "anything may have changed"
        else:
            changed = [s for s in services if old.instances(s) != new.instances(s)]
            server.update(new, changed, nodes_changed=old.nodes() != new.nodes())
        fresh = build_table(new, DNSConfig(ttl=2))
        for name in names:
            for rdtype in ("A", "AAAA", "SRV"):
                assert _view(server.table, name, rdtype) == _view(fresh, name, rdtype), (
                    step,
                    name,
                    rdtype,
                )
        assert len(server.table) == len(fresh)
        old = new


def test_a_node_change_reaches_the_services_on_it() -> None:
    """An instance without an address answers its node's; an SRV target is the node's
    name only while the addresses agree."""
    nodes = [Node("n1", "10.0.0.1")]
    inst = Instance("web-1", "web", "n1", "", 80)
    pinned = Instance("api-1", "api", "n1", "10.0.0.1", 81)
    server = DNSServer(DNSConfig(), Catalog.build(nodes, [inst, pinned]))
    assert _view(server.table, "web.service.consul", "A")[1] == [
        ("web.service.consul.", 0, "10.0.0.1")
    ]
    assert _view(server.table, "api.service.consul", "SRV")[1] == [
        ("api.service.consul.", 0, "1 1 81 n1.node.dc1.consul.")
    ]
    moved = Catalog.build([Node("n1", "10.0.0.9")], [inst, pinned])
    server.update(moved, changed_services=[], nodes_changed=True)
    assert _view(server.table, "web.service.consul", "A")[1] == [
        ("web.service.consul.", 0, "10.0.0.9")
    ]
    assert _view(server.table, "api.service.consul", "SRV")[1] == [
        ("api.service.consul.", 0, "1 1 81 0a000001.addr.dc1.consul.")
    ]
    assert _view(server.table, "n1.node.consul", "A")[1] == [("n1.node.consul.", 0, "10.0.0.9")]


def test_only_changed_names_are_reported() -> None:
    catalog = Catalog.build([Node("n1", "10.0.0.1")], [Instance("a-1", "a", "n1", "10.1.0.1", 1)])
    table = build_table(catalog)
    assert table.set_service(catalog, "a") == set()  # re-rendered, nothing differs
    assert table.set_nodes(catalog) == set()
    grown = catalog.replace({"a": [Instance("a-1", "a", "n1", "10.1.0.2", 1)]})
    changed = table.set_service(grown, "a")
    assert b"\x01a\x07service\x06consul\x00" in changed and len(changed) == 4
    gone = table.set_service(grown.replace({"a": []}), "a")
    assert gone == changed and len(table) == 2  # only the node's two names are left


def test_srv_weights_follow_consul() -> None:
    insts = [
        Instance("w-1", "w", "n1", "10.1.0.1", 80, weights=(10, 2)),
        Instance("w-2", "w", "n1", "10.1.0.2", 80, weights=(10, 2),
                 checks=(Check("c", "c", "warning"),)),
    ]  # fmt: skip
    table = build_table(Catalog.build([Node("n1", "10.0.0.1")], insts))
    assert [rd for _, _, rd in _view(table, "w.service.consul", "SRV")[1]] == [
        "1 10 80 0a010001.addr.dc1.consul.",
        "1 2 80 0a010002.addr.dc1.consul.",
    ]


def test_service_and_node_ttls() -> None:
    config = DNSConfig(ttl=5, node_ttl=60, service_ttl={"web": 30, "we*": 20, "*": 10})
    assert [config.ttl_for_service(s) for s in ("web", "west", "db")] == [30, 20, 10]
    assert DNSConfig(ttl=5).ttl_for_service("db") == 5
    insts = [Instance("web-1", "web", "n1", "", 80), Instance("db-1", "db", "n1", "", 5432)]
    table = build_table(Catalog.build([Node("n1", "10.0.0.1")], insts), config)
    assert _view(table, "web.service.consul", "A")[1][0][1] == 30
    assert _view(table, "db.service.consul", "A")[1][0][1] == 10
    assert _view(table, "n1.node.consul", "A")[1][0][1] == 60


def test_addr_names_decode_like_consul() -> None:
    table = build_table(Catalog.build([], []))
    assert _view(table, "7f000001.addr.dc1.consul", "A")[1] == [
        ("7f000001.addr.dc1.consul.", 0, "127.0.0.1")
    ]
    v6 = "fd000000000000000000000000000005.addr.consul"
    assert _view(table, v6, "AAAA")[1] == [(v6 + ".", 0, "fd00::5")]
    assert _view(table, v6, "A")[0] == dns.rcode.NOERROR  # NODATA: the name exists
    assert _view(table, "zz000001.addr.consul", "A")[0] == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ttl", -1, "dns.ttl: -1 is not an integer"),
        ("rotations", 0, "dns.rotations: 0"),
        ("max_udp_payload", 100, "dns.max_udp_payload: 100"),
        ("udp_answer_limit", 0, "dns.udp_answer_limit: 0"),
        ("node_ttl", "5", "dns.node_ttl: '5'"),
        ("service_ttl", {"w*b": 5}, "dns.service_ttl: key 'w*b'"),
        ("service_ttl", {"web": -5}, "dns.service_ttl['web']: -5"),
        ("domain", "bad..name", "dns.domain: 'bad..name' is not a DNS name"),
    ],
)
def test_bad_config_names_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("*", r"\*")):
        DNSConfig(**{field: value})  # type: ignore[arg-type]
