"""The agent's pure networking decisions: a pod's interfaces from its IPAM annotation and the
Networks' node subnets, and its bandwidth annotations."""

from __future__ import annotations

import json

import pytest

from shoal.agent._network import bandwidth_of, plan_interfaces
from shoal.api import (
    Container,
    Network,
    NetworkSpec,
    NetworkStatus,
    NodeSubnet,
    ObjectMeta,
    Pod,
    PodSpec,
)
from shoal.network._podnet import Bandwidth

NETS = {
    "default": Network(metadata=ObjectMeta(name="default"), spec=NetworkSpec(subnet="10.244.0.0/16"),
                       status=NetworkStatus(node_subnets=[NodeSubnet(node_name="n1", subnet="10.244.3.0/24")])),
    "vault": Network(metadata=ObjectMeta(name="vault"), spec=NetworkSpec(subnet="172.17.0.0/16", internal=True),
                     status=NetworkStatus(node_subnets=[NodeSubnet(node_name="n1", subnet="172.17.0.0/24")])),
}  # fmt: skip


def pod(networks: list[str], addresses: dict[str, str] | None, **annotations: str) -> Pod:
    ann = dict(annotations)
    if addresses is not None:
        ann["networking.shoal.dev/addresses"] = json.dumps(addresses)
    return Pod(metadata=ObjectMeta(name="p", namespace="default", uid="u1", annotations=ann),
               spec=PodSpec(containers=[Container(name="c")], networks=networks))  # fmt: skip


def test_interfaces_in_order_with_one_default_route() -> None:
    p = pod(["vault", "default"], {"vault": "172.17.0.5/24", "default": "10.244.3.7/24"})
    got = plan_interfaces(p, "n1", NETS.get, lambda n: f"br-{n}")
    assert not isinstance(got, str)
    assert [(i.ifname, i.network, i.address, i.gateway, i.network_cidr, i.default_route) for i in got] == [
        ("eth0", "vault", "172.17.0.5/24", "172.17.0.1", "172.17.0.0/16", False),  # internal
        ("eth1", "default", "10.244.3.7/24", "10.244.3.1", "10.244.0.0/16", True),
    ]  # fmt: skip


def test_internal_only_pod_still_routes_the_service_range() -> None:
    got = plan_interfaces(pod(["vault"], {"vault": "172.17.0.5/24"}), "n1", NETS.get, str)
    assert not isinstance(got, str)
    assert not got[0].default_route and got[0].extra_routes == ("10.96.0.0/16",)


def test_waits_for_addresses_subnets_and_networks() -> None:
    assert "address" in str(plan_interfaces(pod([], None), "n1", NETS.get, str))
    assert "subnet" in str(
        plan_interfaces(pod([], {"default": "10.244.9.2/24"}), "n9", NETS.get, str)
    )
    assert "does not exist" in str(plan_interfaces(pod(["nope"], {}), "n1", NETS.get, str))


def test_bandwidth_annotations() -> None:
    assert bandwidth_of(pod([], {})) is None
    got = bandwidth_of(pod([], {}, **{"kubernetes.io/egress-bandwidth": "10M"}))
    assert got == Bandwidth(ingress_bps=None, egress_bps=10_000_000)
    with pytest.raises(ValueError, match=r"kubernetes\.io/ingress-bandwidth"):
        bandwidth_of(pod([], {}, **{"kubernetes.io/ingress-bandwidth": "fast"}))
