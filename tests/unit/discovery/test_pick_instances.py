"""Parsing /v1/health/service bodies into ServiceInstance: address fallback, health, order,
and malformed answers named by field."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.discovery.client import DiscoveryError, ServiceInstance, parse_health_entries


def _entry(sid: str, node: str = "n1", address: str = "", *statuses: str) -> dict[str, Any]:
    return {
        "Node": {"Node": node, "Address": "192.0.2.9"},
        "Service": {"ID": sid, "Service": "web", "Address": address, "Port": 80,
                    "Tags": ["a"], "Meta": {"v": "1"}},
        "Checks": [{"Status": s} for s in statuses],
    }  # fmt: skip


def test_fields_order_and_node_address_fallback() -> None:
    body = [_entry("b", "n2", "10.0.0.2"), _entry("a", "n2"), _entry("z", "n1", "10.0.0.3")]
    found = parse_health_entries(body, "web")
    assert [(i.node, i.id) for i in found] == [("n1", "z"), ("n2", "a"), ("n2", "b")]
    assert found[1].address == "192.0.2.9"  # empty service address: the node's
    assert found[0] == ServiceInstance("z", "web", "10.0.0.3", 80, "n1", ("a",), {"v": "1"})
    assert found[0].hostport == "10.0.0.3:80"
    assert ServiceInstance("x", "web", "fd00::1", 53).hostport == "[fd00::1]:53"


def test_health_filters() -> None:
    body = [
        _entry("ok", "n1", "", "passing", "passing"),
        _entry("warn", "n1", "", "passing", "warning"),
        _entry("bad", "n1", "", "warning", "critical"),
        _entry("none"),
    ]
    assert [i.id for i in parse_health_entries(body, "web")] == ["none", "ok"]
    relaxed = parse_health_entries(body, "web", passing_only=False)
    assert [(i.id, i.status) for i in relaxed] == [
        ("none", "passing"), ("ok", "passing"), ("warn", "warning")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"web": []}, "expected a JSON list, got dict"),
        (["x"], r"\[0\]: expected an object, got str"),
        ([{"Service": None}], r"\[0\]\.Service: expected an object"),
        ([{"Service": {"Service": "web", "Port": 1}}], r"Service\.ID: expected a non-empty"),
        ([{"Service": {"ID": "a", "Service": "web", "Port": "80"}}], r"Service\.Port"),
        ([{"Service": {"ID": "a", "Service": "web", "Port": 70000}}], r"Service\.Port"),
        ([{"Service": {"ID": "a", "Service": "web", "Tags": [1]}}], r"Service\.Tags"),
        ([{"Service": {"ID": "a", "Service": "web"}, "Checks": [{"Status": "ok"}]}],
         r"Checks\[0\]\.Status: expected passing, warning or critical, got 'ok'"),
    ],
)  # fmt: skip
def test_malformed_bodies_name_the_field(body: Any, message: str) -> None:
    with pytest.raises(DiscoveryError, match=message) as err:
        parse_health_entries(body, "web")
    assert 'the health list of "web"' in str(err.value)
