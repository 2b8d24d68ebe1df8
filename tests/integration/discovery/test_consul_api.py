"""The Consul-compatible API through the real py-consul client: agent, catalog, health, KV
(with CAS), blocking queries, bad bodies, persistence, and pods behind Services."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import consul.aio
import httpx
import pytest
from consul import Check

from shoal.discovery import RegistryConfig
from shoal.testing import RunningAPIServer, running_api_server

pytestmark = pytest.mark.asyncio

REGS = "/apis/consul.shoal.dev/v1/serviceregistrations"


NODE = "api-node"


def _config() -> RegistryConfig:
    return RegistryConfig(node_name=NODE, consul_port=0, dns_port=-1)


async def test_agent_catalog_and_health(c: consul.aio.Consul) -> None:
    await c.agent.service.register("my-service", service_id="my-service", address="127.0.0.1",
                                   port=8080, tags=["web", "api"], check=Check.ttl("10s"))  # fmt: skip
    await c.agent.service.register("my-service", service_id="my-service-2", address="127.0.0.2",
                                   port=8081, tags=["web"], check=Check.ttl("10s"))  # fmt: skip
    services = await c.agent.services()
    assert services["my-service"]["Tags"] == ["web", "api"]
    assert services["my-service"]["Port"] == 8080
    _, catalog = await c.catalog.services()
    assert catalog == {"consul": [], "my-service": ["api", "web"]} or catalog == {
        "my-service": ["api", "web"]
    }
    _, api_only = await c.catalog.service("my-service", tag="api")
    assert [e["ServiceID"] for e in api_only] == ["my-service"]
    _, nodes = await c.catalog.nodes()
    assert [n["Node"] for n in nodes] == ["api-node"]
    _, node = await c.catalog.node("api-node")
    assert set(node["Services"]) == {"my-service", "my-service-2"}

    _, healthy = await c.health.service("my-service", passing=True)
    assert healthy == []  # TTL checks start critical, as in Consul
    await c.agent.check.ttl_pass("service:my-service", "fine")
    await c.agent.check.ttl_warn("service:my-service-2", "slow")
    _, healthy = await c.health.service("my-service", passing=True)
    assert [e["Service"]["ID"] for e in healthy] == ["my-service"]  # warning is not passing
    _, everything = await c.health.service("my-service")
    assert len(everything) == 2
    _, checks = await c.health.checks("my-service")
    assert {ch["CheckID"]: ch["Status"] for ch in checks} == {
        "service:my-service": "passing",
        "service:my-service-2": "warning",
    }
    _, warning = await c.health.state("warning")
    assert [ch["CheckID"] for ch in warning] == ["service:my-service-2"]
    _, on_node = await c.health.node("api-node")
    assert {ch["CheckID"] for ch in on_node} == {
        "serfHealth", "service:my-service", "service:my-service-2"
    }  # fmt: skip

    # A node-level check and a check attached to a service later.
    await c.agent.check.register("disk", Check.ttl("30s"))
    await c.agent.check.register("extra", Check.ttl("30s"), service_id="my-service")
    await c.agent.check.ttl_pass("disk")
    checks_now = await c.agent.checks()
    assert checks_now["disk"]["ServiceID"] == ""
    assert checks_now["extra"]["ServiceID"] == "my-service"
    _, healthy = await c.health.service("my-service", passing=True)
    assert healthy == []  # "extra" is still critical
    await c.agent.check.deregister("extra")
    _, healthy = await c.health.service("my-service", passing=True)
    assert [e["Service"]["ID"] for e in healthy] == ["my-service"]

    # Re-registration keeps the check's last result.
    await c.agent.service.register("my-service", service_id="my-service", port=9090,
                                   check=Check.ttl("10s"))  # fmt: skip
    assert (await c.agent.checks())["service:my-service"]["Status"] == "passing"
    assert (await c.agent.services())["my-service"]["Port"] == 9090

    await c.agent.service.deregister("my-service-2")
    assert set(await c.agent.services()) == {"my-service"}
    assert "service:my-service-2" not in await c.agent.checks()


async def test_bad_registrations_are_400_and_store_nothing(srv: RunningAPIServer) -> None:
    assert srv.registry is not None
    base = f"http://127.0.0.1:{srv.registry.consul_port}"
    cases = [
        (b"{not json", "Request decode failed"),
        (b'{"ID": "x"}', "Missing service name"),
        (b'{"Name": "x", "Port": "eighty"}', "Port"),
        (b'{"Name": "x", "Port": -1}', "Port"),
        (b'{"Name": "x", "Check": {"TTL": "abc"}}', '"abc"'),
        (b'{"Name": "x", "Check": {"TTL": "10s", "Interval": "5s"}}', "cannot both"),
        (b'{"Name": "x", "Check": {"HTTP": "http://127.0.0.1:1/"}}', "Interval"),
        (b'{"Name": "x", "Check": {"Args": ["true"], "Interval": "1s"}}', "enable_script_checks"),
        (b'{"Name": "x", "Check": {"TTL": "10s", "Status": "great"}}', "great"),
        (b"[1, 2]", "JSON object"),
    ]
    async with httpx.AsyncClient(base_url=base) as http:
        for body, fragment in cases:
            resp = await http.put("/v1/agent/service/register", content=body)
            assert resp.status_code == 400, (body, resp.text)
            assert fragment in resp.text, (body, resp.text)
        resp = await http.put("/v1/agent/service/deregister/nope")
        assert resp.status_code == 404 and 'Unknown service ID "nope"' in resp.text
        resp = await http.put("/v1/agent/check/pass/nope")
        assert resp.status_code == 404
        resp = await http.get("/v1/health/state/bogus")
        assert resp.status_code == 400 and resp.text == "Bad state"
        resp = await http.get("/v1/catalog/services", params={"index": "x"})
        assert resp.status_code == 400
        assert (await http.get("/v1/agent/services")).json() == {}
    async with httpx.AsyncClient() as k8s:
        stored = (await k8s.get(srv.url + REGS)).json()["items"]
    assert stored == []


async def test_kv_put_get_keys_recurse_and_cas(c: consul.aio.Consul) -> None:
    assert await c.kv.put("app/config/a", "1")
    assert await c.kv.put("app/config/b", "2", flags=42)
    assert await c.kv.put("app/other", b"\x00\xff")
    _, a = await c.kv.get("app/config/a")
    assert a["Value"] == b"1" and a["Flags"] == 0
    _, b = await c.kv.get("app/config/b")
    assert b["Flags"] == 42
    _, keys = await c.kv.get("app/", keys=True, separator="/")
    assert keys == ["app/config/", "app/other"]
    _, all_entries = await c.kv.get("app/", recurse=True)
    assert [e["Key"] for e in all_entries] == ["app/config/a", "app/config/b", "app/other"]
    _, missing = await c.kv.get("nope")
    assert missing is None

    # CAS: 0 means "only if absent"; otherwise the ModifyIndex must match.
    assert not await c.kv.put("app/config/a", "x", cas=0)
    assert not await c.kv.put("app/config/a", "x", cas=a["ModifyIndex"] + 1000)
    assert await c.kv.put("app/config/a", "x", cas=a["ModifyIndex"])
    _, a2 = await c.kv.get("app/config/a")
    assert a2["Value"] == b"x" and a2["ModifyIndex"] > a["ModifyIndex"]
    assert a2["CreateIndex"] == a["CreateIndex"]
    assert not await c.kv.put("app/config/a", "y", cas=a["ModifyIndex"])  # stale now
    assert await c.kv.put("new-key", "v", cas=0)
    assert not await c.kv.delete("app/config/a", cas=a["ModifyIndex"])
    assert await c.kv.delete("app/config/a", cas=a2["ModifyIndex"])
    assert await c.kv.delete("app/", recurse=True)
    _, left = await c.kv.get("", recurse=True)
    assert [e["Key"] for e in left] == ["new-key"]


async def test_blocking_queries_return_early_on_change_else_at_wait(c: consul.aio.Consul) -> None:
    await c.agent.service.register("watched", service_id="w1", port=1)
    index, _ = await c.health.service("watched")
    started = time.monotonic()
    await c.health.service("watched", index=index, wait="1s")
    assert 0.9 <= time.monotonic() - started < 3  # nothing changed: held for the wait

    async def change() -> None:
        await asyncio.sleep(0.3)
        await c.agent.service.register("watched", service_id="w2", port=2)

    started = time.monotonic()
    task = asyncio.create_task(change())
    new_index, entries = await c.health.service("watched", index=index, wait="30s")
    await task
    assert time.monotonic() - started < 2
    assert int(new_index) > int(index)
    assert {e["Service"]["ID"] for e in entries} == {"w1", "w2"}

    # KV: a blocking read wakes on a put and on a delete under the prefix.
    await c.kv.put("cfg/a", "1")
    kv_index, _ = await c.kv.get("cfg/", recurse=True)
    waiter = asyncio.create_task(c.kv.get("cfg/", recurse=True, index=kv_index, wait="30s"))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await c.kv.put("cfg/b", "2")
    kv_index2, got = await asyncio.wait_for(waiter, 5)
    assert int(kv_index2) > int(kv_index) and len(got) == 2
    waiter = asyncio.create_task(c.kv.get("cfg/", recurse=True, index=kv_index2, wait="30s"))
    await asyncio.sleep(0.2)
    await c.kv.delete("cfg/a")
    kv_index3, got = await asyncio.wait_for(waiter, 5)
    assert int(kv_index3) > int(kv_index2) and [e["Key"] for e in got] == ["cfg/b"]


async def test_registrations_and_kv_survive_a_restart(tmp_path: Path) -> None:
    async with running_api_server(tmp_path, registry=_config()) as s1:
        assert s1.registry is not None
        c1 = consul.aio.Consul(host="127.0.0.1", port=s1.registry.consul_port)
        await c1.agent.service.register("keep", service_id="keep-1", port=5, check=Check.ttl("60s"))
        await c1.agent.check.ttl_pass("service:keep-1")
        await c1.kv.put("persist", "yes")
        index1, _ = await c1.health.service("keep")
        await c1.close()
    async with running_api_server(tmp_path, registry=_config()) as s2:
        assert s2.registry is not None
        c2 = consul.aio.Consul(host="127.0.0.1", port=s2.registry.consul_port)
        index2, entries = await c2.health.service("keep", passing=True)
        assert [e["Service"]["ID"] for e in entries] == ["keep-1"]
        assert int(index2) >= int(index1)
        _, kv = await c2.kv.get("persist")
        assert kv["Value"] == b"yes"
        await c2.close()


async def test_pods_behind_a_service_are_instances(
    srv: RunningAPIServer, c: consul.aio.Consul
) -> None:
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "api", "labels": {"tier": "back"},
                     "annotations": {"consul.hashicorp.com/service-tags": "grpc, v2"}},
        "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 80}]},
    }  # fmt: skip
    endpoints = {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "api"},
        "subsets": [{
            "addresses": [{"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "name": "api-a"}}],
            "notReadyAddresses": [{"ip": "10.0.0.2", "targetRef": {"kind": "Pod", "name": "api-b"}}],
            "ports": [{"name": "http", "port": 8080}],
        }],
    }  # fmt: skip
    async with httpx.AsyncClient(base_url=srv.url) as k8s:
        for path, body in (("services", service), ("endpoints", endpoints)):
            resp = await k8s.post(f"/api/v1/namespaces/default/{path}", json=body)
            assert resp.status_code == 201, resp.text
        _, all_entries = await c.catalog.service("api")
        assert {(e["ServiceAddress"], e["ServicePort"]) for e in all_entries} == {
            ("10.0.0.1", 8080), ("10.0.0.2", 8080)
        }  # fmt: skip
        _, healthy = await c.health.service("api", passing=True)
        assert [e["Service"]["Address"] for e in healthy] == ["10.0.0.1"]
        assert healthy[0]["Service"]["Tags"] == ["grpc", "v2"]
        assert healthy[0]["Service"]["Meta"] == {"tier": "back"}
        resp = await k8s.delete("/api/v1/namespaces/default/endpoints/api")
        assert resp.status_code == 200
        # The deletion is applied asynchronously from the watch; a blocking query sees it.
        index, entries = await c.catalog.service("api")
        deadline = time.monotonic() + 5
        while entries and time.monotonic() < deadline:
            index, entries = await c.catalog.service("api", index=index, wait="2s")
        assert entries == []
