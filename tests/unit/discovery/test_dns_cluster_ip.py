"""Services with a cluster IP in DNS, as kube-dns answers them: ``NAME.NS.svc.cluster.local``
is the virtual IP (pods or not), ``_PORT._PROTO.NAME.NS.svc`` SRV names the Service's ports;
a headless Service keeps answering its Ready pods, and ``NAME.service.consul`` always does."""

from __future__ import annotations

import random
from typing import Any

import dns.message
import dns.rcode
import pytest

from shoal.discovery import Catalog, Check, Instance, Node
from shoal.discovery._derive import ClusterIPService, ServicePortEntry, cluster_ip_service
from shoal.discovery.dns import AnswerTable, DNSConfig, DNSServer, build_table

NODES = [Node("n1", "10.0.0.1")]
WEB = "web.default.svc.cluster.local"


def _pod(iid: str, address: str, ready: bool = True, namespace: str = "default") -> Instance:
    status = "passing" if ready else "critical"
    check = Check(f"{iid}/kubernetes-health-check", "k", status)  # type: ignore[arg-type]
    return Instance(iid, "web", "n1", address, 8080, checks=(check,), namespace=namespace)


PODS = Catalog.build(
    NODES,
    [
        _pod("default-web-a-web", "10.1.0.1"),
        _pod("default-web-b-web", "10.1.0.2"),
        _pod("default-web-c-web", "10.1.0.3", ready=False),
        _pod("other-web-a-web", "10.2.0.1", namespace="other"),
    ],
)
VIP = ClusterIPService(
    "default",
    "web",
    "10.96.0.20",
    (
        ServicePortEntry("http", "tcp", 80),
        ServicePortEntry("dns", "udp", 53),
        ServicePortEntry("", "tcp", 8443),
    ),
)


def _service(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "shop"}, "spec": spec}


def ask(table: AnswerTable, name: str, rdtype: str = "A") -> dns.message.Message:
    wire = table.answer(dns.message.make_query(name, rdtype).to_wire(), False)
    assert wire is not None
    return dns.message.from_wire(wire)


def records(msg: dns.message.Message, section: str = "answer") -> set[str]:
    return {rd.to_text() for rrset in getattr(msg, section) for rd in rrset}


# --- the Service object -> ClusterIPService ---------------------------------------------------


def test_a_service_with_a_cluster_ip() -> None:
    obj = _service(
        clusterIP="10.96.3.4",
        ports=[
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"port": 9000},
        ],
    )
    assert cluster_ip_service(obj) == ClusterIPService(
        "shop",
        "web",
        "10.96.3.4",
        (
            ServicePortEntry("http", "tcp", 80),
            ServicePortEntry("dns", "udp", 53),
            ServicePortEntry("", "tcp", 9000),
        ),
    )
    no_namespace = {"metadata": {"name": "api"}, "spec": {"clusterIP": "fd00:96::1"}}
    assert cluster_ip_service(no_namespace) == ClusterIPService("default", "api", "fd00:96::1")


@pytest.mark.parametrize(
    "spec",
    [
        {"clusterIP": "None"},  # headless
        {},  # not allocated (yet)
        {"clusterIP": ""},
        {"clusterIP": "10.96.0.300"},
        {"clusterIP": 167772161},
        {"type": "ExternalName", "clusterIP": "10.96.0.1", "externalName": "example.com"},
    ],
)
def test_services_that_answer_their_pods(spec: dict[str, Any]) -> None:
    assert cluster_ip_service(_service(**spec)) is None


# --- the answers -------------------------------------------------------------------------------


@pytest.fixture
def table() -> AnswerTable:
    return build_table(PODS, DNSConfig(ttl=5), [VIP])


def test_the_name_is_the_cluster_ip_and_the_consul_name_the_pods(table: AnswerTable) -> None:
    msg = ask(table, WEB)
    assert msg.rcode() == dns.rcode.NOERROR and records(msg) == {"10.96.0.20"}
    assert {r.ttl for r in msg.answer} == {5}
    assert records(ask(table, "web.service.consul")) == {"10.1.0.1", "10.1.0.2", "10.2.0.1"}
    assert records(ask(table, "web.other.svc.cluster.local")) == {"10.2.0.1"}  # no cluster IP
    nodata = ask(table, WEB, "AAAA")
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])


def test_srv_records_per_port_as_kube_dns(table: AnswerTable) -> None:
    # The Service's name: every port (53/udp and 53/tcp would be one record), target itself.
    bare = ask(table, WEB, "SRV")
    assert records(bare) == {f"0 33 {port} {WEB}." for port in (80, 53, 8443)}
    assert {(str(r.name), rd.to_text()) for r in bare.additional for rd in r} == {
        (f"{WEB}.", "10.96.0.20")
    }
    http = ask(table, f"_http._tcp.{WEB}", "SRV")
    assert records(http) == {f"0 100 80 {WEB}."}
    assert records(http, "additional") == {"10.96.0.20"}
    assert records(ask(table, f"_dns._udp.{WEB}", "SRV")) == {f"0 100 53 {WEB}."}
    # Wrong protocol, unknown port name: no such name. A port name has no A record.
    assert ask(table, f"_http._udp.{WEB}", "SRV").rcode() == dns.rcode.NXDOMAIN
    assert ask(table, f"_grpc._tcp.{WEB}", "SRV").rcode() == dns.rcode.NXDOMAIN
    port_a = ask(table, f"_http._tcp.{WEB}", "A")
    assert (port_a.rcode(), port_a.answer) == (dns.rcode.NOERROR, [])


