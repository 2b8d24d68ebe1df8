"""Registration bodies -> specs (pure): Consul's case-insensitive and snake_case keys, check
ID numbering, and the shapes that must be rejected rather than silently defaulted."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.discovery.consul._register import parse_check, parse_service
from shoal.errors import BadRequestError


def test_keys_are_case_insensitive_and_snake_case() -> None:
    spec, statuses = parse_service(
        {
            "NAME": "web", "id": "web-1", "Port": 80, "tags": ["a"], "META": {"k": "v"},
            "Check": {"HTTP": "http://127.0.0.1:1/", "interval": "5s",
                      "deregister_critical_service_after": "1m", "status": "passing"},
        },
        "n1",
    )  # fmt: skip
    assert (spec["id"], spec["service"], spec["node"], spec["port"]) == ("web-1", "web", "n1", 80)
    assert spec["meta"] == {"k": "v"} and spec["tags"] == ["a"]
    (check,) = spec["checks"]
    assert check["checkID"] == "service:web-1" and check["type"] == "http"
    assert check["deregisterCriticalServiceAfter"] == "1m"
    assert statuses == ["passing"]


def test_several_checks_are_numbered_and_duplicates_rejected() -> None:
    spec, statuses = parse_service(
        {"Name": "db", "Checks": [{"TTL": "1s"}, {"TTL": "2s", "CheckID": "disk"}]}, "n"
    )
    assert [c["checkID"] for c in spec["checks"]] == ["service:db:1", "disk"]
    assert statuses == [None, None]  # Consul's default initial status (critical) applies
    with pytest.raises(BadRequestError, match='duplicate CheckID "x"'):
        parse_service({"Name": "db", "Checks": [{"TTL": "1s", "ID": "x"}] * 2}, "n")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"Name": "x", "Checks": {}}, "Checks"),
        ({"Name": "x", "Checks": "ttl"}, "Checks"),
        ({"Name": "x", "Tags": "web"}, "Tags"),
        ({"Name": "x", "Tags": {}}, "Tags"),
        ({"Name": "x", "Tags": [1]}, "Tags"),
        ({"Name": "x", "Meta": []}, "Meta"),
        ({"Name": "x", "Meta": {"k": 1}}, "Meta"),
        ({"Name": "x", "Port": True}, "Port"),
        ({"Name": "x", "Port": 1.5}, "Port"),
        ({"Name": "x", "Port": 65536}, "65536"),
        ({"Name": 5}, "Name"),
        ({"Name": "x", "Weights": {"Passing": 0}}, "Passing"),
        ({"Name": "x", "Kind": "connect-proxy"}, "connect-proxy"),
        ({"Name": "x", "Check": {"TTL": "1s", "GRPC": "127.0.0.1:1"}}, "grpc"),
        ({"Name": "x", "Check": {"HTTP": "ftp://h/", "Interval": "1s"}}, "ftp://h/"),
        ({"Name": "x", "Check": {"TCP": "h:1", "HTTP": "http://h/", "Interval": "1s"}}, "only one"),
        ({"Name": "x", "Check": {"Interval": "1s"}}, "TTL"),
        ({"Name": "x", "Check": {"TTL": "0s"}}, "TTL"),
    ],
)
def test_bad_bodies_name_the_field(body: dict[str, Any], fragment: str) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_service(body, "n")
    assert fragment in info.value.message


def test_numeric_durations_are_nanoseconds_as_in_go() -> None:
    spec, _ = parse_check({"TTL": 10_000_000_000}, default_id="c", default_name="c")
    assert spec["ttl"] == "10.0s" and spec["type"] == "ttl"


def test_script_checks_only_when_enabled() -> None:
    body = {"Args": ["/bin/true"], "Interval": "1s"}
    with pytest.raises(BadRequestError, match="enable_script_checks"):
        parse_check(body, default_id="c", default_name="c")
    spec, _ = parse_check(body, default_id="c", default_name="c", enable_script_checks=True)
    assert spec["type"] == "script" and spec["args"] == ["/bin/true"]
