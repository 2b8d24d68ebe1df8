"""The nftables renderer: structure of the rendered table, stable names, weights, affinity,
services without endpoints, and deltas that end where a full render would. Scripts are
checked by the real ``nft`` (in a throwaway network namespace) when running as root."""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.network._nftrules import (
    MAX_NAME,
    Backend,
    DNSRule,
    HostPort,
    NetworkRule,
    RuleSet,
    ServiceNames,
    ServiceRule,
    affinity_ids,
    build_model,
    render_delete,
    render_delta,
    render_full,
    selection_order,
)
from shoal.network._nftscript import TableModel
from tests.rootreq import require_root

NFT_NAME = re.compile(r"[A-Za-z_.][A-Za-z0-9/_.-]*\Z")  # nft's unquoted identifier


def web(*backends: Backend, **kw: Any) -> ServiceRule:
    return ServiceRule("default/web:http", "10.96.0.5", 80, "tcp", backends, **kw)


B1, B2, B3 = Backend("10.66.0.2", 8080), Backend("10.66.0.3", 8080), Backend("10.66.0.4", 8080)
NETS = (
    NetworkRule("default", "10.66.0.0/24", "br0"),
    NetworkRule("secret", "10.67.0.0/24", "br1", internal=True),
)
DNS = DNSRule("10.96.0.10", "127.0.0.1", 8600)


def rich() -> RuleSet:
    return RuleSet(
        "shoaltest",
        services=(
            web(B1, B2, B3, node_port=30080),
            ServiceRule("default/api:grpc", "10.96.0.6", 9000, "tcp", (B1, B2), "random"),
            ServiceRule(
                "default/w:x", "10.96.0.7", 80, "tcp", (Backend("10.66.0.2", 1, 3), B2), "weighted"
            ),
            ServiceRule("default/sticky:x", "10.96.0.8", 80, "udp", (B1, B3), affinity_timeout=60),
            ServiceRule("default/empty:x", "10.96.0.9", 80, "tcp", (), node_port=30090),
        ),
        host_ports=(HostPort(8081, "tcp", "10.66.0.4", 8080),),
        networks=NETS,
        dns=DNS,
        pod_cidrs=("10.244.0.0/16",),
    )


# --- names and structure -------------------------------------------------------------------


def test_service_names_are_stable_hashes_of_key_and_protocol() -> None:
    names = ServiceNames.of("default/web:http", "tcp")
    assert names == ServiceNames.of("default/web:http", "tcp")
    assert re.fullmatch(r"[A-Z2-7]{8}", names.id)
    assert names.id == "OSC5D42R"  # pinned: a change would orphan every live table's chains
    assert ServiceNames.of("default/web:http", "udp").id != names.id
    assert names.service == "svc-OSC5D42R-default/web_http"


def test_names_fit_nft_limits_even_for_long_keys() -> None:
    key = "a-very-long-namespace-name-" * 3 + "/" + "service" * 9 + ":port-name!"
    s = ServiceRule(key, "10.96.0.5", 80, "udp", (Backend("255.255.255.254", 65535),), node_port=1)
    rs = RuleSet("t" + "x" * 60, services=(s,), host_ports=(HostPort(65535, "udp", "10.0.0.1", 1),))
    model = build_model(rs)
    for name in [*model.chains, *model.sets]:
        assert len(name) <= MAX_NAME, name
        assert NFT_NAME.match(name), name
    with pytest.raises(ValueError, match="table name"):
        RuleSet("x" * 65)
    with pytest.raises(ValueError, match="table name"):
        RuleSet("bad name")


def test_full_render_recreates_the_table_atomically_with_hooks_and_maps() -> None:
    script = render_full(rich())
    lines = script.splitlines()
    assert lines[:3] == [
        "add table ip shoaltest",
        "delete table ip shoaltest",
        "add table ip shoaltest",
    ]
    assert (
        "add chain ip shoaltest nat-prerouting { type nat hook prerouting priority dstnat; policy accept; }"
        in lines
    )
    assert (
        "add chain ip shoaltest nat-output { type nat hook output priority -100; policy accept; }"
        in lines
    )
    assert (
        "add rule ip shoaltest services ip daddr . meta l4proto . th dport vmap @service-ips"
        in lines
    )
    assert any("fib daddr type local" in x and "@service-nodeports" in x for x in lines)
    # Everything is declared before use: chains and sets, then rules, then elements.
    kinds = [x.split()[1] for x in lines[3:]]
    rank = {"chain": 0, "map": 1, "set": 1, "rule": 2, "element": 3}
    assert kinds == sorted(kinds, key=rank.__getitem__)


