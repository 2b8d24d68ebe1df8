"""Building Endpoints subsets: port resolution, host ports, readiness, repacking."""

from __future__ import annotations

from shoal.api import ContainerPort, ObjectMeta, Service, ServicePort, ServiceSpec
from shoal.controllers._endpoints import (
    build_subsets,
    container_port_for,
    listening_port,
    repack_subsets,
)

from . import make_pod

WEB = {"app": "web"}


def service(*ports: ServicePort, selector: dict[str, str] | None = None) -> Service:
    return Service(
        metadata=ObjectMeta(name="web", namespace="default"),
        spec=ServiceSpec(selector=WEB if selector is None else selector, ports=list(ports)),
    )


def http_pod(name: str, ip: str, *, ready: bool = True, host_port: int | None = None) -> object:
    return make_pod(
        name,
        labels=WEB,
        ip=ip,
        ready=ready,
        node="n1",
        ports=[ContainerPort(container_port=8080, name="http")],
        host_ports={8080: host_port} if host_port else None,
    )


def test_target_port_number_and_name() -> None:
    pod = make_pod("a", ports=[ContainerPort(container_port=8080, name="http")])
    assert container_port_for(pod, ServicePort(port=80, target_port=9000)) == 9000
    assert container_port_for(pod, ServicePort(port=80, target_port="http")) == 8080
    assert container_port_for(pod, ServicePort(port=80, target_port="9100")) == 9100
    assert container_port_for(pod, ServicePort(port=80, target_port="metrics")) is None
    assert container_port_for(pod, ServicePort(port=80)) == 80
    # A named port must match the protocol as well.
    assert container_port_for(pod, ServicePort(port=80, target_port="http", protocol="UDP")) is None


def test_listening_port_prefers_reported_host_port() -> None:
    pod = make_pod("a", host_ports={8080: 31001})
    assert listening_port(pod, 8080, "TCP") == 31001
    assert listening_port(pod, 9090, "TCP") == 9090
    assert listening_port(pod, 8080, "UDP") == 8080


def test_ready_and_not_ready_addresses_share_a_subset() -> None:
    svc = service(ServicePort(name="http", port=80, target_port="http"))
    pods = [http_pod("a", "10.0.0.1"), http_pod("b", "10.0.0.2", ready=False)]
    subsets = build_subsets(svc, pods)  # type: ignore[arg-type]
    assert len(subsets) == 1
    s = subsets[0]
    assert [a.ip for a in s.addresses] == ["10.0.0.1"]
    assert [a.ip for a in s.not_ready_addresses] == ["10.0.0.2"]
    assert [(p.name, p.port) for p in s.ports] == [("http", 8080)]
    ref = s.addresses[0].target_ref
    assert ref is not None and (ref.kind, ref.name, ref.uid) == ("Pod", "a", "uid-a")
    assert s.addresses[0].node_name == "n1"


def test_host_ports_split_subsets_by_port() -> None:
    # Two pods on one host (same IP) listening on different host ports.
    svc = service(ServicePort(name="http", port=80, target_port="http"))
    pods = [
        http_pod("a", "192.168.1.5", host_port=31001),
        http_pod("b", "192.168.1.5", host_port=31002),
        http_pod("c", "192.168.1.6", host_port=31001),
    ]
    subsets = build_subsets(svc, pods)  # type: ignore[arg-type]
    assert [[p.port for p in s.ports] for s in subsets] == [[31001], [31002]]
    assert [a.target_ref.name for a in subsets[0].addresses if a.target_ref] == ["a", "c"]
    assert [a.target_ref.name for a in subsets[1].addresses if a.target_ref] == ["b"]


