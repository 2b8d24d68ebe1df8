"""The pure parts of pod networking: bandwidth quantities, bridge names, the CNI
configurations shoal builds, the spec's plugin inputs and error parsing, which iptables-nft
tables are safe to remove, and the saved state's round trip."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import NetworkError
from shoal.network._cni import (
    Target,
    bandwidth_plugin,
    burst_bits,
    host_interfaces,
    parse_result,
    plugin_config,
    plugin_env,
    plugin_error,
    removable_tables,
)
from shoal.network._podnet import (
    Bandwidth,
    Interface,
    _State,
    _state_from_json,
    _state_to_json,
    bridge_name,
    bridge_sysctls,
    ensure_br_netfilter,
    parse_bandwidth,
    plan_chains,
    validate_interfaces,
)

TARGET = Target(container_id="pod-1", netns_path="/var/run/netns/x", ifname="eth0", pod="pod-1")


def eth(network: str = "a", ifname: str = "eth0", default: bool = True) -> Interface:
    return Interface(
        network=network,
        ifname=ifname,
        bridge=bridge_name("shoal", network),
        address="10.244.1.5/24",
        gateway="10.244.1.1",
        network_cidr="10.244.0.0/16",
        default_route=default,
    )


# --- bandwidth quantities -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("10M", 10_000_000),
        ("1G", 1_000_000_000),
        ("500k", 500_000),
        ("1Mi", 1_048_576),
        ("2Ki", 2048),
        ("1Gi", 2**30),
        ("100000", 100_000),
        (" 1.5M ", 1_500_000),
        ("1e6", 1_000_000),
        ("1000.2", 1001),  # rounded up, as the kubelet's Value() does
        (25_000, 25_000),
    ],
)
def test_parse_bandwidth(text: str | int, bps: int) -> None:
    assert parse_bandwidth(text) == bps


@pytest.mark.parametrize("bad", ["10 Mbit", "fast", "", "10MB", "-5M", "10m", "999", "2P"])
def test_parse_bandwidth_rejects_and_names_the_value(bad: str) -> None:
    with pytest.raises(ValueError, match="bandwidth") as info:
        parse_bandwidth(bad)
    assert repr(bad) in str(info.value)


# --- bridge names ------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=80), st.sampled_from(["shoal", "t1a2b3", "s", "ninechars"]))
def test_bridge_names_fit_and_are_stable(network: str, prefix: str) -> None:
    name = bridge_name(prefix, network)
    assert len(name) <= 15
    assert name.startswith(prefix)
    assert name == bridge_name(prefix, network)


def test_bridge_names_differ_per_network_and_reject_long_prefixes() -> None:
    assert bridge_name("shoal", "a") != bridge_name("shoal", "b")
    assert bridge_name("shoal", "frontend") == "shoal" + bridge_name("x", "frontend")[1:9]
    with pytest.raises(ValueError, match="too long"):
        bridge_name("tenchars10", "a")


# --- configurations --------------------------------------------------------------------


def test_plan_chains_loopback_then_bridges_with_routes_and_bandwidth() -> None:
    second = replace(eth("b", "eth1", default=False), address="10.245.1.7/24",
                     gateway="10.245.1.1", network_cidr="10.245.0.0/16")  # fmt: skip
    chains = plan_chains("shoal", [eth(), second], Bandwidth(ingress_bps=10**7, egress_bps=None))
    assert [(c.network, c.ifname, c.bridge) for c in chains] == [
        ("shoal-lo", "lo", None),
        ("a", "eth0", bridge_name("shoal", "a")),
        ("b", "eth1", bridge_name("shoal", "b")),
    ]
    assert chains[0].conflist == {
        "cniVersion": "1.0.0",
        "name": "shoal-lo",
        "plugins": [{"type": "loopback"}],
    }
    bridge, bw = chains[1].conflist["plugins"]
    assert bridge == {
        "type": "bridge",
        "bridge": bridge_name("shoal", "a"),
        "isGateway": True,
        "ipMasq": False,
        "hairpinMode": True,
        "ipam": {
            "type": "static",
            "addresses": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1"}],
            "routes": [
                {"dst": "10.244.0.0/16", "gw": "10.244.1.1"},
                {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
            ],
        },
    }
    assert bw == {"type": "bandwidth", "ingressRate": 10**7, "ingressBurst": burst_bits(10**7)}
    # The second network: its own range only, no default route, no shaping.
    (only,) = chains[2].conflist["plugins"]
    assert only["ipam"]["routes"] == [{"dst": "10.245.0.0/16", "gw": "10.245.1.1"}]


def test_bandwidth_goes_on_the_first_interface_without_a_default_route() -> None:
    internal = [eth("a", "eth0", default=False), eth("b", "eth1", default=False)]
    chains = plan_chains("shoal", internal, Bandwidth(None, 5_000_000))
    assert [len(c.conflist["plugins"]) for c in chains] == [1, 2, 1]
    assert chains[1].conflist["plugins"][1]["egressRate"] == 5_000_000
    assert bandwidth_plugin(None, None) is None
    assert len(plan_chains("shoal", internal, Bandwidth())[1].conflist["plugins"]) == 1


def test_burst_is_50ms_with_a_floor() -> None:
    assert burst_bits(10_000_000) == 500_000
    assert burst_bits(1_000_000) == 8 * 32 * 1024
    assert burst_bits(10**10) // 8 < 2**32  # the plugin refuses bursts of 4 GB and more


@pytest.mark.parametrize(
    ("interfaces", "message"),
    [
        ([], "at least one"),
        ([eth(), eth("b")], "interface name 'eth0' appears twice"),
        ([eth(), eth("a", "eth1", default=False)], "network 'a' appears twice"),
        ([eth(), eth("b", "eth1")], "default route"),
        ([eth(ifname="lo")], "loopback"),
        ([replace(eth(), gateway="10.9.0.1")], "gateway"),
        ([replace(eth(), gateway="10.244.1.5")], "gateway"),
        ([replace(eth(), address="10.244.1.5")], "prefix length"),
        ([replace(eth(), network_cidr="10.250.0.0/16")], "not inside network"),
        ([replace(eth(), address="banana/24")], "eth0 on a"),
    ],
)
def test_bad_plans_are_refused(interfaces: list[Interface], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_interfaces(interfaces)


def test_bad_network_names_are_refused() -> None:
    with pytest.raises(ValueError, match="network name"):
        plan_chains("shoal", [eth("no spaces")], None)


def test_sysctls_for_the_node() -> None:
    assert bridge_sysctls({"shoalb", "shoala"}) == [
        "net.ipv4.ip_forward=1",
        "net.bridge.bridge-nf-call-iptables=1",
        "net.ipv4.conf.shoala.route_localnet=1",
        "net.ipv4.conf.shoalb.route_localnet=1",
    ]


# --- the spec's plugin inputs ------------------------------------------------------------


def test_plugin_config_takes_name_version_and_prev_result() -> None:
    conflist = {"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "bridge"}, {"type": "bandwidth", "name": "x"}]}  # fmt: skip
    assert plugin_config(conflist, 0) == {"type": "bridge", "cniVersion": "1.0.0", "name": "a"}
    prev = {"cniVersion": "1.0.0", "interfaces": []}
    assert plugin_config(conflist, 1, prev) == {
        "type": "bandwidth",
        "cniVersion": "1.0.0",
        "name": "a",  # the list's name wins
        "prevResult": prev,
    }
    assert "prevResult" not in conflist["plugins"][1]  # the list is not modified


def test_plugin_env_is_complete_and_checked() -> None:
    assert plugin_env("DEL", TARGET, "/usr/lib/cni", "/usr/bin") == {
        "CNI_COMMAND": "DEL",
        "CNI_CONTAINERID": "pod-1",
        "CNI_NETNS": "/var/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
        "PATH": "/usr/bin",
    }
    with pytest.raises(ValueError, match="container ID"):
        plugin_env("ADD", replace(TARGET, container_id="../x"), "/usr/lib/cni", "/usr/bin")


# --- results and errors ----------------------------------------------------------------


def parse(stdout: str, command: str = "ADD") -> object:
    return parse_result(stdout, plugin="bridge", command=command, network="a", target=TARGET)


def test_spec_errors_become_network_errors_naming_plugin_network_and_pod() -> None:
    out = json.dumps({"cniVersion": "1.0.0", "code": 7, "msg": "invalid config", "details": "no bridge"})  # fmt: skip
    with pytest.raises(NetworkError) as info:
        parse(out)
    assert str(info.value) == (
        "CNI bridge ADD on network 'a' for pod pod-1 (eth0): invalid config: no bridge "
        "(CNI error code 7)"
    )
    with pytest.raises(NetworkError, match=r"DEL .*: gone \(CNI error code 11\)"):
        parse('{"code": 11, "msg": "gone"}', "DEL")


def test_an_add_without_a_result_or_with_garbage_fails() -> None:
    with pytest.raises(NetworkError, match="failed without printing an error"):
        parse("")
    with pytest.raises(NetworkError, match="panic: oops"):
        parse("panic: oops")
    with pytest.raises(NetworkError, match="interfaces"):
        parse('{"interfaces": []}')  # no cniVersion: not a result


def test_results_and_host_interfaces() -> None:
    result = {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "br0", "mac": "aa"},
            {"name": "veth1234", "mac": "bb"},
            {"name": "eth0", "mac": "cc", "sandbox": "/var/run/netns/x"},
            {"name": "bwp0123", "mac": "dd"},
        ],
    }
    assert parse(json.dumps(result)) == result
    assert parse("", "DEL") is None
    assert host_interfaces(result) == ["br0", "veth1234", "bwp0123"]
    assert host_interfaces(None) == []
    err = plugin_error(plugin="loopback", command="ADD", network="lo", target=TARGET, stdout="")
    assert "CNI loopback ADD on network 'lo'" in str(err)


# --- iptables-nft leftovers ------------------------------------------------------------


def ruleset(*items: dict[str, object]) -> dict[str, object]:
    return {"nftables": [{"metainfo": {"version": "1.0.6"}}, *items]}


def test_only_empty_iptables_tables_are_removable() -> None:
    portmap_leftover = [
        {"table": {"family": "ip", "name": "nat"}},
        {"chain": {"family": "ip", "table": "nat", "name": "CNI-HOSTPORT-DNAT"}},
        {"chain": {"family": "ip", "table": "nat", "name": "POSTROUTING", "hook": "postrouting", "policy": "accept"}},
    ]  # fmt: skip
    with_rule = [
        {"table": {"family": "ip", "name": "filter"}},
        {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "policy": "accept"}},
        {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "expr": []}},
    ]  # fmt: skip
    drop_policy = [
        {"table": {"family": "ip6", "name": "filter"}},
        {"chain": {"family": "ip6", "table": "filter", "name": "INPUT", "hook": "input", "policy": "drop"}},
    ]  # fmt: skip
    user_chain = [
        {"table": {"family": "ip", "name": "mangle"}},
        {"chain": {"family": "ip", "table": "mangle", "name": "MINE"}},
    ]
    shoal_table = [{"table": {"family": "inet", "name": "filter"}}]
    rs = ruleset(*portmap_leftover, *with_rule, *drop_policy, *user_chain, *shoal_table)
    assert removable_tables(rs) == [("ip", "nat")]
    assert removable_tables(ruleset({"table": {"family": "ip6", "name": "raw"}})) == [
        ("ip6", "raw")
    ]
    assert removable_tables({}) == []


# --- saved state -------------------------------------------------------------------------


def test_state_round_trip_keeps_configs_and_results() -> None:
    bw = Bandwidth(10**7, None)
    chains = plan_chains("shoal", [eth()], bw)
    state = _State(
        pod_uid="pod-1",
        netns="shoal-pod-1",
        interfaces=(eth(),),
        bandwidth=bw,
        chains=chains,
        results={"eth0": {"cniVersion": "1.0.0", "interfaces": []}},
        complete=True,
    )
    back = _state_from_json(_state_to_json(state))
    assert back == state
    assert back.attachment().netns_path == "/var/run/netns/shoal-pod-1"
    with pytest.raises(ValueError, match="state version"):
        _state_from_json('{"version": 99}')


async def test_br_netfilter_present_is_enough(tmp_path: Path) -> None:
    sysctl = tmp_path / "bridge-nf-call-iptables"
    sysctl.write_text("1\n")
    await ensure_br_netfilter(sysctl)


async def test_br_netfilter_missing_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no modprobe to load it with
    sysctl = tmp_path / "bridge-nf-call-iptables"
    with pytest.raises(NetworkError) as err:
        await ensure_br_netfilter(sysctl)
    assert "br_netfilter" in str(err.value) and str(sysctl) in str(err.value)
    assert "modprobe is not installed" in str(err.value)