def test_round_robin_random_and_weighted_selection() -> None:
    model = build_model(rich())
    rr = ServiceNames.of("default/web:http", "tcp")
    assert model.chains[rr.service] == (f"numgen inc mod 3 vmap @{rr.balancer}",)
    assert model.elements[rr.balancer] == {
        "0": f"goto {rr.endpoint(B1)}",
        "1": f"goto {rr.endpoint(B2)}",
        "2": f"goto {rr.endpoint(B3)}",
    }
    rnd = ServiceNames.of("default/api:grpc", "tcp")
    assert model.chains[rnd.service] == (f"numgen random mod 2 vmap @{rnd.balancer}",)
    w = ServiceNames.of("default/w:x", "tcp")
    assert model.chains[w.service] == (f"numgen inc mod 4 vmap @{w.balancer}",)
    targets = Counter(model.elements[w.balancer].values())
    heavy = f"goto {w.endpoint(Backend('10.66.0.2', 1))}"
    assert targets == {heavy: 3, f"goto {w.endpoint(B2)}": 1}
    # Each endpoint chain marks hairpin traffic, then DNATs with an L4 match.
    assert model.chains[rr.endpoint(B1)] == (
        "ip saddr 10.66.0.2 jump mark-for-masquerade",
        "meta l4proto tcp dnat to 10.66.0.2:8080",
    )


def test_weights_are_repeated_reduced_and_interleaved() -> None:
    a, b = Backend("10.0.0.1", 80, 6), Backend("10.0.0.2", 80, 2)
    assert [x.ip[-1] for x in selection_order([b, a], "weighted")] == list("1121")
    assert selection_order([b, a], "roundrobin") == [a, b]  # weights ignored, order canonical
    big = [Backend(f"10.0.0.{i}", 80, 997 + i) for i in range(1, 4)]
    seq = selection_order(big, "weighted")
    assert len(seq) <= 1000
    counts = Counter(x.ip for x in seq)
    assert set(counts) == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    assert max(counts.values()) - min(counts.values()) <= 2
    with pytest.raises(ValueError, match="weight"):
        Backend("10.0.0.1", 80, 0)


def test_client_ip_affinity_uses_one_shared_timed_map() -> None:
    model = build_model(rich())
    n = ServiceNames.of("default/sticky:x", "udp")
    key = "ip saddr . ip daddr . meta l4proto . th dport"
    assert model.sets["affinity"].startswith(
        "type ipv4_addr . ipv4_addr . inet_proto . inet_service : mark; flags dynamic,timeout;"
    )
    assert model.elements["affinity"] == {}  # filled by the kernel only
    assert model.chains[n.service] == (
        f"ct mark set {key} map @affinity ct mark vmap @{n.affinity}",
        f"ct mark != 0 delete @affinity {{ {key} : 0 }} ct mark set 0",
        f"numgen inc mod 2 vmap @{n.balancer}",
    )
    # Endpoints are numbered by address: 10.66.0.2 = 0x0a420002.
    assert model.sets[n.affinity] == "typeof ct mark : verdict;"
    assert model.elements[n.affinity] == {
        "0xa420002": f"goto {n.endpoint(B1)}",
        "0xa420004": f"goto {n.endpoint(B3)}",
    }
    assert model.chains[n.endpoint(B3)] == (
        "ip saddr 10.66.0.4 jump mark-for-masquerade",
        "ct mark set 0",
        f"update @affinity {{ {key} timeout 60s : 0xa420004 }}",
        "meta l4proto udp dnat to 10.66.0.4:8080",
    )
    # Services without affinity have no affinity map of their own.
    web = ServiceNames.of("default/web:http", "tcp")
    assert web.affinity not in model.sets
    assert not any("affinity" in r for r in model.chains[web.service])


def test_affinity_numbers_are_stable_and_unique() -> None:
    one, two = affinity_ids((B1, B2, B3)), affinity_ids((B3, B1))
    assert one[B1] == two[B1] == 0x0A420002 and one[B3] == two[B3]
    same_ip = (Backend("10.0.0.9", 81), Backend("10.0.0.9", 80), B1)
    ids = affinity_ids(same_ip)
    assert ids == {Backend("10.0.0.9", 80): 1, Backend("10.0.0.9", 81): 2, B1: 0x0A420002}