def test_excluded_pods() -> None:
    svc = service(ServicePort(name="http", port=80, target_port="http"))
    pods = [
        http_pod("no-ip", ""),
        make_pod("terminating", labels=WEB, ip="10.0.0.3", deleting=True),
        make_pod("done", labels=WEB, ip="10.0.0.4", phase="Succeeded"),
        make_pod("other", labels={"app": "db"}, ip="10.0.0.5"),
        # No port named "http": it serves none of the service's ports.
        make_pod("portless", labels=WEB, ip="10.0.0.6"),
    ]
    assert build_subsets(svc, pods) == []  # type: ignore[arg-type]


def test_repack_groups_ports_by_identical_address_sets() -> None:
    # Pod a serves http and metrics, b only http: http -> {a, b}, metrics -> {a}.
    svc = service(
        ServicePort(name="http", port=80, target_port="http"),
        ServicePort(name="metrics", port=9100, target_port="metrics"),
    )
    a = make_pod(
        "a",
        labels=WEB,
        ip="10.0.0.1",
        ports=[
            ContainerPort(container_port=8080, name="http"),
            ContainerPort(container_port=9100, name="metrics"),
        ],
    )
    b = http_pod("b", "10.0.0.2")
    subsets = build_subsets(svc, [a, b])  # type: ignore[list-item]
    shape = sorted(
        (tuple(p.name for p in s.ports), tuple(x.ip for x in s.addresses)) for s in subsets
    )
    assert shape == [(("http",), ("10.0.0.1", "10.0.0.2")), (("metrics",), ("10.0.0.1",))]


def test_headless_without_ports_keeps_addresses() -> None:
    svc = service()
    subsets = build_subsets(svc, [make_pod("a", labels=WEB, ip="10.0.0.1")])
    assert len(subsets) == 1 and subsets[0].ports == []
    assert [a.ip for a in subsets[0].addresses] == ["10.0.0.1"]


def test_output_is_canonical() -> None:
    svc = service(ServicePort(name="http", port=80, target_port="http"))
    pods = [http_pod(n, f"10.0.0.{i}") for i, n in enumerate("dcba", start=1)]
    one = build_subsets(svc, pods)  # type: ignore[arg-type]
    two = build_subsets(svc, list(reversed(pods)))  # type: ignore[arg-type]
    assert [s.to_dict() for s in one] == [s.to_dict() for s in two]
    assert repack_subsets([]) == []


def test_endpoint_weights_from_pod_annotations() -> None:
    from shoal.controllers._endpoints import endpoint_weights

    heavy = http_pod("a", "10.244.0.2")
    heavy.metadata.annotations["shoal.dev/weight"] = "3"  # type: ignore[attr-defined]
    plain = http_pod("b", "10.244.0.3")
    odd = http_pod("c", "10.244.0.4")
    odd.metadata.annotations["shoal.dev/weight"] = "lots"  # type: ignore[attr-defined]
    other = make_pod("d", labels={"app": "other"}, ip="10.244.0.5")
    other.metadata.annotations["shoal.dev/weight"] = "9"
    got = endpoint_weights(service(ServicePort(port=80)), [heavy, plain, odd, other])  # type: ignore[list-item]
    assert got == '{"10.244.0.2": 3}'
    assert endpoint_weights(service(ServicePort(port=80)), [plain]) == ""  # type: ignore[list-item]


def test_endpoint_addresses_of_pods_on_several_networks() -> None:
    from shoal.controllers._endpoints import endpoint_addresses

    two = http_pod("a", "10.244.0.2")
    two.spec.networks = ["default", "back"]  # type: ignore[attr-defined]
    two.metadata.annotations["networking.shoal.dev/addresses"] = (  # type: ignore[attr-defined]
        '{"default": "10.244.0.2/24", "back": "172.17.0.3/24"}'
    )
    one = http_pod("b", "10.244.0.3")
    got = endpoint_addresses(service(ServicePort(port=80)), [two, one])  # type: ignore[list-item]
    assert got == '{"10.244.0.2": {"back": "172.17.0.3"}}'
    assert endpoint_addresses(service(ServicePort(port=80)), [one]) == ""  # type: ignore[list-item]
