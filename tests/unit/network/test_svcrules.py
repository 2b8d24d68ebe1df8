"""API objects -> the node's nftables rule set: ports, Ready endpoints matched by port name,
balancing and affinity, node ports, host ports, networks."""

from __future__ import annotations

import json

from shoal.api import (
    Container,
    ContainerPort,
    EndpointAddress,
    EndpointPort,
    Endpoints,
    EndpointSubset,
    Network,
    NetworkSpec,
    ObjectMeta,
    Pod,
    PodSpec,
    PodStatus,
    Service,
    ServicePort,
    ServiceSpec,
)
from shoal.network._nftrules import Backend, HostPort, NetworkRule
from shoal.network._svcrules import host_ports, network_rules, service_rules


def svc(name: str, ports: list[ServicePort], **spec: object) -> Service:
    meta = ObjectMeta(name=name, namespace="default", annotations=spec.pop("annotations", {}))  # type: ignore[arg-type]
    return Service(metadata=meta, spec=ServiceSpec(selector={"app": name}, ports=ports, **spec))  # type: ignore[arg-type]


def eps(
    name: str, subsets: list[EndpointSubset], weights: dict[str, int] | None = None
) -> Endpoints:
    ann = {"shoal.dev/weights": json.dumps(weights)} if weights else {}
    return Endpoints(
        metadata=ObjectMeta(name=name, namespace="default", annotations=ann), subsets=subsets
    )


def addr(ip: str) -> EndpointAddress:
    return EndpointAddress(ip=ip)


def test_ready_endpoints_by_port_name_and_balancing() -> None:
    ports = [ServicePort(name="http", port=80), ServicePort(name="admin", port=9000)]
    s = svc(
        "web", ports, cluster_ip="10.96.0.5", annotations={"shoal.dev/load-balancing": "weighted"}
    )
    e = eps("web", [
        EndpointSubset(addresses=[addr("10.244.0.2"), addr("10.244.0.3")],
                       not_ready_addresses=[addr("10.244.0.9")],
                       ports=[EndpointPort(name="http", port=8080), EndpointPort(name="admin", port=9090)]),
    ], weights={"10.244.0.3": 3})  # fmt: skip
    rules = service_rules([s], {"default/web": e})
    assert [r.key for r in rules] == ["default/web:admin", "default/web:http"]
    http = rules[1]
    assert http.cluster_ip == "10.96.0.5" and http.port == 80 and http.balance == "weighted"
    assert http.backends == (Backend("10.244.0.2", 8080), Backend("10.244.0.3", 8080, 3))
    assert rules[0].backends[0].port == 9090
    assert http.affinity_timeout is None and http.node_port is None


def test_affinity_node_ports_headless_and_missing_endpoints() -> None:
    sticky = svc("s", [ServicePort(port=80)], cluster_ip="10.96.0.6", session_affinity="ClientIP")
    np = svc("n", [ServicePort(port=80, node_port=30007)], cluster_ip="10.96.0.7", type="NodePort")
    headless = svc("h", [ServicePort(port=80)], cluster_ip="None")
    ext = svc("x", [ServicePort(port=80)], type="ExternalName")
    sctp = svc("p", [ServicePort(port=80, protocol="SCTP")], cluster_ip="10.96.0.8")
    rules = {r.key: r for r in service_rules([sticky, np, headless, ext, sctp], {})}
    assert set(rules) == {"default/s:80", "default/n:80"}
    assert rules["default/s:80"].affinity_timeout == 10800
    assert rules["default/s:80"].backends == ()  # no Endpoints yet: connections refused
    assert rules["default/n:80"].node_port == 30007


def test_host_ports_and_networks() -> None:
    c = Container(name="c", ports=[ContainerPort(container_port=8080, host_port=18080),
                                   ContainerPort(container_port=53, host_port=5353, protocol="UDP")])  # fmt: skip
    p = Pod(metadata=ObjectMeta(name="p", namespace="default"), spec=PodSpec(containers=[c]),
            status=PodStatus(pod_ip="10.244.0.4"))  # fmt: skip
    no_ip = p.model_copy(update={"status": PodStatus()})
    assert host_ports([p, no_ip]) == (
        HostPort(18080, "tcp", "10.244.0.4", 8080),
        HostPort(5353, "udp", "10.244.0.4", 53),
    )
    nets = [Network(metadata=ObjectMeta(name="b"), spec=NetworkSpec(subnet="172.16.0.0/16", internal=True)),
            Network(metadata=ObjectMeta(name="a"), spec=NetworkSpec(subnet="10.244.0.0/16")),
            Network(metadata=ObjectMeta(name="unset"))]  # fmt: skip
    assert network_rules(nets, lambda n: f"br-{n}") == (
        NetworkRule("a", "10.244.0.0/16", "br-a", False),
        NetworkRule("b", "172.16.0.0/16", "br-b", True),
    )


def test_pods_on_several_networks_get_alternates_by_subnet() -> None:
    s = svc("duo", [ServicePort(port=80)], cluster_ip="10.96.0.9")
    e = eps(
        "duo", [EndpointSubset(addresses=[addr("172.16.0.4")], ports=[EndpointPort(port=8080)])]
    )
    e.metadata.annotations["networking.shoal.dev/endpoint-addresses"] = json.dumps(
        {"172.16.0.4": {"back": "172.17.0.6", "gone": "10.9.9.9"}}
    )
    (rule,) = service_rules(
        [s], {"default/duo": e}, {"back": "172.17.0.0/16", "front": "172.16.0.0/16"}
    )
    assert rule.backends == (Backend("172.16.0.4", 8080, 1, (("172.17.0.0/16", "172.17.0.6"),)),)