def test_services_without_endpoints_are_rejected_not_dnatted() -> None:
    model = build_model(rich())
    n = ServiceNames.of("default/empty:x", "tcp")
    assert n.service not in model.chains
    assert model.elements["no-endpoint-services"] == {"10.96.0.9 . tcp . 80": "goto reject-chain"}
    assert model.elements["no-endpoint-nodeports"] == {"tcp . 30090": "goto reject-chain"}
    assert "10.96.0.9 . tcp . 80" not in model.elements["service-ips"]
    assert model.chains["reject-chain"] == ("reject",)
    assert "ct state new jump service-endpoints-check" in model.chains["filter-forward"]
    assert "ct state new jump nodeport-endpoints-check" in model.chains["filter-input"]


def test_isolation_internal_networks_dns_and_masquerade() -> None:
    model = build_model(rich())
    iso = model.chains["isolation"]
    assert 'iifname "br1" ip saddr != 10.67.0.0/24 drop' in iso
    assert iso.index("ip saddr 10.66.0.0/24 ip daddr 10.66.0.0/24 accept") < iso.index(
        "ip saddr @networks ip daddr @networks drop"
    )
    assert iso[-2:] == ("ip saddr @internal-networks drop", "ip daddr @internal-networks drop")
    assert model.elements["internal-networks"] == {"10.67.0.0/24": ""}
    assert model.elements["pod-cidrs"].keys() == {"10.66.0.0/24", "10.67.0.0/24", "10.244.0.0/16"}
    fwd = model.chains["filter-forward"]
    assert fwd.index("ct status dnat ct original ip daddr 10.96.0.10 accept") < fwd.index(
        "jump isolation"
    )
    assert model.elements["service-ips"]["10.96.0.10 . udp . 53"] == "goto dns"
    assert model.chains["dns"] == ("meta l4proto { tcp, udp } dnat to 127.0.0.1:8600",)
    assert model.chains["masquerading"][1:] == (
        "ip saddr @internal-networks return",
        "ip saddr @networks ip daddr != @pod-cidrs masquerade",
    )
    bare = build_model(RuleSet("t"))
    assert "isolation" not in bare.chains and "networks" not in bare.sets


def test_conflicting_claims_are_refused() -> None:
    with pytest.raises(ValueError, match="claimed twice"):
        RuleSet("t", services=(web(B1), ServiceRule("other/x:y", "10.96.0.5", 80, "tcp", (B2,))))
    with pytest.raises(ValueError, match="claimed twice"):
        RuleSet("t", services=(ServiceRule("kube/dns:x", "10.96.0.10", 53, "udp", (B1,)),), dns=DNS)
    with pytest.raises(ValueError, match="port 30080 used twice"):
        RuleSet(
            "t",
            services=(web(B1, node_port=30080),),
            host_ports=(HostPort(30080, "tcp", "10.66.0.2", 80),),
        )
    with pytest.raises(ValueError, match="listed twice"):
        web(B1, Backend("10.66.0.2", 8080, 5))


def test_render_delete_is_harmless_when_absent() -> None:
    assert render_delete("shoal") == "add table ip shoal\ndelete table ip shoal\n"


# --- deltas --------------------------------------------------------------------------------


