"""The pure allocators: lowest free choice given what is taken, never a reserved address."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.network._ipam import (
    ExhaustedError,
    cluster_ip,
    dns_vip,
    gateway,
    network_subnet,
    node_port,
    node_subnet,
    overlapping,
    pod_address,
)


def test_node_subnets_split_the_range_in_order() -> None:
    assert node_subnet("10.244.0.0/16", 24, []) == "10.244.0.0/24"
    assert node_subnet("10.244.0.0/16", 24, ["10.244.0.0/24"]) == "10.244.1.0/24"
    # A freed share is reused first.
    assert node_subnet("10.244.0.0/16", 24, ["10.244.1.0/24"]) == "10.244.0.0/24"
    with pytest.raises(ExhaustedError):
        node_subnet("10.9.0.0/24", 25, ["10.9.0.0/25", "10.9.0.128/25"])


def test_pod_addresses_skip_gateway_and_carry_the_prefix() -> None:
    assert gateway("10.244.3.0/24") == "10.244.3.1"
    assert pod_address("10.244.3.0/24", []) == "10.244.3.2/24"
    assert pod_address("10.244.3.0/24", ["10.244.3.2/24", "10.244.3.3"]) == "10.244.3.4/24"
    taken = [f"10.1.1.{i}" for i in range(2, 7)]
    with pytest.raises(ExhaustedError, match="no free address"):
        pod_address("10.1.1.0/29", taken)


@given(st.sets(st.integers(2, 254), max_size=200))
def test_pod_address_is_never_taken_nor_reserved(taken_hosts: set[int]) -> None:
    taken = {f"10.5.0.{h}" for h in taken_hosts}
    got = pod_address("10.5.0.0/24", taken).split("/")[0]
    assert got not in taken and got != "10.5.0.1"
    assert ipaddress.ip_address(got) in ipaddress.ip_network("10.5.0.0/24")
    assert got not in ("10.5.0.0", "10.5.0.255")


def test_cluster_ips_keep_the_api_and_dns_addresses_back() -> None:
    assert dns_vip() == "10.96.0.10"
    assert cluster_ip([]) == "10.96.0.2"
    taken = [f"10.96.0.{i}" for i in range(2, 10)]
    assert cluster_ip(taken) == "10.96.0.11"
    with pytest.raises(ExhaustedError):
        cluster_ip(["10.0.0.2"], "10.0.0.0/30")


def test_network_subnets_avoid_overlaps() -> None:
    assert network_subnet([]) == "172.16.0.0/16"
    assert network_subnet(["172.16.5.0/24"]) == "172.17.0.0/16"
    assert overlapping("10.244.0.0/16", {"a": "10.244.7.0/24", "b": "10.1.0.0/16"}) == "a"
    assert overlapping("10.245.0.0/16", {"a": "10.244.0.0/16"}) is None


def test_node_ports_fill_from_the_bottom() -> None:
    assert node_port([]) == 30000
    assert node_port([30000, 30001]) == 30002
    with pytest.raises(ExhaustedError):
        node_port([30000], 30000, 30000)