def test_a_cluster_ip_answers_without_ready_pods() -> None:
    table = build_table(Catalog.build(NODES, []), DNSConfig(), [VIP])
    assert records(ask(table, WEB)) == {"10.96.0.20"}
    assert ask(table, "web.service.consul").rcode() == dns.rcode.NXDOMAIN
    six = ClusterIPService("default", "v6", "fd00:96::7", (ServicePortEntry("h", "tcp", 80),))
    table.set_cluster_ip("default", "v6", six)
    assert records(ask(table, "v6.default.svc.cluster.local", "AAAA")) == {"fd00:96::7"}
    assert records(ask(table, "_h._tcp.v6.default.svc.cluster.local", "SRV"), "additional") == {
        "fd00:96::7"
    }


def test_headless_again_answers_the_pods_and_gone_is_nxdomain(table: AnswerTable) -> None:
    changed = table.set_cluster_ip("default", "web", None)
    assert b"\x03web\x07default\x03svc\x07cluster\x05local\x00" in changed
    assert records(ask(table, WEB)) == {"10.1.0.1", "10.1.0.2"}
    assert ask(table, f"_http._tcp.{WEB}", "SRV").rcode() == dns.rcode.NXDOMAIN
    # The cluster IP comes back: it replaces the pods again, and the pods' removal leaves it.
    assert table.set_cluster_ip("default", "web", VIP)
    assert records(ask(table, WEB)) == {"10.96.0.20"}
    assert not table.set_service(PODS, "web")  # nothing a client sees changed
    table.set_service(Catalog.build(NODES, []), "web")
    assert records(ask(table, WEB)) == {"10.96.0.20"}
    table.set_cluster_ip("default", "web", None)
    assert ask(table, WEB).rcode() == dns.rcode.NXDOMAIN


def _view(table: AnswerTable, name: str, rdtype: str) -> tuple[object, ...]:
    msg = ask(table, name, rdtype)
    return (
        msg.rcode(),
        sorted((str(r.name), r.ttl, rd.to_text()) for r in msg.answer for rd in r),
        sorted((str(r.name), rd.to_text()) for r in msg.additional for rd in r),
    )


def test_incremental_changes_answer_like_a_full_build() -> None:
    rng = random.Random(5)
    names = ["a", "b", "c"]
    queries = [
        (f"{n}.{ns}.svc.cluster.local", t)
        for n in names
        for ns in ("default", "other")
        for t in ("A", "SRV")
    ] + [(f"_http._tcp.{n}.default.svc.cluster.local", "SRV") for n in names]
    table = AnswerTable(DNSConfig())
    vips: dict[str, ClusterIPService] = {}
    catalog = Catalog.build(NODES, [])
    for _ in range(60):
        name = rng.choice(names)
        if rng.random() < 0.5:
            pods = [
                Instance(f"{name}-{i}", name, "n1", f"10.3.{i}.1", 80,
                         namespace=rng.choice(["default", "other"]))
                for i in range(rng.randint(0, 3))
            ]  # fmt: skip
            catalog = catalog.replace({name: pods})
            table.set_service(catalog, name)
        else:
            vip = ClusterIPService(
                "default", name, f"10.96.0.{rng.randint(1, 9)}",
                (ServicePortEntry("http", "tcp", rng.choice([80, 81])),),
            )  # fmt: skip
            if rng.random() < 0.4:
                vips.pop(name, None)
                table.set_cluster_ip("default", name, None)
            else:
                vips[name] = vip
                table.set_cluster_ip("default", name, vip)
        full = build_table(catalog, DNSConfig(), vips.values())
        for query in queries:
            assert _view(table, *query) == _view(full, *query), query


def test_the_server_follows_cluster_ips_and_a_sync_drops_the_missing() -> None:
    server = DNSServer(DNSConfig(), PODS)  # outside an event loop: renders at once
    other = ClusterIPService("default", "api", "10.96.0.21")
    server.set_cluster_ip("default", "web", VIP)
    server.set_cluster_ip("default", "api", other)
    assert records(ask(server.table, WEB)) == {"10.96.0.20"}
    assert records(ask(server.table, "api.default.svc.cluster.local")) == {"10.96.0.21"}
    server.sync_cluster_ips([other])  # a relist: "web" was deleted or became headless
    assert records(ask(server.table, WEB)) == {"10.1.0.1", "10.1.0.2"}
    assert records(ask(server.table, "api.default.svc.cluster.local")) == {"10.96.0.21"}