def apply_script(model: TableModel, script: str) -> TableModel:
    """Test oracle: what the delta script does to a table, following nft's semantics for the
    commands the renderer emits."""
    chains = {k: list(v) for k, v in model.chains.items()}
    sets = dict(model.sets)
    elements = {k: dict(v) for k, v in model.elements.items()}
    for line in script.splitlines():
        verb, kind, _family, _table, name, *rest = line.split(" ", 5)
        body = rest[0] if rest else ""
        if (verb, kind) == ("add", "chain"):
            assert name not in chains
            chains[name] = []
        elif (verb, kind) == ("flush", "chain"):
            chains[name] = []
        elif (verb, kind) == ("delete", "chain"):
            assert chains.pop(name) == [], f"deleting non-empty chain {name}"
            referenced = [r for rules in chains.values() for r in rules if name in r.split()]
            referenced += [v for e in elements.values() for v in e.values() if v == f"goto {name}"]
            assert not referenced, f"deleting chain {name} still in use"
        elif (verb, kind) == ("add", "rule"):
            chains[name].append(body)
        elif verb == "add" and kind in ("set", "map"):
            assert name not in sets
            sets[name] = body.removeprefix("{ ").removesuffix(" }")
        elif (verb, kind) == ("delete", "set"):
            del sets[name]
            elements.pop(name, None)
            # A whole-name match: @aff-X-80 must not match inside @aff-X-8080.
            used = re.compile(rf"@{re.escape(name)}(?![A-Za-z0-9_./-])")
            assert not any(used.search(r) for rules in chains.values() for r in rules)
        elif kind == "element":
            items = body.removeprefix("{ ").removesuffix(" }").split(", ")
            for item in items:
                key, _, value = item.partition(" : ")
                if verb == "add":
                    assert key not in elements.get(name, {}), f"{name}: {key} exists"
                    elements.setdefault(name, {})[key] = value
                else:
                    del elements[name][key]
        else:
            raise AssertionError(f"unexpected command {line!r}")
    return TableModel(
        model.table,
        model.hooks,
        {k: tuple(v) for k, v in chains.items()},
        sets,
        {k: v for k, v in elements.items() if v},
    )


def canonical(model: TableModel) -> tuple[Any, ...]:
    return (
        model.table,
        dict(model.chains),
        dict(model.sets),
        {k: dict(v) for k, v in model.elements.items() if v},
    )


def many(n: int, endpoints: int = 10) -> RuleSet:
    return RuleSet(
        "big",
        services=tuple(
            ServiceRule(
                f"ns/s{i}:p",
                f"10.96.{i // 250}.{i % 250 + 1}",
                80,
                "tcp",
                tuple(
                    Backend(f"10.70.{i // 20}.{(i % 20) * 12 + e + 1}", 80)
                    for e in range(endpoints)
                ),
                affinity_timeout=30 if i % 3 == 0 else None,
            )
            for i in range(n)
        ),
        networks=NETS,
        dns=DNS,
    )


def test_one_endpoint_change_among_a_thousand_services_is_a_tiny_transaction() -> None:
    old = many(1000)
    target = old.services[500]
    changed = dataclasses.replace(
        target, backends=(*target.backends[:-1], Backend("10.71.0.1", 80))
    )
    new = dataclasses.replace(old, services=(*old.services[:500], changed, *old.services[501:]))
    script = render_delta(old, new)
    sid = ServiceNames.of(target.key, target.protocol).id
    assert 3 <= len(script.splitlines()) <= 10, script
    for line in script.splitlines():
        assert sid in line, line
    assert "delete table" not in script
    assert canonical(apply_script(build_model(old), script)) == canonical(build_model(new))
    assert render_delta(new, new) == ""


def test_delta_falls_back_to_full_when_shared_parts_change() -> None:
    old = rich()
    for new in (
        dataclasses.replace(old, networks=NETS[:1]),
        dataclasses.replace(old, dns=None),
        dataclasses.replace(old, pod_cidrs=()),
    ):
        assert render_delta(old, new) == render_full(new)


backends = st.lists(
    st.builds(
        Backend,
        st.sampled_from([f"10.66.0.{i}" for i in range(2, 7)]),
        st.sampled_from([80, 8080]),
        st.integers(1, 4),
    ),
    max_size=4,
    unique_by=lambda b: (b.ip, b.port),
).map(tuple)


@st.composite
def rulesets(draw: st.DrawFn) -> RuleSet:
    services = []
    for i, key in enumerate(draw(st.lists(st.sampled_from("abcdef"), unique=True))):
        services.append(
            ServiceRule(
                f"ns/{key}:p",
                draw(st.sampled_from([f"10.96.0.{i + 1}", f"10.96.1.{i + 1}", None])),
                draw(st.sampled_from([80, 443])),
                draw(st.sampled_from(["tcp", "udp"])),
                draw(backends),
                draw(st.sampled_from(["roundrobin", "random", "weighted"])),
                draw(st.sampled_from([None, 60, 10800])),
                draw(st.sampled_from([None, 30000 + i])),
            )
        )
    ports = draw(st.lists(st.integers(8000, 8004), unique=True))
    host_ports = tuple(
        HostPort(p, "tcp", draw(st.sampled_from(["10.66.0.2", "10.66.0.3"])), 80) for p in ports
    )
    return RuleSet("prop", tuple(services), host_ports, NETS, DNS)


