"""The registry behind the Consul API: bad registrations rejected without a trace, state that
survives an API server restart with indexes that never go backwards, and pods behind a
Service (Services + Endpoints objects written through the k8s API) as catalog instances.
All Consul traffic goes through py-consul except the malformed bodies it cannot send."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import consul.aio
import consul.exceptions
import httpx
import pytest
from consul import Check

from shoal.discovery import RegistryConfig
from shoal.testing import RunningAPIServer, running_api_server

pytestmark = pytest.mark.asyncio

NODE = "registry-compat-node"
REGS = "/apis/consul.shoal.dev/v1/serviceregistrations"
CHECKS = "/apis/consul.shoal.dev/v1/healthchecks"


def _config() -> RegistryConfig:
    return RegistryConfig(node_name=NODE, consul_port=0, dns_port=-1)


async def _stored(srv: RunningAPIServer, path: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as k8s:
        resp = await k8s.get(srv.url + path)
        assert resp.status_code == 200, resp.text
        items: list[dict[str, Any]] = resp.json()["items"]
        return items


async def test_bad_registrations_are_rejected_and_store_nothing(
    srv: RunningAPIServer, c: consul.aio.Consul
) -> None:
    register = c.agent.service.register
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": ""}, "Missing service name"),
        ({"name": "x", "port": "eighty"}, "Port"),
        ({"name": "x", "port": -1}, "-1"),
        ({"name": "x", "port": 70000}, "70000"),
        ({"name": "x", "check": Check.ttl("abc")}, '"abc"'),
        ({"name": "x", "check": {"ttl": "10s", "interval": "5s"}}, "Interval and TTL"),
        ({"name": "x", "check": {"http": "http://127.0.0.1:1/"}}, "Interval"),
        ({"name": "x", "check": {"tcp": "127.0.0.1:1"}}, "Interval"),
        ({"name": "x", "check": Check.script(["/bin/true"], "1s")}, "enable_script_checks"),
        ({"name": "x", "check": {"ttl": "10s", "status": "great"}}, '"great"'),
        ({"name": "x", "check": {"ttl": "-5s"}}, "TTL"),
        ({"name": "x", "check": {"tcp": "no-port", "interval": "1s"}}, '"no-port"'),
        ({"name": "x", "tags": "web"}, "Tags"),
    ]
    for kwargs, fragment in cases:
        with pytest.raises(consul.exceptions.BadRequest) as info:
            await register(**kwargs)
        assert fragment in str(info.value), (kwargs, str(info.value))

    assert srv.registry is not None
    base = f"http://127.0.0.1:{srv.registry.consul_port}"
    async with httpx.AsyncClient(base_url=base) as http:
        for body in (b"{not json", b"", b'"a string"', b'{"Name": "x", "Checks": {}}'):
            resp = await http.put("/v1/agent/service/register", content=body)
            assert resp.status_code == 400 and resp.text, (body, resp.text)
        resp = await http.put("/v1/agent/check/register", content=b"[]")
        assert resp.status_code == 400

    assert await c.agent.services() == {}
    assert await c.agent.checks() == {}
    assert await _stored(srv, REGS) == []
    assert await _stored(srv, CHECKS) == []
    assert srv.registry.state.objects("serviceregistrations") == {}

    # A bad re-registration leaves the good one as it was.
    await register("keep", service_id="keep-1", port=1, check=Check.ttl("1m"))
    with pytest.raises(consul.exceptions.BadRequest):
        await register("keep", service_id="keep-1", port=2, check=Check.ttl("never"))
    assert (await c.agent.service_definition("keep-1"))["Port"] == 1
    assert [o["spec"]["port"] for o in await _stored(srv, REGS)] == [1]


async def test_registry_survives_restart_and_indexes_do_not_go_backwards(tmp_path: Path) -> None:
    async with running_api_server(tmp_path, registry=_config()) as s1:
        assert s1.registry is not None
        c1 = consul.aio.Consul(host="127.0.0.1", port=s1.registry.consul_port)
        try:
            await c1.agent.service.register(
                "persist", service_id="p-1", port=7, tags=["a"], check=Check.ttl("10m")
            )
            await c1.agent.check.ttl_warn("service:p-1", "degraded")
            await c1.agent.check.register("node-ttl", Check.ttl("10m"))
            await c1.agent.check.ttl_pass("node-ttl", "ok")
            await c1.kv.put("conf/x", "1", flags=7)
            await c1.kv.put("conf/y", "2")
            await c1.kv.delete("conf/y")
            before = {
                "health": int((await c1.health.service("persist"))[0]),
                "catalog": int((await c1.catalog.services())[0]),
                "kv": int((await c1.kv.get("conf/", recurse=True))[0]),
                "nodes": int((await c1.catalog.nodes())[0]),
            }
            _, kv_before = await c1.kv.get("conf/x")
        finally:
            await c1.close()

    async with running_api_server(tmp_path, registry=_config()) as s2:
        assert s2.registry is not None
        c2 = consul.aio.Consul(host="127.0.0.1", port=s2.registry.consul_port)
        try:
            health_index, entries = await c2.health.service("persist")
            assert [e["Service"]["ID"] for e in entries] == ["p-1"]
            assert entries[0]["Service"]["Tags"] == ["a"]
            checks = await c2.agent.checks()
            assert (checks["service:p-1"]["Status"], checks["service:p-1"]["Output"]) == (
                "warning", "degraded"
            )  # fmt: skip
            assert checks["node-ttl"]["Status"] == "passing"
            _, kv_after = await c2.kv.get("conf/x")
            assert kv_after == kv_before  # value, flags and both indexes
            assert (await c2.kv.get("conf/y"))[1] is None
            after = {
                "health": int(health_index),
                "catalog": int((await c2.catalog.services())[0]),
                "kv": int((await c2.kv.get("conf/", recurse=True))[0]),
                "nodes": int((await c2.catalog.nodes())[0]),
            }
            assert all(after[k] >= before[k] for k in before), (before, after)

            # Blocking queries work on the restarted server: held, then woken by a change.
            waiter = asyncio.create_task(
                c2.health.service("persist", index=after["health"], wait="20s")
            )
            await asyncio.sleep(0.3)
            assert not waiter.done()
            await c2.agent.check.ttl_pass("service:p-1")
            new_index, entries = await asyncio.wait_for(waiter, 5)
            assert int(new_index) > after["health"]
            assert entries[0]["Checks"][-1]["Status"] == "passing"
        finally:
            await c2.close()


def _endpoints(ready: list[tuple[str, str]], not_ready: list[tuple[str, str]]) -> dict[str, Any]:
    def addr(ip: str, pod: str) -> dict[str, Any]:
        return {"ip": ip, "targetRef": {"kind": "Pod", "name": pod}}

    return {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "shop"},
        "subsets": [{
            "addresses": [addr(ip, pod) for ip, pod in ready],
            "notReadyAddresses": [addr(ip, pod) for ip, pod in not_ready],
            "ports": [{"name": "http", "port": 8080}],
        }],
    }  # fmt: skip


async def test_service_endpoints_follow_readiness(
    srv: RunningAPIServer, c: consul.aio.Consul
) -> None:
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "shop", "namespace": "default",
                     "annotations": {"consul.hashicorp.com/service-tags": "web,v3"}},
        "spec": {"selector": {"app": "shop"}, "ports": [{"name": "http", "port": 80}]},
    }  # fmt: skip
    ns = "/api/v1/namespaces/default"
    async with httpx.AsyncClient(base_url=srv.url) as k8s:
        resp = await k8s.post(f"{ns}/services", json=service)
        assert resp.status_code == 201, resp.text
        index, _ = await c.health.service("shop")
        eps = _endpoints([("10.1.0.1", "shop-a")], [("10.1.0.2", "shop-b")])
        resp = await k8s.post(f"{ns}/endpoints", json=eps)
        assert resp.status_code == 201, resp.text

        index, entries = await c.health.service("shop", index=index, wait="5s")
        assert {e["Service"]["Address"] for e in entries} == {"10.1.0.1", "10.1.0.2"}
        _, passing = await c.health.service("shop", passing=True)
        assert [e["Service"]["Address"] for e in passing] == ["10.1.0.1"]
        assert passing[0]["Service"]["Tags"] == ["web", "v3"]
        assert passing[0]["Service"]["Port"] == 8080
        _, tagged = await c.catalog.service("shop", tag="v3")
        assert len(tagged) == 2
        _, services = await c.catalog.services()
        assert services["shop"] == ["v3", "web"]
        assert "shop" not in str(await c.agent.services())  # cluster state, not agent-local

        # shop-b becomes Ready: a blocking passing query wakes with both.
        waiter = asyncio.create_task(c.health.service("shop", passing=True, index=index,
                                                      wait="20s"))  # fmt: skip
        await asyncio.sleep(0.2)
        assert not waiter.done()
        current = (await k8s.get(f"{ns}/endpoints/shop")).json()
        update = _endpoints([("10.1.0.1", "shop-a"), ("10.1.0.2", "shop-b")], [])
        update["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        resp = await k8s.put(f"{ns}/endpoints/shop", json=update)
        assert resp.status_code == 200, resp.text
        index, passing = await asyncio.wait_for(waiter, 5)
        assert {e["Service"]["Address"] for e in passing} == {"10.1.0.1", "10.1.0.2"}

        # Deleting the Endpoints removes the instances.
        waiter = asyncio.create_task(c.catalog.service("shop", index=index, wait="20s"))
        await asyncio.sleep(0.2)
        resp = await k8s.delete(f"{ns}/endpoints/shop")
        assert resp.status_code == 200, resp.text
        _, entries = await asyncio.wait_for(waiter, 5)
        assert entries == []
        _, services = await c.catalog.services()
        assert "shop" not in services