@settings(max_examples=200, deadline=None)
@given(rulesets(), rulesets())
def test_delta_ends_exactly_where_a_full_render_would(old: RuleSet, new: RuleSet) -> None:
    script = render_delta(old, new)
    assert canonical(apply_script(build_model(old), script)) == canonical(build_model(new))


# --- the real nft (root) -------------------------------------------------------------------


@pytest.fixture
def netns() -> Iterator[str]:
    require_root("ip", "nft")
    name = f"t{secrets.token_hex(3)[:5]}-nftu"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def nft(netns: str, *args: str, script: str | None = None) -> str:
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", *args],
        input=script,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"nft {' '.join(args)}: {proc.stderr}\n{script}"
    return proc.stdout


def listing(netns: str, table: str) -> Any:
    """``nft -j list table`` without handles, order-independent."""
    out = json.loads(nft(netns, "-j", "list", "table", "ip", table))
    items = []
    for item in out["nftables"]:
        for kind, body in item.items():
            if kind == "metainfo":
                continue
            body = {k: v for k, v in body.items() if k != "handle"}
            if kind == "set" or kind == "map":
                body["elem"] = sorted(json.dumps(e, sort_keys=True) for e in body.get("elem", []))
            items.append(json.dumps({kind: body}, sort_keys=True))
    rules: dict[str, list[str]] = {}
    others = []
    for item in items:
        parsed = json.loads(item)
        if "rule" in parsed:
            rules.setdefault(parsed["rule"]["chain"], []).append(item)  # order within chain kept
        else:
            others.append(item)
    return sorted(others), rules


def test_nft_accepts_the_full_render(netns: str) -> None:
    nft(netns, "-c", "-f", "-", script=render_full(rich()))
    nft(netns, "-f", "-", script=render_full(rich()))
    nft(netns, "-f", "-", script=render_full(rich()))  # replacing an existing table
    assert "table ip shoaltest" in nft(netns, "list", "tables")
    nft(netns, "-f", "-", script=render_delete("shoaltest"))
    nft(netns, "-f", "-", script=render_delete("shoaltest"))  # absent: still fine
    assert "shoaltest" not in nft(netns, "list", "tables")


def test_nft_delta_leaves_the_same_table_as_a_full_render(netns: str) -> None:
    old = rich()
    web_svc, api, w, sticky, empty = old.services
    steps = [
        # an endpoint goes, another arrives, affinity turns off, the empty service fills
        dataclasses.replace(
            old,
            services=(
                dataclasses.replace(web_svc, backends=(B1, B3)),
                api,
                dataclasses.replace(w, backends=(Backend("10.66.0.9", 1, 2),)),
                dataclasses.replace(sticky, affinity_timeout=None, backends=(B2,)),
                dataclasses.replace(empty, backends=(B3,)),
            ),
            host_ports=(HostPort(8081, "tcp", "10.66.0.3", 8080),),
        ),
        # services removed, the balance changes, affinity timeout changes
        dataclasses.replace(
            old,
            services=(
                dataclasses.replace(web_svc, balance="random", affinity_timeout=5),
                dataclasses.replace(sticky, affinity_timeout=120),
            ),
            host_ports=(),
        ),
        old,
    ]
    nft(netns, "-f", "-", script=render_full(old))
    current = old
    for step in steps:
        nft(netns, "-f", "-", script=render_delta(current, step))
        after_delta = listing(netns, "shoaltest")
        nft(netns, "-f", "-", script=render_full(step))
        assert listing(netns, "shoaltest") == after_delta
        current = step


def test_alternate_addresses_pick_the_clients_network() -> None:
    b = Backend("172.16.0.4", 8080, alternates=(("172.17.0.0/16", "172.17.0.6"),))
    rs = RuleSet(table="alt", services=(ServiceRule("ns/duo:80", "10.96.0.9", 80, backends=(b,)),))
    model = build_model(rs)
    (ep,) = [rules for name, rules in model.chains.items() if name.startswith("ep-")]
    assert ep[-2:] == (
        "ip saddr 172.17.0.0/16 meta l4proto tcp dnat to 172.17.0.6:8080",
        "meta l4proto tcp dnat to 172.16.0.4:8080",
    )
    assert "ip saddr 172.17.0.6 jump mark-for-masquerade" in ep
